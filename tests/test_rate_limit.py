"""Inbound control messages per peer: a burst, then a steady rate; a member that floods valid, signed messages is
dropped as flooding, penalised and banned (its fetches refused too), and the others are not held to its account."""
import asyncio
import dataclasses
import time

import pytest

from swarm.transport.rate_limit import PeerRateLimiter, TokenBucket


def test_bucket_gives_its_burst_then_its_rate():
    bucket = TokenBucket(rate=10.0, burst=5, now=0.0)
    assert [bucket.take(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.take(0.1) and not bucket.take(0.1)  # 0.1 s at 10/s: one token
    assert sum(bucket.take(10.0) for _ in range(20)) == 5  # a long pause refills up to the burst, no more
    assert not bucket.take(5.0)  # a clock that steps back adds nothing


def test_peers_have_separate_buckets_and_bad_settings_are_refused():
    limiter = PeerRateLimiter(rate=1.0, burst=2)
    assert [limiter.allow("a", 0.0) for _ in range(3)] == [True, True, False]
    assert limiter.allow("b", 0.0)
    with pytest.raises(ValueError):
        PeerRateLimiter(rate=0.0, burst=10)
    with pytest.raises(ValueError):
        PeerRateLimiter(rate=5.0, burst=0)


def test_a_member_flooding_signed_messages_is_dropped_and_banned(tmp_path):
    from consensus.messages import Heartbeat, signed_fields, signing_bytes
    from crypto.keys import load_key
    from swarm.config import load_genesis, load_node_config
    from swarm.node.core_link import encode_message
    from swarm.node.node import Node
    from swarm.ops.cluster import ClusterOptions, init_cluster

    specs = init_cluster(tmp_path, ClusterOptions(nodes=4))
    config = load_node_config(specs[0].config_path)
    config.transport.control_messages_per_s, config.transport.control_burst = 2.0, 50  # a slow CI box still floods
    node = Node(config, load_genesis(config.genesis), load_key(config.identity))
    flooder, honest = (load_key(tmp_path / "keys" / f"{name}.pem") for name in ("node3", "node1"))
    swarm_id = node.genesis.swarm_id
    burst = config.transport.control_burst

    def heartbeat(key, i):  # valid all through: the envelope and the consensus message inside are both signed
        message = Heartbeat(1, i, key.peer_id)
        kind, term, round_, digest, sender = signed_fields(message)
        message = dataclasses.replace(message, sig=key.sign(signing_bytes(swarm_id, kind, term, round_, digest, sender)))
        return encode_message(key, swarm_id, message)

    async def scenario() -> None:
        for i in range(burst + 150):
            await node.inbound.on_control(flooder.peer_id, heartbeat(flooder, i))
        await node.inbound.on_control(honest.peer_id, heartbeat(honest, 0))

    asyncio.run(scenario())
    assert node.metrics.rejected["flooding"] >= 5  # penalised until its local score ran out
    assert node.metrics.rejected["banned"] > 100   # then dropped unread
    assert node.scores.is_banned(flooder.peer_id, time.monotonic())
    assert not node.scores.is_banned(honest.peer_id, time.monotonic())
    assert node.scores.get(honest.peer_id).rejected == 0
    assert not node.inbound.may_fetch(flooder.peer_id) and node.inbound.may_fetch(honest.peer_id)  # nor may it fetch
    node.store.close()

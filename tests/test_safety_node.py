"""Safety at the node's admission and entry checks (issue 22, properties 5, 6 and 7), on a node built but never run
(a four-member genesis, real keys and store), plus the transport's digest check on a push.

- A pushed payload whose bytes do not match its digest is never kept: the transport refuses the push
  (swarm/transport/bulk.py receive_push) and the node does not keep it either when handed one.
- Two different signed gradients from one member for one round: the second is rejected as "equivocation" and
  the member's local score drops (swarm/node/inbound.py keep_gradient).
- An entry must name at least a quorum of distinct gradients (swarm/node/entry_states.py EntryStates.derive).
"""
from __future__ import annotations

import asyncio
import hashlib

import pytest
import torch
import trio

from consensus.messages import Entry
from swarm.ledger.apply import InvalidEntry
from swarm.round.gradient import digest_of, make_gradient


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(node, keys by name): node0 of a four-member swarm, built but never run."""
    from crypto.keys import load_key
    from swarm.config import load_genesis, load_node_config
    from swarm.node.node import Node
    from swarm.ops.cluster import ClusterOptions, init_cluster

    folder = tmp_path_factory.mktemp("swarm")
    specs = init_cluster(folder, ClusterOptions(nodes=4))
    config = load_node_config(specs[0].config_path)
    node = Node(config, load_genesis(config.genesis), load_key(config.identity))
    keys = {f"node{i}": load_key(folder / "keys" / f"node{i}.pem") for i in range(4)}
    yield node, keys
    node.close()


def _raw(node, key, value: float, round_: int = 1) -> bytes:
    return make_gradient(key, node.genesis.swarm_id, round_, node.state.hash,
                         node.compressor.compress(torch.full((node.dim,), value)))


def _kept(node, peer_id: str) -> list:
    return [g for g in node.pool.for_round(1) if g.sender == peer_id]


# ------------------------------------------------------------------------------------------------ digests (5)

def test_safety_node_never_keeps_a_pushed_payload_under_a_digest_its_bytes_do_not_have(built):
    node, keys = built
    sender = keys["node2"]
    raw = _raw(node, sender, 2e-3)
    wrong = hashlib.sha256(raw + b"x").digest()
    asyncio.run(node.inbound.on_payload(sender.peer_id, wrong, raw))
    assert node.pool.by_digest(wrong) is None
    assert all(g.digest == digest_of(g.raw) for g in node.pool.for_round(1))
    assert not _kept(node, sender.peer_id)
    assert node.metrics.rejected["bad_digest"] == 1 and node.scores.get(sender.peer_id).reasons["bad_digest"] == 1
    # The control: the same bytes under their own digest are kept.
    asyncio.run(node.inbound.on_payload(sender.peer_id, digest_of(raw), raw))
    assert [g.digest for g in _kept(node, sender.peer_id)] == [digest_of(raw)]


class _PushStream:
    """A push arriving on a stream: reads return the given bytes in pieces; writes (the status byte) are kept."""

    def __init__(self, data: bytes, piece: int = 1 << 16) -> None:
        self.pending = [data[i:i + piece] for i in range(0, len(data), piece)]
        self.written = b""

    async def read(self, n: int) -> bytes:
        if not self.pending:
            return b""
        chunk = self.pending.pop(0)
        if len(chunk) > n:
            self.pending.insert(0, chunk[n:])
            chunk = chunk[:n]
        return chunk

    async def write(self, data: bytes) -> None:
        self.written += data

    async def reset(self) -> None:
        pass

    async def close(self) -> None:
        pass


@pytest.mark.parametrize("size", [1000, (1 << 20) + 7])  # below and above the threaded-hash threshold
def test_safety_transport_refuses_a_push_whose_body_does_not_match_its_digest(size):
    from swarm.transport.bulk import receive_push
    from swarm.transport.framing import ACK_BAD_DIGEST, FrameError, bulk_header

    body = bytes(range(256)) * (size // 256) + b"\x01" * (size % 256)
    good = hashlib.sha256(body).digest()
    stream = _PushStream(bulk_header(len(body), good) + body)
    assert trio.run(receive_push, stream, 4 << 20) == (good, body)  # the control
    for wrong_body in (body[:-1] + bytes([body[-1] ^ 1]), bytes([body[0] ^ 0x80]) + body[1:]):
        stream = _PushStream(bulk_header(len(wrong_body), good) + wrong_body)
        with pytest.raises(FrameError, match="digest"):
            trio.run(receive_push, stream, 4 << 20)
        assert stream.written == bytes([ACK_BAD_DIGEST])


# ------------------------------------------------------------------------------------------------ equivocation (6)

def test_safety_node_rejects_a_second_different_gradient_as_equivocation_and_lowers_the_score(built):
    node, keys = built
    sender = keys["node1"]
    first = node.verify_gradient(_raw(node, sender, 1e-3), 1, node.state.hash)
    second = node.verify_gradient(_raw(node, sender, 3e-3), 1, node.state.hash)
    assert first.digest != second.digest
    before = node.scores.get(sender.peer_id).score
    assert node.inbound.keep_gradient(first)
    assert node.inbound.keep_gradient(first)  # the same gradient again is no offence
    assert node.scores.get(sender.peer_id).score == before
    assert not node.inbound.keep_gradient(second)
    assert node.metrics.rejected["equivocation"] == 1
    assert node.scores.get(sender.peer_id).score < before
    assert node.scores.get(sender.peer_id).reasons["equivocation"] == 1
    assert [g.digest for g in _kept(node, sender.peer_id)] == [first.digest]


# ------------------------------------------------------------------------------------------------ quorum (7)

def test_safety_an_entry_naming_fewer_than_a_quorum_of_distinct_gradients_is_invalid(built):
    node, keys = built
    assert node.genesis.quorum == 3
    grads = {}
    for name, value in (("node1", 1e-3), ("node2", 2e-3), ("node3", 4e-3)):
        kept = _kept(node, keys[name].peer_id)
        if not kept:  # (other tests may have put one in already)
            node.pool.add(node.verify_gradient(_raw(node, keys[name], value), 1, node.state.hash))
            kept = _kept(node, keys[name].peer_id)
        grads[name] = kept[0]

    state = node.state

    def entry_of(digests) -> Entry:
        return Entry(1, tuple(digests), node.rules.rule, {}, b"\x00" * 32, state.hash)

    def derive(digests):
        node.entries.round_done()
        return asyncio.run(node.entries.derive(state, entry_of(digests)))

    d1, d2, d3 = sorted(g.digest for g in grads.values())
    for short in ([d1], [d1, d2], [d1, d1, d2], [d2, d2, d2], [d1, d1, d2, d3]):
        # refused by the entry's own check, before any gradient is looked up (apply would also refuse a sender
        # named twice: tests/test_safety_apply.py guards that second line)
        with pytest.raises(InvalidEntry, match="distinct and at least a quorum"):
            derive(short)
    with pytest.raises(InvalidEntry, match="quorum"):
        derive([d1, d2])  # exactly what a leader alone with one friend could name
    with pytest.raises(InvalidEntry):
        derive([d2, d1, d3])  # unsorted
    applied = derive([d1, d2, d3])  # the control: a quorum of distinct gradients derives a state
    assert applied.state.round == 1 and len(applied.aggregated) >= 1

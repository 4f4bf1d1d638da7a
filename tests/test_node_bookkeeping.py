"""The node's bookkeeping around the consensus core, on a one-node swarm (real libp2p host on 127.0.0.1, SQLite
store): committed rows are appended without their own fsync and no consensus message is ever encoded for sending
while one of them is not yet durable."""
from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.slow


def _one_node(folder):
    import swarm.node.node as node_module
    from crypto.keys import load_key
    from swarm.config import load_genesis, load_node_config
    from swarm.ops.cluster import ClusterOptions, init_cluster

    (spec,) = init_cluster(folder, ClusterOptions(nodes=1))
    config = load_node_config(spec.config_path)
    return node_module.Node(config, load_genesis(config.genesis), load_key(config.identity))


def test_a_message_after_a_deferred_row_waits_for_its_fsync(tmp_path, monkeypatch):
    """The rare path: nothing durable was written between the commit and the next message (a retransmission,
    an answer to a peer catching up), so the node syncs the row itself first."""
    import swarm.node.node as node_module
    from consensus.actions import Broadcast
    from consensus.ready import ready
    from consensus.messages import Prepare
    from swarm.ledger.store import ChainRow

    node = _one_node(tmp_path)
    unsynced_at_encode = []
    real_encode = node_module.encode_message
    monkeypatch.setattr(node_module, "encode_message", lambda *args: (
        unsynced_at_encode.append(node.store._chain_unsynced), real_encode(*args))[1])
    node.store.append(ChainRow(1, 1, b"d" * 32, {"round": 1}, {}, b"h" * 32), durable=False)
    assert node.store._chain_unsynced
    node.carry_out(ready([Broadcast(Prepare(1, 2, b"e" * 32, node.id))]))
    assert unsynced_at_encode == [False]
    assert node.store.get_meta("chain_synced_through") == 1
    node.store.close()


def test_nothing_leaves_for_a_peer_while_a_committed_row_is_unsynced(tmp_path, monkeypatch):
    import swarm.node.node as node_module

    node = _one_node(tmp_path)
    seen = {"deferred_appends": 0, "messages": 0, "pushes": 0, "unsynced_at_send": 0}

    real_append, real_encode, real_push = node.store.append, node_module.encode_message, node.transport.push

    def append(row, gradients=(), durable=True):
        seen["deferred_appends"] += not durable
        return real_append(row, gradients, durable)

    def encode(*args, **kwargs):
        seen["messages"] += 1
        seen["unsynced_at_send"] += node.store._chain_unsynced
        return real_encode(*args, **kwargs)

    async def push(payload, to=None):
        seen["pushes"] += 1
        seen["unsynced_at_send"] += node.store._chain_unsynced
        return await real_push(payload, to)

    monkeypatch.setattr(node.store, "append", append)
    monkeypatch.setattr(node_module, "encode_message", encode)
    monkeypatch.setattr(node.transport, "push", push)

    async def scenario() -> None:
        task = asyncio.create_task(node.run())
        deadline = asyncio.get_running_loop().time() + 60
        while node.state.round < 4:
            assert not task.done(), task.exception()
            assert asyncio.get_running_loop().time() < deadline, "round 4 not reached"
            await asyncio.sleep(0.01)
        node.stop()
        await asyncio.wait_for(task, 15)

    asyncio.run(scenario())
    assert seen["deferred_appends"] >= 4 and seen["messages"] >= 8 and seen["pushes"] >= 4, seen
    assert seen["unsynced_at_send"] == 0, seen


def test_an_entry_with_more_evidence_than_allowed_is_invalid():
    from swarm.ledger.apply import InvalidEntry
    from swarm.ledger.entry_rules import MAX_ENTRY_EVIDENCE, entry_extras

    with pytest.raises(InvalidEntry, match="at most"):
        entry_extras(None, {"evidence": [["x"]] * (MAX_ENTRY_EVIDENCE + 1)}, 2, None)
    with pytest.raises(InvalidEntry, match="at most"):
        entry_extras(None, {"evidence": "not a list"}, 2, None)


def test_serving_our_state_syncs_first_and_serializes_once_per_state(tmp_path, monkeypatch):
    from swarm.ledger.state import ReplicatedState
    from swarm.ledger.store import ChainRow

    node = _one_node(tmp_path)
    calls = []
    real = ReplicatedState.serialize
    monkeypatch.setattr(ReplicatedState, "serialize", lambda self: (calls.append(1), real(self))[1])
    node.store.append(ChainRow(1, 1, b"d" * 32, {"round": 1}, {}, b"h" * 32), durable=False)
    first = asyncio.run(node.payloads.get(node.state.hash))
    assert not node.store._chain_unsynced
    assert asyncio.run(node.payloads.get(node.state.hash)) is first and len(calls) == 1
    assert ReplicatedState.deserialize(first, node.dim, node.genesis.peer_ids).hash == node.state.hash
    node.store.close()


def test_a_payload_pushed_again_is_dropped_before_verification(tmp_path, monkeypatch):
    import torch

    from crypto.keys import load_key
    from swarm.config import load_genesis, load_node_config
    from swarm.node.node import Node
    from swarm.ops.cluster import ClusterOptions, init_cluster
    from swarm.round.gradient import digest_of, make_gradient

    specs = init_cluster(tmp_path, ClusterOptions(nodes=4))
    config = load_node_config(specs[0].config_path)
    node = Node(config, load_genesis(config.genesis), load_key(config.identity))
    sender = load_key(tmp_path / "keys" / "node1.pem")
    raw = make_gradient(sender, node.genesis.swarm_id, 1, node.state.hash,
                        node.compressor.compress(torch.full((node.dim,), 1e-3)))
    import swarm.node.node as node_module
    verified = []
    real_open = node_module.open_gradient
    monkeypatch.setattr(node_module, "open_gradient", lambda *args: (verified.append(1), real_open(*args))[1])

    async def push_three_times() -> None:
        for _ in range(3):
            await node.inbound.on_payload(sender.peer_id, digest_of(raw), raw)

    asyncio.run(push_three_times())
    assert len(verified) == 1 and node.metrics.duplicate_pushes == 2
    assert [g.sender for g in node.pool.for_round(1, node.state.hash)] == [sender.peer_id]
    node.close()


def test_our_own_gradient_counts_towards_readiness_before_every_peer_took_it(tmp_path, monkeypatch):
    """Two peers' gradients are in; ours makes the quorum of 3. Pushing it to a fourth, unreachable peer can take
    seconds: the ready timer must start when ours joins the pool, not when the push returns (a stalled leader
    then misses its round and loses its term)."""
    import torch

    from crypto.keys import load_key
    from swarm.config import load_genesis, load_node_config
    from swarm.node.node import Node
    from swarm.ops.cluster import ClusterOptions, init_cluster
    from swarm.round.gradient import make_gradient

    specs = init_cluster(tmp_path, ClusterOptions(nodes=4))
    config = load_node_config(specs[0].config_path)
    node = Node(config, load_genesis(config.genesis), load_key(config.identity))
    for name in ("node1", "node2"):
        key = load_key(tmp_path / "keys" / f"{name}.pem")
        raw = make_gradient(key, node.genesis.swarm_id, 1, node.state.hash,
                            node.compressor.compress(torch.full((node.dim,), 1e-3)))
        node.pool.add(node.verify_gradient(raw, 1, node.state.hash))
    push_started = []

    async def unreachable_push(raw, to=None):
        push_started.append(1)
        await asyncio.sleep(3600)

    monkeypatch.setattr(node.transport, "push", unreachable_push)

    async def scenario() -> bool:
        node.start_round()
        deadline = asyncio.get_running_loop().time() + 60
        while not push_started:
            assert asyncio.get_running_loop().time() < deadline, "our gradient was never pushed"
            await asyncio.sleep(0.01)
        return node.readiness.next_deadline() is not None  # the grace period of a quorum has begun

    assert asyncio.run(scenario())
    assert node.pool.count(1, node.state.hash) == 3
    node.close()


def test_a_damaged_snapshot_file_is_never_served_and_is_set_aside(tmp_path):
    node = _one_node(tmp_path)
    digest = b"\x07" * 32
    path = node.store.snapshot_path(digest)
    path.write_bytes(b"not the state that hashes to its name")
    assert asyncio.run(node.payloads.get(digest)) is None
    assert not path.exists() and path.with_name(path.name + ".bad").exists()
    node.close()

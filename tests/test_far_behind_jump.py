"""A node far behind the committed head (a joiner of a long-running swarm, a node back from a long outage) jumps to
a recent certified snapshot instead of replaying every round: a swarm that commits as fast as a node replays would
otherwise never be caught (session 8 measured a joiner staying about 100 rounds behind). The rounds jumped over
are marked as absent on purpose, as after pruning, so ``swarm verify`` replays from the snapshot."""
from __future__ import annotations

import asyncio
from dataclasses import replace
from types import SimpleNamespace

import torch

from consensus.messages import CommitCertificate, CommittedEntry, Entry
from swarm.ledger.apply import Applied
from swarm.ledger.state import genesis_state
from swarm.ledger.store import Store
from swarm.node.records import Metrics
from swarm.node.state_worker import FAR_BEHIND_MIN_ROUNDS, StateWorker

MEMBERS = ["a", "b", "c", "d"]


def _node(tmp_path, head: int, served: set[int]):
    """A node at round 0 whose core holds certified entries up to ``head``; peers serve the snapshots of the
    rounds in ``served``."""
    genesis = genesis_state(torch.zeros(8), MEMBERS, b"\0" * 32)
    states = {r: replace(genesis, round=r, params=torch.full((8,), float(r)), _hash=None, _body=None)
              for r in range(1, head + 1)}
    raws = {states[r].hash: states[r].serialize() for r in served}
    derived, fetched = [], []

    async def derive(state, entry):
        derived.append(entry.round)
        return Applied(states[entry.round], "median", tuple(MEMBERS), ())

    async def fetch(digest):
        fetched.append(digest)
        return raws.get(digest)

    async def after_commit(committed, applied):
        pass

    node = SimpleNamespace(
        state=genesis, dim=8, store=Store(tmp_path), metrics=Metrics(), transport=SimpleNamespace(), fetch=fetch,
        config=SimpleNamespace(consensus=SimpleNamespace(snapshot_every=10), fault_injection=SimpleNamespace(
            diverge_at_round=None), data_dir=str(tmp_path)),
        entries=SimpleNamespace(derive=derive, fetched={}, round_done=lambda: None, applied={}),
        pool=SimpleNamespace(by_digest=lambda digest: None), rules=SimpleNamespace(staleness_bound=0),
        genesis=SimpleNamespace(n=4), evidence=SimpleNamespace(on_commit=lambda pieces, round_: None),
        after_commit=after_commit, diverged=None)
    node.derived, node.fetched, node.states = derived, fetched, states
    return node


def _run(node, head: int) -> None:
    async def scenario():
        worker = StateWorker(node)
        task = asyncio.create_task(worker.run())
        try:
            for r in range(1, head + 1):
                entry = Entry(round=r, gradient_digests=(), rule="median", state_hash=node.states[r].hash)
                worker.pending[r] = CommittedEntry(entry, CommitCertificate(1, r, entry.digest(), ()))
            worker.commit(worker.pending[head])
            async with asyncio.timeout(30):
                while node.state.round < head:
                    assert not task.done()
                    await asyncio.sleep(0.01)
        finally:
            task.cancel()

    asyncio.run(scenario())


def test_a_node_far_behind_jumps_to_the_newest_snapshot_and_replays_the_rest(tmp_path):
    head = FAR_BEHIND_MIN_ROUNDS + 41  # 105: the newest snapshot round is 100
    node = _node(tmp_path, head, served={100, 90})
    _run(node, head)
    assert node.derived == list(range(101, head + 1))  # nothing at or before the snapshot was replayed
    assert node.fetched == [node.states[100].hash]
    assert node.state.hash == node.states[head].hash
    assert node.store.get_meta("payloads_pruned_through") == 100  # absent on purpose: swarm verify knows
    assert [r for r, _h in node.store.snapshots()] == [100]
    node.store.close()


def test_when_peers_lack_the_newest_snapshot_the_previous_ones_are_tried(tmp_path):
    head = FAR_BEHIND_MIN_ROUNDS + 41
    node = _node(tmp_path, head, served={90})
    _run(node, head)
    assert node.fetched == [node.states[100].hash, node.states[90].hash]
    assert node.derived == list(range(91, head + 1))
    assert node.store.get_meta("payloads_pruned_through") == 90
    node.store.close()


def test_a_node_not_far_behind_replays_every_round(tmp_path):
    head = FAR_BEHIND_MIN_ROUNDS - 4
    node = _node(tmp_path, head, served={50, 40})
    _run(node, head)
    assert node.fetched == [] and node.derived == list(range(1, head + 1))
    assert node.store.get_meta("payloads_pruned_through") is None
    node.store.close()


def test_with_no_snapshot_anywhere_the_node_replays(tmp_path):
    head = FAR_BEHIND_MIN_ROUNDS + 41
    node = _node(tmp_path, head, served=set())
    _run(node, head)
    assert len(node.fetched) == 3  # 100, 90, 80: each tried once
    assert node.derived == list(range(1, head + 1))
    node.store.close()

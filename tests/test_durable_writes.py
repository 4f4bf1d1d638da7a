"""Issue 23, finding 3: the payload files a committed round names are written, awaited and checked before the
round counts as applied; a failed write is logged, counted in /status and /metrics, and retried until it holds;
the next round never starts on a round whose payloads this node does not hold."""
from __future__ import annotations

import asyncio
import errno
import logging
from types import SimpleNamespace

import pytest

from consensus.messages import CommitCertificate, CommittedEntry, Entry
from swarm.ledger.apply import Applied
from swarm.ledger.store import Store
from swarm.node.state_worker import StateWorker
from swarm.ops.api import status_view
from swarm.ops.metrics import render_node_metrics
from tests.test_inspect_support import fake_node


def _stub_node(tmp_path, rounds: int):
    """Just what StateWorker reads to apply a committed entry, over a real store; after_commit notes what the
    node holds at the moment it would report the round and start the next one."""
    node = fake_node()
    node.store = Store(tmp_path)
    gradients = {}
    states = [node.state]
    for r in range(1, rounds + 1):
        states.append(SimpleNamespace(round=r, hash=bytes([r]) * 32, reputation=node.state.reputation,
                                      members=node.state.members))
        for i in range(3):
            digest = bytes([r, i]) * 16
            gradients[digest] = SimpleNamespace(round=r, sender=f"peer{i}", raw=b"envelope %d %d" % (r, i) * 100)

    async def derive(state, entry):
        return Applied(states[entry.round], "median", ("a",), ())

    seen_at_commit = []

    async def after_commit(committed, applied):
        digests = committed.entry.gradient_digests
        seen_at_commit.append((committed.entry.round, node.state.round,
                               all(node.store.gradient_envelope(d) is not None for d in digests)))

    node.entries = SimpleNamespace(derive=derive, fetched={}, round_done=lambda: None, applied={})
    node.pool = SimpleNamespace(by_digest=gradients.get)
    node.config = SimpleNamespace(fault_injection=SimpleNamespace(diverge_at_round=None),
                                  consensus=SimpleNamespace(snapshot_every=10))
    node.evidence = SimpleNamespace(on_commit=lambda pieces, round_: None)
    node.after_commit = after_commit
    node.seen_at_commit = seen_at_commit
    node.gradients = gradients
    return node


def _committed(node, r: int) -> CommittedEntry:
    digests = tuple(sorted(d for d, g in node.gradients.items() if g.round == r))
    entry = Entry(round=r, gradient_digests=digests, rule="median", state_hash=bytes([r]) * 32)
    return CommittedEntry(entry, CommitCertificate(term=1, round=r, digest=entry.digest(), signatures=()))


async def _apply(node, rounds: int, timeout_s: float = 30) -> None:
    worker = StateWorker(node)
    task = asyncio.create_task(worker.run())
    try:
        for r in range(1, rounds + 1):
            worker.commit(_committed(node, r))
        async with asyncio.timeout(timeout_s):
            while len(node.seen_at_commit) < rounds:
                assert not task.done()
                await asyncio.sleep(0.01)
    finally:
        task.cancel()


def test_a_failed_payload_write_is_logged_counted_retried_and_stored(tmp_path, monkeypatch, caplog):
    import swarm.node.state_worker as state_worker

    monkeypatch.setattr(state_worker, "STORE_RETRY_FIRST_S", 0.05)
    node = _stub_node(tmp_path, rounds=3)
    real = node.store.add_gradients
    calls = []

    def failing_once(rows):
        calls.append(len(rows))
        if len(calls) == 1:
            raise OSError(errno.EMFILE, "Too many open files")
        return real(rows)

    monkeypatch.setattr(node.store, "add_gradients", failing_once)
    with caplog.at_level(logging.ERROR, logger="swarm.node"):
        asyncio.run(_apply(node, 3))

    # retried, then stored: every payload of every committed round is on disk, and the round was reported only then
    assert node.seen_at_commit == [(1, 1, True), (2, 2, True), (3, 3, True)]
    assert len(calls) == 4
    assert all(node.store.gradient_envelope(d) == g.raw for d, g in node.gradients.items())
    assert sorted(node.store.gradient_senders(list(node.gradients))) == sorted(g.sender for g in node.gradients.values())
    # logged as an error that says what and why, and no "Future exception was never retrieved"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("round 1" in r.getMessage() and "Too many open files" in r.getMessage() for r in errors), errors
    assert not any("never retrieved" in r.getMessage() for r in caplog.records)
    # visible to an operator: /status and /metrics
    status = status_view(node)["store_errors"]
    assert status["count"] == 1 and "Too many open files" in status["last"] and status["failing"] is None
    assert status["last_at"] is not None
    assert "swarm_store_write_errors_total 1" in render_node_metrics(node)
    node.store.close()


def test_the_next_round_does_not_start_before_the_payloads_are_written(tmp_path, monkeypatch):
    """A slow write (a disk under load): the round is reported committed, and the next one started, only once it
    has finished; meanwhile the node's state is still the previous round's."""
    import time

    node = _stub_node(tmp_path, rounds=2)
    real = node.store.add_gradients
    monkeypatch.setattr(node.store, "add_gradients", lambda rows: (time.sleep(0.3), real(rows))[1])
    asyncio.run(_apply(node, 2))
    assert node.seen_at_commit == [(1, 1, True), (2, 2, True)]
    node.store.close()


def test_a_write_that_keeps_failing_holds_the_round_and_shows_in_status(tmp_path, monkeypatch):
    import swarm.node.state_worker as state_worker

    monkeypatch.setattr(state_worker, "STORE_RETRY_FIRST_S", 0.02)
    monkeypatch.setattr(state_worker, "STORE_RETRY_MAX_S", 0.05)
    node = _stub_node(tmp_path, rounds=1)
    monkeypatch.setattr(node.store, "add_gradients", lambda rows: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))

    async def scenario():
        with pytest.raises(TimeoutError):
            await _apply(node, 1, timeout_s=1.0)

    asyncio.run(scenario())
    assert node.seen_at_commit == [] and node.state.round == 0  # never reported, never adopted
    status = status_view(node)["store_errors"]
    assert status["count"] >= 3 and status["failing"] == "payloads of round 1" and "full" in status["last"]
    node.store.close()


@pytest.mark.slow
def test_a_live_node_retries_a_failed_payload_write_and_keeps_every_payload(tmp_path, monkeypatch, caplog):
    """End to end on a one-node swarm (real libp2p host on 127.0.0.1, SQLite store): the first payload write fails
    with EMFILE; the node logs it, retries, and every committed round's payload files are there, each before the
    next round started."""
    import swarm.node.state_worker as state_worker
    from tests.test_node_bookkeeping import _one_node

    monkeypatch.setattr(state_worker, "STORE_RETRY_FIRST_S", 0.05)
    node = _one_node(tmp_path)
    real = node.store.add_gradients
    calls = []

    def failing_once(rows):
        calls.append(len(rows))
        if len(calls) == 1:
            raise OSError(errno.EMFILE, "Too many open files")
        return real(rows)

    monkeypatch.setattr(node.store, "add_gradients", failing_once)
    held_at_start = []
    real_start = node.start_round

    def start_round():
        row = node.store.row(node.state.round)
        if row is not None:
            held_at_start.append(all(node.store.gradient_envelope(d) is not None for d in row.entry["gradients"]))
        real_start()

    monkeypatch.setattr(node, "start_round", start_round)

    async def scenario() -> None:
        task = asyncio.create_task(node.run())
        deadline = asyncio.get_running_loop().time() + 60
        while node.state.round < 3:
            assert not task.done(), task.exception()
            assert asyncio.get_running_loop().time() < deadline, "round 3 not reached"
            await asyncio.sleep(0.01)
        node.stop()
        await asyncio.wait_for(task, 15)

    with caplog.at_level(logging.ERROR, logger="swarm.node"):
        asyncio.run(scenario())
    assert node.metrics.store_write_errors == 1 and len(calls) >= 4
    assert held_at_start and all(held_at_start), held_at_start
    store = Store(node.store.dir)
    for row in store.rows():
        assert all(store.gradient_envelope(d) is not None for d in row.entry["gradients"]), row.round
    store.close()
    assert any("Too many open files" in r.getMessage() for r in caplog.records)


def test_a_follower_writes_the_payloads_before_it_answers_a_valid_proposal(tmp_path, monkeypatch):
    """The core Prepares only after ValidationResult(ok): by then the payloads the entry names are in the store, so
    a commit certificate means 2f+1 members hold them on disk (a swarm stopped all at once between a commit and its
    adoption lost them before, and the committed round could never be replayed). Adopting the round later does not
    write them again."""
    from consensus.events import ValidationResult

    node = _stub_node(tmp_path, rounds=1)
    real = node.store.add_gradients
    writes = []
    monkeypatch.setattr(node.store, "add_gradients", lambda rows: (writes.append(len(rows)), real(rows))[1])
    answers = []
    node.step = lambda event: answers.append(
        (event, all(node.store.gradient_envelope(d) is not None for d in node.gradients)))
    node.mark_phase = lambda term, round_, phase: None
    committed = _committed(node, 1)

    async def scenario():
        worker = StateWorker(node)
        task = asyncio.create_task(worker.run())
        try:
            worker.validate(1, 1, committed.entry)
            async with asyncio.timeout(10):
                while not answers:
                    await asyncio.sleep(0.01)
            worker.commit(committed)
            async with asyncio.timeout(10):
                while not node.seen_at_commit:
                    await asyncio.sleep(0.01)
        finally:
            task.cancel()

    asyncio.run(scenario())
    (event, held), = answers
    assert isinstance(event, ValidationResult) and event.ok
    assert held, "the follower answered before the payloads were on disk"
    assert writes == [3], writes  # written once, at validation
    assert node.seen_at_commit == [(1, 1, True)]
    assert sorted(node.store.gradient_senders(list(node.gradients))) == ["peer0", "peer1", "peer2"]
    node.store.close()

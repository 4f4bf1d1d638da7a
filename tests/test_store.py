"""The SQLite store: committed rounds never overwritten or skipped, values survive reopening, snapshots are atomic."""
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from swarm.ledger.store import ChainRow, Store, StoreError


def row(r, digest=b"d"):
    return ChainRow(r, 1, digest * 32, {"round": r}, {"signers": ["a", "b", "c"]}, bytes([r]) * 32)


def test_chain_appends_in_order_and_survives_reopen(tmp_path):
    store = Store(tmp_path)
    store.append(row(1), [(b"g" * 32, 1, "a", b"raw")])
    store.append(row(2), [])
    store.close()
    store = Store(tmp_path)
    assert store.last_round() == 2
    assert [r.round for r in store.rows()] == [1, 2]
    assert store.row(1).entry == {"round": 1}
    assert store.gradient_envelope(b"g" * 32) == b"raw"
    assert store.gradient_senders([b"g" * 32, b"x" * 32]) == ["a"]
    store.close()


def test_committed_round_is_never_overwritten_and_gaps_are_refused(tmp_path):
    store = Store(tmp_path)
    store.append(row(1), [])
    store.append(row(1), [])  # the same commit again is a no-op
    with pytest.raises(StoreError, match="another digest"):
        store.append(row(1, b"x"), [])
    with pytest.raises(StoreError, match="does not follow"):
        store.append(row(3), [])
    assert store.row(1).digest == b"d" * 32
    store.close()


def test_meta_and_local_scores_round_trip(tmp_path):
    store = Store(tmp_path)
    store.put_meta("term", 5)
    store.put_meta("lock", {"term": 5, "digest": b"\x01" * 32})
    store.put_local_score("peer", 0.4, 3, "bad_signature")
    store.close()
    store = Store(tmp_path)
    assert store.get_meta("term") == 5 and store.get_meta("absent", 0) == 0
    assert store.get_meta("lock")["digest"] == b"\x01" * 32
    assert store.local_scores() == {"peer": (0.4, 3, "bad_signature")}
    store.close()


def test_snapshots_are_found_by_hash_and_missing_files_skipped(tmp_path):
    store = Store(tmp_path)
    store.save_snapshot(5, b"\x05" * 32, b"five")
    store.save_snapshot(10, b"\x0a" * 32, b"ten")
    assert store.latest_snapshot() == (10, b"\x0a" * 32, b"ten")
    store.snapshot_path(b"\x0a" * 32).unlink()
    assert store.latest_snapshot() == (5, b"\x05" * 32, b"five")
    assert not list((tmp_path / "snapshots").glob("*.tmp"))
    store.close()


def test_payloads_are_files_by_digest_and_a_damaged_copy_is_replaced_whole(tmp_path):
    store = Store(tmp_path)
    digest = b"p" * 32
    store.add_gradients([(digest, 4, "b", b"good bytes")])
    path = store.payload_path(digest)
    assert path.read_bytes() == b"good bytes" and path.parent.parent == tmp_path / "payloads"
    path.write_bytes(b"good bytez")  # damage on disk: callers see it through the digest check
    store.add_gradients([(digest, 4, "b", b"good bytes")])
    assert store.gradient_envelope(digest) == b"good bytes"
    assert store.gradient_envelope(b"q" * 32) is None
    assert store.gradient_senders([digest]) == ["b"]
    assert not list(path.parent.glob("*.tmp"))
    store.close()


def test_payload_file_writes_never_hold_up_a_consensus_write(tmp_path, monkeypatch):
    # Megabytes of payload files are written before the database lock is taken: a vote persisted meanwhile by the
    # event loop does not wait for them (it used to, up to ~12 ms per round in a 4-node swarm).
    import threading

    import swarm.ledger.store as store_module
    store = Store(tmp_path)
    writing, release = threading.Event(), threading.Event()
    real_write = store_module._write_payload_files

    def slow_write(data_dir, gradients):
        writing.set()
        assert release.wait(10)
        real_write(data_dir, gradients)

    monkeypatch.setattr(store_module, "_write_payload_files", slow_write)
    writer = threading.Thread(target=store.add_gradients, args=([(b"p" * 32, 4, "b", b"bytes")],))
    writer.start()
    try:
        assert writing.wait(10)
        done = threading.Event()
        voter = threading.Thread(target=lambda: (store.put_meta("hard", {"term": 3}), done.set()))
        voter.start()
        assert done.wait(5), "put_meta waited for payload files being written"
        voter.join()
    finally:
        release.set()
        writer.join()
    assert store.get_meta("hard") == {"term": 3} and store.gradient_envelope(b"p" * 32) == b"bytes"
    store.close()


def test_writes_are_transactions_and_durability_is_restored(tmp_path):
    store = Store(tmp_path)
    store.append(row(1))
    with pytest.raises(RuntimeError):
        with store._transaction(durable=False):
            store._db.execute("INSERT INTO payloads(digest, round, sender) VALUES (?, ?, ?)", (b"x" * 32, 1, "a"))
            raise RuntimeError("crash mid-transaction")
    assert store.gradient_senders([b"x" * 32]) == []  # rolled back whole
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again for the consensus values
    store.close()


def test_retention_keeps_the_newest_snapshots_and_what_a_restart_replays(tmp_path):
    store = Store(tmp_path)
    for r in range(1, 31):
        digest = bytes([r]) * 32
        store.append(row(r, bytes([r])), [(digest, r, "a", b"payload %d" % r)])
        if r % 5 == 0:
            store.save_snapshot(r, bytes([100 + r]) * 32, b"state %d" % r)
    # newest snapshot: round 30; keep 2 snapshots and 12 rounds of payloads -> cutoff min(30 - 12, 30) = 18
    assert store.prune(keep_snapshots=2, keep_payload_rounds=12) == (4, 18)
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == sorted(
        store.snapshot_path(bytes([100 + r]) * 32).name for r in (25, 30))
    assert store.latest_snapshot() == (30, bytes([130]) * 32, b"state 30")
    assert all(store.gradient_envelope(bytes([r]) * 32) is None for r in range(1, 19))
    assert all(store.gradient_envelope(bytes([r]) * 32) == b"payload %d" % r for r in range(19, 31))
    assert store.gradient_senders([bytes([1]) * 32]) == ["a"]  # rows stay for the API
    assert [r.round for r in store.rows()] == list(range(1, 31))
    assert store.prune(keep_snapshots=2, keep_payload_rounds=12) == (0, 0)  # nothing more to do
    store.close()


def test_retention_never_prunes_payloads_a_restart_needs(tmp_path):
    store = Store(tmp_path)
    for r in range(1, 21):
        store.append(row(r, bytes([r])), [(bytes([r]) * 32, r, "a", b"p")])
    assert store.prune(keep_snapshots=1, keep_payload_rounds=2) == (0, 0)  # no snapshot: replay from genesis
    store.save_snapshot(5, b"s" * 32, b"state 5")
    assert store.prune(keep_snapshots=1, keep_payload_rounds=2) == (0, 5)  # only up to the snapshot's round
    assert store.gradient_envelope(bytes([6]) * 32) == b"p"
    assert store.prune(keep_snapshots=0, keep_payload_rounds=0) == (0, 0)  # 0 keeps everything
    store.close()


def test_a_chain_row_appended_without_fsync_is_synced_once_before_it_matters(tmp_path):
    store = Store(tmp_path)
    assert store.sync() is False  # nothing pending: no write at all
    store.append(row(1), durable=False)
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert store.sync() is True and store.get_meta("chain_synced_through") == 1
    assert store.sync() is False
    store.append(row(2), durable=False)
    store.put_meta("hard", {"term": 2})  # a durable write (the next vote) covers the row: no extra fsync
    assert store.sync() is False and store.get_meta("chain_synced_through") == 1
    store.close()


def test_a_chain_row_appended_without_fsync_survives_kill_9(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal
        from swarm.ledger.store import ChainRow, Store
        store = Store({str(tmp_path)!r})
        store.append(ChainRow(1, 1, b"d" * 32, {{"round": 1}}, {{}}, b"h" * 32), durable=False)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parent.parent)
    assert result.returncode == -signal.SIGKILL
    store = Store(tmp_path)
    assert store.last_round() == 1 and store.row(1).state_hash == b"h" * 32
    store.close()


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace to count fsyncs")
def test_deferred_chain_rows_cost_no_fsync_until_synced(tmp_path):
    """Counted at the system call: 20 durable appends fsync 20 times or more, 20 deferred ones none, and syncing
    after each brings the fsyncs back."""
    def fsyncs(mode: str) -> int:
        folder = tmp_path / mode
        script = textwrap.dedent(f"""
            from swarm.ledger.store import ChainRow, Store
            store = Store({str(folder)!r})
            for r in range(1, 21 if {mode != "baseline"} else 1):
                store.append(ChainRow(r, 1, bytes([r]) * 32, {{"round": r}}, {{}}, b"h" * 32),
                             durable={mode == "durable"})
                if {mode == "synced"}:
                    store.sync()
        """)
        trace = tmp_path / f"{mode}.strace"
        subprocess.run(["strace", "-f", "-qq", "-e", "trace=fsync,fdatasync", "-o", str(trace), sys.executable,
                        "-c", script], cwd=Path(__file__).parent.parent, check=True)
        return sum(1 for line in trace.read_text().splitlines() if "sync(" in line)

    baseline = fsyncs("baseline")  # opening the store (schema, journal mode) syncs too
    durable, deferred, synced = (fsyncs(mode) - baseline for mode in ("durable", "deferred", "synced"))
    assert durable >= 20 and synced >= 20, (baseline, durable, deferred, synced)
    assert deferred <= 2, (baseline, durable, deferred, synced)


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_read_only_store_reads_everything_and_writes_nothing(tmp_path):
    store = Store(tmp_path)
    store.append(row(1), [(b"g" * 32, 1, "a", b"raw")])
    store.save_snapshot(1, b"\x01" * 32, b"one")
    store.close()
    before = _tree(tmp_path)
    reader = Store(tmp_path, read_only=True)
    assert [r.round for r in reader.rows()] == [1]
    assert reader.gradient_envelope(b"g" * 32) == b"raw"
    assert reader.snapshots() == [(1, b"\x01" * 32)]
    for write in (lambda: reader.append(row(2)), lambda: reader.put_meta("term", 1),
                  lambda: reader.save_snapshot(2, b"\x02" * 32, b"two"), lambda: reader.prune(1, 1),
                  lambda: reader.add_gradients([(b"h" * 32, 1, "a", b"x")]),
                  lambda: reader.put_local_score("peer", 0.1, 1, "r"), lambda: reader.add_committed_evidence([], 1)):
        with pytest.raises(StoreError, match="read-only"):
            write()
    reader.close()
    assert _tree(tmp_path) == before


def test_a_read_only_store_creates_nothing_where_there_is_no_store(tmp_path):
    missing = tmp_path / "absent"
    with pytest.raises(FileNotFoundError, match="no node store"):
        Store(missing, read_only=True)
    assert not missing.exists()


def test_a_read_only_store_sees_rows_still_in_a_live_stores_wal(tmp_path):
    writer = Store(tmp_path)
    writer.append(row(1))
    writer.append(row(2), durable=False)
    assert (tmp_path / "node.sqlite-wal").stat().st_size > 0
    reader = Store(tmp_path, read_only=True)
    assert [r.round for r in reader.rows()] == [1, 2]
    reader.close()
    writer.close()

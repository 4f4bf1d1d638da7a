"""Tests written from mutation run 5 (TESTING.md, "Mutation testing"): each kills mutants of swarm/ledger/store.py
that the rest of the fast suite let survive."""
from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor

import pytest

from swarm.ledger.store import ChainRow, Store


def _row(r: int) -> ChainRow:
    return ChainRow(r, 1, bytes([r]) * 32, {"round": r}, {"sigs": []}, bytes([r]) * 32)


def test_first_and_last_round_of_an_empty_and_a_filled_chain(tmp_path):
    store = Store(tmp_path)
    try:
        assert (store.first_round(), store.last_round()) == (0, 0)
        for r in (1, 2, 3):
            store.append(_row(r))
        assert (store.first_round(), store.last_round()) == (1, 3)
    finally:
        store.close()


def _wal_files(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("node.sqlite-"))


def test_a_read_only_store_cannot_write_even_below_its_guard_and_creates_no_wal_files(tmp_path):
    """The read-only store's own SQLite connection refuses writes (``mode=ro``), not just its Python methods, and a
    store closed cleanly is opened without SQLite creating -wal and -shm files beside it (``immutable``)."""
    writer = Store(tmp_path)
    writer.append(_row(1))
    writer.close()
    assert _wal_files(tmp_path) == []
    reader = Store(tmp_path, read_only=True)
    try:
        assert [r.round for r in reader.rows()] == [1]
        assert _wal_files(tmp_path) == []  # while it is open, not only after
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader._db.execute("INSERT INTO meta VALUES ('x', x'00')")
    finally:
        reader.close()


def test_a_read_only_store_on_a_live_store_cannot_write_either(tmp_path):
    writer = Store(tmp_path)
    try:
        writer.append(_row(1), durable=False)
        assert (tmp_path / "node.sqlite-wal").exists()
        reader = Store(tmp_path, read_only=True)
        try:
            assert reader.last_round() == 1
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                reader._db.execute("INSERT INTO meta VALUES ('x', x'00')")
        finally:
            reader.close()
        assert writer.get_meta("x") is None
    finally:
        writer.close()


def test_a_read_only_store_is_read_from_other_threads(tmp_path):
    """Tools read a store opened elsewhere from worker threads (the API's views): the connection is not bound to
    the thread that opened it."""
    writer = Store(tmp_path)
    writer.append(_row(1))
    writer.close()
    reader = Store(tmp_path, read_only=True)
    try:
        with ThreadPoolExecutor(1) as pool:
            assert pool.submit(lambda: [r.round for r in reader.rows()]).result() == [1]
    finally:
        reader.close()


def test_a_row_reads_back_every_column_and_there_is_no_row_before_round_1(tmp_path):
    store = Store(tmp_path)
    try:
        store.append(ChainRow(1, 7, b"\x01" * 32, {"round": 1}, {"sigs": [["a", b"s"]]}, b"\x02" * 32))
        store.append(_row(2))
        assert store.row(1) == ChainRow(1, 7, b"\x01" * 32, {"round": 1}, {"sigs": [["a", b"s"]]}, b"\x02" * 32)
        assert [r.term for r in store.rows()] == [7, 1]
        assert store.row(0) is None and store.row(-1) is None  # the genesis has no row: not round 1's
        assert store.row(3) is None
    finally:
        store.close()

"""Tests written from mutation run 5 (TESTING.md, "Mutation testing"): each kills mutants of swarm/ledger/store.py
that the rest of the fast suite let survive."""
from __future__ import annotations

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

"""A step's actions grouped as the node carries them out (consensus/ready.py): everything persisted before any
message, the newest hard state only, and the order of entries, messages, applies and requests kept."""
from __future__ import annotations

import pytest

from consensus.actions import (Apply, Broadcast, BuildProposal, LoadEntries, PersistEntry, PersistHardState,
                               ReportEvidence, Send, ValidateProposal, WakeAt)
from consensus.messages import CommitCertificate, CommittedEntry, Entry, Evidence, Prepare
from consensus.ready import ready
from consensus.state import HardState


def committed(round_: int) -> CommittedEntry:
    entry = Entry(round_, (bytes([round_]) * 32,), "median", {}, bytes([round_]) * 32, bytes(32))
    return CommittedEntry(entry, CommitCertificate(1, round_, entry.digest(), ()))


def test_a_step_is_grouped_with_its_orders_kept_and_the_newest_hard_state():
    first, second = committed(1), committed(2)
    send = Send("peer", Prepare(1, 2, b"d" * 32, "me"))
    broadcast = Broadcast(Prepare(1, 3, b"e" * 32, "me"))
    evidence = Evidence("leader", 1, 2, b"a" * 32, b"s", b"b" * 32, b"t")
    build, validate = BuildProposal(3, b"p" * 32), ValidateProposal(1, 3, first.entry)
    load = LoadEntries("peer", 1, 10)
    batch = ready([send, PersistHardState(HardState(term=1)), PersistEntry(first), Apply(first), broadcast,
                   PersistEntry(second), Apply(second), build, PersistHardState(HardState(term=2)), validate, load,
                   ReportEvidence(evidence), WakeAt(5.0), WakeAt(7.0)])
    assert batch.hard_state == HardState(term=2)
    assert batch.entries == (first, second) and batch.committed == (first, second)
    assert batch.messages == (send, broadcast) and batch.must_sync
    assert batch.requests == (build, validate, load)
    assert batch.evidence == (evidence,) and batch.wake_at == 7.0


def test_a_step_with_nothing_to_send_needs_no_sync():
    batch = ready([PersistHardState(HardState(term=1)), WakeAt(1.0)])
    assert not batch.must_sync and batch.messages == () and batch.entries == ()


def test_an_unknown_action_is_refused_rather_than_dropped():
    with pytest.raises(TypeError, match="unknown action"):
        ready([object()])

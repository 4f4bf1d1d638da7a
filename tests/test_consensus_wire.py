"""Wire form of consensus messages: every type round-trips; malformed input raises DecodeError and nothing else."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from crypto import wire
from crypto.wire import DecodeError
from consensus.messages import (CatchUpRequest, CatchUpResponse, Commit, CommitCertificate, CommittedEntry, Evidence,
                                EvidenceMessage, Heartbeat, Prepare, RequestVote, Timeout,
                                from_wire, to_wire)

from tests.test_consensus_harness import commit, entry, new_term, prepared_cert, preprepare, sign, vote


def _all_messages():
    e = entry()
    cert = CommitCertificate(1, 1, e.digest(), tuple((s, commit(1, e, s).sig) for s in "bcd"))
    ev = Evidence("b", 1, 1, e.digest(), b"s" * 32, entry(variant=1).digest(), b"t" * 32)
    return [
        preprepare(1, e), sign(Prepare(1, 1, e.digest(), "c")), sign(Commit(1, 1, e.digest(), "c")),
        sign(Timeout(3, 2, "a")), sign(RequestVote(3, 2, "a")), vote(2, "c", "b", prepared_cert(1, e)),
        vote(2, "c", "b"), new_term(2, "b"), sign(Heartbeat(2, 5, "b")), sign(CatchUpRequest(4, "a")),
        sign(CatchUpResponse(1, (CommittedEntry(e, cert),), "b")), sign(EvidenceMessage(ev, "a")),
    ]


@pytest.mark.parametrize("msg", _all_messages(), ids=lambda m: m.kind)
def test_every_message_type_round_trips_through_canonical_bytes(msg):
    data = wire.dumps(to_wire(msg))
    back = from_wire(wire.loads(data))
    assert back == msg and back.digest == msg.digest
    assert wire.dumps(to_wire(back)) == data  # canonical: the same value gives the same bytes


@pytest.mark.parametrize("msg", _all_messages(), ids=lambda m: m.kind)
def test_missing_or_extra_fields_are_rejected(msg):
    plain = to_wire(msg)
    for key in plain:
        broken = dict(plain)
        del broken[key]
        with pytest.raises(DecodeError):
            from_wire(broken)
    with pytest.raises(DecodeError):
        from_wire({**plain, "extra": 1})


@pytest.mark.parametrize("field,value", [("term", -1), ("term", "1"), ("round", True), ("digest", b"short"),
                                         ("sender", ""), ("sender", "x" * 200), ("sig", b"s" * 500), ("type", "nope")])
def test_wrongly_typed_or_oversized_fields_are_rejected(field, value):
    plain = to_wire(sign(Prepare(1, 1, entry().digest(), "c")))
    with pytest.raises(DecodeError):
        from_wire({**plain, field: value})


def test_preprepare_whose_round_differs_from_its_entry_is_rejected():
    plain = to_wire(preprepare(1, entry()))
    with pytest.raises(DecodeError):
        from_wire({**plain, "round": 2})


_values = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.binary(max_size=40)
                       | st.text(max_size=10),
                       lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                   max_size=5), max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(_values)
def test_arbitrary_values_raise_only_decode_error(value):
    try:
        from_wire(value)
    except DecodeError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(_all_messages()), st.data())
def test_mutated_messages_raise_only_decode_error(msg, data):
    plain = to_wire(msg)
    key = data.draw(st.sampled_from(sorted(plain)))
    plain[key] = data.draw(_values)
    try:
        from_wire(plain)
    except DecodeError:
        pass

"""Membership change requests (swarm/ledger/membership.py): signed by a member, tied to the configuration they
change, and refused with a reason whenever they must not commit."""
from __future__ import annotations

import pytest

from crypto import wire
from crypto.keys import NodeKey
from crypto.wire import DecodeError
from swarm.ledger.membership import ADD, REMOVE, ChangeRefused, MembershipChange, next_members, sign_change

KEYS = [NodeKey.generate() for _ in range(5)]
MEMBERS = {k.peer_id: f"node{i}" for i, k in enumerate(KEYS[:4])}
NEW = KEYS[4]


def add(key=KEYS[0], peer=NEW.peer_id, name="node4", epoch=1, swarm="s"):
    return sign_change(key, swarm, ADD, peer, name, epoch)


def test_a_member_adds_and_removes_members_of_the_configuration_in_force():
    grown = next_members(add(), "s", MEMBERS, 1)
    assert grown == {**MEMBERS, NEW.peer_id: "node4"}
    shrunk = next_members(sign_change(KEYS[1], "s", REMOVE, KEYS[3].peer_id, "node3", 6), "s", grown, 6)
    assert KEYS[3].peer_id not in shrunk and len(shrunk) == 4


def test_the_request_survives_the_wire_and_a_changed_field_breaks_its_signature():
    change = add()
    assert MembershipChange.from_plain(wire.loads(wire.dumps(change.to_plain()))) == change
    for field, value in (("name", "evil"), ("epoch", 2), ("peer_id", KEYS[1].peer_id), ("op", REMOVE)):
        forged = MembershipChange(**{**change.__dict__, field: value})
        with pytest.raises(ChangeRefused):
            next_members(forged, "s", MEMBERS, forged.epoch)
    for bad in ({}, {**change.to_plain(), "extra": 1}, {**change.to_plain(), "epoch": 0},
                {**change.to_plain(), "sig": "x"}, {**change.to_plain(), "name": ""}):
        with pytest.raises(DecodeError):
            MembershipChange.from_plain(bad)


@pytest.mark.parametrize("case,change,members,why", [
    ("non-member", lambda: add(key=NEW, peer=KEYS[1].peer_id), MEMBERS, "not a member"),
    ("unsigned", lambda: MembershipChange(**{**add().__dict__, "sig": b""}), MEMBERS, "signature"),
    ("other swarm", lambda: add(swarm="t"), MEMBERS, "another swarm"),
    ("replayed", lambda: add(epoch=1), None, "configuration of round 1"),
    ("already a member", lambda: add(peer=KEYS[2].peer_id), MEMBERS, "already a member"),
    ("name taken", lambda: add(name="node2"), MEMBERS, "taken"),
    ("not a peer id", lambda: add(peer="12D3KooWnotakey"), MEMBERS, "Ed25519"),
    ("remove stranger", lambda: sign_change(KEYS[0], "s", REMOVE, NEW.peer_id, "x", 1), MEMBERS, "not a member"),
    ("last member", lambda: sign_change(KEYS[0], "s", REMOVE, KEYS[0].peer_id, "node0", 1),
     {KEYS[0].peer_id: "node0"}, "last member"),
    ("stall", lambda: add(), {KEYS[0].peer_id: "node0"}, "could not commit"),
    ("unknown op", lambda: sign_change(KEYS[0], "s", "promote", NEW.peer_id, "x", 1), MEMBERS, "unknown operation"),
])
def test_bad_requests_are_refused_with_their_reason(case, change, members, why):
    epoch = 1 if members is not None else 7  # "replayed": the configuration changed since (now in force from 7)
    with pytest.raises(ChangeRefused, match=why):
        next_members(change(), "s", members if members is not None else MEMBERS, epoch)

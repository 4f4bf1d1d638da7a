"""The node's membership desk (swarm/node/membership_desk.py): a refused request costs its sender a reject unless it
is a late copy of one this node accepted before (members relay a request until it commits, and copies still in
flight then must cost nobody). Before, any refused request was excused while one was pending, so a member could
send refused requests for free."""
from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import torch

from crypto.keys import NodeKey
from swarm.config import Genesis, Member
from swarm.ledger.membership import ADD, sign_change
from swarm.ledger.state import Roster, genesis_state
from swarm.node.membership_desk import MembershipDesk

KEYS = [NodeKey.generate() for _ in range(4)]
JOINER, STRANGER = NodeKey.generate(), NodeKey.generate()


def _desk():
    genesis = Genesis(swarm_id="s", members=[Member(f"node{i}", k.peer_id) for i, k in enumerate(KEYS)])
    state = genesis_state(torch.zeros(8), genesis.peer_ids, b"\0" * 32)
    node = SimpleNamespace(id=KEYS[0].peer_id, key=KEYS[0], genesis=genesis, state=state, members=set(state.members),
                           readiness=SimpleNamespace(n=4, quorum=3), sent=[], rejects=[])
    node.send = lambda peer, data: node.sent.append(peer)
    node.inbound = SimpleNamespace(reject=lambda peer, reason, detail: node.rejects.append((peer, reason, detail)))
    return node, MembershipDesk(node)


def _add_joiner(state):
    """The state once the request committed: the joiner is a member from round 2 on."""
    table = dict(state.reputation)
    table[JOINER.peer_id] = table[KEYS[0].peer_id]
    names = {**{k.peer_id: f"node{i}" for i, k in enumerate(KEYS)}, JOINER.peer_id: "node4"}
    return replace(state, round=1, reputation=tuple(sorted(table.items())),
                   roster=Roster(2, tuple(sorted(names.items()))), _hash=None)


def test_a_refused_request_costs_its_sender_even_while_another_is_pending():
    node, desk = _desk()
    relay = KEYS[1].peer_id
    valid = sign_change(KEYS[1], "s", ADD, JOINER.peer_id, "node4", 1)
    desk.on_message(relay, valid.to_plain())
    assert desk.pending == valid and node.rejects == []
    assert sorted(node.sent) == sorted(k.peer_id for k in KEYS[2:])  # passed on, not back to its sender
    forged = sign_change(STRANGER, "s", ADD, JOINER.peer_id, "node5", 1)  # signed by a non-member
    desk.on_message(relay, forged.to_plain())
    assert [(peer, reason) for peer, reason, _detail in node.rejects] == [(relay, "bad_membership_change")]
    assert "not a member" in node.rejects[0][2]
    assert desk.pending == valid


def test_a_late_copy_of_an_accepted_request_costs_nobody():
    node, desk = _desk()
    valid = sign_change(KEYS[1], "s", ADD, JOINER.peer_id, "node4", 1)
    desk.on_message(KEYS[1].peer_id, valid.to_plain())
    node.state = _add_joiner(node.state)  # it commits: the same request is now spent
    desk.follow()
    assert desk.pending is None and JOINER.peer_id in node.members
    desk.on_message(KEYS[2].peer_id, valid.to_plain())  # a copy still in flight
    assert node.rejects == []
    # a copy made for the old configuration reaching a node that never saw it (the change committed first) is late
    # too; a request for the configuration in force that is refused still costs its sender
    desk.on_message(KEYS[3].peer_id, sign_change(KEYS[3], "s", ADD, JOINER.peer_id, "node4", 1).to_plain())
    assert node.rejects == []
    other = sign_change(KEYS[2], "s", ADD, JOINER.peer_id, "node5", 2)  # the joiner is already a member
    desk.on_message(KEYS[2].peer_id, other.to_plain())
    assert [reason for _peer, reason, _detail in node.rejects] == ["bad_membership_change"]

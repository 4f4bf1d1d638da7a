"""Membership change requests: what a member signs to add or remove a member, and the rules an entry carrying one
must pass before the swarm commits it (issue 19; the consensus side is consensus/configs.py).

A request names the configuration it changes by ``epoch``, the first round that configuration has been in force.
It is valid only while that configuration is: once any change commits, every request made against the old set is
spent, so a request cannot be replayed later (not even after the member it added was removed again, which brings
back the same set of members under a new epoch). The requester must be a member of the configuration in force, and
its Ed25519 key, which its libp2p peer id names, signs the request; a member to add is named by its peer id, from
which its public key follows.

Refused, with the reason: a request from a non-member, unsigned or forged, for another swarm or another
configuration, adding a peer id or name that is already a member's, removing a non-member or the last member, and
growing a swarm whose current members could not make the new quorum without the one added (only n = 1: two
members need both).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from consensus.quorum import Membership
from crypto import wire
from crypto.keys import NodeKey, verify_by_peer_id
from crypto.peer_id import PeerIdError, public_key_from_peer_id
from crypto.wire import DecodeError

ADD, REMOVE = "add", "remove"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_KEYS = {"swarm", "op", "peer_id", "name", "epoch", "requester", "sig"}


class ChangeRefused(ValueError):
    """A membership change that must not commit; the message says why."""


@dataclass(frozen=True)
class MembershipChange:
    swarm_id: str
    op: str           # ADD or REMOVE
    peer_id: str      # the member added or removed
    name: str         # its name in logs, /peers and the CLI (for a removal: the name it had)
    epoch: int        # the first round of the configuration this request changes
    requester: str    # the member whose key signs the request
    sig: bytes = b""

    def signing_bytes(self) -> bytes:
        return wire.dumps(["swarm/membership-change", 1, self.swarm_id, self.op, self.peer_id, self.name, self.epoch,
                           self.requester])

    def to_plain(self) -> dict:
        return {"swarm": self.swarm_id, "op": self.op, "peer_id": self.peer_id, "name": self.name,
                "epoch": self.epoch, "requester": self.requester, "sig": self.sig}

    @classmethod
    def from_plain(cls, value) -> "MembershipChange":
        """Shape only (DecodeError when malformed); :func:`next_members` does every other check."""
        if not isinstance(value, dict) or set(value) != _KEYS:
            raise DecodeError("bad_change", f"a membership change has exactly the fields {sorted(_KEYS)}")
        text = {k: value[k] for k in ("swarm", "op", "peer_id", "name", "requester")}
        if not all(type(v) is str and 0 < len(v) <= 128 for v in text.values()):
            raise DecodeError("bad_change", "swarm, op, peer_id, name and requester must be short strings")
        if type(value["epoch"]) is not int or value["epoch"] < 1:
            raise DecodeError("bad_change", "epoch must be a round >= 1")
        if type(value["sig"]) is not bytes or len(value["sig"]) > 128:
            raise DecodeError("bad_change", "sig must be at most 128 bytes")
        return cls(value["swarm"], value["op"], value["peer_id"], value["name"], value["epoch"], value["requester"],
                   value["sig"])


def sign_change(key: NodeKey, swarm_id: str, op: str, peer_id: str, name: str, epoch: int) -> MembershipChange:
    """A request signed by ``key``, the requesting member's own key."""
    unsigned = MembershipChange(swarm_id, op, peer_id, name, epoch, key.peer_id)
    return MembershipChange(**{**unsigned.__dict__, "sig": key.sign(unsigned.signing_bytes())})


def next_members(change: MembershipChange, swarm_id: str, members: dict[str, str], epoch: int) -> dict[str, str]:
    """The configuration after ``change`` (peer id -> name), given the one in force (``members``, peer id -> name)
    and its ``epoch``; raises ChangeRefused with the reason when the change must not commit."""
    if change.swarm_id != swarm_id:
        raise ChangeRefused("the request is for another swarm")
    if change.op not in (ADD, REMOVE):
        raise ChangeRefused(f"unknown operation {change.op!r} (add or remove)")
    if change.requester not in members:
        raise ChangeRefused("the requester is not a member")
    if not verify_by_peer_id(change.requester, change.signing_bytes(), change.sig):
        raise ChangeRefused("the request's signature does not verify")
    if change.epoch != epoch:
        raise ChangeRefused(f"the request changes the configuration of round {change.epoch}; the one in force has "
                            f"been since round {epoch} (made before another change, or replayed)")
    if change.op == ADD:
        try:
            public_key_from_peer_id(change.peer_id)
        except PeerIdError:
            raise ChangeRefused("the peer id to add does not name an Ed25519 key") from None
        if change.peer_id in members:
            raise ChangeRefused(f"{members[change.peer_id]} is already a member")
        if not _NAME.match(change.name) or change.name in members.values():
            raise ChangeRefused(f"the name {change.name[:64]!r} is taken or not a plain name")
        grown = Membership([*members, change.peer_id])
        if grown.quorum > len(members):
            raise ChangeRefused(f"adding a member to {len(members)} would need {grown.quorum} of {grown.n} to commit: "
                                f"the members there now could not commit until it is up")
        return {**members, change.peer_id: change.name}
    if change.peer_id not in members:
        raise ChangeRefused("the peer id to remove is not a member")
    if len(members) == 1:
        raise ChangeRefused("the last member cannot be removed")
    return {peer: name for peer, name in members.items() if peer != change.peer_id}

"""A node's side of membership changes (issue 19): following the configuration its replicated state puts in force,
and carrying signed change requests to whoever leads.

A request reaches one node (its API, from `swarm members add/remove`), which checks it against the configuration
in force and passes it to every member over the control channel (a MEMBERSHIP envelope); each member keeps the
newest valid one, and whoever leads proposes it with the next entry (the request in the entry's params, the new
member ids in the entry itself: swarm/ledger/entry_rules.entry_membership and consensus/configs.py). Once any change
commits, every request made against the old configuration is spent and dropped.

When the state's member list changes, the node follows: the transport links with the members in force and refuses
the others, the readiness counts use the new n and quorum, and a node that is no longer a member (or not yet one)
stops contributing and says so.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from consensus.quorum import Membership
from crypto.envelope import MessageType, seal
from crypto.wire import DecodeError
from swarm.ledger.entry_rules import MEMBERSHIP_PARAM, epoch_of, names_of
from swarm.ledger.membership import ChangeRefused, MembershipChange, next_members

if TYPE_CHECKING:
    from swarm.node.node import Node

log = logging.getLogger("swarm.node")

SEEN_MEMORY = 256  # requests this node accepted once, remembered so that late copies of them cost nobody


class MembershipDesk:
    def __init__(self, node: Node):
        self.node = node
        self.pending: MembershipChange | None = None  # the request the next entry we lead will carry
        self.status = "member"  # or "not a member": removed, or waiting to be added
        self._seen: dict[MembershipChange, None] = {}  # requests accepted once (newest last)

    # ------------------------------------------------------------------------------------------- following
    def follow(self) -> None:
        """Bring the node in line with the members its state lists (after a restart, a commit or a resync)."""
        node = self.node
        state = node.state
        members = set(state.members)
        if self.pending is not None and self.pending.epoch != epoch_of(state):
            self.pending = None  # spent: another change committed (perhaps this one)
        if members != node.members:
            added, removed = sorted(members - node.members), sorted(node.members - members)
            node.members.clear()
            node.members.update(members)
            config = Membership(members)
            node.readiness.n, node.readiness.quorum = config.n, config.quorum
            transport = getattr(node, "transport", None)
            if transport is not None and hasattr(transport, "set_members"):
                transport.set_members(sorted(members))
            names = names_of(node.genesis, state)
            log.warning("membership changed at round %d: n=%d f=%d quorum=%d; added %s; removed %s", state.round,
                        config.n, config.f, config.quorum, [names.get(p, p[:12]) for p in added] or "none",
                        [node.genesis.name_of(p) for p in removed] or "none")
        status = "member" if node.id in members else "not a member"
        if status != self.status:
            self.status = status
            if status == "member":
                log.warning("this node is a member of the configuration in force: it contributes")
            else:
                log.warning("this node is not a member of the configuration in force (removed, or waiting to be "
                            "added): it follows the chain but does not contribute")

    @property
    def contributing(self) -> bool:
        return self.status == "member"

    # ------------------------------------------------------------------------------------------- requests
    def submit(self, change: MembershipChange, source: str | None = None) -> None:
        """A request from our API (``source`` None) or a peer: keep it for our proposals and pass it on once.
        Raises ChangeRefused when it cannot apply to the configuration in force."""
        node = self.node
        state = node.state
        next_members(change, node.genesis.swarm_id, names_of(node.genesis, state), epoch_of(state))
        if self.pending == change:
            return
        self.pending = change
        self._seen[change] = None
        while len(self._seen) > SEEN_MEMORY:
            del self._seen[next(iter(self._seen))]
        log.warning("membership change requested by %s: %s %s (%s)", node.genesis.name_of(change.requester),
                    change.op, change.name, change.peer_id[:16])
        data = seal(node.key, MessageType.MEMBERSHIP, node.genesis.swarm_id, 0, state.round,
                    change.to_plain()).encode()
        for peer in sorted(node.members - {node.id, source}):
            node.send(peer, data)

    def on_message(self, peer: str, fields: dict) -> None:
        """A MEMBERSHIP envelope from a member: a request it passes on; bad ones cost it a reject, except late
        copies (of a request this node accepted, or one made for an earlier configuration): a member relaying a
        request that has just committed, or been superseded, did nothing wrong."""
        change = None
        try:
            change = MembershipChange.from_plain(fields)
            self.submit(change, source=peer)
        except (DecodeError, ChangeRefused) as exc:
            if change is not None and (change in self._seen or change.epoch < epoch_of(self.node.state)):
                # a late copy: of a request we accepted, or of one made for an earlier configuration (it committed,
                # perhaps before its first copy reached us, or another change did): its relayer did nothing wrong
                log.debug("late copy of a membership request from %s (%s): ignored", peer[:12], exc)
                return
            self.node.inbound.reject(peer, "bad_membership_change", str(exc))

    def for_proposal(self) -> tuple[dict, tuple[str, ...]] | None:
        """(params, new member ids) our next entry carries, if a request is pending and still applies."""
        node = self.node
        if self.pending is None:
            return None
        try:
            after = next_members(self.pending, node.genesis.swarm_id, names_of(node.genesis, node.state),
                                 epoch_of(node.state))
        except ChangeRefused as exc:
            log.info("membership change no longer applies (%s): dropped", exc)
            self.pending = None
            return None
        return {MEMBERSHIP_PARAM: self.pending.to_plain()}, tuple(sorted(after))

    # ------------------------------------------------------------------------------------------- inspection
    def view(self) -> dict:
        """The configuration in force and the changes the stored chain committed (for /members)."""
        node = self.node
        state = node.state
        names = names_of(node.genesis, state)
        config = Membership(state.members)
        history = []
        for row in node.store.rows():
            change = row.entry.get("params", {}).get(MEMBERSHIP_PARAM) if isinstance(row.entry, dict) else None
            if isinstance(change, dict):
                history.append({"round": row.round, "in_force_from": row.round + 1, "op": change.get("op"),
                                "name": change.get("name"), "peer_id": change.get("peer_id"),
                                "requested_by": node.genesis.name_of(str(change.get("requester")))})
        return {"round": state.round, "since": epoch_of(state), "n": config.n, "f": config.f,
                "quorum": config.quorum, "this_node": self.status,
                "members": [{"peer_id": peer, "name": names.get(peer, peer[:12])} for peer in state.members],
                "pending": None if self.pending is None else {"op": self.pending.op, "name": self.pending.name,
                                                              "peer_id": self.pending.peer_id},
                "history": history}

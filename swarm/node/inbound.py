"""Inbound admission: what a peer's bytes must pass before the node acts on them.

Control messages: not banned, under the per-peer rate (flooding is penalised), a well-formed envelope signed by
the connection's own peer, a decodable consensus message; then the core gets it. Gradient pushes: not banned, a
round the pool accepts, not a payload already held (dropped before any decoding), then the receiver's checks
(signature, membership, round, parent, size, decodable, finite) off the event loop. Every refusal is counted by
reason and lowers the sender's local score, which decides bans; none of it reaches the replicated state, except
one thing that proves itself: two different signed gradients from one member for one round become
gradient-equivocation evidence (swarm/round/gradient.py GradientEquivocation, the two signed heads without the
payloads), held here, one per (sender, round), until the node's next proposal takes them (take_evidence).

Reasons are counted under fixed labels (peer_scores.label): a text a peer could shape never becomes a counter key
or a metric series. Non-members (refused by the transport) are counted but get no score entry, so a stream of fresh
keys cannot grow the score table.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from consensus.messages import CatchUpResponse, Message
from consensus.quorum import signature_work
from crypto.envelope import MessageType, open_envelope, peek as peek_envelope
from crypto.peer_id import PeerIdError, public_key_from_peer_id
from crypto.wire import DecodeError
from swarm.ledger.store import Store
from swarm.node.core_link import decode_message
from swarm.node.peer_scores import PeerScores, label
from swarm.node.records import Metrics
from swarm.round.gradient import Gradient, GradientEquivocation, equivocation_digest, equivocation_from_raw
from swarm.round.pool import Equivocation, GradientPool
from swarm.transport.rate_limit import PeerRateLimiter

log = logging.getLogger("swarm.node")

MAX_CONTROL_ENVELOPE_BYTES = 4 << 20
EVIDENCE_HELD_PER_MEMBER = 2  # gradient-equivocation pieces held per member until a proposal takes them


class Inbound:
    def __init__(self, swarm_id: str, members: set[str], scores: PeerScores, limiter: PeerRateLimiter,
                 pool: GradientPool, store: Store, metrics: Metrics, max_payload_bytes: int,
                 verify: Callable[..., Gradient], parent_for: Callable[[int], bytes | None],
                 on_message: Callable[[str, Message], None], on_gradient: Callable[[Gradient], None],
                 on_duplicate: Callable[[], None]):
        self.swarm_id, self.members = swarm_id, members
        self.scores, self.limiter, self.pool, self.store = scores, limiter, pool, store
        self.max_payload_bytes = max_payload_bytes
        self._verify, self._parent_for = verify, parent_for
        self._on_message, self._on_gradient, self._on_duplicate = on_message, on_gradient, on_duplicate
        self.metrics = metrics
        self.on_membership: Callable[[str, dict], None] | None = None  # membership change requests from members
        self.evidence: dict[bytes, GradientEquivocation] = {}  # by digest (one per sender and round), not yet taken
        self._proved: dict[bytes, int] = {}  # digest -> round of every piece built lately, taken or not
        self._asked_catchup: dict[str, int] = {}  # member -> the round our latest catch-up request to it asked from
        self._late_logged: dict[str, int] = {}  # member -> the round of the last late gradient whose drop was logged

    async def on_control(self, peer: str, data: bytes) -> None:
        if not self._admit(peer, data):
            return
        if not self.limiter.allow(peer, time.monotonic()):
            self.reject(peer, "flooding", f"over {self.limiter.rate:g} control messages/s")
            return
        try:
            envelope = open_envelope(data, self.swarm_id, MAX_CONTROL_ENVELOPE_BYTES)
            if envelope.sender != peer:
                raise DecodeError("relayed", "envelope signer is not the connection's peer")
            if envelope.type == MessageType.MEMBERSHIP and self.on_membership is not None:
                self.scores.reward(peer)
                self.on_membership(peer, envelope.fields)  # checked there (swarm/node/membership_desk.py)
                return
            message = decode_message(envelope)
        except DecodeError as exc:
            self.reject(peer, exc.reason, str(exc))
            return
        extra = signature_work(message) - 1  # certificates inside: paid for before anything is verified
        if extra and self._answers_our_request(peer, message):
            extra = 0  # work we asked for, at the pace of our own requests: never the sender's flood
        if extra and not self.limiter.allow(peer, time.monotonic(), extra):
            self.reject(peer, "flooding", f"a message asking for {extra + 1} signature checks, over budget")
            return
        self.scores.reward(peer)
        self._on_message(peer, message)

    def asked_catchup(self, peer: str, round_: int) -> None:
        """We sent ``peer`` a catch-up request from ``round_``: its one answer is work we asked for. A catch-up
        answer carries up to 64 commit certificates (257 signature checks at n = 4), and the requester asks again
        at once after each full one, so a member serving a long catch-up used to exhaust its own rate budget
        at the node it was helping and be penalised, then banned, for "flooding"."""
        self._asked_catchup[peer] = round_

    def _answers_our_request(self, peer: str, message) -> bool:
        """Whether ``message`` is the catch-up answer ``peer`` owes us (once: a replay of it is charged)."""
        if not isinstance(message, CatchUpResponse) or self._asked_catchup.get(peer) != message.round:
            return False
        del self._asked_catchup[peer]
        return True

    async def on_payload(self, peer: str, digest: bytes, data: bytes) -> None:
        if not self._admit(peer, data):
            return
        try:  # the head only: the event loop neither copies nor parses megabytes just to route them
            _type, _term, round_ = peek_envelope(data, self.max_payload_bytes)
        except DecodeError as exc:
            self.reject(peer, exc.reason, str(exc))
            return
        if not self.pool.accepts_round(round_):
            self.metrics.rejected["stale_or_future_round"] += 1
            if self.pool.stale_bound and round_ < self.pool.current_round:
                self._log_late_drop(peer, round_, f"staleness {self.pool.current_round - round_} is beyond the "
                                                  f"bound {self.pool.stale_bound}")
            return
        if self.pool.by_digest(digest) is not None:  # a re-push (a reconnect, a handover, a peer repeating itself):
            self.metrics.duplicate_pushes += 1       # the same bytes were verified once already, so not again
            self._on_duplicate()
            return
        parent = self._parent_for(round_)
        if parent is None and round_ < self.pool.current_round:  # late, and our state cannot vouch for its base
            self.metrics.rejected["stale_or_future_round"] += 1
            self._log_late_drop(peer, round_, "built on a state this node never had")
            return
        loop = asyncio.get_running_loop()
        try:  # hashing and decoding megabytes: off the event loop
            # The digest is hashed again here, not taken from the transport (which checked it too): a gradient kept
            # under a digest its bytes do not have would be named in entries nobody can fetch, and its sender's
            # real gradient would then look like equivocation. One SHA-256 pass, ~1/8 of the verification's cost.
            gradient = await loop.run_in_executor(None, self._verify, data, round_, parent, None)
            if gradient.digest != digest:
                raise DecodeError("bad_digest", "payload does not hash to the digest it was pushed under")
        except DecodeError as exc:
            self.reject(peer, exc.reason, str(exc))
            return
        self._on_gradient(gradient)

    def keep_gradient(self, gradient: Gradient) -> bool:
        """Add a verified gradient to the pool; False (and an equivocation reported) for a second one from its
        sender for the same round."""
        equivocation = self.pool.add(gradient)
        if equivocation is not None:
            self.reject(gradient.sender, "equivocation", f"two gradients for round {gradient.round}")
            self._hold_evidence(equivocation)
            return False
        return True

    def _log_late_drop(self, peer: str, round_: int, why: str) -> None:
        """Say why a late gradient was dropped, once per member and round (a member's repeats are not logged)."""
        if peer not in self.members or self._late_logged.get(peer) == round_:
            return
        self._late_logged[peer] = round_
        log.info("dropped the late gradient of %s for round %d (pending round %d): %s", peer[:16], round_,
                 self.pool.current_round, why)

    def take_evidence(self) -> list[GradientEquivocation]:
        """The gradient-equivocation evidence found since the last call (for the evidence book)."""
        taken, self.evidence = list(self.evidence.values()), {}
        return taken

    def _hold_evidence(self, equivocation: Equivocation) -> None:
        """Turn a caught equivocation into evidence once per (sender, round), unless held or committed already:
        building it hashes both payloads, ~1 ms per MB on the event loop, so at most once per offence."""
        if equivocation.sender not in self.members:
            return
        try:
            digest = equivocation_digest(public_key_from_peer_id(equivocation.sender), equivocation.round)
        except PeerIdError:
            return
        if digest in self._proved or self.store.evidence_committed(digest):
            return
        evidence = equivocation_from_raw(equivocation.first, equivocation.second)
        if evidence is None or evidence.sender != equivocation.sender or evidence.round != equivocation.round:
            return  # the same signed message twice (re-signed), or bytes that do not decode: no proof
        # The pool holds two rounds at a time, so what we proved for older rounds cannot come up again.
        self._proved = {d: r for d, r in self._proved.items() if r >= self.pool.current_round}
        self._proved[digest] = equivocation.round
        # Bounded: per member the newest EVIDENCE_HELD_PER_MEMBER rounds (a node that is not the leader holds its
        # pieces until it is; older ones would be outside their window by then).
        held = sorted((e.round, d) for d, e in self.evidence.items() if e.sender == equivocation.sender)
        while len(held) >= EVIDENCE_HELD_PER_MEMBER:
            del self.evidence[held.pop(0)[1]]
        self.evidence[digest] = evidence
        log.warning("gradient equivocation by %s in round %d: evidence kept for the next proposal",
                    equivocation.sender[:16], equivocation.round)

    async def on_misbehaviour(self, peer: str, reason: str) -> None:
        if peer in self.members and self.scores.is_banned(peer, time.monotonic()):
            self._count_banned(peer)  # dropped while banned (a stream reset unread, say): counted, not penalised
            return
        self.reject(peer, reason, "reported by the transport")

    def may_fetch(self, peer: str) -> bool:
        """Transport thread: a banned peer gets nothing from us, fetches included."""
        return not self.scores.is_banned(peer, time.monotonic())

    def reject(self, peer: str, reason: str, detail: str) -> None:
        tag = label(reason)
        if tag != reason:
            detail = f"({reason!r}) {detail}"
        self.metrics.rejected[tag] += 1
        if peer not in self.members:
            log.info("refused %s (not a member): %s %s", peer[:16], tag, detail)
            return
        entry = self.scores.penalize(peer, tag, time.monotonic(), detail)
        self.store.put_local_score(peer, entry.score, entry.rejected, tag)

    def _admit(self, peer: str, data: bytes) -> bool:
        """Count what arrived; False for a banned peer, whose messages are dropped unread (counted, not penalised
        again)."""
        self.metrics.bytes_in += len(data)
        if self.scores.is_banned(peer, time.monotonic()):
            self._count_banned(peer)
            return False
        return True

    def _count_banned(self, peer: str) -> None:
        self.metrics.rejected["banned"] += 1
        self.scores.get(peer).reasons["banned"] += 1

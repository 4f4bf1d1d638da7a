"""When a round's gradients are ready to propose, when to hand them to a leader that stays silent, and whether to
train the next round ahead: decisions from counts and the time they are asked at, with no timers, sockets or
threads (sans-I/O, like the consensus core). The node turns ``next_deadline`` into a timer and asks again then.

- Ready: all n gradients are in, or a quorum has been in for ``grace_s`` (a late member gets a short chance to be
  included, a dead one does not hold the round back).
- Handover: a follower that holds a quorum but has seen no proposal ``handover_delay_s`` after readiness (or after
  a leader change) pushes its payloads to the leader once per (term, round): a leader elected right after catching
  up dropped the pushes meant for rounds it had not reached yet.
- Train ahead: the next round's local update may start from our own aggregate of this round while it is being
  agreed on, once per round and never past ``max_rounds``.
"""
from __future__ import annotations

from dataclasses import dataclass

READY_GRACE_S = 0.25
HANDOVER_DELAY_S = 1.0


@dataclass(frozen=True)
class LeaderView:
    """What the handover decision needs to know of consensus at the moment it is asked."""
    term: int
    leader: str | None
    we_follow: bool            # our role is follower of a live term (not leader, not candidate)
    proposal_seen: bool        # a PrePrepare for the pending round arrived in this term


class RoundReadiness:
    def __init__(self, me: str, n: int, quorum: int, grace_s: float = READY_GRACE_S,
                 handover_delay_s: float = HANDOVER_DELAY_S):
        self.me, self.n, self.quorum = me, n, quorum
        self.grace_s, self.handover_delay_s = grace_s, handover_delay_s
        self.round = 0                  # the round whose gradients are being collected
        self.started_at = 0.0           # when its collection began
        self.ready_round = 0            # the newest round found ready
        self.grace_deadline: float | None = None
        self.training_round = 0         # the newest round whose local update was started
        self.ahead_round = 0            # the newest round trained ahead
        self._handed_over: tuple[int, int] | None = None

    def begin(self, round_: int, now: float) -> None:
        """Collection of ``round_`` starts (its parent state is committed)."""
        self.round, self.started_at, self.grace_deadline = round_, now, None

    def observe(self, round_: int, held: int, now: float) -> bool:
        """True exactly once per round: when ``held`` valid gradients on the current parent make it ready."""
        if round_ != self.round or self.ready_round >= round_:
            return False
        grace_over = self.grace_deadline is not None and now >= self.grace_deadline
        if held >= self.n or (grace_over and held >= self.quorum):
            self.ready_round, self.grace_deadline = round_, None
            return True
        if held >= self.quorum and self.grace_deadline is None:
            self.grace_deadline = now + self.grace_s
        return False

    def next_deadline(self) -> float | None:
        """When ``observe`` must be asked again even if nothing arrives (the end of the grace period)."""
        return self.grace_deadline if self.ready_round < self.round else None

    def should_hand_over(self, round_: int, held: int, view: LeaderView) -> bool:
        """Asked ``handover_delay_s`` after readiness or a leader change; True at most once per (term, round)."""
        if (round_ != self.round or view.leader is None or view.leader == self.me or not view.we_follow
                or view.proposal_seen or self._handed_over == (view.term, round_) or held < self.quorum):
            return False
        self._handed_over = (view.term, round_)
        return True

    def start_training(self, round_: int, max_rounds: int | None) -> bool:
        """True when this round's local update should start now (once per round, and not past max_rounds)."""
        if self.training_round >= round_ or (max_rounds is not None and round_ > max_rounds):
            return False
        self.training_round = round_
        return True

    def may_train_ahead(self, round_: int, max_rounds: int | None) -> bool:
        """``round_`` is the one after the pending round: its update may start from our own aggregate now."""
        if round_ != self.round + 1 or self.training_round >= round_ or self.ahead_round >= round_:
            return False
        if max_rounds is not None and round_ > max_rounds:
            return False
        self.ahead_round = round_
        return True

"""Verified gradients waiting for their round, one per sender, with equivocation caught on arrival.

The pool keeps the current round and the next one only (a node that runs ahead is held there, one that sends for
an old round is ignored), so a flooding peer cannot make it grow: at most two rounds times n members. With late
updates kept (genesis ``staleness.bound`` B > 0, swarm/ledger/staleness.py) it also keeps the B rounds before the
current one, whose gradients a leader may still name: at most B + 2 rounds times n members.
"""
from __future__ import annotations

from dataclasses import dataclass

from swarm.round.gradient import Gradient


@dataclass(frozen=True)
class Equivocation:
    """Two different signed gradients from one sender for one round: proof, since both carry its signature."""
    sender: str
    round: int
    first: bytes
    second: bytes


class GradientPool:
    def __init__(self, stale_bound: int = 0) -> None:
        self.stale_bound = stale_bound
        self._by_round: dict[int, dict[str, Gradient]] = {}
        self._by_digest: dict[bytes, Gradient] = {}
        self.current_round = 1
        self.previous: list[Gradient] = []  # the last finished round's gradients (what an attacker observed)

    def advance(self, round_: int) -> None:
        """Forget everything before ``round_`` (it is committed or abandoned), except the ``stale_bound`` rounds
        before it."""
        if round_ > self.current_round and self.current_round in self._by_round:
            self.previous = self.for_round(self.current_round)
        self.current_round = round_
        for old in [r for r in self._by_round if r < round_ - self.stale_bound]:
            for gradient in self._by_round.pop(old).values():
                self._by_digest.pop(gradient.digest, None)

    def accepts_round(self, round_: int) -> bool:
        return self.current_round - self.stale_bound <= round_ <= self.current_round + 1

    def late(self, round_: int) -> list[Gradient]:
        """The gradients kept for the rounds before ``round_`` (candidates for late inclusion), by round, sender."""
        return [g for r in sorted(self._by_round) if r < round_ for g in self.for_round(r)]

    def add(self, gradient: Gradient) -> Equivocation | None:
        """Keep ``gradient``; a second, different one from the same sender for the same round is an equivocation."""
        if not self.accepts_round(gradient.round):
            return None
        slot = self._by_round.setdefault(gradient.round, {})
        existing = slot.get(gradient.sender)
        if existing is not None:
            if existing.digest == gradient.digest:
                return None
            return Equivocation(gradient.sender, gradient.round, existing.raw, gradient.raw)
        slot[gradient.sender] = gradient
        self._by_digest[gradient.digest] = gradient
        return None

    def for_round(self, round_: int, parent: bytes | None = None) -> list[Gradient]:
        """The round's gradients by sender; with ``parent``, only those built on that state (a gradient that
        arrived for the next round before we held its parent was not checked against it)."""
        kept = self._by_round.get(round_, {}).values()
        return sorted((g for g in kept if parent is None or g.parent == parent), key=lambda g: g.sender)

    def count(self, round_: int, parent: bytes | None = None) -> int:
        return len(self.for_round(round_, parent))

    def by_digest(self, digest: bytes) -> Gradient | None:
        return self._by_digest.get(digest)

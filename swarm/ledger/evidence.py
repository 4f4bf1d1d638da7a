"""Equivocation evidence on its way into the chain: what a node keeps for its next proposal, and what is committed.

Two kinds: a leader's two PrePrepares for one (term, round) (consensus.messages.Evidence; the consensus core
reports each piece it takes in, at most one a committed round per accused member, see
consensus.replica._evidence_wanted), and a member's two gradients for one round
(swarm.round.gradient.GradientEquivocation; the node's inbound finds them, one per (sender, round), and gives
them to the book before each proposal; one is proposed only within its window of rounds,
entry_rules.GRADIENT_EVIDENCE_ROUNDS). A node keeps a few uncommitted pieces per member, a leader's entry carries one
per member (an entry convicts a member once, however many pieces it holds), and a piece leaves once an entry
commits it. Digests of committed pieces live in the store (a table, looked up by digest), so a piece seen again
after a restart is not proposed a second time.
"""
from __future__ import annotations

from consensus.messages import Evidence
from swarm.ledger.entry_rules import (MAX_ENTRY_EVIDENCE, accused, evidence_piece, evidence_to_entry,
                                      gradient_evidence_in_window)
from swarm.ledger.store import Store
from swarm.round.gradient import GradientEquivocation

Piece = Evidence | GradientEquivocation

PENDING_PER_MEMBER = 2


class EvidenceBook:
    def __init__(self, store: Store):
        self.store = store
        self.pending: dict[bytes, Piece] = {}  # by digest, not yet committed

    def known(self, digest: bytes) -> bool:
        """Waiting or committed already (a cheap test before building a piece)."""
        return digest in self.pending or self.store.evidence_committed(digest)

    def keep(self, evidence: Piece) -> bool:
        """Keep a piece for a later proposal unless it is committed already or the member it accuses has
        PENDING_PER_MEMBER pieces waiting (a member that keeps equivocating keeps producing new ones)."""
        digest = evidence.digest()
        if digest in self.pending or self.store.evidence_committed(digest):
            return False
        member = accused(evidence)
        if sum(1 for e in self.pending.values() if accused(e) == member) >= PENDING_PER_MEMBER:
            return False
        self.pending[digest] = evidence
        return True

    def expire(self, round_: int) -> None:
        """Drop gradient evidence too old for the entry of ``round_`` (outside its window for good)."""
        for digest, evidence in list(self.pending.items()):
            if (isinstance(evidence, GradientEquivocation) and evidence.round < round_
                    and not gradient_evidence_in_window(evidence.round, round_)):
                del self.pending[digest]

    def for_proposal(self, round_: int | None = None) -> list:
        """The plain pieces a leader's entry (of ``round_``) carries: the first waiting piece (by digest) per
        accused member. Gradient evidence whose window has passed is dropped; one whose window has not begun
        waits."""
        if round_ is not None:
            self.expire(round_)
        first_per_member: dict[str, Piece] = {}
        for _digest, evidence in sorted(self.pending.items()):
            if (round_ is not None and isinstance(evidence, GradientEquivocation)
                    and not gradient_evidence_in_window(evidence.round, round_)):
                continue
            first_per_member.setdefault(accused(evidence), evidence)
        return [evidence_to_entry(e) for e in list(first_per_member.values())[:MAX_ENTRY_EVIDENCE]]

    def on_commit(self, plain_pieces: list, round_: int) -> None:
        """The entry of ``round_`` carrying these (already verified) pieces committed: record them, stop waiting
        for them."""
        now_committed = sorted({evidence_piece(item).digest() for item in plain_pieces})
        if now_committed:
            self.store.add_committed_evidence(now_committed, round_)
            for digest in now_committed:
                self.pending.pop(digest, None)

"""Equivocation evidence on its way into the chain: what a node keeps for its next proposal, and what is committed.

The consensus core reports each piece it takes in (at most one a committed round per accused member, see
consensus.replica._evidence_wanted). A node keeps a few uncommitted pieces per member, a leader's entry carries one
per member (an entry convicts a member once, however many pieces it holds), and a piece leaves once an entry
commits it. Digests of committed pieces live in the store (a table, looked up by digest), so a piece seen again
after a restart is not proposed a second time.
"""
from __future__ import annotations

from consensus.messages import Evidence, evidence_from_plain, evidence_to_plain
from swarm.ledger.entry_rules import MAX_ENTRY_EVIDENCE
from swarm.ledger.store import Store

PENDING_PER_MEMBER = 2


class EvidenceBook:
    def __init__(self, store: Store):
        self.store = store
        self.pending: dict[bytes, Evidence] = {}  # by digest, not yet committed

    def keep(self, evidence: Evidence) -> bool:
        """Keep a piece for a later proposal unless it is committed already or the member it accuses has
        PENDING_PER_MEMBER pieces waiting (a member that keeps equivocating keeps producing new ones)."""
        digest = evidence.digest()
        if digest in self.pending or self.store.evidence_committed(digest):
            return False
        if sum(1 for e in self.pending.values() if e.leader == evidence.leader) >= PENDING_PER_MEMBER:
            return False
        self.pending[digest] = evidence
        return True

    def for_proposal(self) -> list:
        """The plain pieces a leader's entry carries: the first waiting piece (by digest) per accused member."""
        first_per_member: dict[str, Evidence] = {}
        for _digest, evidence in sorted(self.pending.items()):
            first_per_member.setdefault(evidence.leader, evidence)
        return [evidence_to_plain(e) for e in list(first_per_member.values())[:MAX_ENTRY_EVIDENCE]]

    def on_commit(self, plain_pieces: list, round_: int) -> None:
        """The entry of ``round_`` carrying these (already verified) pieces committed: record them, stop waiting
        for them."""
        now_committed = sorted({evidence_from_plain(item).digest() for item in plain_pieces})
        if now_committed:
            self.store.add_committed_evidence(now_committed, round_)
            for digest in now_committed:
                self.pending.pop(digest, None)

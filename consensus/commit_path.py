"""The replica's commit path, PBFT-shaped: the leader proposes (PrePrepare), replicas validate and Prepare, 2f+1
Prepares lock the entry (a prepared certificate, persisted before Commit is sent), 2f+1 Commits commit it, and it is
persisted and applied. Part of :class:`consensus.replica.Replica`, whose state it reads and writes; kept apart so
that each file holds one part of the protocol."""
from __future__ import annotations

from .actions import Apply, BuildProposal, PersistEntry, ValidateProposal
from .bounds import EVIDENCE_MEMORY_ROUNDS, record_proposal, record_signature
from .events import ValidationResult
from .messages import (Commit, CommitCertificate, CommittedEntry, Entry, Evidence, Prepare, PreparedCertificate,
                       PrePrepare)
from .roles import FOLLOWER, LEADER


class CommitPath:
    def _propose_if_ready(self) -> None:
        if self.role != LEADER or self.term_epoch != self.epoch:
            return  # a term certificate proposes only rounds of the configuration it was counted in
        key = (self.view, self.pending)
        if key in self.proposed:
            return
        locked = self.required.get(self.pending)
        if locked is not None:
            return self._propose(locked.entry)
        if self.payloads_ready_round >= self.pending and key not in self.build_requested:
            self.build_requested.add(key)
            self._out.append(BuildProposal(self.pending, self.head_state_hash))

    def _on_proposal_built(self, entry: Entry) -> None:
        key = (self.view, self.pending)
        if (self.role == LEADER and key in self.build_requested and key not in self.proposed
                and self.pending not in self.required and entry.round == self.pending
                and entry.parent_state_hash == self.head_state_hash):
            self._propose(entry)

    def _propose(self, entry: Entry) -> None:
        term, rnd = self.view, self.pending
        self.proposed.add((term, rnd))
        pp = self._signed(PrePrepare(term, rnd, entry, self.id))
        self.my_preprepare = pp
        self.entries[entry.digest()] = entry
        self.seen_preprepares[(self.id, term, rnd)] = (entry.digest(), pp.sig)
        self._arm_round_timer()
        self._persist(prepared_term=term, prepared_round=rnd, prepared_digest=entry.digest())
        self._broadcast(pp)
        self._send_prepare(term, rnd, entry.digest())

    def _on_preprepare(self, msg: PrePrepare) -> None:
        digest = msg.digest
        key = (msg.sender, msg.term, msg.round)
        seen = self.seen_preprepares.get(key)
        if seen is not None and seen[0] != digest:
            return self._equivocation(Evidence(msg.sender, msg.term, msg.round, seen[0], seen[1], digest, msg.sig))
        if seen is None and msg.term >= self.view and self.pending <= msg.round <= self.pending + 1:
            record_proposal(self.seen_preprepares, msg.sender, msg.term, msg.round, digest, msg.sig)
        if msg.round <= self.committed_round:
            return self._serve_catchup(msg.sender, msg.round)
        if msg.term > self.view or (msg.term == self.view and self.leader is None):
            return self._request_catchup(msg.sender)  # we may be missing the NewTerm: it comes back with catch-up
        if msg.term < self.view and self._may_step_back(msg.term):
            return self._request_catchup(msg.sender)  # the NewTerm of the term the others kept comes back with it
        if msg.term < self.view or msg.sender != self.leader or self.role != FOLLOWER or self.term_epoch != self.epoch:
            return
        if msg.round > self.pending:
            return self._request_catchup(msg.sender)
        prepared_key = (self.hard.prepared_term, self.hard.prepared_round)
        if prepared_key == (msg.term, msg.round):
            if self.hard.prepared_digest == digest:
                self._retransmit(msg.term, msg.round)
            return
        if prepared_key > (msg.term, msg.round):
            return
        required = self.required.get(msg.round)
        if msg.entry.parent_state_hash != self.head_state_hash or (required is not None and required.digest != digest):
            return self._give_up(f"the leader's proposal for round {msg.round} breaks the chain or a lock")
        self.entries[digest] = msg.entry
        if (msg.term, msg.round) not in self.awaiting_validation:
            self.awaiting_validation[(msg.term, msg.round)] = digest
            self._arm_round_timer()
            self._out.append(ValidateProposal(msg.term, msg.round, msg.entry))

    def _on_validation(self, ev: ValidationResult) -> None:
        if (self.awaiting_validation.get((ev.term, ev.round)) != ev.digest or ev.term != self.view
                or self.role != FOLLOWER or ev.round != self.pending):
            return
        if not ev.ok:
            return self._give_up(f"the leader's proposal for round {ev.round} is invalid")
        if (self.hard.prepared_term, self.hard.prepared_round) >= (ev.term, ev.round):
            return
        self._persist(prepared_term=ev.term, prepared_round=ev.round, prepared_digest=ev.digest)
        self._send_prepare(ev.term, ev.round, ev.digest)

    def _send_prepare(self, term: int, rnd: int, digest: bytes) -> None:
        if not self.is_member:
            return
        msg = self._signed(Prepare(term, rnd, digest, self.id))
        self.sent_prepare[(term, rnd)] = msg
        self._broadcast(msg)
        self.prepares.setdefault((term, rnd, digest), {})[self.id] = msg.sig
        self._check_prepared(term, rnd, digest)

    def _retransmit(self, term: int, rnd: int) -> None:
        for sent in (self.sent_prepare.get((term, rnd)), self.sent_commit.get((term, rnd))):
            if sent is not None:
                self._broadcast(sent)

    def _on_prepare(self, msg: Prepare) -> None:
        if msg.term != self.view or msg.round != self.pending or not record_signature(
                self.prepares, msg.term, msg.round, msg.digest, msg.sender, msg.sig):
            return
        self._check_prepared(msg.term, msg.round, msg.digest)

    def _check_prepared(self, term: int, rnd: int, digest: bytes) -> None:
        """2f+1 Prepares matching our own: lock the certificate (persist first), then Commit."""
        if (term != self.view or self.role not in (FOLLOWER, LEADER) or (term, rnd) in self.sent_commit
                or (self.hard.prepared_term, self.hard.prepared_round, self.hard.prepared_digest) != (term, rnd, digest)):
            return
        sigs = self._counted(self.prepares, (term, rnd, digest))
        if len(sigs) < self.membership.quorum or digest not in self.entries or not self.is_member:
            return
        cert = PreparedCertificate(term, rnd, self.entries[digest], tuple(sorted(sigs.items())))
        if cert.rank() > self.hard.lock_rank():
            self._persist(lock=cert)
        msg = self._signed(Commit(term, rnd, digest, self.id))
        self.sent_commit[(term, rnd)] = msg
        self._broadcast(msg)
        self.commits.setdefault((term, rnd, digest), {})[self.id] = msg.sig
        self._check_committed(term, rnd, digest)

    def _counted(self, table, key) -> dict[str, bytes]:
        """The signatures on ``key`` that count: those of the configuration in force at its round (a table may
        still hold some that a member gave before a change took it out)."""
        config = self.configs.at(key[1])
        return {signer: sig for signer, sig in table.get(key, {}).items() if signer in config}

    def _on_commit(self, msg: Commit) -> None:
        if msg.round < self.pending:
            if (msg.term, msg.round, msg.digest) == self.newest_commit_key and msg.sender in self.configs.at(msg.round):
                self.newest_commit_sigs.setdefault(msg.sender, msg.sig)  # late, but it counts (see __init__)
            return
        if msg.round > self.pending + 1:
            return self._request_catchup(msg.sender)
        if record_signature(self.commits, msg.term, msg.round, msg.digest, msg.sender, msg.sig):
            self._check_committed(msg.term, msg.round, msg.digest)

    def _check_committed(self, term: int, rnd: int, digest: bytes) -> None:
        """2f+1 Commits (any term: a commit certificate is final) for our next round: persist, then apply."""
        sigs = self._counted(self.commits, (term, rnd, digest))
        if len(sigs) < self.membership.quorum:
            return
        entry = self.entries.get(digest)
        if rnd != self.pending or entry is None or entry.round != rnd or entry.parent_state_hash != self.head_state_hash:
            return self._request_catchup(next(s for s in sorted(sigs) if s != self.id) if len(sigs) > 1 else
                                         (self.leader or self.id))
        self._commit(CommittedEntry(entry, CommitCertificate(term, rnd, digest, tuple(sorted(sigs.items())))))

    def _commit(self, ce: CommittedEntry) -> None:
        self.newest_commit_key = (ce.cert.term, ce.entry.round, ce.cert.digest)
        self.newest_commit_sigs = {**self._counted(self.commits, self.newest_commit_key), **dict(ce.cert.signatures)}
        self._remember(ce)
        self._out.append(PersistEntry(ce))
        self._out.append(Apply(ce))
        if self.round_started is not None:
            self.timing.observe_round(self.now - self.round_started)
        self.timing.failed_terms = 0  # progress (catch-up included): the swarm works, back-off is over
        self.round_started = None
        self.round_deadline = None
        done = ce.entry.round
        for table in (self.prepares, self.commits):
            for k in [k for k in table if k[1] <= done]:
                del table[k]
        self.entries = {d: e for d, e in self.entries.items() if e.round > done}
        self.awaiting_validation = {k: d for k, d in self.awaiting_validation.items() if k[1] > done}
        self.seen_preprepares = {k: v for k, v in self.seen_preprepares.items() if k[2] > done}
        self.reported = {d: seen for d, seen in self.reported.items() if seen[0] > done - EVIDENCE_MEMORY_ROUNDS}
        if self.configs.learn(ce) is not None:
            self._reconfigure(done)
        self._arm_round_timer()
        self._propose_if_ready()
        # Commits for the next round may already be here (we were the slow one).
        for (t, r, d) in [k for k in self.commits if k[1] == self.pending]:
            self._check_committed(t, r, d)

"""The replica's terms and elections, Raft-shaped: entering a term, standing as candidate, voting once per term,
winning with a term certificate of 2f+1 votes and announcing it (NewTerm), stepping back to a lower live term,
and giving up on a leader. Part of :class:`consensus.replica.Replica`, whose state it reads and writes; kept apart
so that each file holds one part of the protocol."""
from __future__ import annotations

from dataclasses import replace

from . import election
from .messages import NewTerm, RequestVote, Timeout, Vote
from .roles import CANDIDATE, ELECTING, FOLLOWER, LEADER


class TermRules:
    def _enter_electing(self, term: int, now: float, announce: bool = True) -> None:
        """Enter ``term`` with no leader known: stop working in older terms, ask for a new leader."""
        if term > self.hard.term:
            if self.hard.term == 0 and not announce:
                self.hard = replace(self.hard, term=term)  # genesis: written with the first persisted change
            else:
                self._persist(term=term)
        self.view = term
        self.role, self.leader, self.announcement, self.required, self.votes = ELECTING, None, None, {}, {}
        self.my_vote = None
        self.next_heartbeat = self.heartbeat_deadline = self.round_deadline = None
        self.next_claim = now + self._claim_interval()
        self.term_epoch = None
        if self.is_member:
            self.highest_timeout[self.id] = max(self.highest_timeout.get(self.id, 0), term)
        if announce:
            self._broadcast(self._signed(Timeout(term, self.committed_round, self.id)))
        self.term_entered_at = now
        slot = self.timing.candidacy_slot()
        self.candidacy_at = None  # and _term_is_live(); outside the configuration, never
        if self.is_member and self.hard.voted_term < term:
            my_slot = election.candidate_rank(term, self.id, self.membership.members) * slot
            self.candidacy_at = now + my_slot + self.rng.random() * slot / 4
        self.election_deadline = now + self.timing.election_timeout() + slot * (self.membership.f + 2)

    def _claim_interval(self) -> float:
        return 2 * self.cfg.timing.heartbeat_interval

    def _give_up(self, why: str) -> None:
        """The current leader (or election) failed: move to the next term."""
        self.last_term_change = why
        self._remember_failed_leader()
        self.timing.term_failed()
        # A term entered earlier but stepped back from (never voted in) is the next one; else the one after ours.
        self._enter_electing(self.hard.term if self.hard.term > self.view else self.view + 1, self.now)

    def _on_timeout(self, msg: Timeout) -> None:
        self._term_claim(msg.sender, msg.term)

    def _term_claim(self, sender: str, term: int) -> None:
        """``sender`` signed that it is in ``term`` (a Timeout or a RequestVote): f+1 such claims pull us up."""
        if term > self.highest_timeout.get(sender, 0):
            self.highest_timeout[sender] = term
        target = election.adoptable_term(self.highest_timeout, self.view, self.membership.weak_quorum)
        if target is not None:
            self.last_term_change = f"f+1 members moved to term {target} or above"
            self._remember_failed_leader()
            self.timing.term_failed()
            self._enter_electing(target, self.now)

    def _term_is_live(self, term: int) -> bool:
        """2f+1 members entered ``term`` (genesis term 1: everyone): only then can an election in it succeed, so only
        then does this node stand as candidate. A node that entered a term alone (cut off from the rest) thus never
        votes in it and can still step back to the leader the others kept (see _may_step_back)."""
        return term <= 1 or election.term_entered_by_quorum(self.highest_timeout, term, self.membership.quorum)

    def _may_step_back(self, term: int) -> bool:
        """May this node follow a certified leader of ``term`` below the term it is in?

        Only while it waits alone in its term (no leader, no candidacy, fewer than 2f+1 members entered it) and it has
        neither voted nor prepared in any term above ``term``. Safety: a term certificate above ``term`` never holds
        its vote, so no later leader can miss a lock this node takes in ``term`` (PBFT's view-change argument needs
        exactly that: no prepare in a lower term after a vote in a higher one); its persisted term never goes down,
        and its prepare state (term, round) keeps rising."""
        return (term < self.view and self.leader is None and self.role == ELECTING
                and max(self.hard.voted_term, self.hard.prepared_term) <= term and not self._term_is_live(self.view))

    def _lock_config(self, vote: Vote):
        """The configuration a vote's lock is counted in: the one in force at the lock's round."""
        return None if vote.lock is None else self.configs.at(vote.lock.round)

    def _remember_failed_leader(self) -> None:
        # Itself included: voters that gave up on it refuse it, so standing would only waste its own vote (with f
        # nodes down, every live vote is needed).
        if self.leader is not None and self.membership.f > 0:
            if self.leader in self.failed_leaders:
                self.failed_leaders.remove(self.leader)
            self.failed_leaders = (self.failed_leaders + [self.leader])[-self.membership.f:]

    def _stand_as_candidate(self) -> None:
        if not self.is_member:
            return
        term = self.view
        self.candidacy_at = None
        self._persist(voted_term=term, voted_for=self.id)
        self.role = CANDIDATE
        self.my_vote = self._signed(Vote(term, self.committed_round, self.id, self.hard.lock, self.id))
        self.votes = {self.id: self.my_vote}
        self._broadcast(self._signed(RequestVote(term, self.committed_round, self.id)))
        self.next_heartbeat = self.now + self.cfg.timing.heartbeat_interval  # RequestVote retransmission
        self._maybe_win()

    def _on_request_vote(self, msg: RequestVote) -> None:
        self._term_claim(msg.sender, msg.term)
        if not self.is_member:
            return
        if (self.my_vote is not None and self.my_vote.term == msg.term and self.my_vote.candidate == msg.sender):
            self._send(msg.sender, self.my_vote)  # retransmission: the same vote again
            return
        slot = self.timing.candidacy_slot()
        opens = self.term_entered_at + slot * election.candidate_rank(msg.term, msg.sender, self.membership.members)
        if not election.grants_vote(msg.term, msg.round, self.view, self.hard.voted_term, self.committed_round,
                                    self.leader is not None, self.now >= opens - slot / 2) \
                or msg.sender in self.failed_leaders:
            return
        self._persist(voted_term=msg.term, voted_for=msg.sender)
        self.candidacy_at = None
        self.my_vote = self._signed(Vote(msg.term, self.committed_round, msg.sender, self.hard.lock, self.id))
        self._send(msg.sender, self.my_vote)

    def _on_vote(self, vote: Vote) -> None:
        if self.role != CANDIDATE or vote.term != self.view or vote.candidate != self.id:
            return
        if not self.verify.vote(vote, self._lock_config(vote)):
            self._reject("invalid_certificate")  # its signature was checked on arrival: the lock is bad
            return
        self.votes[vote.sender] = vote
        self._maybe_win()

    def _maybe_win(self) -> None:
        if len(self.votes) < self.membership.quorum:
            return
        term = self.view
        votes = tuple(self.votes[s] for s in sorted(self.votes)[:self.membership.quorum])
        announcement = self._signed(NewTerm(term, votes, self.id, epoch=self.epoch))
        self.role, self.leader, self.announcement = LEADER, self.id, announcement
        self.term_epoch = self.epoch
        self.required = election.required_reproposals(votes)
        self.candidacy_at = self.election_deadline = self.heartbeat_deadline = None
        self.next_heartbeat = self.now + self.cfg.timing.heartbeat_interval
        self._reset_round_state()
        self._broadcast(announcement)
        self._arm_round_timer()
        self._propose_if_ready()

    def _on_new_term(self, msg: NewTerm) -> None:
        if (msg.term < self.view and not self._may_step_back(msg.term)) or (
                msg.term == self.view and self.leader is not None):
            return
        if msg.sender == self.id:
            return
        if msg.epoch != self.epoch or not self.is_member:
            if msg.epoch > self.epoch:
                self._request_catchup(msg.sender)  # a configuration we have not committed yet: fetch it first
            return
        if not self.verify.term_certificate(msg, self.configs.at):
            self._reject("invalid_certificate")
            return
        if msg.term > self.hard.term:
            self._persist(term=msg.term)
        self.view = msg.term
        self.highest_timeout[self.id] = max(self.highest_timeout.get(self.id, 0), msg.term)
        self.role, self.leader, self.announcement = FOLLOWER, msg.sender, msg
        self.term_epoch = msg.epoch
        self.required = election.required_reproposals(msg.votes)
        self.candidacy_at = self.election_deadline = self.next_heartbeat = None
        self.heartbeat_deadline = self.now + self.timing.leader_silence_timeout()
        self.round_deadline = None
        self._reset_round_state()
        self._arm_round_timer()

"""The replica: one node's consensus state machine. ``step(now, event) -> [actions]``; nothing else happens.

Roles per term: ELECTING (term entered, no leader known), CANDIDATE, FOLLOWER, LEADER. One round is in flight at a
time (round r needs state_{r-1}); ``pending`` = committed round + 1.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from . import election
from .actions import (Action, Apply, Broadcast, BuildProposal, LoadEntries, PersistEntry, PersistHardState,
                      ReportEvidence, Send, ValidateProposal, WakeAt)
from .bounds import record_proposal, record_signature
from .events import EntriesLoaded, Event, PayloadsReady, ProposalBuilt, Received, Tick, ValidationResult
from .messages import (CatchUpRequest, CatchUpResponse, Commit, CommitCertificate, CommittedEntry, Entry, Evidence,
                       EvidenceMessage, Heartbeat, MAX_CATCHUP_ENTRIES, NewTerm, PrePrepare, PreparedCertificate,
                       Prepare, RequestVote, Timeout, Vote)
from .quorum import Crypto, Membership, Verifier, sign_fields
from .state import HardState, PersistedState
from .timing import AdaptiveTimeouts, TimingConfig

ELECTING, CANDIDATE, FOLLOWER, LEADER = "electing", "candidate", "follower", "leader"
# Evidence digests remembered this many rounds after they came in: enough for the leaders of the next rounds to
# commit them; the node keeps the digests of committed evidence, so a piece seen again later is not proposed twice.
EVIDENCE_MEMORY_ROUNDS = 16


@dataclass
class Config:
    swarm_id: str
    node_id: str
    members: list[str]
    genesis_state_hash: bytes
    timing: TimingConfig = field(default_factory=TimingConfig)
    quorum_override: int | None = None  # test hook only: plant a wrong quorum and watch the simulator catch it
    # Committed entries kept in memory to serve catch-up; older ones come from the node's store (LoadEntries), so
    # memory stays flat however long the swarm runs.
    memory_rounds: int = 256


class Replica:
    def __init__(self, config: Config, crypto: Crypto, persisted: PersistedState, rng: random.Random, now: float):
        self.cfg = config
        self.id = config.node_id
        self.membership = Membership(config.members, config.quorum_override)
        if self.id not in self.membership:
            raise ValueError(f"{self.id} is not a member")
        self.crypto = crypto
        self.verify = Verifier(config.swarm_id, self.membership, crypto)
        self.rng = rng
        self.timing = AdaptiveTimeouts(config.timing)
        self.hard: HardState = persisted.hard
        # The term this node works in. Usually hard.term (the highest term it entered); lower only after it stepped
        # back to follow the leader of a lower term from a higher term that it entered without a quorum and never
        # voted in (see _may_step_back).
        self.view = 0
        # The newest committed entries, rounds chain_base + 1 .. committed_round (see _remember).
        self.chain: list[CommittedEntry] = list(persisted.chain)
        self.chain_base = persisted.base_round
        self.loads_served: dict[str, float] = {}  # peer -> when we last read old entries from the store for it
        self.role = ELECTING
        self.leader: str | None = None
        self.announcement: NewTerm | None = None  # the NewTerm of our current term, forwarded to laggards
        self.required: dict[int, PreparedCertificate] = {}
        self.highest_timeout: dict[str, int] = {}
        self.votes: dict[str, Vote] = {}
        self.my_vote: Vote | None = None
        self._reset_round_state()
        self.payloads_ready_round = 0
        self.seen_preprepares: dict[tuple[str, int, int], tuple[bytes, bytes]] = {}
        # Equivocation evidence taken in: digest -> (committed round when it came, accused member), forgotten after
        # EVIDENCE_MEMORY_ROUNDS; and per accused member the committed round of its newest piece (_evidence_wanted).
        self.reported: dict[bytes, tuple[int, str]] = {}
        self.evidence_round: dict[str, int] = {}
        self.evidence_term: dict[str, int] = {}  # accused -> the term of the newest piece against it as our leader
        # Leaders of the last f terms this node gave up on: it will not vote them straight back in, so a faulty node
        # that always stands first cannot hold the swarm hostage term after term.
        self.failed_leaders: list[str] = []
        self.last_catchup_request = -1e18
        # The newest committed slot (term, round, digest) and every valid Commit seen for it, those that arrived
        # after the certificate formed included: the next leader carries them all as the previous certificate, so
        # a member whose Commit merely arrived fourth still earns its consensus participation.
        self.newest_commit_key: tuple[int, int, bytes] | None = None
        self.newest_commit_sigs: dict[str, bytes] = {}
        self.last_term_change = "genesis"  # why this node last moved to a new term (for logs)
        self.messages_sent = 0
        self._out: list[Action] = []
        self.now = now
        # Timers (absolute times; None = off).
        self.heartbeat_deadline: float | None = None
        self.round_deadline: float | None = None
        self.round_started: float | None = None
        self.candidacy_at: float | None = None
        self.election_deadline: float | None = None
        self.next_heartbeat: float | None = None
        self.next_claim: float | None = None  # while electing: when to repeat our Timeout (a lost one must not stall)
        # Term 1 is the genesis term, entered by everyone at once (0 means "no vote cast yet").
        self._enter_electing(max(1, self.hard.term), now, announce=False)

    # ------------------------------------------------------------------------------------------- public surface

    @property
    def term(self) -> int:
        """The term this node works in (its persisted term, ``hard.term``, may be higher; see _may_step_back)."""
        return self.view

    def footprint(self) -> dict[str, int]:
        """Per member, the records its own messages hold in the tables a member can feed at will: Prepare and Commit
        signatures, PrePrepares kept for equivocation checks, and evidence taken in against it. Flat however much
        a member sends (consensus.bounds); the simulator checks it."""
        count: dict[str, int] = dict.fromkeys(self.membership.members, 0)
        for table in (self.prepares, self.commits):
            for sigs in table.values():
                for sender in sigs:
                    count[sender] += 1
        for sender, _term, _round in self.seen_preprepares:
            count[sender] += 1
        for _round, accused in self.reported.values():
            count[accused] += 1
        return count

    @property
    def committed_round(self) -> int:
        return self.chain_base + len(self.chain)

    @property
    def pending(self) -> int:
        return self.committed_round + 1

    @property
    def head_state_hash(self) -> bytes:
        return self.chain[-1].entry.state_hash if self.chain else self.cfg.genesis_state_hash

    def term_is_live(self, term: int) -> bool:
        """Whether 2f+1 members are known to have entered ``term`` (for status and logs)."""
        return self._term_is_live(term)

    def term_claims(self) -> dict[str, int]:
        """The highest term each member is known to have entered (for status and logs)."""
        return dict(self.highest_timeout)

    def certificate_with_late_commits(self, round_: int) -> CommitCertificate | None:
        """The commit certificate of ``round_`` (the newest committed round) holding every matching Commit this
        node has seen, a superset of the quorum it committed with; None for any other round."""
        if self.newest_commit_key is None or self.newest_commit_key[1] != round_:
            return None
        term, rnd, digest = self.newest_commit_key
        return CommitCertificate(term, rnd, digest, tuple(sorted(self.newest_commit_sigs.items())))

    def step(self, now: float, event: Event) -> list[Action]:
        """Feed one event; get the actions to execute in order."""
        self.now = max(self.now, now)
        self._out = []
        if isinstance(event, Received):
            self._on_message(event.message)
        elif isinstance(event, Tick):
            self._on_tick()
        elif isinstance(event, PayloadsReady):
            self._on_payloads_ready(event.round)
        elif isinstance(event, ProposalBuilt):
            self._on_proposal_built(event.entry)
        elif isinstance(event, ValidationResult):
            self._on_validation(event)
        elif isinstance(event, EntriesLoaded):
            self._on_entries_loaded(event)
        else:
            raise TypeError(f"unknown event {type(event).__name__}")
        self._out.append(WakeAt(self._next_wake()))
        out, self._out = self._out, []
        return out

    # ------------------------------------------------------------------------------------------- helpers

    def _sign(self, kind: str, term: int, rnd: int, digest: bytes) -> bytes:
        return sign_fields(self.cfg.swarm_id, self.crypto, kind, term, rnd, digest, self.id)

    def _signed(self, msg):
        return replace(msg, sig=self._sign(msg.kind, msg.term, msg.round, msg.digest))

    def _broadcast(self, msg) -> None:
        self.messages_sent += self.membership.n - 1
        self._out.append(Broadcast(msg))

    def _send(self, to: str, msg) -> None:
        if to != self.id:
            self.messages_sent += 1
            self._out.append(Send(to, msg))

    def _persist(self, **changes) -> None:
        new = replace(self.hard, **changes)
        assert new.not_older_than(self.hard), "persisted state must never go backwards"
        self.hard = new
        self._out.append(PersistHardState(new))

    def _reset_round_state(self) -> None:
        self.prepares: dict[tuple[int, int, bytes], dict[str, bytes]] = {}
        self.commits: dict[tuple[int, int, bytes], dict[str, bytes]] = {}
        self.entries: dict[bytes, Entry] = {}
        self.awaiting_validation: dict[tuple[int, int], bytes] = {}
        self.proposed: set[tuple[int, int]] = set()
        self.build_requested: set[tuple[int, int]] = set()
        self.sent_commit: dict[tuple[int, int], Commit] = {}
        self.sent_prepare: dict[tuple[int, int], Prepare] = {}
        self.my_preprepare: PrePrepare | None = None

    def _next_wake(self) -> float:
        candidacy = self.candidacy_at if self._term_is_live(self.view) and self.id not in self.failed_leaders else None
        claim = self.next_claim if self.role == ELECTING and self.view > 1 else None  # genesis term: all are in it
        times = [t for t in (self.heartbeat_deadline, self.round_deadline, candidacy, self.election_deadline,
                             self.next_heartbeat, claim) if t is not None]
        return min(times) if times else self.now + self.timing.election_timeout()

    def _request_catchup(self, peer: str) -> None:
        if peer == self.id or self.now - self.last_catchup_request < self.cfg.timing.heartbeat_interval / 2:
            return
        self.last_catchup_request = self.now
        self._send(peer, self._signed(CatchUpRequest(self.pending, self.id)))

    def _serve_catchup(self, peer: str, from_round: int) -> None:
        if from_round > self.chain_base and from_round <= self.committed_round:
            start = from_round - self.chain_base - 1
            entries = tuple(self.chain[start:start + MAX_CATCHUP_ENTRIES])
            self._send(peer, self._signed(CatchUpResponse(from_round, entries, self.id)))
        elif 1 <= from_round <= self.chain_base and peer != self.id:
            # Older than the window in memory: the node reads its store. At most one read per peer per half
            # heartbeat, so a member asking again and again cannot keep the disk busy.
            if self.now - self.loads_served.get(peer, -1e18) >= self.cfg.timing.heartbeat_interval / 2:
                self.loads_served[peer] = self.now
                self._out.append(LoadEntries(peer, from_round, MAX_CATCHUP_ENTRIES))

    def _on_entries_loaded(self, event: EntriesLoaded) -> None:
        """Send what the store gave for an old catch-up request, if it is what was asked (contiguous, ours)."""
        entries = tuple(event.entries[:MAX_CATCHUP_ENTRIES])
        if (not entries or event.peer not in self.membership or event.peer == self.id
                or any(ce.entry.round != event.from_round + k for k, ce in enumerate(entries))
                or entries[-1].entry.round > self.committed_round):
            return
        self._send(event.peer, self._signed(CatchUpResponse(event.from_round, entries, self.id)))

    def _remember(self, ce: CommittedEntry) -> None:
        """Append to the in-memory window; drop the oldest half once it holds twice ``memory_rounds`` (amortised
        O(1)), always keeping the newest entry for the head state hash."""
        self.chain.append(ce)
        keep = max(1, self.cfg.memory_rounds)
        if len(self.chain) > 2 * keep:
            drop = len(self.chain) - keep
            del self.chain[:drop]
            self.chain_base += drop

    # ------------------------------------------------------------------------------------------- terms

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
        self.highest_timeout[self.id] = max(self.highest_timeout.get(self.id, 0), term)
        if announce:
            self._broadcast(self._signed(Timeout(term, self.committed_round, self.id)))
        self.term_entered_at = now
        slot = self.timing.candidacy_slot()
        my_slot = election.candidate_rank(term, self.id, self.membership.members) * slot
        jitter = self.rng.random() * slot / 4
        self.candidacy_at = now + my_slot + jitter if self.hard.voted_term < term else None  # and _term_is_live()
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

    def _remember_failed_leader(self) -> None:
        # Itself included: voters that gave up on it refuse it, so standing would only waste its own vote (with f
        # nodes down, every live vote is needed).
        if self.leader is not None and self.membership.f > 0:
            if self.leader in self.failed_leaders:
                self.failed_leaders.remove(self.leader)
            self.failed_leaders = (self.failed_leaders + [self.leader])[-self.membership.f:]

    def _stand_as_candidate(self) -> None:
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
        if (self.role != CANDIDATE or vote.term != self.view or vote.candidate != self.id
                or not self.verify.vote(vote)):
            return
        self.votes[vote.sender] = vote
        self._maybe_win()

    def _maybe_win(self) -> None:
        if len(self.votes) < self.membership.quorum:
            return
        term = self.view
        votes = tuple(self.votes[s] for s in sorted(self.votes)[:self.membership.quorum])
        announcement = self._signed(NewTerm(term, votes, self.id))
        self.role, self.leader, self.announcement = LEADER, self.id, announcement
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
        if msg.sender == self.id or not self.verify.term_certificate(msg):
            return
        if msg.term > self.hard.term:
            self._persist(term=msg.term)
        self.view = msg.term
        self.highest_timeout[self.id] = max(self.highest_timeout.get(self.id, 0), msg.term)
        self.role, self.leader, self.announcement = FOLLOWER, msg.sender, msg
        self.required = election.required_reproposals(msg.votes)
        self.candidacy_at = self.election_deadline = self.next_heartbeat = None
        self.heartbeat_deadline = self.now + self.timing.leader_silence_timeout()
        self.round_deadline = None
        self._reset_round_state()
        self._arm_round_timer()

    # ------------------------------------------------------------------------------------------- timers

    def _on_tick(self) -> None:
        now = self.now
        if self.role == LEADER and self.next_heartbeat is not None and now >= self.next_heartbeat:
            self.next_heartbeat = now + self.cfg.timing.heartbeat_interval
            self._broadcast(self._signed(Heartbeat(self.view, self.committed_round, self.id)))
            if self.my_preprepare is not None and self.my_preprepare.round == self.pending:
                self._broadcast(self.my_preprepare)  # retransmit over lossy links
                self._retransmit(self.view, self.pending)
        if self.role in (FOLLOWER, LEADER):
            if self.heartbeat_deadline is not None and now >= self.heartbeat_deadline:
                return self._give_up("the leader went silent")
            if self.round_deadline is not None and now >= self.round_deadline:
                return self._give_up(f"round {self.pending} did not commit in time")
        if self.role == CANDIDATE and self.next_heartbeat is not None and now >= self.next_heartbeat:
            self.next_heartbeat = now + self.cfg.timing.heartbeat_interval
            self._broadcast(self._signed(RequestVote(self.view, self.committed_round, self.id)))
        if self.role == ELECTING and self.view > 1 and self.next_claim is not None and now >= self.next_claim:
            # Elections advance only on others' claims: repeat ours, so that one lost Timeout (a stream that broke
            # under it, a peer that reconnected) costs a second, not the rest of the term.
            self.next_claim = now + self._claim_interval()
            self._broadcast(self._signed(Timeout(self.view, self.committed_round, self.id)))
        if self.role in (ELECTING, CANDIDATE):
            if (self.candidacy_at is not None and now >= self.candidacy_at and self.hard.voted_term < self.view
                    and self._term_is_live(self.view) and self.id not in self.failed_leaders):
                self._stand_as_candidate()
            if self.election_deadline is not None and now >= self.election_deadline:
                term = self.view
                if self._term_is_live(term):
                    self._give_up(f"no leader was elected in term {term}")
                else:  # our Timeout is repeated every second meanwhile (next_claim)
                    self.election_deadline = now + self.timing.election_timeout() + \
                        self.timing.candidacy_slot() * (self.membership.f + 2)
                    if self.role == CANDIDATE:
                        self._broadcast(self._signed(RequestVote(term, self.committed_round, self.id)))

    def _arm_round_timer(self) -> None:
        """A round is expected (payloads waiting or a proposal seen): it must commit within the round timeout."""
        if self.role in (FOLLOWER, LEADER) and self.round_deadline is None and (
                self.payloads_ready_round >= self.pending or any(r == self.pending for _, r in self.awaiting_validation)):
            self.round_deadline = self.now + self.timing.round_timeout()
            if self.round_started is None:
                self.round_started = self.now

    def _on_payloads_ready(self, rnd: int) -> None:
        self.payloads_ready_round = max(self.payloads_ready_round, rnd)
        self._arm_round_timer()
        self._propose_if_ready()

    # ------------------------------------------------------------------------------------------- proposing

    def _propose_if_ready(self) -> None:
        if self.role != LEADER:
            return
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

    # ------------------------------------------------------------------------------------------- commit path

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
        if msg.term < self.view or msg.sender != self.leader or self.role != FOLLOWER:
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
        sigs = self.prepares.get((term, rnd, digest), {})
        if len(sigs) < self.membership.quorum or digest not in self.entries:
            return
        cert = PreparedCertificate(term, rnd, self.entries[digest], tuple(sorted(sigs.items())))
        if cert.rank() > self.hard.lock_rank():
            self._persist(lock=cert)
        msg = self._signed(Commit(term, rnd, digest, self.id))
        self.sent_commit[(term, rnd)] = msg
        self._broadcast(msg)
        self.commits.setdefault((term, rnd, digest), {})[self.id] = msg.sig
        self._check_committed(term, rnd, digest)

    def _on_commit(self, msg: Commit) -> None:
        if msg.round < self.pending:
            if (msg.term, msg.round, msg.digest) == self.newest_commit_key:
                self.newest_commit_sigs.setdefault(msg.sender, msg.sig)  # late, but it counts (see __init__)
            return
        if msg.round > self.pending + 1:
            return self._request_catchup(msg.sender)
        if record_signature(self.commits, msg.term, msg.round, msg.digest, msg.sender, msg.sig):
            self._check_committed(msg.term, msg.round, msg.digest)

    def _check_committed(self, term: int, rnd: int, digest: bytes) -> None:
        """2f+1 Commits (any term: a commit certificate is final) for our next round: persist, then apply."""
        sigs = self.commits.get((term, rnd, digest), {})
        if len(sigs) < self.membership.quorum:
            return
        entry = self.entries.get(digest)
        if rnd != self.pending or entry is None or entry.round != rnd or entry.parent_state_hash != self.head_state_hash:
            return self._request_catchup(next(s for s in sorted(sigs) if s != self.id) if len(sigs) > 1 else
                                         (self.leader or self.id))
        self._commit(CommittedEntry(entry, CommitCertificate(term, rnd, digest, tuple(sorted(sigs.items())))))

    def _commit(self, ce: CommittedEntry) -> None:
        self.newest_commit_key = (ce.cert.term, ce.entry.round, ce.cert.digest)
        self.newest_commit_sigs = {**dict(self.commits.get(self.newest_commit_key, {})), **dict(ce.cert.signatures)}
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
        self._arm_round_timer()
        self._propose_if_ready()
        # Commits for the next round may already be here (we were the slow one).
        for (t, r, d) in [k for k in self.commits if k[1] == self.pending]:
            self._check_committed(t, r, d)

    # ------------------------------------------------------------------------------------------- misc messages

    def _evidence_wanted(self, evidence: Evidence) -> bool:
        """New, and room for it: per accused member one piece per committed round (an entry convicts a member once,
        however many pieces it carries, so more would only feed a flood), plus the first piece against the leader
        of our own term, which must spread whatever came before, since it makes every follower give up on it."""
        if evidence.digest() in self.reported:
            return False
        if self.evidence_round.get(evidence.leader, -1) < self.committed_round:
            return True
        return (evidence.leader == self.leader and evidence.term == self.view
                and self.evidence_term.get(evidence.leader, -1) < self.view)

    def _equivocation(self, evidence: Evidence) -> None:
        if not self._evidence_wanted(evidence):
            return
        self.reported[evidence.digest()] = (self.committed_round, evidence.leader)
        self.evidence_round[evidence.leader] = self.committed_round
        if evidence.leader == self.leader and evidence.term == self.view:
            self.evidence_term[evidence.leader] = self.view
        self._out.append(ReportEvidence(evidence))
        self._broadcast(self._signed(EvidenceMessage(evidence, self.id)))
        if evidence.leader == self.leader and evidence.term == self.view and self.role == FOLLOWER:
            self._give_up("the leader equivocated")

    def _on_heartbeat(self, msg: Heartbeat) -> None:
        if msg.term == self.view and msg.sender == self.leader and self.role == FOLLOWER:
            self.heartbeat_deadline = self.now + self.timing.leader_silence_timeout()
        if msg.round > self.committed_round or msg.term > self.view or (
                msg.term == self.view and self.leader is None) or self._may_step_back(msg.term):
            self._request_catchup(msg.sender)
        elif msg.round < self.committed_round and msg.sender == self.leader:
            self._serve_catchup(msg.sender, msg.round + 1)

    def _on_catchup_request(self, msg: CatchUpRequest) -> None:
        self._serve_catchup(msg.sender, msg.round)
        if self.announcement is not None:
            self._send(msg.sender, self.announcement)

    def _on_catchup_response(self, msg: CatchUpResponse) -> None:
        """Append only certificate-backed entries that extend our chain; never overwrite."""
        for ce in msg.entries:
            entry, cert = ce.entry, ce.cert
            if entry.round < self.pending:
                continue
            if (entry.round != self.pending or cert.round != entry.round or cert.digest != entry.digest()
                    or entry.parent_state_hash != self.head_state_hash or not self.verify.committed(cert)):
                return
            self._commit(ce)
        if len(msg.entries) == MAX_CATCHUP_ENTRIES:
            self._request_catchup(msg.sender)

    def _on_evidence(self, msg: EvidenceMessage) -> None:
        if self._evidence_wanted(msg.evidence) and self.verify.evidence(msg.evidence):  # cheap test first
            self._equivocation(msg.evidence)

    _HANDLERS = {
        PrePrepare: _on_preprepare, Prepare: _on_prepare, Commit: _on_commit, Timeout: _on_timeout,
        RequestVote: _on_request_vote, Vote: _on_vote, NewTerm: _on_new_term, Heartbeat: _on_heartbeat,
        CatchUpRequest: _on_catchup_request, CatchUpResponse: _on_catchup_response, EvidenceMessage: _on_evidence,
    }

    def _on_message(self, msg) -> None:
        if msg.sender == self.id or msg.sender not in self.membership or not self.verify.message(msg):
            return  # unsigned, forged, replayed across fields, or from outside the swarm
        if isinstance(msg, (Timeout, RequestVote, Vote)) and msg.round > self.committed_round:
            self._request_catchup(msg.sender)  # it committed more than we did: fetch before elections need it
        self._HANDLERS[type(msg)](self, msg)

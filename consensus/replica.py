"""The replica: one node's consensus state machine. ``step(now, event) -> [actions]``; nothing else happens.

Roles per term: ELECTING (term entered, no leader known), CANDIDATE, FOLLOWER, LEADER. One round is in flight at a
time (round r needs state_{r-1}); ``pending`` = committed round + 1. Elections are consensus/terms.py, the
three-phase commit consensus/commit_path.py; this file holds the state, the event dispatch, timers and catch-up.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from .actions import Action, Broadcast, LoadEntries, PersistHardState, RejectMessage, ReportEvidence, Send, WakeAt
from .commit_path import CommitPath
from .configs import ConfigHistory
from .events import EntriesLoaded, Event, PayloadsReady, ProposalBuilt, Received, Tick, ValidationResult
from .messages import (MAX_CATCHUP_ENTRIES, CatchUpRequest, CatchUpResponse, Commit, CommitCertificate, CommittedEntry,
                       Entry, Evidence, EvidenceMessage, Heartbeat, NewTerm, Prepare, PreparedCertificate, PrePrepare,
                       RequestVote, Timeout, Vote)
from .quorum import Crypto, Membership, Verifier, sign_fields
from .roles import CANDIDATE, ELECTING, FOLLOWER, LEADER  # noqa: F401 (re-exported)
from .state import HardState, PersistedState
from .terms import TermRules
from .timing import AdaptiveTimeouts, TimingConfig


@dataclass
class Config:
    swarm_id: str
    node_id: str
    members: list[str]  # the genesis configuration; committed changes come with the chain (consensus/configs.py)
    genesis_state_hash: bytes
    timing: TimingConfig = field(default_factory=TimingConfig)
    quorum_override: int | None = None  # test hook only: plant a wrong quorum and watch the simulator catch it
    # Committed entries kept in memory to serve catch-up; older ones come from the node's store (LoadEntries), so
    # memory stays flat however long the swarm runs.
    memory_rounds: int = 256


class Replica(TermRules, CommitPath):
    def __init__(self, config: Config, crypto: Crypto, persisted: PersistedState, rng: random.Random, now: float):
        self.cfg = config
        self.id = config.node_id
        self.crypto = crypto
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
        # Every configuration so far; ``membership`` is the one in force at the pending round. A node outside it (a
        # joiner not yet added, a member removed) follows the chain through catch-up but never votes or signs.
        self.configs = ConfigHistory(config.members, config.quorum_override, persisted.configs)
        for committed in self.chain:
            self.configs.learn(committed)
        self.membership: Membership = self.configs.at(self.pending)
        self.verify = Verifier(config.swarm_id, self.membership, crypto)
        self.term_epoch: int | None = None  # the configuration (its first round) our term's certificate counts in
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
        senders = [sender for table in (self.prepares, self.commits) for sigs in table.values() for sender in sigs]
        senders += [sender for sender, _term, _round in self.seen_preprepares]
        senders += [accused for _round, accused in self.reported.values()]
        for sender in senders:  # members of an earlier configuration included, until their rounds are done
            count[sender] = count.get(sender, 0) + 1
        return count

    @property
    def is_member(self) -> bool:
        return self.id in self.membership

    @property
    def epoch(self) -> int:
        """The round from which the configuration in force at the pending round took effect."""
        return self.configs.epoch_of(self.pending)

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

    def _reject(self, reason: str) -> None:
        """The message being handled could only come from a faulty member: the node scores who delivered it."""
        self._out.append(RejectMessage(reason))

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

    def _reconfigure(self, round_: int) -> None:
        """Round ``round_`` committed a new configuration, in force from the next round. Our term's certificate
        counts in the old one, so the term ends (no one is to blame: no back-off, no failed leader), and claims
        made by members that left stop counting. Members of the new set elect its first leader."""
        self.membership = self.configs.at(self.pending)
        self.verify.membership = self.membership
        self.highest_timeout = {m: t for m, t in self.highest_timeout.items() if m in self.membership}
        self.failed_leaders = [m for m in self.failed_leaders if m in self.membership]
        self.last_term_change = f"the membership changed at round {round_} (n={self.membership.n})"
        self._enter_electing(self.hard.term if self.hard.term > self.view else self.view + 1, self.now,
                             announce=self.is_member)

    def _remember(self, ce: CommittedEntry) -> None:
        """Append to the in-memory window; drop the oldest half once it holds twice ``memory_rounds`` (amortised
        O(1)), always keeping the newest entry for the head state hash."""
        self.chain.append(ce)
        keep = max(1, self.cfg.memory_rounds)
        if len(self.chain) > 2 * keep:
            drop = len(self.chain) - keep
            del self.chain[:drop]
            self.chain_base += drop

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
                    or entry.parent_state_hash != self.head_state_hash):
                return  # stale or from another branch of time: an honest peer may send it
            if not self.verify.committed(cert):
                self._reject("invalid_certificate")
                return
            self._commit(ce)
        if len(msg.entries) == MAX_CATCHUP_ENTRIES:
            self._request_catchup(msg.sender)

    def _on_evidence(self, msg: EvidenceMessage) -> None:
        if self._evidence_wanted(msg.evidence) and self.verify.evidence(msg.evidence):  # cheap test first
            self._equivocation(msg.evidence)

    _HANDLERS = {  # by name: the handlers live in this class and in TermRules and CommitPath
        PrePrepare: "_on_preprepare", Prepare: "_on_prepare", Commit: "_on_commit", Timeout: "_on_timeout",
        RequestVote: "_on_request_vote", Vote: "_on_vote", NewTerm: "_on_new_term", Heartbeat: "_on_heartbeat",
        CatchUpRequest: "_on_catchup_request", CatchUpResponse: "_on_catchup_response",
        EvidenceMessage: "_on_evidence",
    }

    def _on_message(self, msg) -> None:
        if msg.sender == self.id:
            return
        if msg.sender not in self.membership:
            return  # outside the configuration in force: a removed member, one we do not know yet, or a stranger
        if not self.verify.message(msg):
            self._reject("bad_signature")  # forged or replayed across fields
            return
        if isinstance(msg, (Timeout, RequestVote, Vote)) and msg.round > self.committed_round:
            self._request_catchup(msg.sender)  # it committed more than we did: fetch before elections need it
        getattr(self, self._HANDLERS[type(msg)])(msg)

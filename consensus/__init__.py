"""The consensus core: pure state machines (no I/O, clocks, threads, asyncio or torch).

Raft-shaped elections, PBFT-shaped commit, one replicated-state-machine round in flight at a time. The node feeds
events and executes the actions it gets back, like etcd-io/raft's Step/Ready. Time and randomness are inputs.

Driving it
==========

    from consensus import Replica, Config, PersistedState, events, actions
    replica = Replica(Config(swarm_id, node_id, members, genesis_state_hash, timing=TimingConfig(...)),
                      crypto,             # .sign(payload) -> sig as this node; .verify(sender_id, payload, sig) -> bool
                      persisted,          # PersistedState(hard, chain=newest CommittedEntries, base_round) from the store
                      random.Random(),    # seed it in tests; the core never touches global randomness
                      now)                # monotonic seconds (time.monotonic())
    for action in replica.step(now, event): execute(action)   # IN ORDER, see below
    batch = ready.ready(replica.step(now, event))    # or grouped as the node runs them: persist, sync, send,
                                                     # apply, answer requests (consensus/ready.py)

``members`` is the genesis list of peer ids (strings such as libp2p "12D3KooW..."); n = len(members),
f = (n-1)//3, quorum Q = 2f+1 when n = 3f+1 (in general ceil((n+f+1)/2), so n=2,3 need 2 and never a bare majority
when f > 0). ``crypto`` wraps the node's Ed25519 key and the genesis public keys; the core signs and checks every
consensus message itself because signatures travel inside certificates. Signed bytes:
``messages.signing_bytes(swarm_id, kind, term, round, digest, sender)`` (crypto.wire encoding), so no signature
replays across message types, terms, rounds or swarms.

Events (``consensus.events``)
-----------------------------
- ``Received(message)``: a consensus message from a peer, decoded with ``messages.from_wire`` (raises
  ``crypto.wire.DecodeError`` on malformed input; drop it and score the peer). The core verifies the signature.
- ``Tick()``: feed when the latest ``WakeAt`` time has come (feeding more often is harmless).
- ``PayloadsReady(round)``: this node holds enough verified gradients for ``round`` (n - f, or a quorum at the
  collection deadline). Feed it on every node: the leader then builds; followers start the "no proposal" timer.
- ``ProposalBuilt(entry)``: the answer to ``BuildProposal``.
- ``ValidationResult(term, round, digest, ok)``: the answer to ``ValidateProposal``.
- ``EntriesLoaded(peer, from_round, entries)``: the answer to ``LoadEntries`` (stored committed entries, in order).

Actions (``consensus.actions``) and what each obliges the node to do
---------------------------------------------------------------------
- ``PersistHardState(state)``: durably replace term / vote / last prepare / lock (fsync) BEFORE executing any later
  action of the same batch. ``state`` never goes backwards.
- ``PersistEntry(committed)``: append entry + commit certificate (round = chain length + 1) before the rest, durably
  (fsync) before any later ``Send``/``Broadcast``. The fsync may wait until then (a vote for the next round usually
  pays for it): a crash short of a power cut loses nothing, and a power cut that took the row loses no committed
  round either, since the 2f+1 locks behind the certificate were fsynced and a new leader must re-propose it.
- ``Apply(committed)``: apply the entry to the model state (fetch missing payloads by digest). The result's state
  hash must equal ``committed.entry.state_hash``; if not, this node diverged: stop and resync from a snapshot.
- ``Send(to, message)`` / ``Broadcast(message)``: ``messages.to_wire(message)`` into the envelope; Broadcast goes to
  every other member. Best effort: the core retransmits what matters on its own.
- ``BuildProposal(round, parent_state_hash)``: leader only. Choose the gradients (sorted digests), apply, and answer
  ``ProposalBuilt(Entry(round, digests, rule, params, state_hash, parent_state_hash))``.
- ``ValidateProposal(term, round, entry)``: fetch/verify every payload, check rule and params, apply on a copy and
  compare ``state_hash``; answer ``ValidationResult(..., entry.digest(), ok)``. The core never sees tensors.
- ``LoadEntries(peer, from_round, limit)``: a peer needs rounds older than the ``Config.memory_rounds`` entries the
  core keeps in memory: read them (with certificates) from the store and answer ``EntriesLoaded``; the core signs
  the ``CatchUpResponse``. Memory thus stays flat however long the chain grows.
- ``ReportEvidence(evidence)``: two PrePrepares signed by one leader for one (term, round); keep it, feed reputation,
  carry it in a later entry. ``quorum.Verifier.evidence`` re-checks it anywhere. Rationed: per accused member one
  piece per committed round, plus the first against the leader of the replica's own term.
- ``WakeAt(time)``: schedule a ``Tick`` at ``time`` (each batch ends with one; the latest replaces the earlier).

Every batch is: persist actions first, then the messages that depend on them. After a crash, build a new Replica
from what was persisted only; it resumes in its persisted term without a leader and catches up.

Protocol in brief
=================
- Terms: a node enters term t+1 when its leader fails (no heartbeat, no commit within the round timeout while
  payloads wait, an invalid, wrong-parent or view-change-breaking proposal, or signed equivocation evidence) and
  broadcasts a signed ``Timeout``. It adopts a higher term only from f+1 Timeouts (taking the (f+1)-th highest claim)
  or a valid ``NewTerm`` (term certificate); it gives up on a term without leader only once 2f+1 entered it, and
  stands as candidate only then. A node that entered a term alone (cut off) thus never votes in it, and once healed
  steps back to the certified leader the others kept (``replica.term`` is the term it works in; the persisted
  ``hard.term`` never goes down); it never prepares in a term below one it voted or prepared in. A leader that
  failed does not stand again while it is among the last f failed leaders (voters would refuse it).
- Candidates stand in a per-term pseudo-random order (``election.candidate_rank``) in back-off slots; voters refuse a
  candidate before its slot, one that led a term they recently gave up on, or one whose chain is shorter. One vote
  per term, persisted; a ``Vote`` carries the voter's highest prepared certificate. 2f+1 votes form the term
  certificate carried by ``NewTerm``; the new leader must re-propose the highest-term prepared entry of the pending
  round, and replicas refuse anything else (PBFT view change).
- Round r: leader sends ``PrePrepare`` -> replicas validate, persist, ``Prepare`` -> 2f+1 Prepares = prepared
  certificate, persisted as the lock -> ``Commit`` -> 2f+1 Commits (any term) = commit certificate -> persist, apply.
- Catch-up: ``CatchUpRequest(round)`` is answered with entries and their commit certificates (and the current
  ``NewTerm``); a node appends only entries whose certificate verifies and that extend its chain.
- Timeouts (``timing``): round timeout = max(minimum, margin x EWMA of measured round times), doubled per failed
  term, reset by a commit.
- Bounded memory: what a member's signed messages make a replica keep is capped per sender (``bounds``): one digest
  per (term, round) and a few terms per round for Prepares, Commits and PrePrepares. ``Replica.footprint()`` counts
  it; the simulator checks it after honest steps, under a flood of signed junk (scenario ``state_flood``).

Modules: messages (wire types), quorum (membership, signature checks), election (vote and term rules), timing,
bounds (per-sender caps), state (what is persisted), events, actions, replica (the state machine), sim (deterministic simulator:
``python -m consensus.sim --help``).
"""
from .actions import (Action, Apply, Broadcast, BuildProposal, LoadEntries, PersistEntry, PersistHardState,  # noqa
                      ReportEvidence, Send, ValidateProposal, WakeAt)
from .events import EntriesLoaded, Event, PayloadsReady, ProposalBuilt, Received, Tick, ValidationResult  # noqa: F401
from .messages import Entry, from_wire, to_wire  # noqa: F401
from .replica import Config, Replica  # noqa: F401
from .state import HardState, PersistedState  # noqa: F401
from .timing import TimingConfig  # noqa: F401

"""The node: routes events between the transport, the consensus core, training, aggregation and the store.

One asyncio process. Data flows one way: transport -> decode and verify -> core -> actions -> transport / store /
state. Everything that reads or replaces the replicated state (build a proposal, validate one, apply a committed
entry) runs through one FIFO worker, in order, with the tensor work in a thread so the loop keeps answering
heartbeats; how an entry's state is re-derived is swarm/node/entry_states.py, evidence bookkeeping swarm/ledger/evidence.py.
Local training runs in another thread and only ever produces this node's own contribution.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

from consensus.actions import (Apply, Broadcast, BuildProposal, LoadEntries, PersistEntry, PersistHardState,
                               ReportEvidence, Send, ValidateProposal, WakeAt)
from consensus.events import EntriesLoaded, PayloadsReady, ProposalBuilt, Received, Tick, ValidationResult
from consensus.messages import Commit, CommittedEntry, Entry, commit_cert_to_plain, committed_from_plain
from consensus.replica import FOLLOWER, LEADER, Config as CoreConfig, Replica
from consensus.timing import TimingConfig
from crypto.envelope import open_envelope, peek as peek_envelope
from crypto.keys import NodeKey
from crypto.wire import DecodeError
from swarm.config import Genesis, NodeConfig
from swarm.faults.adversary import Adversary
from swarm.ledger import reputation
from swarm.ledger.apply import Applied, InvalidEntry, apply
from swarm.ledger.entry_rules import genesis_hash, open_gradient, rules_of
from swarm.ledger.evidence import EvidenceBook
from swarm.ledger.state import ReplicatedState, genesis_state
from swarm.ledger.store import ChainRow, Store
from swarm.node.core_link import Ed25519Crypto, decode_message, encode_message, hard_state_to_plain, persisted_state
from swarm.node.entry_states import EntryStates
from swarm.node.heap import release_free_memory
from swarm.node.peer_scores import PeerScores
from swarm.node.rate_limit import PeerRateLimiter
from swarm.round import compression
from swarm.round.gradient import Gradient, digest_of, make_gradient
from swarm.round.pool import GradientPool
from swarm.training.build import build_trainer
from swarm.transport.base import Callbacks, Transport

log = logging.getLogger("swarm.node")

FETCH_TIMEOUT_S = 5.0
APPLY_RETRY_S = 1.0
HISTORY_ROUNDS = 512  # rounds of loss/accuracy/reputation kept in memory for the API (the store keeps the chain)
READY_GRACE_S = 0.25
# A follower that holds a quorum of payloads but sees no proposal this long after readiness (or after a leader change)
# pushes them to the leader: a leader that was catching up dropped pushes meant for rounds it had not reached.
HANDOVER_DELAY_S = 1.0
TRIM_EVERY_S = 30.0  # hand free heap pages back to the OS this often (swarm/node/heap.py)
SHUTDOWN_TASK_TIMEOUT_S = 5.0  # how long shutdown waits for a cancelled task before exiting without it


@dataclass
class RoundRecord:
    """What the node shows of one committed round (API, log, cluster output)."""
    round: int
    term: int
    leader: str | None
    state_hash: bytes
    loss: float | None        # filled in when the evaluation of this round's state finishes
    accuracy: float | None
    rule: str
    included: list[str]
    quarantined: list[str]
    committed_at: float
    reputation: dict[str, float] | None = None  # member name -> committed reputation after this round


@dataclass
class Metrics:
    rounds_committed: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    leader_changes: int = 0
    divergences: int = 0
    snapshot_resyncs: int = 0  # times the state was replaced by a certified snapshot fetched from a peer
    catchup_entries_from_store: int = 0  # old committed entries read back from the store for a lagging peer
    payload_handovers: int = 0  # rounds whose payloads this node pushed to a leader that did not propose in time
    trained_ahead: int = 0  # rounds whose local update was trained while the previous round was being agreed on
    duplicate_pushes: int = 0  # pushes of payloads already held, dropped before verification
    rejected: Counter = field(default_factory=Counter)
    round_seconds: deque = field(default_factory=lambda: deque(maxlen=512))
    commit_seconds: deque = field(default_factory=lambda: deque(maxlen=512))


class Node:
    def __init__(self, config: NodeConfig, genesis: Genesis, key: NodeKey, transport: Transport | None = None):
        if key.peer_id not in genesis.peer_ids:
            raise ValueError(f"this node's key ({key.peer_id}) is not a member of the genesis {config.genesis}")
        self.config, self.genesis, self.key = config, genesis, key
        self.id = key.peer_id
        self.name = config.name or genesis.name_of(self.id)
        self.members = set(genesis.peer_ids)
        self.rules = rules_of(genesis)
        self.store = Store(config.data_dir)
        self.trainer = build_trainer(config, genesis, self.id)
        self.compressor = compression.Compressor(config.compression.scheme, k=config.compression.ratio,
                                                 error_feedback=config.compression.error_feedback)
        self.adversary = (Adversary(config.attack, key, genesis.swarm_id, self.compressor, genesis.index_of(self.id))
                          if config.attack else None)
        if self.adversary is not None:
            self.trainer.label_flip = self.adversary.label_flip
        self.genesis_state = genesis_state(self.trainer.initial_parameters(), genesis.peer_ids, genesis_hash(genesis))
        self.dim = self.genesis_state.params.numel()
        self.state = self.genesis_state
        self.pool = GradientPool()
        self.scores = PeerScores()
        self.control_limit = PeerRateLimiter(config.transport.control_messages_per_s, config.transport.control_burst)
        self.metrics = Metrics()
        self.history: deque[RoundRecord] = deque(maxlen=HISTORY_ROUNDS)
        self.evidence = EvidenceBook(self.store)
        self.diverged: str | None = None
        self.started = time.time()
        self.last_eval: tuple[float, float] | None = None
        self._pending_commits: dict[int, CommittedEntry] = {}  # committed, waiting for their turn to apply
        self._retry_scheduled = False
        self._ready_sent = 0
        self._ready_timer: asyncio.TimerHandle | None = None
        self._round_started = time.monotonic()
        # (term, round) -> phase -> monotonic time: the PrePrepare was seen ("preprepare"), our validation of it
        # ended ("validated"), our Commit went out ("prepared"), its commit certificate formed ("certified"). The
        # commit latency and its parts.
        self._phases: dict[tuple[int, int], dict[str, float]] = {}
        self._handed_over: tuple[int, int] | None = None  # (term, round) whose payloads went to the leader
        self._served_state: tuple[bytes, bytes] | None = None  # (hash, bytes) of our state as peers fetched it
        self._last_trim = time.monotonic()
        # (round, parameters, future update) of a local update trained ahead of its round's commit
        self._ahead: tuple[int, torch.Tensor, asyncio.Future] | None = None
        self._training_round = 0
        self._jobs: asyncio.Queue = asyncio.Queue()
        self._wake = asyncio.Event()
        self._wake_at = 0.0
        self._tasks: list[asyncio.Task] = []
        self._background: set[asyncio.Task] = set()
        self._stopping = asyncio.Event()
        self._state_pool = ThreadPoolExecutor(1, thread_name_prefix="apply")
        self.entries = EntryStates(genesis, self.rules, self.store, self.pool, self._state_pool,
                                    self._verify_gradient, self._fetch)
        self._train_pool = ThreadPoolExecutor(1, thread_name_prefix="train")
        self._leader_seen: str | None = None
        self._role_seen: tuple[int, str, bool] = (0, "", False)
        self.transport = transport or self._make_transport()
        self.core = self._make_core()

    # ------------------------------------------------------------------------------------------- construction
    def _make_transport(self) -> Transport:
        from swarm.transport.libp2p_host import Libp2pTransport
        return Libp2pTransport(self.key, self.config.listen, self.config.bootstrap, self.genesis.peer_ids,
                               self.config.transport, Callbacks(
                                   on_payload=self._on_payload, on_control=self._on_control,
                                   on_misbehaviour=self._on_misbehaviour, on_peer_change=self._on_peer_change,
                                   get_payload=self._get_payload, may_fetch=self._may_fetch))

    def _make_core(self) -> Replica:
        self.crypto = Ed25519Crypto(self.key)
        self._restore_state()
        c = self.config.consensus
        timing = TimingConfig(heartbeat_interval=c.heartbeat_s, min_round_timeout=c.election_timeout_s)
        # The core keeps only the newest ``memory_rounds`` entries; it reads older ones back through LoadEntries.
        first = max(1, self.store.last_round() - c.memory_rounds + 1)
        persisted = persisted_state(self.store.get_meta("hard"), list(self._stored_committed(first)),
                                    base_round=first - 1)
        core_config = CoreConfig(swarm_id=self.genesis.swarm_id, node_id=self.id, members=self.genesis.peer_ids,
                                 genesis_state_hash=self.genesis_state.hash, timing=timing,
                                 memory_rounds=c.memory_rounds)
        return Replica(core_config, self.crypto, persisted, random.Random(), time.monotonic())

    def _restore_state(self) -> None:
        """Rebuild the replicated state from the newest certified snapshot plus replay of stored entries."""
        last = self.store.last_round()
        if last == 0:
            return
        state = self.genesis_state
        snapshot = self.store.latest_snapshot()
        if snapshot is not None:
            round_, state_hash, data = snapshot
            row = self.store.row(round_)
            try:
                candidate = ReplicatedState.deserialize(data, self.dim, self.genesis.peer_ids)
                if row is not None and candidate.hash == state_hash == row.state_hash:
                    state = candidate
            except DecodeError as exc:
                log.error("snapshot of round %d unusable (%s); replaying from genesis", round_, exc)
        for row in self.store.rows(state.round + 1):
            gradients = self._stored_gradients(row.entry["gradients"], row.round, state.hash)
            if gradients is None:
                log.warning("restart: payloads of round %d missing; will catch up from peers", row.round)
                break
            applied = apply(state, gradients, self.rules, *self.entries.extras(row.entry["params"], row.round))
            if applied.state.hash != row.state_hash:
                self._divergence(f"replay of round {row.round} gives another state hash")
                break
            state = applied.state
        self.state = state
        self.pool.advance(state.round + 1)
        log.info("restored state at round %d (%s)", state.round, state.hash.hex()[:12])

    def _stored_gradients(self, digests: list[bytes], round_: int, parent: bytes) -> list[Gradient] | None:
        """The entry's gradients from our store, checked as if they came from the network; None when one is
        missing or damaged (then the round is applied again from peers' copies)."""
        found = []
        for digest in digests:
            raw = self.store.gradient_envelope(digest)
            try:
                if raw is None or digest_of(raw) != digest:
                    raise DecodeError("missing_or_damaged", digest.hex()[:12])
                found.append(self._verify_gradient(raw, round_, parent))
            except DecodeError as exc:
                log.error("stored payload of round %d unusable: %s", round_, exc)
                return None
        return found

    # ------------------------------------------------------------------------------------------- lifecycle
    async def run(self) -> None:
        """Run until ``stop()``; returns after a clean shutdown."""
        await self.transport.start()
        log.info("node %s (%s) listening on %s", self.name, self.id, ", ".join(self.transport.listen_addrs))
        self._tasks = [asyncio.create_task(self._state_worker(), name="state-worker"),
                       asyncio.create_task(self._ticker(), name="ticker")]
        # Entries persisted before a crash but not replayable from the store (payloads missing): apply them
        # again, fetching payloads or a certified snapshot from peers.
        for committed in self._stored_committed(self.state.round + 1):
            self._queue_commit(committed)
        if self.state.round >= self.core.committed_round:
            self._start_round()
        await self._stopping.wait()
        await self._cancel_tasks()
        await self.transport.stop()
        self._state_pool.shutdown(wait=True, cancel_futures=True)
        self._train_pool.shutdown(wait=True, cancel_futures=True)
        self.store.close()
        log.info("node %s stopped at round %d", self.name, self.state.round)

    async def _cancel_tasks(self) -> None:
        """Cancel every task, waiting a bounded time: a task that ignores its cancellation is named in the log
        and left behind rather than keeping the node from exiting."""
        tasks = [*self._tasks, *self._background]
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_TASK_TIMEOUT_S)
        for task in pending:
            log.error("task %s did not stop within %.0f s of its cancellation; exiting without it",
                      task.get_name(), SHUTDOWN_TASK_TIMEOUT_S)

    def stop(self) -> None:
        log.info("stopping (signal or request)")
        self._stopping.set()

    def _spawn(self, coroutine, name: str) -> None:
        """A background task that shutdown cancels and whose failure is logged, never lost."""
        task = asyncio.create_task(coroutine, name=name)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None and not self._stopping.is_set():
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    # ------------------------------------------------------------------------------------------- core driving
    def _step(self, event) -> None:
        try:
            actions = self.core.step(time.monotonic(), event)
        except Exception:  # a bug in the core must not take the node down silently
            log.exception("consensus core failed on %s", type(event).__name__)
            return
        for action in actions:
            self._execute(action)
        self._log_role()
        leader = self.core.leader
        if leader != self._leader_seen:
            self._leader_seen = leader
            if leader is not None:
                self.metrics.leader_changes += 1
                log.info("term %d: leader is %s", self.core.term, self.genesis.name_of(leader))
                self._schedule_handover(self.state.round + 1)

    def _log_role(self) -> None:
        """Elections are what an operator looks for when rounds stall: log every move to a new term or role."""
        term, role = self.core.term, self.core.role
        if role in (FOLLOWER, LEADER):  # logged as "leader is"
            self._role_seen = (term, role, True)
            return
        live = self.core.term_is_live(term)
        if (term, role, live) == self._role_seen:
            return
        self._role_seen = (term, role, live)
        log.info("term %d: %s after %s (%s)", term, role, self.core.last_term_change, "a quorum entered it" if live else
                 "waiting for a quorum to enter it; members' terms: " + ", ".join(
                     f"{self.genesis.name_of(m)}={t}" for m, t in sorted(self.core.term_claims().items())))

    def _execute(self, action) -> None:
        if isinstance(action, (Send, Broadcast)):
            self.store.sync()  # a row PersistEntry appended without its fsync is made durable first
        if isinstance(action, Send):
            self._send(action.to, encode_message(self.key, self.genesis.swarm_id, action.message))
        elif isinstance(action, Broadcast):
            if isinstance(action.message, Commit):  # sent once our prepare quorum is in and the lock is persisted
                self._mark_phase(action.message.term, action.message.round, "prepared")
            data = encode_message(self.key, self.genesis.swarm_id, action.message)
            for peer in self.genesis.peer_ids:
                if peer != self.id:
                    self._send(peer, data)
        elif isinstance(action, PersistHardState):
            self.store.put_meta("hard", hard_state_to_plain(action.state))
        elif isinstance(action, PersistEntry):
            committed = action.committed
            self.store.append(ChainRow(committed.entry.round, committed.cert.term, committed.entry.digest(),
                                       committed.entry.to_plain(), commit_cert_to_plain(committed.cert),
                                       committed.entry.state_hash), durable=False)
        elif isinstance(action, Apply):
            self._mark_phase(action.committed.cert.term, action.committed.entry.round, "certified")
            self._queue_commit(action.committed)
        elif isinstance(action, BuildProposal):
            self._jobs.put_nowait(("build", action.round, action.parent_state_hash))
        elif isinstance(action, ValidateProposal):
            self._mark_phase(action.term, action.round, "preprepare")
            self._jobs.put_nowait(("validate", action.term, action.round, action.entry))
        elif isinstance(action, ReportEvidence):
            evidence = action.evidence
            log.warning("equivocation by leader %s in term %d round %d", self.genesis.name_of(evidence.leader),
                        evidence.term, evidence.round)
            self.evidence.keep(evidence)
        elif isinstance(action, WakeAt):
            self._wake_at = action.time
            self._wake.set()
        elif isinstance(action, LoadEntries):
            self._spawn(self._load_entries(action), "load-entries")

    async def _load_entries(self, action: LoadEntries) -> None:
        """A peer asked for rounds older than the core's in-memory window: read them from the store (in a worker
        thread) and hand them back to the core, which signs the answer."""
        entries = await asyncio.get_running_loop().run_in_executor(
            None, lambda: tuple(self._stored_committed(action.from_round, action.limit)))
        self.metrics.catchup_entries_from_store += len(entries)
        self._step(EntriesLoaded(action.peer, action.from_round, entries))

    def _stored_committed(self, start: int, limit: int = 1 << 30):
        for row in self.store.rows(start, limit):
            yield committed_from_plain({"entry": row.entry, "cert": row.certificate})

    def _send(self, peer: str, data: bytes) -> None:
        self.metrics.bytes_out += len(data)
        self.transport.send(peer, data)

    async def _ticker(self) -> None:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that lands as the event
        # is set, and this loop then ran on after shutdown (a node that never exited on SIGTERM, 1 run in 10).
        while not self._stopping.is_set():
            delay = max(0.0, self._wake_at - time.monotonic()) if self._wake_at else 1.0
            self._wake.clear()
            try:
                async with asyncio.timeout(min(delay, 1.0)):
                    await self._wake.wait()
                continue  # a new wake-up time arrived; recompute
            except TimeoutError:
                pass
            if self._wake_at and time.monotonic() >= self._wake_at:
                self._step(Tick())

    # ------------------------------------------------------------------------------------------- inbound
    def _admit(self, peer: str, data: bytes) -> bool:
        """Count what arrived; False for a banned peer, whose messages are dropped unread."""
        self.metrics.bytes_in += len(data)
        if self.scores.is_banned(peer, time.monotonic()):
            self._drop_banned(peer)
            return False
        return True

    async def _on_control(self, peer: str, data: bytes) -> None:
        if not self._admit(peer, data):
            return
        if not self.control_limit.allow(peer, time.monotonic()):
            self._reject(peer, "flooding", f"over {self.control_limit.rate:g} control messages/s")
            return
        try:
            envelope = open_envelope(data, self.genesis.swarm_id, 4 << 20)
            if envelope.sender != peer:
                raise DecodeError("relayed", "envelope signer is not the connection's peer")
            message = decode_message(envelope)
        except DecodeError as exc:
            self._reject(peer, exc.reason, str(exc))
            return
        self.scores.reward(peer)
        self._step(Received(message))

    async def _on_payload(self, peer: str, digest: bytes, data: bytes) -> None:
        if not self._admit(peer, data):
            return
        try:  # the head only: the event loop neither copies nor parses megabytes just to route them
            _type, _term, round_ = peek_envelope(data, self.config.transport.max_payload_bytes)
        except DecodeError as exc:
            self._reject(peer, exc.reason, str(exc))
            return
        if not self.pool.accepts_round(round_):
            self.metrics.rejected["stale_or_future_round"] += 1
            return
        if self.pool.by_digest(digest) is not None:  # a re-push (a reconnect, a handover, a peer repeating itself):
            self.metrics.duplicate_pushes += 1       # the same bytes were verified once already, so not again
            self._check_ready()
            return
        parent = self.state.hash if round_ == self.state.round + 1 else None
        loop = asyncio.get_running_loop()
        try:  # hashing and decoding megabytes: off the event loop; the transport has checked the digest
            gradient = await loop.run_in_executor(None, self._verify_gradient, data, round_, parent, digest)
        except DecodeError as exc:
            self._reject(peer, exc.reason, str(exc))
            return
        if gradient.round == self.state.round + 1 and gradient.parent != self.state.hash:
            return  # the state moved on while we verified: this gradient was built for an older one
        self._add_gradient(gradient)

    def _add_gradient(self, gradient: Gradient) -> None:
        equivocation = self.pool.add(gradient)
        if equivocation is not None:
            self._reject(gradient.sender, "equivocation", f"two gradients for round {gradient.round}")
            return
        self._check_ready()

    async def _on_misbehaviour(self, peer: str, reason: str) -> None:
        self._reject(peer, reason, "reported by the transport")

    async def _on_peer_change(self, peer: str, connected: bool) -> None:
        log.info("peer %s %s", self.genesis.name_of(peer), "connected" if connected else "disconnected")
        if connected:
            # A peer that (re)joins may have missed this round's gradient: push it again.
            mine = next((g for g in self.pool.for_round(self.state.round + 1) if g.sender == self.id), None)
            if mine is not None:
                self._spawn(self._push(mine.raw), "repush")

    def _may_fetch(self, peer: str) -> bool:
        """Transport thread: a banned peer gets nothing from us, fetches included."""
        return not self.scores.is_banned(peer, time.monotonic())

    async def _get_payload(self, digest: bytes) -> bytes | None:
        """What a peer fetches by digest: a gradient in the pool at once; anything that costs an fsync, a
        serialization or a file read of megabytes, in a worker thread so the loop keeps answering."""
        gradient = self.pool.by_digest(digest)
        if gradient is not None:
            return gradient.raw
        return await asyncio.to_thread(self._read_payload, digest, self.state)

    def _read_payload(self, digest: bytes, state: ReplicatedState) -> bytes | None:
        """Worker thread: our current state, a snapshot or a stored gradient with this digest."""
        if digest == state.hash:  # a certified snapshot: the digest is the state hash
            self.store.sync()  # the state of our newest commit leaves: its row is durable first
            served = self._served_state
            if served is None or served[0] != digest:
                served = self._served_state = (digest, state.serialize())  # built once per state, not per ask
            return served[1]
        snapshot = self.store.snapshot_path(digest)
        if snapshot.exists():
            return snapshot.read_bytes()
        stored = self.store.gradient_envelope(digest)
        return stored if stored is not None and digest_of(stored) == digest else None  # never serve damage

    def _verify_gradient(self, raw: bytes, round_: int | None, parent: bytes | None,
                         digest: bytes | None = None) -> Gradient:
        return open_gradient(raw, self.genesis, self.dim, self.config.transport.max_payload_bytes, round_, parent,
                             digest)

    def _drop_banned(self, peer: str) -> None:
        """A banned peer's message is dropped unread: counted, not penalised again."""
        self.metrics.rejected["banned"] += 1
        self.scores.get(peer).reasons["banned"] += 1

    def _reject(self, peer: str, reason: str, detail: str) -> None:
        self.metrics.rejected[reason] += 1
        self.scores.penalize(peer, reason, time.monotonic(), detail)
        entry = self.scores.get(peer)
        if peer in self.members:
            self.store.put_local_score(peer, entry.score, entry.rejected, reason)

    # ------------------------------------------------------------------------------------------- rounds
    def _start_round(self) -> None:
        """Begin round state.round + 1: train on the committed state and push the signed gradient."""
        round_ = self.state.round + 1
        self.pool.advance(round_)
        self._round_started = time.monotonic()
        self._cancel_ready_timer()
        if self.diverged or self._training_round >= round_:
            return
        if self.config.max_rounds is not None and self.state.round >= self.config.max_rounds:
            return
        self._training_round = round_
        observed = [g.vector for g in self.pool.previous] if self.adversary is not None else []
        self._spawn(self._train_and_push(round_, self.state, observed), f"train-{round_}")
        self._check_ready()

    async def _train_and_push(self, round_: int, state: ReplicatedState, observed: list[torch.Tensor]) -> None:
        loop = asyncio.get_running_loop()
        try:
            update = await self._local_update(round_, state)
            payloads = await loop.run_in_executor(self._train_pool, self._seal, round_, state, update, observed)
        except Exception:
            log.exception("local training failed for round %d", round_)
            return
        if self.state.round + 1 != round_:
            return  # the swarm moved on while we trained
        for _raw, gradient in payloads:
            if gradient is not None:
                self.pool.add(gradient)
        self._check_ready()  # ours counts at once, not once every peer took it (one may be unreachable for seconds)
        for raw, _gradient in payloads:
            await self._push(raw)

    async def _local_update(self, round_: int, state: ReplicatedState) -> torch.Tensor:
        """This round's local update: the one trained ahead on these very parameters (see _train_ahead), or a
        fresh one."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == round_ and ahead[1] is state.params:
            try:
                update = await ahead[2]
                self.metrics.trained_ahead += 1
                return update
            except Exception:
                log.exception("training ahead for round %d failed; training again", round_)
        return await asyncio.get_running_loop().run_in_executor(self._train_pool, self.trainer.local_update,
                                                                state.params)

    def _train_ahead(self, round_: int, aggregate: asyncio.Future) -> None:
        """Start training ``round_`` on the parameters our own aggregate of the previous round gives, while that
        round is still being agreed on. The commit nearly always names the same gradients, so the committed state
        then holds this very parameter tensor and the update is used as is (it is signed only after the commit,
        on the committed state hash); otherwise it is dropped. Training is local, never replicated: it may start
        from anything, and the three-phase commit no longer leaves the CPU idle."""
        if aggregate.cancelled() or aggregate.exception() is not None or self.diverged:
            return
        if self.adversary is not None or round_ != self.state.round + 2 or self._training_round >= round_:
            return
        if self._ahead is not None and self._ahead[0] >= round_:
            return
        if self.config.max_rounds is not None and round_ > self.config.max_rounds:
            return
        params = aggregate.result().params
        future = asyncio.get_running_loop().run_in_executor(self._train_pool, self.trainer.local_update, params)
        future.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
        self._ahead = (round_, params, future)

    def _seal(self, round_: int, state: ReplicatedState, update: torch.Tensor,
              observed: list[torch.Tensor]) -> list[tuple[bytes, Gradient | None]]:
        """Worker thread: optional attack, compression, signing. Returns the envelope bytes to push, each with the
        gradient to keep (None: an attack profile's garbage or stale message, pushed but not kept)."""
        if self.adversary is not None:
            out = []
            for raw in self.adversary.payloads(update, round_, state, observed):
                try:
                    out.append((raw, self._verify_gradient(raw, round_, state.hash)))
                except DecodeError:
                    out.append((raw, None))
            return out
        payload = self.compressor.compress(update)
        raw = make_gradient(self.key, self.genesis.swarm_id, round_, state.hash, payload)
        # Our own envelope needs no signature check; its vector is decoded exactly as every receiver decodes it.
        vector = compression.decode(payload, self.dim, self.config.transport.max_payload_bytes)
        return [(raw, Gradient(self.id, round_, state.hash, digest_of(raw), raw, vector))]

    async def _push(self, raw: bytes, to: list[str] | None = None) -> None:
        self.store.sync()  # the gradient names the newest committed state as its parent: that row is durable first
        results = await self.transport.push(raw, to)
        self.metrics.bytes_out += len(raw) * sum(1 for r in results.values() if r.ok)

    def _check_ready(self) -> None:
        round_ = self.state.round + 1
        if self._ready_sent >= round_:
            return
        count = self.pool.count(round_, self.state.hash)
        if count >= self.genesis.n:
            self._speculate(round_)
            self._signal_ready(round_)
        elif count >= self.genesis.quorum and self._ready_timer is None:
            self._ready_timer = asyncio.get_running_loop().call_later(READY_GRACE_S, self._signal_ready, round_)

    def _signal_ready(self, round_: int) -> None:
        self._cancel_ready_timer()
        if round_ != self.state.round + 1 or self._ready_sent >= round_:
            return
        self._ready_sent = round_
        if self.pool.count(round_, self.state.hash) < self.genesis.n:
            self._speculate(round_)
        self._step(PayloadsReady(round_))
        self._schedule_handover(round_)

    def _schedule_handover(self, round_: int) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # stepped outside the loop (tests drive the core directly)
            return
        loop.call_later(HANDOVER_DELAY_S, self._hand_over_if_no_proposal, round_)

    def _hand_over_if_no_proposal(self, round_: int) -> None:
        """Push the round's payloads to a leader that has not proposed it: a node elected right after catching up
        has dropped the pushes for rounds it had not reached yet, and would otherwise stall until its term fails."""
        term, leader = self.core.term, self.core.leader
        if (round_ != self.state.round + 1 or leader is None or leader == self.id or self.core.role != FOLLOWER
                or "preprepare" in self._phases.get((term, round_), {}) or self._handed_over == (term, round_)
                or self._stopping.is_set()):
            return
        gradients = self.pool.for_round(round_, self.state.hash)
        if len(gradients) < self.genesis.quorum:
            return
        self._handed_over = (term, round_)
        self.metrics.payload_handovers += 1
        log.info("no proposal for round %d from leader %s after %.1fs: pushing it the %d payloads held here",
                 round_, self.genesis.name_of(leader), HANDOVER_DELAY_S, len(gradients))
        for gradient in gradients:
            self._spawn(self._push(gradient.raw, to=[leader]), "handover")

    def _cancel_ready_timer(self) -> None:
        if self._ready_timer is not None:
            self._ready_timer.cancel()
            self._ready_timer = None

    # ------------------------------------------------------------------------------------------- state worker
    async def _state_worker(self) -> None:
        while True:
            job = await self._jobs.get()
            try:
                if job[0] == "build":
                    await self._build(job[1], job[2])
                elif job[0] == "validate":
                    await self._validate(job[1], job[2], job[3])
                elif job[0] == "apply":
                    await self._apply_committed()
            except Exception:
                log.exception("state job %s failed", job[0])

    async def _build(self, round_: int, parent: bytes) -> None:
        if round_ != self.state.round + 1 or parent != self.state.hash:
            log.warning("asked to build round %d on a state we do not hold", round_)
            return
        gradients = self.pool.for_round(round_, self.state.hash)
        if len(gradients) < self.genesis.quorum:
            log.warning("asked to build round %d with only %d gradients", round_, len(gradients))
            return
        params = self._entry_params()
        applied = await self.entries.apply_gradients(self.state, gradients, params)
        entry = Entry(round=round_, gradient_digests=tuple(sorted(g.digest for g in gradients)),
                      rule=self.rules.rule, params=params, state_hash=applied.state.hash,
                      parent_state_hash=self.state.hash)
        self.entries.applied[entry.digest()] = applied
        self._step(ProposalBuilt(entry))

    def _entry_params(self) -> dict:
        """What a leader adds to its entry: the previous commit certificate (for consensus participation) and
        equivocation evidence not yet committed."""
        params: dict[str, Any] = {}
        late = self.core.certificate_with_late_commits(self.state.round)  # every Commit seen, not just the first 2f+1
        if late is not None:
            params["prev_cert"] = commit_cert_to_plain(late)
        elif (previous := self.store.row(self.state.round)) is not None:
            params["prev_cert"] = previous.certificate
        evidence = self.evidence.for_proposal()
        if evidence:
            params["evidence"] = evidence
        return params

    def _speculate(self, round_: int) -> None:
        """Start aggregating the gradients we hold now: a leader proposes the same set in the common case, so
        validating its proposal then costs only the cheap reputation step."""
        if round_ != self.state.round + 1:
            return
        gradients = self.pool.for_round(round_, self.state.hash)
        if len(gradients) >= self.genesis.quorum:
            future = self.entries.aggregate(self.state, gradients)
            future.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
            if self.config.training.train_ahead:
                future.add_done_callback(lambda f, next_round=round_ + 1: self._train_ahead(next_round, f))

    async def _validate(self, term: int, round_: int, entry: Entry) -> None:
        ok = False
        try:
            applied = await self.entries.derive(self.state, entry)
            ok = applied.state.hash == entry.state_hash
            if ok:
                self.entries.applied[entry.digest()] = applied
            else:
                log.warning("proposal for round %d in term %d gives another state hash: rejected", round_, term)
        except (InvalidEntry, DecodeError) as exc:
            log.warning("proposal for round %d in term %d is invalid: %s", round_, term, exc)
        self._mark_phase(term, round_, "validated")
        self._step(ValidationResult(term, round_, entry.digest(), ok))

    async def _fetch(self, digest: bytes) -> bytes | None:
        """A payload by digest from any connected peer (the leader first), waiting up to FETCH_TIMEOUT_S for one to
        connect and answer: right after a restart the node may not be connected yet."""
        deadline = time.monotonic() + FETCH_TIMEOUT_S
        while True:
            peers = [p for p, info in self.transport.peers().items() if info.connected]
            peers.sort(key=lambda p: p != self.core.leader)
            for peer in peers:
                try:
                    async with asyncio.timeout(FETCH_TIMEOUT_S):  # not wait_for: see _ticker
                        raw = await self.transport.fetch(peer, digest)
                except Exception as exc:  # a peer that fails (or times out) is just one of several
                    log.debug("fetch %s from %s failed: %s", digest.hex()[:12], peer[:12], exc)
                    continue
                if raw is not None and digest_of(raw) == digest:
                    return raw
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.25)

    def _queue_commit(self, committed: CommittedEntry) -> None:
        """Register a committed entry for the state worker to apply. Known at once, not when the worker reaches
        its job: a node catching up that cannot replay an old round (its payloads pruned everywhere) resyncs to
        the newest commit it holds, not the next one."""
        if committed.entry.round > self.state.round:
            self._pending_commits[committed.entry.round] = committed
        self._jobs.put_nowait(("apply",))

    async def _apply_committed(self) -> None:
        """Apply committed entries in round order; one that cannot be applied yet is retried shortly (its payloads
        or a certified snapshot may become reachable), never skipped."""
        while (committed := self._pending_commits.get(self.state.round + 1)) is not None:
            if not await self._apply_one(committed):
                if not self._retry_scheduled:
                    self._retry_scheduled = True
                    asyncio.get_running_loop().call_later(APPLY_RETRY_S, self._retry_commits)
                return
        for stale in [r for r in self._pending_commits if r <= self.state.round]:
            del self._pending_commits[stale]

    def _retry_commits(self) -> None:
        self._retry_scheduled = False
        self._jobs.put_nowait(("apply",))

    async def _apply_one(self, committed: CommittedEntry) -> bool:
        entry = committed.entry
        try:
            applied = await self.entries.derive(self.state, entry)
        except (InvalidEntry, DecodeError) as exc:
            log.warning("round %d cannot be applied from its payloads (%s): trying the certified snapshot",
                        entry.round, exc)
            applied = None
        if applied is not None and entry.round == self.config.fault_injection.diverge_at_round:
            applied = _off_by_one_ulp(applied)
        if applied is not None and applied.state.hash != entry.state_hash:
            self._divergence(f"round {entry.round}: applying the committed entry gave another state hash")
            applied = None
        if applied is None:
            # The newest committed state is the one peers most likely hold as their current state.
            newest = self._pending_commits[max(self._pending_commits)] if self._pending_commits else committed
            for target in dict.fromkeys([newest, committed]):
                if await self._resync_from_snapshot(target.entry):
                    committed = target
                    break
            else:
                return False
        else:
            self._adopt(committed, applied)
        self.entries.round_done()
        await self._after_commit(committed, applied)
        return True

    def _adopt(self, committed: CommittedEntry, applied: Applied) -> None:
        entry = committed.entry
        rows = []
        for digest in entry.gradient_digests:
            gradient = self.pool.by_digest(digest) or self.entries.fetched.get(digest)
            if gradient is not None:
                rows.append((digest, gradient.round, gradient.sender, gradient.raw))
            elif self.store.gradient_envelope(digest) is None:
                log.error("round %d: payload %s applied but not kept", entry.round, digest.hex()[:12])
        asyncio.get_running_loop().run_in_executor(None, self.store.add_gradients, rows)
        self.evidence.on_commit(entry.params.get("evidence", []), entry.round)
        self.state = applied.state

    async def _resync_from_snapshot(self, entry: Entry) -> bool:
        """Replace our state by a peer's snapshot whose hash the commit certificate signs (fetched by that hash)."""
        raw = await self._fetch(entry.state_hash)
        if raw is None:
            log.error("no peer could give the certified snapshot of round %d", entry.round)
            return False
        try:
            state = ReplicatedState.deserialize(raw, self.dim, self.genesis.peer_ids)
        except DecodeError as exc:
            log.error("certified snapshot of round %d is malformed: %s", entry.round, exc)
            return False
        if state.hash != entry.state_hash or state.round != entry.round:
            return False
        self.state = state
        self.store.save_snapshot(state.round, state.hash, raw)
        self.diverged = None
        self.metrics.snapshot_resyncs += 1
        log.warning("resynchronised from the certified snapshot of round %d", entry.round)
        return True

    def _divergence(self, why: str) -> None:
        self.metrics.divergences += 1
        self.diverged = why
        log.error("STATE DIVERGENCE: %s; stopping contributions and resyncing from a certified snapshot", why)

    async def _after_commit(self, committed: CommittedEntry, applied: Applied | None) -> None:
        entry = committed.entry
        now = time.monotonic()
        self.metrics.rounds_committed += 1
        self.metrics.round_seconds.append(now - self._round_started)
        phases = self._phases.pop((committed.cert.term, entry.round), {})
        for stale in [k for k in self._phases if k[1] <= entry.round]:
            del self._phases[stale]  # proposals of earlier terms that never committed
        seen = phases.get("preprepare")
        commit_ms = ""
        if seen is not None:
            self.metrics.commit_seconds.append(now - seen)
            # commit_ms: PrePrepare seen -> applied; its parts, each from the PrePrepare: our validation, our
            # prepare quorum (lock persisted, Commit sent), the commit quorum (certificate), then the apply.
            commit_ms = f" commit_ms={1000 * (now - seen):.2f}"
            for phase, label in (("validated", "validate"), ("prepared", "prepare"), ("certified", "certify")):
                if phase in phases:
                    commit_ms += f" {label}_ms={1000 * (phases[phase] - seen):.2f}"
        if entry.round % self.config.consensus.snapshot_every == 0:
            state = self.state  # megabytes to write and fsync: off the event loop
            self._spawn(asyncio.to_thread(self._snapshot_and_prune, state.round, state.hash, state.serialize()),
                        f"snapshot-{state.round}")
        record = RoundRecord(entry.round, committed.cert.term, self.core.leader, entry.state_hash, None, None,
                             applied.rule_used if applied else entry.rule,
                             sorted(self.genesis.name_of(p) for p in (applied.aggregated if applied else ())),
                             sorted(self.genesis.name_of(p) for p in (applied.quarantined if applied else ())),
                             time.time(),
                             {self.genesis.name_of(peer): round(reputation.score(rep), 6)
                              for peer, rep in self.state.reputation})
        self.history.append(record)
        params = self.state.params
        if self.config.max_rounds is not None and self.state.round >= self.config.max_rounds:
            log.info("reached max_rounds=%d", self.config.max_rounds)
        if self.state.round >= self.core.committed_round:
            self._start_round()  # training of the next round first: evaluation is for humans and can wait
        if now - self._last_trim >= TRIM_EVERY_S:
            self._last_trim = now
            asyncio.get_running_loop().run_in_executor(None, release_free_memory)
        every = self.config.training.eval_every
        final = self.config.max_rounds is not None and record.round >= self.config.max_rounds
        if every and (record.round % every == 0 or final):
            self._spawn(self._evaluate(record, params, commit_ms), f"evaluate-{record.round}")
        else:
            self._log_commit(record, commit_ms)

    def _mark_phase(self, term: int, round_: int, phase: str) -> None:
        self._phases.setdefault((term, round_), {}).setdefault(phase, time.monotonic())

    def _snapshot_and_prune(self, round_: int, state_hash: bytes, raw: bytes) -> None:
        """Worker thread: write the snapshot, then apply the disk retention (consensus.keep_*)."""
        self.store.save_snapshot(round_, state_hash, raw)
        consensus = self.config.consensus
        snapshots, payloads = self.store.prune(consensus.keep_snapshots, consensus.keep_payload_rounds)
        if snapshots or payloads:
            log.debug("pruned %d snapshot(s) and %d payload file(s) at round %d", snapshots, payloads, round_)

    async def _evaluate(self, record: RoundRecord, params: torch.Tensor, commit_ms: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            # The trainer's model is shared with training: evaluate in the same single thread, after it.
            record.loss, record.accuracy = await loop.run_in_executor(self._train_pool, self.trainer.evaluate, params)
        except Exception:
            log.exception("evaluation of round %d failed", record.round)
            return
        if self.history and self.history[-1] is record:
            self.last_eval = (record.loss, record.accuracy)
        self._log_commit(record, commit_ms)

    def _log_commit(self, record: RoundRecord, commit_ms: str) -> None:
        evaluated = "" if record.loss is None else f" loss {record.loss:.4f} acc {record.accuracy:.4f}"
        log.info("committed round %d term %d leader %s%s hash %s%s", record.round, record.term,
                 self.genesis.name_of(record.leader) if record.leader else "-", evaluated,
                 record.state_hash.hex()[:12], commit_ms)


def _off_by_one_ulp(applied: Applied) -> Applied:
    """The fault ``fault_injection.diverge_at_round`` injects: the first parameter moved to the next float32."""
    params = applied.state.params.clone()
    params[0] = torch.nextafter(params[0], torch.tensor(float("inf")))
    return dataclasses.replace(applied, state=dataclasses.replace(applied.state, params=params, _hash=None))

"""The node: wires the transport, the consensus core, the state worker, training and the store, and drives them.

One asyncio process. Data flows one way: transport -> inbound admission (swarm/node/inbound.py) -> core -> actions
-> transport / store / state worker (swarm/node/state_worker.py). The round's timing decisions (ready, handover,
train ahead) are the sans-I/O swarm/round/readiness.py; our own gradient is swarm/node/contributor.py. The
replicated state is read by everyone here and replaced only by the state worker.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor

from consensus.actions import BuildProposal, LoadEntries, Send, ValidateProposal
from consensus.events import EntriesLoaded, PayloadsReady, Received, Tick
from consensus.messages import CatchUpRequest, Commit, CommittedEntry, commit_cert_to_plain, committed_from_plain
from consensus.ready import Ready, ready
from consensus.replica import FOLLOWER, Config as CoreConfig, Replica
from consensus.timing import TimingConfig
from crypto.keys import NodeKey
from swarm.config import Genesis, NodeConfig
from swarm.faults.adversary import Adversary
from swarm.ledger.apply import Applied
from swarm.ledger.entry_rules import genesis_hash, open_gradient, rules_of
from swarm.ledger.evidence import EvidenceBook
from swarm.ledger.restore import restore
from swarm.ledger.staleness import parent_of_round
from swarm.ledger.state import genesis_state
from swarm.ledger.store import ChainRow, Store
from swarm.node.contributor import Contributor
from swarm.node.core_link import Ed25519Crypto, encode_message, hard_state_to_plain, persisted_state
from swarm.node.election_log import ElectionLog
from swarm.node.entry_states import EntryStates
from swarm.node.fetch import fetch_by_digest
from swarm.node.heap import release_free_memory
from swarm.node.inbound import Inbound
from swarm.node.membership_desk import MembershipDesk
from swarm.node.limits import fetch_timeout_s, settle_payload_limit, timeout_cap_s
from swarm.node.own_gradient import OwnGradientFile
from swarm.node.peer_scores import PeerScores
from swarm.node.records import Metrics, PhaseClock
from swarm.node.round_log import RoundLog
from swarm.node.serve import PayloadServer
from swarm.node.state_worker import StateWorker
from swarm.node.tasks import NodeTasks
from swarm.round.compression import Compressor
from swarm.round.gradient import Gradient
from swarm.round.pool import GradientPool
from swarm.round.readiness import LeaderView, RoundReadiness
from swarm.training.build import build_node_trainer
from swarm.training.privacy import node_guard, node_settings
from swarm.transport.base import Callbacks, Transport
from swarm.transport.rate_limit import PeerRateLimiter

log = logging.getLogger("swarm.node")

TRIM_EVERY_S = 30.0  # hand free heap pages back to the OS this often (swarm/node/heap.py)


class Node:
    def __init__(self, config: NodeConfig, genesis: Genesis, key: NodeKey, transport: Transport | None = None):
        # A key outside the genesis is a node waiting to be added (swarm/node/membership_desk.py): it follows the
        # chain and contributes once a committed change makes it a member.
        self.config, self.genesis, self.key = config, genesis, key
        self.id = key.peer_id
        self.name = config.name or genesis.name_of(self.id)
        self.members = set(genesis.peer_ids)  # those in force: follows the state (MembershipDesk.follow)
        self.rules = rules_of(genesis)
        self.trainer = build_node_trainer(config, genesis, self.id)  # with training.workers > 1: a started group
        self.compressor = Compressor(config.compression.scheme, k=config.compression.ratio,
                                     error_feedback=config.compression.error_feedback)
        self.adversary = (Adversary(config.attack, key, genesis.swarm_id, self.compressor, genesis.data_index(self.id))
                          if config.attack else None)
        if self.adversary is not None:
            self.trainer.label_flip = self.adversary.label_flip
        self.genesis_state = genesis_state(self.trainer.initial_parameters(), genesis.peer_ids, genesis_hash(genesis))
        self.dim = self.genesis_state.params.numel()
        # Limits follow the model (node/limits.py): refused here, before anything is opened, when they cannot hold it.
        config.transport.max_payload_bytes = settle_payload_limit(config.transport, self.dim, genesis.n)
        self.fetch_timeout_s = fetch_timeout_s(config.transport.max_payload_bytes)
        self.timeout_cap_s = timeout_cap_s(config.consensus, self.dim, config.transport.max_payload_bytes)
        privacy = node_settings(genesis, config, self.trainer)  # a looser override is refused here, before the store
        self.store = Store(config.data_dir)
        self.state = self.genesis_state
        self.pool = GradientPool(self.rules.staleness_bound)
        self.scores = PeerScores()
        self.metrics = Metrics()
        self.metrics.training_workers = config.training.workers
        self.evidence = EvidenceBook(self.store)
        self.readiness = RoundReadiness(self.id, genesis.n, genesis.quorum)
        self.inbound = Inbound(genesis.swarm_id, self.members, self.scores,
                               PeerRateLimiter(config.transport.control_messages_per_s, config.transport.control_burst),
                               self.pool, self.store, self.metrics, config.transport.max_payload_bytes,
                               self.verify_gradient, self._parent_for, self._on_message, self._on_gradient,
                               self.check_ready)
        self.contributor = Contributor(key, genesis.swarm_id, self.trainer, self.compressor, self.adversary,
                                       self.pool, self.metrics, self.verify_gradient, self.push,
                                       node_guard(privacy, self.store), OwnGradientFile(config.data_dir),
                                       slow_factor=config.fault_injection.slow_training)
        self.rounds = RoundLog(genesis, self.contributor.evaluate, config.training.eval_every, config.max_rounds)
        self.diverged: str | None = None
        self.started = time.time()
        self._ready_timer: asyncio.TimerHandle | None = None
        self.phases = PhaseClock()
        self.payloads = PayloadServer(self.pool, self.store, lambda: self.state)
        self._last_trim = time.monotonic()
        self._wake = asyncio.Event()
        self._wake_at = 0.0
        self.tasks = NodeTasks()
        self._state_thread = ThreadPoolExecutor(1, thread_name_prefix="apply")
        self.entries = EntryStates(genesis, self.rules, self.store, self.pool, self._state_thread,
                                   self.verify_gradient, self.fetch)
        self.worker = StateWorker(self)
        self.elections = ElectionLog(genesis)
        self.desk = MembershipDesk(self)
        self.inbound.on_membership = self.desk.on_message
        self.core = self._make_core()  # restores the state first: the transport links with its members
        self.transport = transport or self._make_transport()
        if transport is not None and hasattr(transport, "set_members"):
            transport.set_members(sorted(self.members))

    # ------------------------------------------------------------------------------------------- construction
    def _make_transport(self) -> Transport:
        from swarm.transport.libp2p_host import Libp2pTransport
        inbound = self.inbound
        return Libp2pTransport(self.key, self.config.listen, self.config.bootstrap, sorted(self.members),
                               self.config.transport, Callbacks(
                                   on_payload=inbound.on_payload, on_control=inbound.on_control,
                                   on_misbehaviour=inbound.on_misbehaviour, on_peer_change=self._on_peer_change,
                                   get_payload=self.payloads.get, get_range=self.payloads.get_range,
                                   may_fetch=inbound.may_fetch))

    def _make_core(self) -> Replica:
        self.crypto = Ed25519Crypto(self.key)
        self._restore_state()
        c = self.config.consensus
        timing = TimingConfig(heartbeat_interval=c.heartbeat_s, min_round_timeout=c.election_timeout_s,
                              max_timeout=self.timeout_cap_s)
        # The core keeps only the newest ``memory_rounds`` entries; it reads older ones back through LoadEntries.
        first = max(1, self.store.last_round() - c.memory_rounds + 1)
        persisted = persisted_state(self.store.get_meta("hard"), list(self._stored_committed(first)),
                                    base_round=first - 1)
        persisted.configs = self._stored_configs(first)
        core_config = CoreConfig(swarm_id=self.genesis.swarm_id, node_id=self.id, members=self.genesis.peer_ids,
                                 genesis_state_hash=self.genesis_state.hash, timing=timing,
                                 memory_rounds=c.memory_rounds)
        return Replica(core_config, self.crypto, persisted, random.Random(), time.monotonic())

    def _restore_state(self) -> None:
        """The newest certified snapshot plus replay of stored entries (swarm/ledger/restore.py); rounds the store
        cannot reproduce are applied again from peers' payloads or a certified snapshot once the node runs."""
        restored = restore(self.store, self.genesis, self.genesis_state, self.config.transport.max_payload_bytes)
        if restored.diverged:
            self.divergence(f"replay of {restored.stop}")
        self.state = restored.state
        self.desk.follow()
        self.pool.advance(self.state.round + 1)
        if self.store.last_round():
            log.info("restored state at round %d (%s)", self.state.round, self.state.hash.hex()[:12])

    # ------------------------------------------------------------------------------------------- lifecycle
    async def run(self) -> None:
        """Run until ``stop()``; returns after a clean shutdown."""
        await self.transport.start()
        log.info("node %s (%s) listening on %s", self.name, self.id, ", ".join(self.transport.listen_addrs))
        self.tasks.spawn(self.worker.run(), "state-worker")
        self.tasks.spawn(self._ticker(), "ticker")
        # Entries persisted before a crash but not replayable from the store (payloads missing): apply them
        # again, fetching payloads or a certified snapshot from peers.
        for committed in self._stored_committed(self.state.round + 1):
            self.worker.commit(committed)
        if self.state.round >= self.core.committed_round:
            self.start_round()
        await self.tasks.stopping.wait()
        await self.tasks.cancel_all()
        await self.transport.stop()
        self.close()
        log.info("node %s stopped at round %d", self.name, self.state.round)

    def close(self) -> None:
        """Release the threads and the store (``run`` does it on its way out; a node built but never run, in a
        test, calls it itself)."""
        self._cancel_ready_timer()
        self._state_thread.shutdown(wait=True, cancel_futures=True)
        self.trainer.close()  # first: a round in flight on a worker group is cut short, not waited for
        self.contributor.close()
        self.store.close()

    def stop(self) -> None:
        log.info("stopping (signal or request)")
        self.tasks.stopping.set()

    def wake(self) -> None:
        """Wake the ticker now (it recomputes its next wake-up time)."""
        self._wake.set()

    # ------------------------------------------------------------------------------------------- core driving
    def step(self, event, source: str | None = None) -> None:
        """Feed the core one event and carry out what it returns; ``source``: the peer that delivered the message
        the event carries, scored when the core finds it invalid."""
        try:
            actions = self.core.step(time.monotonic(), event)
        except Exception:  # a bug in the core must not take the node down silently
            log.exception("consensus core failed on %s", type(event).__name__)
            return
        batch = ready(actions)
        self.carry_out(batch)
        for reason in batch.rejections if source is not None else ():
            self.inbound.reject(source, reason, f"{type(event.message).__name__} refused by the consensus core")
        if self.elections.observe(self.core):
            self.metrics.leader_changes += 1
            self._schedule_handover(self.state.round + 1)

    def carry_out(self, batch: Ready) -> None:
        """Carry out one step of the core, in the order its batch gives: persist, sync once if a message is to
        leave (a chain row appended without its fsync is durable before any peer can hear of it), send, then
        apply and answer the core's requests."""
        if batch.hard_state is not None:
            self.store.put_meta("hard", hard_state_to_plain(batch.hard_state))
        for committed in batch.entries:
            self.store.append(ChainRow(committed.entry.round, committed.cert.term, committed.entry.digest(),
                                       committed.entry.to_plain(), commit_cert_to_plain(committed.cert),
                                       committed.entry.state_hash), durable=False)
        if batch.must_sync:
            self.store.sync()
        for action in batch.messages:
            if isinstance(action.message, Commit):  # sent once our prepare quorum is in and the lock is persisted
                self.mark_phase(action.message.term, action.message.round, "prepared")
            if isinstance(action.message, CatchUpRequest) and isinstance(action, Send):
                self.inbound.asked_catchup(action.to, action.message.round)
            data = encode_message(self.key, self.genesis.swarm_id, action.message)
            for peer in [action.to] if isinstance(action, Send) else self.core.membership.members:
                if peer != self.id:
                    self.send(peer, data)
        for committed in batch.committed:
            self.mark_phase(committed.cert.term, committed.entry.round, "certified")
            self.worker.commit(committed)
        for request in batch.requests:
            if isinstance(request, BuildProposal):
                self.worker.build(request.round, request.parent_state_hash)
            elif isinstance(request, ValidateProposal):
                self.mark_phase(request.term, request.round, "preprepare")
                self.worker.validate(request.term, request.round, request.entry)
            else:
                self.tasks.spawn(self._load_entries(request), "load-entries")
        for evidence in batch.evidence:
            log.warning("equivocation by leader %s in term %d round %d", self.genesis.name_of(evidence.leader),
                        evidence.term, evidence.round)
            self.evidence.keep(evidence)
        if batch.wake_at is not None:
            self._wake_at = batch.wake_at
            self._wake.set()

    async def _load_entries(self, action: LoadEntries) -> None:
        """A peer asked for rounds older than the core's in-memory window: read them from the store (in a worker
        thread) and hand them back to the core, which signs the answer."""
        entries = await asyncio.get_running_loop().run_in_executor(
            None, lambda: tuple(self._stored_committed(action.from_round, action.limit)))
        self.metrics.catchup_entries_from_store += len(entries)
        self.step(EntriesLoaded(action.peer, action.from_round, entries))

    def _stored_committed(self, start: int, limit: int = 1 << 30):
        for row in self.store.rows(start, limit):
            yield committed_from_plain({"entry": row.entry, "cert": row.certificate})

    def _stored_configs(self, before: int) -> tuple[tuple[int, tuple[str, ...]], ...]:
        """Membership changes committed before round ``before`` (the core reads later ones from its chain tail),
        and the one the restored state is in, which a snapshot may carry without the rows before it."""
        changes = {row.round + 1: tuple(row.entry["members"]) for row in self.store.rows(1, max(0, before - 1))
                   if row.entry.get("members") is not None}
        if self.state.roster is not None and self.state.roster.since <= before:
            changes.setdefault(self.state.roster.since, self.state.members)
        return tuple(sorted(changes.items()))

    def send(self, peer: str, data: bytes) -> None:
        self.metrics.bytes_out += len(data)
        try:
            self.transport.send(peer, data)
        except KeyError:
            pass  # no longer (or not yet) a member the transport links with

    async def _ticker(self) -> None:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that lands as the event
        # is set, and this loop then ran on after shutdown (a node that never exited on SIGTERM, 1 run in 10).
        while not self.tasks.stopping.is_set():
            delay = max(0.0, self._wake_at - time.monotonic()) if self._wake_at else 1.0
            self._wake.clear()
            try:
                async with asyncio.timeout(min(delay, 1.0)):
                    await self._wake.wait()
                continue  # a new wake-up time arrived; recompute
            except TimeoutError:
                pass
            if self._wake_at and time.monotonic() >= self._wake_at:
                self.step(Tick())

    # ------------------------------------------------------------------------------------------- transport side
    def _on_message(self, peer: str, message) -> None:
        self.step(Received(message), source=peer)

    def _parent_for(self, round_: int) -> bytes | None:
        """The parent a gradient for ``round_`` must name: our state's hash for the pending round; unchecked for
        the next one, which the pool keeps until we get there; for an earlier round within the staleness bound,
        the hash our replicated state remembers for it (None when it does not: the inbound check drops it)."""
        if round_ > self.state.round + 1:
            return None
        return parent_of_round(self.state, round_)

    def _still_counts(self, round_: int) -> bool:
        """Our gradient for ``round_`` may still be counted: its round is pending, or late within the bound."""
        pending = self.state.round + 1
        return pending - self.rules.staleness_bound <= round_ <= pending

    def _on_gradient(self, gradient: Gradient) -> None:
        if gradient.round == self.state.round + 1 and gradient.parent != self.state.hash:
            return  # the state moved on while we verified: this gradient was built for an older one
        if self.inbound.keep_gradient(gradient):
            self.check_ready()

    async def _on_peer_change(self, peer: str, connected: bool) -> None:
        log.info("peer %s %s", self.genesis.name_of(peer), "connected" if connected else "disconnected")
        if connected:
            # A peer that (re)joins may have missed this round's gradient: push it again.
            mine = next((g for g in self.pool.for_round(self.state.round + 1) if g.sender == self.id), None)
            if mine is not None:
                self.tasks.spawn(self.push(mine.raw), "repush")

    def verify_gradient(self, raw: bytes, round_: int | None, parent: bytes | None,
                        digest: bytes | None = None) -> Gradient:
        """A gradient envelope checked as every receiver checks it; raises DecodeError with the reason."""
        return open_gradient(raw, self.genesis, self.dim, self.config.transport.max_payload_bytes, round_, parent,
                             digest, self.state.members)

    async def push(self, raw: bytes, to: list[str] | None = None) -> None:
        self.store.sync()  # the gradient names the newest committed state as its parent: that row is durable first
        results = await self.transport.push(raw, to)
        self.metrics.bytes_out += len(raw) * sum(1 for r in results.values() if r.ok)

    async def fetch(self, digest: bytes) -> bytes | None:
        return await fetch_by_digest(self.transport, digest, self.core.leader, self.fetch_timeout_s)

    # ------------------------------------------------------------------------------------------- rounds
    def start_round(self) -> None:
        """Begin round state.round + 1: train on the committed state and push the signed gradient."""
        round_ = self.state.round + 1
        self.pool.advance(round_)
        self.readiness.begin(round_, time.monotonic())
        self._cancel_ready_timer()
        if self.diverged or not self.desk.contributing or not self.readiness.start_training(round_,
                                                                                               self.config.max_rounds):
            return
        observed = [g.vector for g in self.pool.previous] if self.adversary is not None else []
        self.tasks.spawn(self.contributor.contribute(round_, self.state, observed,
                                                lambda: self._still_counts(round_), self.check_ready),
                    f"train-{round_}")
        self.check_ready()

    def check_ready(self) -> None:
        """Ask the readiness tracker whether the pending round's gradients are ready to propose; arm a timer for
        the end of its grace period when it names one."""
        round_ = self.state.round + 1
        if self.readiness.observe(round_, self.pool.count(round_, self.state.hash), time.monotonic()):
            self._cancel_ready_timer()
            self._on_ready(round_)
            return
        deadline = self.readiness.next_deadline()
        if deadline is not None and self._ready_timer is None:
            loop = asyncio.get_running_loop()
            self._ready_timer = loop.call_later(max(0.0, deadline - time.monotonic()), self._ready_timer_fired)

    def _ready_timer_fired(self) -> None:
        self._ready_timer = None
        self.check_ready()

    def _cancel_ready_timer(self) -> None:
        if self._ready_timer is not None:
            self._ready_timer.cancel()
            self._ready_timer = None

    def _on_ready(self, round_: int) -> None:
        aggregate = self.worker.speculate(round_)
        if aggregate is not None and self.config.training.train_ahead:
            aggregate.add_done_callback(lambda f, next_round=round_ + 1: self._train_ahead(next_round, f))
        self.step(PayloadsReady(round_))
        self._schedule_handover(round_)

    def _train_ahead(self, round_: int, aggregate: asyncio.Future) -> None:
        """Our own aggregate of the pending round is ready: start training the next round on it (see
        Contributor.train_ahead)."""
        if aggregate.cancelled() or aggregate.exception() is not None or self.diverged or self.adversary is not None:
            return
        if round_ == self.state.round + 2 and self.readiness.may_train_ahead(round_, self.config.max_rounds):
            self.contributor.train_ahead(round_, aggregate.result().params)

    def _schedule_handover(self, round_: int) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # stepped outside the loop (tests drive the core directly)
            return
        loop.call_later(self.readiness.handover_delay_s, self._hand_over_if_no_proposal, round_)

    def _hand_over_if_no_proposal(self, round_: int) -> None:
        """Push the round's payloads to a leader that has not proposed it (swarm/round/readiness.py says when)."""
        if round_ != self.state.round + 1 or self.tasks.stopping.is_set():
            return
        term, leader = self.core.term, self.core.leader
        view = LeaderView(term, leader, self.core.role == FOLLOWER,
                          self.phases.seen(term, round_, "preprepare"))
        gradients = self.pool.for_round(round_, self.state.hash)
        if not self.readiness.should_hand_over(round_, len(gradients), view):
            return
        self.metrics.payload_handovers += 1
        log.info("no proposal for round %d from leader %s after %.1fs: pushing it the %d payloads held here",
                 round_, self.genesis.name_of(leader), self.readiness.handover_delay_s, len(gradients))
        for gradient in gradients:
            self.tasks.spawn(self.push(gradient.raw, to=[leader]), "handover")

    # ------------------------------------------------------------------------------------------- commits
    def mark_phase(self, term: int, round_: int, phase: str) -> None:
        self.phases.mark(term, round_, phase, time.monotonic())

    def divergence(self, why: str) -> None:
        self.metrics.divergences += 1
        self.diverged = why
        log.error("STATE DIVERGENCE: %s; stopping contributions and resyncing from a certified snapshot", why)

    async def after_commit(self, committed: CommittedEntry, applied: Applied | None) -> None:
        entry = committed.entry
        self.desk.follow()
        now = time.monotonic()
        self.metrics.rounds_committed += 1
        self.metrics.round_seconds.append(now - self.readiness.started_at)
        seconds, commit_ms = self.phases.committed(committed.cert.term, entry.round, now)
        if seconds is not None:
            self.metrics.commit_seconds.append(seconds)
        if entry.round % self.config.consensus.snapshot_every == 0:
            self.tasks.spawn(self.worker.snapshot(self.state), f"snapshot-{entry.round}")
        record = self.rounds.record(committed, applied, self.state, self.core.leader)
        params = self.state.params
        if self.config.max_rounds is not None and self.state.round >= self.config.max_rounds:
            log.info("reached max_rounds=%d", self.config.max_rounds)
        if self.state.round >= self.core.committed_round:
            self.start_round()  # training of the next round first: evaluation is for humans and can wait
        if now - self._last_trim >= TRIM_EVERY_S:
            self._last_trim = now
            asyncio.get_running_loop().run_in_executor(None, release_free_memory)
        if self.rounds.wants_evaluation(record.round):
            self.tasks.spawn(self.rounds.evaluate_and_log(record, params, commit_ms), f"evaluate-{record.round}")
        else:
            self.rounds.log(record, commit_ms)

    @property
    def history(self):
        return self.rounds.history

    @property
    def last_eval(self) -> tuple[float, float] | None:
        return self.rounds.last_eval

"""The state worker: the one place that reads or replaces the node's replicated state.

Every job that touches it (build our proposal, validate a leader's, apply a committed entry) runs through one FIFO
queue, in order, with the tensor work in the single state thread so the event loop keeps answering heartbeats. A
committed entry that cannot be applied yet (payloads unreachable, or a state hash that differs from the
certificate's) is retried, or replaced by a certified snapshot fetched from a peer; it is never skipped.

Every write after a commit (the payload files an entry names, a snapshot) runs in a worker thread and is awaited
and checked: a failure (out of file descriptors, a full disk) is logged as an error, counted in ``node.metrics``
(/status "store_errors", /metrics) and retried until it holds. The applied state becomes the node's, and the node
reports the round and starts the next one (``node.after_commit``), only once the round's payloads are written, so
a restart's replay and ``swarm verify`` find every committed round's payloads on a node that reported it.

The payloads an entry names are written before we vote for it too (a leader's before it proposes, a follower's
before its ValidationResult lets the core Prepare), so a commit certificate means that at least 2f+1 members hold
them on disk. Otherwise a swarm stopped all at once between a commit and its adoption (``docker compose down``)
held the round's gradients only in memory and lost them everywhere: the round was committed and could never be
replayed.
"""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from consensus.events import ProposalBuilt, ValidationResult
from consensus.messages import CommittedEntry, Entry, commit_cert_to_plain
from consensus.quorum import Membership
from crypto.wire import DecodeError
from swarm.faults.divergence import off_by_one_ulp
from swarm.ledger import staleness
from swarm.ledger.apply import Applied, InvalidEntry
from swarm.ledger.restore import certified_snapshot
from swarm.ledger.state import ReplicatedState
from swarm.node.snapshot_transfer import SnapshotTransfer, TransferSettings

if TYPE_CHECKING:
    from swarm.node.node import Node

log = logging.getLogger("swarm.node")

APPLY_RETRY_S = 1.0
STORE_RETRY_FIRST_S = 0.25  # a failed write after a commit is retried after this, doubling up to the next
STORE_RETRY_MAX_S = 10.0
TRANSFER_DIR = "transfers"  # under the data dir: snapshots being fetched in chunks (resumed after a restart)
FAR_BEHIND_SNAPSHOTS = 4   # a node more than this many snapshot intervals behind the head jumps to a snapshot
FAR_BEHIND_MIN_ROUNDS = 64  # ... and never for less than this many rounds: replay is cheaper and keeps every payload
SNAPSHOT_JUMP_TRIES = 3     # snapshot rounds tried, newest first (peers keep their newest few: keep_snapshots)
KEPT_MEMORY = 4096  # digests of payloads written, remembered so that adopting an entry does not write them again


def _transfer_settings(fetch_timeout_s: float) -> TransferSettings:
    """A snapshot transfer gives up (keeping its chunks for the next try) when nothing arrived for as long as a
    whole fetch may take, and never sooner than one chunk's deadline."""
    settings = TransferSettings()
    settings.stall_s = max(fetch_timeout_s, settings.timeout_s() + 1.0)
    return settings


class StateWorker:
    def __init__(self, node: Node):
        self.node = node
        self.pending: dict[int, CommittedEntry] = {}  # committed, waiting for their turn to apply
        self._jobs: asyncio.Queue = asyncio.Queue()
        self._retry_scheduled = False
        self._refusals_logged: set[bytes] = set()  # late gradients whose refusal was logged (once each)
        self._kept: dict[tuple[bytes, int], None] = {}  # (digest, round) written by this process, newest last
        self._jumps_tried: set[int] = set()  # snapshot rounds a far-behind node tried to jump to

    async def run(self) -> None:
        while True:
            job, *args = await self._jobs.get()
            try:
                await job(*args)
            except Exception:
                log.exception("state job %s failed", job.__name__)

    def build(self, round_: int, parent: bytes) -> None:
        self._jobs.put_nowait((self._build, round_, parent))

    def validate(self, term: int, round_: int, entry: Entry) -> None:
        self._jobs.put_nowait((self._validate, term, round_, entry))

    def commit(self, committed: CommittedEntry) -> None:
        """Register a committed entry to apply. Known at once, not when the worker reaches its job: a node
        catching up that cannot replay an old round (its payloads pruned everywhere) resyncs to the newest commit
        it holds, not the next one."""
        if committed.entry.round > self.node.state.round:
            self.pending[committed.entry.round] = committed
        self._jobs.put_nowait((self._apply_committed,))

    def entry_params(self) -> dict:
        """What a leader adds to its entry: the previous commit certificate (for consensus participation) and
        equivocation evidence not yet committed."""
        node = self.node
        params: dict[str, Any] = {}
        late = node.core.certificate_with_late_commits(node.state.round)  # every Commit seen, not the first 2f+1
        previous = node.store.row(node.state.round)
        if previous is not None and previous.entry.get("members") is not None:
            pass  # the previous round counted in another configuration: its certificate proves nothing here
        elif late is not None:
            params["prev_cert"] = commit_cert_to_plain(late)
        elif previous is not None:
            params["prev_cert"] = previous.certificate
        node.evidence.expire(node.state.round + 1)
        for piece in node.inbound.take_evidence():  # gradient equivocation caught on arrival
            node.evidence.keep(piece)
        evidence = node.evidence.for_proposal(node.state.round + 1)
        if evidence:
            params["evidence"] = evidence
        return params

    def speculate(self, round_: int) -> asyncio.Future | None:
        """Start aggregating the gradients we hold now: a leader proposes the same set in the common case, so
        validating its proposal then costs only the cheap reputation step."""
        node = self.node
        if round_ != node.state.round + 1:
            return None
        gradients = node.pool.for_round(round_, node.state.hash)
        if len(gradients) < Membership(node.state.members).quorum:
            return None
        future = node.entries.aggregate(node.state, gradients, self.late_gradients(node.state, gradients))
        future.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
        return future

    async def _build(self, round_: int, parent: bytes) -> None:
        node = self.node
        state = node.state
        if round_ != state.round + 1 or parent != state.hash:
            log.warning("asked to build round %d on a state we do not hold", round_)
            return
        gradients = node.pool.for_round(round_, state.hash)
        if len(gradients) < Membership(state.members).quorum:
            log.warning("asked to build round %d with only %d gradients", round_, len(gradients))
            return
        params = self.entry_params()
        late = self.late_gradients(state, gradients)
        if late:
            params[staleness.STALE_PARAM] = staleness.to_params(round_, late)
        change = node.desk.for_proposal()  # a membership change waiting for a leader
        named = None
        if change is not None:
            params.update(change[0])
            named = change[1]
        applied = await node.entries.apply_gradients(state, gradients, params, late, named)
        entry = Entry(round=round_, gradient_digests=tuple(sorted(g.digest for g in gradients)),
                      rule=node.rules.rule, params=params, state_hash=applied.state.hash,
                      parent_state_hash=state.hash, members=named)
        node.entries.applied[entry.digest()] = applied
        await self.keep_payloads(entry)
        node.step(ProposalBuilt(entry))

    def late_gradients(self, state: ReplicatedState, fresh: list) -> list:
        """The late gradients of earlier rounds the pool holds that an entry on ``state`` may name (newest per
        member without a fresh one; swarm/ledger/staleness.py); each one left out is logged once, with why."""
        bound = self.node.rules.staleness_bound
        if not bound:
            return []
        late, refused = staleness.choose(state, bound, self.node.pool.late(state.round + 1), fresh)
        for gradient, why in refused:
            if gradient.digest not in self._refusals_logged:
                if len(self._refusals_logged) > 4096:
                    self._refusals_logged.clear()
                self._refusals_logged.add(gradient.digest)
                log.info("late gradient of %s for round %d left out of round %d: %s",
                         self.node.genesis.name_of(gradient.sender), gradient.round, state.round + 1, why)
        return late

    async def _validate(self, term: int, round_: int, entry: Entry) -> None:
        node = self.node
        ok = False
        try:
            applied = await node.entries.derive(node.state, entry)
            ok = applied.state.hash == entry.state_hash
            if ok:
                node.entries.applied[entry.digest()] = applied
                await self.keep_payloads(entry)
            else:
                log.warning("proposal for round %d in term %d gives another state hash: rejected", round_, term)
        except (InvalidEntry, DecodeError) as exc:
            log.warning("proposal for round %d in term %d is invalid: %s", round_, term, exc)
        node.mark_phase(term, round_, "validated")
        node.step(ValidationResult(term, round_, entry.digest(), ok))

    async def _apply_committed(self) -> None:
        """Apply committed entries in round order; one that cannot be applied yet is retried shortly. Far behind
        (a joiner, a node back from a long outage), first jump to a recent certified snapshot."""
        await self._jump_if_far_behind()
        while (committed := self.pending.get(self.node.state.round + 1)) is not None:
            if not await self._apply_one(committed):
                if not self._retry_scheduled:
                    self._retry_scheduled = True
                    asyncio.get_running_loop().call_later(APPLY_RETRY_S, self._retry)
                return
        for stale in [r for r in self.pending if r <= self.node.state.round]:
            del self.pending[stale]

    async def _jump_if_far_behind(self) -> None:
        """When the committed head is more than FAR_BEHIND_SNAPSHOTS snapshot intervals ahead of our state, replay
        cannot catch up with a swarm that commits as fast as we apply: take the newest snapshot round we hold a
        certified entry for (peers keep their newest ``consensus.keep_snapshots`` snapshot files and serve them by
        hash, in chunks), then the one before, each tried once. The rounds jumped over are certificate-checked only
        (their payloads were never fetched: the store says so, as after pruning, and ``swarm verify`` replays from
        the snapshot). If no peer has one, replay goes on as before."""
        node = self.node
        if not self.pending:
            return
        every = node.config.consensus.snapshot_every
        head = max(self.pending)
        if head - node.state.round <= max(FAR_BEHIND_MIN_ROUNDS, FAR_BEHIND_SNAPSHOTS * every):
            return
        target = head - head % every
        for _ in range(SNAPSHOT_JUMP_TRIES):
            committed = self.pending.get(target)
            if target <= node.state.round + every or committed is None:
                return
            if target not in self._jumps_tried:
                self._jumps_tried.add(target)
                log.warning("round %d is %d rounds behind the committed head %d: fetching the certified snapshot "
                            "of round %d instead of replaying", node.state.round, head - node.state.round, head,
                            target)
                if await self._resync_from_snapshot(committed.entry):
                    await self.write("record of the rounds jumped over", self._mark_jumped, target)
                    node.entries.round_done()
                    await node.after_commit(committed, None)
                    return
            target -= every

    def _mark_jumped(self, round_: int) -> None:
        """Payloads of rounds up to ``round_`` are absent on purpose (never fetched), like pruned ones."""
        store = self.node.store
        if int(store.get_meta("payloads_pruned_through", 0) or 0) < round_:
            store.put_meta("payloads_pruned_through", round_)

    def _retry(self) -> None:
        self._retry_scheduled = False
        self._jobs.put_nowait((self._apply_committed,))

    async def _apply_one(self, committed: CommittedEntry) -> bool:
        node = self.node
        entry = committed.entry
        try:
            applied = await node.entries.derive(node.state, entry)
        except (InvalidEntry, DecodeError) as exc:
            log.warning("round %d cannot be applied from its payloads (%s): trying the certified snapshot",
                        entry.round, exc)
            applied = None
        if applied is not None and entry.round == node.config.fault_injection.diverge_at_round:
            applied = off_by_one_ulp(applied)
        if applied is not None and applied.state.hash != entry.state_hash:
            node.divergence(f"round {entry.round}: applying the committed entry gave another state hash")
            applied = None
        if applied is None:
            # The newest committed state is the one peers most likely hold as their current state.
            newest = self.pending[max(self.pending)] if self.pending else committed
            for target in dict.fromkeys([newest, committed]):
                if await self._resync_from_snapshot(target.entry):
                    committed = target
                    break
            else:
                return False
        else:
            await self._adopt(committed, applied)
        node.entries.round_done()
        await node.after_commit(committed, applied)
        return True

    async def _adopt(self, committed: CommittedEntry, applied: Applied) -> None:
        """Make the applied state ours once its gradients are written to the store (in a thread, awaited, retried
        until written) for restarts, audits and lagging peers."""
        node = self.node
        entry = committed.entry
        await self.keep_payloads(entry)
        node.evidence.on_commit(entry.params.get("evidence", []), entry.round)
        node.state = applied.state

    async def keep_payloads(self, entry: Entry) -> None:
        """Write the gradient envelopes ``entry`` names (fresh and late) that this process has not written yet,
        under the entry's round (retention keeps them as long as that entry's replay needs them)."""
        node = self.node
        rows = []
        late = [digest for digest, _s in staleness.from_params(entry.params, node.rules.staleness_bound,
                                                                 node.genesis.n)]
        for digest in [*entry.gradient_digests, *late]:
            if (digest, entry.round) in self._kept:
                continue
            gradient = node.pool.by_digest(digest) or node.entries.fetched.get(digest)
            if gradient is not None:
                rows.append((digest, entry.round, gradient.sender, gradient.raw))
            elif node.store.gradient_envelope(digest) is None:
                log.error("round %d: payload %s applied but not kept", entry.round, digest.hex()[:12])
        if rows:
            await self.write(f"payloads of round {entry.round}", node.store.add_gradients, rows)
            for digest, round_, _sender, _raw in rows:
                self._kept[(digest, round_)] = None
            while len(self._kept) > KEPT_MEMORY:
                del self._kept[next(iter(self._kept))]

    async def _resync_from_snapshot(self, entry: Entry) -> bool:
        """Replace our state by a peer's snapshot whose hash the commit certificate signs (fetched by that hash, in
        chunks from several members, resumable and verified: swarm/node/snapshot_transfer.py). A transport without
        ranged fetches (a test's stand-in), or peers that answer no range at all, get the whole-payload fetch."""
        node = self.node
        whole = not hasattr(node.transport, "fetch_range")
        raw = None
        if not whole:
            transfer = SnapshotTransfer(node.transport, entry.state_hash, node.config.transport.max_payload_bytes,
                                        Path(node.config.data_dir) / TRANSFER_DIR, f"snapshot of round {entry.round}",
                                        settings=_transfer_settings(node.fetch_timeout_s),
                                        on_bad_peer=lambda peer, what: node.inbound.reject(peer, "bad_chunk", what))
            node.metrics.snapshot_transfer = transfer.progress
            raw = await transfer.run()
            whole = raw is None and not transfer.answered
        if whole:
            raw = await node.fetch(entry.state_hash)
        if raw is None:
            log.error("no peer could give the certified snapshot of round %d", entry.round)
            return False
        try:
            state = certified_snapshot(raw, entry.state_hash, node.dim, None)
        except DecodeError as exc:
            log.error("snapshot fetched for round %d is not the certified one: %s", entry.round, exc)
            return False
        if state.round != entry.round:
            return False
        await self.write(f"snapshot of round {state.round}", node.store.save_snapshot, state.round, state.hash, raw)
        node.state = state
        node.diverged = None
        node.metrics.snapshot_resyncs += 1
        log.warning("resynchronised from the certified snapshot of round %d", entry.round)
        return True

    async def snapshot(self, state: ReplicatedState) -> None:
        """Write a snapshot of ``state`` and apply the disk retention (consensus.keep_*): megabytes to serialize,
        write and fsync, all in a worker thread."""
        await self.write(f"snapshot of round {state.round}", self._snapshot_and_prune, state)

    async def write(self, what: str, job, *args) -> None:
        """Run the store write ``job(*args)`` in a worker thread and wait for it; a failure is logged, counted in
        node.metrics (shown in /status and /metrics) and retried, with a growing pause, until the write holds."""
        metrics = self.node.metrics
        delay, failures = STORE_RETRY_FIRST_S, 0
        while True:
            try:
                await asyncio.to_thread(job, *args)
            except Exception as exc:  # OSError (descriptors, disk), sqlite3.Error, or a bug: never silent
                failures += 1
                metrics.store_write_errors += 1
                metrics.last_store_error = f"{what}: {type(exc).__name__}: {exc}"
                metrics.last_store_error_at = time.time()
                metrics.store_write_failing = what
                log.error("writing the %s failed (%s: %s); retry %d in %.2g s (the round waits for it)",
                          what, type(exc).__name__, exc, failures, delay)
                await asyncio.sleep(delay)
                delay = min(2 * delay, STORE_RETRY_MAX_S)
                continue
            if failures:
                log.warning("wrote the %s after %d failed attempt(s)", what, failures)
                if metrics.store_write_failing == what:
                    metrics.store_write_failing = None
            return

    def _snapshot_and_prune(self, state: ReplicatedState) -> None:
        store, consensus = self.node.store, self.node.config.consensus
        store.save_snapshot(state.round, state.hash, state.serialize())
        snapshots, payloads = store.prune(consensus.keep_snapshots, consensus.keep_payload_rounds)
        if snapshots or payloads:
            log.debug("pruned %d snapshot(s) and %d payload file(s) at round %d", snapshots, payloads, state.round)

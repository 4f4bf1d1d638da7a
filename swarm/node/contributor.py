"""This node's own contribution to a round: train on the committed state (or use the update trained ahead on the
same parameters), with differential privacy on clip it and add noise (swarm/training/privacy.py), compress with
error feedback, sign, keep and push. Past its privacy budget the node contributes no more (it still follows).
Training runs in its own thread; the result never touches the replicated state, only the gradient pool, as any
peer's gradient would. With late updates kept (genesis ``staleness.bound``), a gradient finished after its round
was committed is still kept and pushed while it may count (swarm/ledger/staleness.py), and a node slower than the
round trains only the newest round it was asked for, instead of a backlog of rounds that can no longer count.
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Awaitable, Callable

import torch

from crypto.keys import NodeKey
from crypto.wire import DecodeError
from swarm.faults.adversary import Adversary
from swarm.ledger.state import ReplicatedState
from swarm.node.own_gradient import OwnGradientFile
from swarm.node.records import Metrics, PrivacySpent
from swarm.round.compression import Compressor
from swarm.round.gradient import Gradient, make_gradient
from swarm.round.pool import GradientPool
from swarm.training.privacy import PrivacyGuard
from swarm.training.trainer import Trainer

log = logging.getLogger("swarm.node")


class Contributor:
    def __init__(self, key: NodeKey, swarm_id: str, trainer: Trainer, compressor: Compressor,
                 adversary: Adversary | None, pool: GradientPool, metrics: Metrics,
                 verify: Callable[[bytes, int, bytes], Gradient], push: Callable[[bytes], Awaitable[None]],
                 privacy: PrivacyGuard | None = None, own: OwnGradientFile | None = None, slow_factor: float = 1.0):
        self.key, self.swarm_id = key, swarm_id
        self.slow_factor = slow_factor  # fault injection: local training takes this many times as long
        self._newest_round = 0  # the newest round a contribution was asked for
        self.privacy = privacy
        self.own = own  # where the gradient we sign is kept until it is superseded (node/own_gradient.py)
        self.trainer, self.compressor, self.adversary = trainer, compressor, adversary
        self.pool, self._verify, self._push = pool, verify, push
        self.pool_thread = ThreadPoolExecutor(1, thread_name_prefix="train")  # training and evaluation share it
        self.metrics = metrics
        # (round, parameters, future update) of a local update trained ahead of its round's commit
        self._ahead: tuple[int, torch.Tensor, asyncio.Future] | None = None
        self._show_privacy()

    async def contribute(self, round_: int, state: ReplicatedState, observed: list[torch.Tensor],
                         still_pending: Callable[[], bool], on_kept: Callable[[], None]) -> None:
        """Train, seal and keep our gradient for ``round_`` on ``state``, then push it to every peer, if
        ``still_pending()`` says it may still count by then. ``on_kept`` runs as soon as it is in the pool: it
        counts towards readiness at once, not once every peer took it (one may be unreachable for seconds)."""
        loop = asyncio.get_running_loop()
        self._newest_round = max(self._newest_round, round_)
        sealed = self._signed_before(round_, state)  # after a restart: the very gradient we already pushed
        if sealed is None:
            if not await loop.run_in_executor(self.pool_thread, self.may_contribute):
                self._ahead = None
                return
            if round_ < self._newest_round:  # a newer round was asked for while the trainer was busy: train that
                log.info("round %d skipped: the swarm reached round %d while this node was training",
                         round_, self._newest_round)
                return
            try:
                update = await self._local_update(round_, state)
                sealed = await loop.run_in_executor(self.pool_thread, self._seal, round_, state, update, observed)
            except Exception:
                log.exception("local training failed for round %d", round_)
                return
        if not still_pending():
            return  # the swarm moved on while we trained
        for _raw, gradient in sealed:
            if gradient is not None:
                self.pool.add(gradient)
        on_kept()
        for raw, _gradient in sealed:
            await self._push(raw)

    def _signed_before(self, round_: int, state: ReplicatedState) -> list[tuple[bytes, Gradient]] | None:
        """The envelope saved for this very round and parent before a crash, checked as receivers check it."""
        raw = self.own.load() if self.own is not None and self.adversary is None else None
        if raw is None:
            return None
        try:
            gradient = self._verify(raw, round_, state.hash)
        except DecodeError:
            return None  # another round or parent (the usual case), or damaged: train afresh
        if gradient.sender != self.key.peer_id:
            return None
        log.info("round %d: pushing the gradient signed before the restart again", round_)
        return [(raw, gradient)]

    def train_ahead(self, round_: int, params: torch.Tensor) -> None:
        """Start training ``round_`` on the parameters our own aggregate of the previous round gives, while that
        round is still being agreed on. The commit nearly always names the same gradients, so the committed state
        then holds this very parameter tensor and the update is used as is (it is signed only after the commit,
        on the committed state hash); otherwise it is dropped. Training is local, never replicated: it may start
        from anything, and the three-phase commit no longer leaves the CPU idle."""
        if self.privacy is not None and self.privacy.exhausted:
            return
        future = asyncio.get_running_loop().run_in_executor(self.pool_thread, self._train, params)
        future.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
        self._ahead = (round_, params, future)

    def may_contribute(self) -> bool:
        """False once one more released update would take the privacy spent past the budget (said once). In the
        training thread: Opacus takes ~0.1 s to compute an epsilon."""
        if self.privacy is None or self.privacy.may_contribute():
            return True
        self.metrics.privacy.withheld_rounds += 1
        self._show_privacy()
        return False

    def _show_privacy(self) -> None:
        if self.privacy is None:
            return
        withheld = self.metrics.privacy.withheld_rounds if self.metrics.privacy is not None else 0
        self.metrics.privacy = PrivacySpent(**self.privacy.view(), withheld_rounds=withheld)

    async def evaluate(self, params: torch.Tensor) -> tuple[float, float]:
        """(loss, accuracy) of ``params``; in the training thread, after any step, since they share the model."""
        return await asyncio.get_running_loop().run_in_executor(self.pool_thread, self.trainer.evaluate, params)

    def close(self) -> None:
        self.pool_thread.shutdown(wait=True, cancel_futures=True)

    async def _local_update(self, round_: int, state: ReplicatedState) -> torch.Tensor:
        """The update trained ahead on these very parameters, or a fresh one."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == round_ and ahead[1] is state.params:
            try:
                update = await ahead[2]
                self.metrics.trained_ahead += 1
                return update
            except Exception:
                log.exception("training ahead for round %d failed; training again", round_)
        return await asyncio.get_running_loop().run_in_executor(self.pool_thread, self._train, state.params)

    def _train(self, params: torch.Tensor) -> torch.Tensor:
        """Training thread: the local update, stretched by ``slow_factor`` (fault injection) as on a slower
        machine: the thread sleeps for the extra time, so it occupies the trainer but no core."""
        started = time.perf_counter()
        update = self.trainer.local_update(params)
        if self.slow_factor > 1.0:
            time.sleep((self.slow_factor - 1.0) * (time.perf_counter() - started))
        return update

    def _seal(self, round_: int, state: ReplicatedState, update: torch.Tensor,
              observed: list[torch.Tensor]) -> list[tuple[bytes, Gradient | None]]:
        """Training thread: optional attack, compression, signing. Each envelope to push comes with the gradient
        to keep, checked by the very function receivers use (None: an attack profile's garbage or stale message,
        pushed but not kept). With differential privacy on, the update is clipped and noised (and the step
        accounted and persisted) before anything else sees it."""
        if self.privacy is not None:
            update = self.privacy.privatize(update)
            self._show_privacy()
        if self.adversary is not None:
            envelopes = self.adversary.payloads(update, round_, state, observed)
        else:
            envelopes = [make_gradient(self.key, self.swarm_id, round_, state.hash, self.compressor.compress(update))]
            if self.own is not None:
                self.own.save(envelopes[0])  # durable before it can leave: a restart pushes it again, not a new one
        sealed = []
        for raw in envelopes:
            try:
                sealed.append((raw, self._verify(raw, round_, state.hash)))
            except DecodeError:
                sealed.append((raw, None))
        return sealed

"""What the node shows of its committed rounds: a record per round for the API and the dashboard, the latest
evaluation, and the "committed round" log line that `swarm cluster up` prints. Evaluation is for humans: it runs
after the next round's training has started, in the training thread, and never feeds back into the state."""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Awaitable, Callable

import torch

from consensus.messages import CommittedEntry
from swarm.config import Genesis
from swarm.ledger import reputation
from swarm.ledger.apply import Applied
from swarm.ledger.state import ReplicatedState
from swarm.node.records import RoundRecord

log = logging.getLogger("swarm.node")

HISTORY_ROUNDS = 512  # rounds of loss/accuracy/reputation kept in memory for the API (the store keeps the chain)


class RoundLog:
    def __init__(self, genesis: Genesis, evaluate: Callable[[torch.Tensor], Awaitable[tuple[float, float]]],
                 eval_every: int, max_rounds: int | None):
        self.genesis, self._evaluate = genesis, evaluate
        self.eval_every, self.max_rounds = eval_every, max_rounds
        self.history: deque[RoundRecord] = deque(maxlen=HISTORY_ROUNDS)
        self.last_eval: tuple[float, float] | None = None

    def record(self, committed: CommittedEntry, applied: Applied | None, state: ReplicatedState,
               leader: str | None) -> RoundRecord:
        """Remember a committed round (``applied`` is None when it was adopted from a certified snapshot)."""
        entry, name_of = committed.entry, self.genesis.name_of
        record = RoundRecord(entry.round, committed.cert.term, leader, entry.state_hash, None, None,
                             applied.rule_used if applied else entry.rule,
                             sorted(name_of(p) for p in (applied.aggregated if applied else ())),
                             sorted(name_of(p) for p in (applied.quarantined if applied else ())),
                             time.time(),
                             {name_of(peer): round(reputation.score(rep), 6) for peer, rep in state.reputation})
        self.history.append(record)
        return record

    def wants_evaluation(self, round_: int) -> bool:
        final = self.max_rounds is not None and round_ >= self.max_rounds
        return bool(self.eval_every) and (round_ % self.eval_every == 0 or final)

    async def evaluate_and_log(self, record: RoundRecord, params: torch.Tensor, commit_ms: str) -> None:
        try:
            record.loss, record.accuracy = await self._evaluate(params)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("evaluation of round %d failed", record.round)
            return
        if self.history and self.history[-1] is record:
            self.last_eval = (record.loss, record.accuracy)
        self.log(record, commit_ms)

    def log(self, record: RoundRecord, commit_ms: str) -> None:
        evaluated = "" if record.loss is None else f" loss {record.loss:.4f} acc {record.accuracy:.4f}"
        log.info("committed round %d term %d leader %s%s hash %s%s", record.round, record.term,
                 self.genesis.name_of(record.leader) if record.leader else "-", evaluated,
                 record.state_hash.hex()[:12], commit_ms)

"""What the node shows of its rounds and traffic: a record per committed round and the counters behind the API,
the metrics and the cluster output. Bookkeeping only; nothing here feeds back into consensus or the state."""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any


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
class PrivacySpent:
    """This node's differential privacy (swarm/training/privacy.py): epsilon spent at delta over the rounds it
    released an update in, its budget, and whether it stopped contributing because one more round would exceed it."""
    epsilon: float
    delta: float
    budget: float
    rounds: int
    exhausted: bool = False
    noise_multiplier: float = 0.0
    clip_norm: float = 0.0
    sample_rate: float = 0.0
    withheld_rounds: int = 0  # rounds this node did not contribute to because of its budget


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
    # Writes after a commit (payload files, snapshots) that failed; each is retried until it holds, and the round
    # is not adopted meanwhile. The last error (text, wall time) and what is being retried now, if anything.
    store_write_errors: int = 0
    last_store_error: str | None = None
    last_store_error_at: float | None = None
    store_write_failing: str | None = None
    privacy: PrivacySpent | None = None  # None: the genesis has differential privacy off
    training_workers: int = 1  # processes computing this node's local update (training.workers)
    snapshot_transfer: Any = None  # the TransferProgress of the newest snapshot fetched in chunks (snapshot_transfer.py)
    rejected: Counter = field(default_factory=Counter)
    round_seconds: deque = field(default_factory=lambda: deque(maxlen=512))
    commit_seconds: deque = field(default_factory=lambda: deque(maxlen=512))


class PhaseClock:
    """When each phase of a proposal happened on this node, per (term, round): the PrePrepare was seen
    ("preprepare"), our validation of it ended ("validated"), our Commit went out ("prepared"), its commit
    certificate formed ("certified"). Gives a commit's latency and its parts."""

    PARTS = (("validated", "validate"), ("prepared", "prepare"), ("certified", "certify"))

    def __init__(self) -> None:
        self._phases: dict[tuple[int, int], dict[str, float]] = {}

    def mark(self, term: int, round_: int, phase: str, now: float) -> None:
        self._phases.setdefault((term, round_), {}).setdefault(phase, now)

    def seen(self, term: int, round_: int, phase: str) -> bool:
        return phase in self._phases.get((term, round_), {})

    def committed(self, term: int, round_: int, now: float) -> tuple[float | None, str]:
        """Forget the round (and earlier terms' proposals that never committed); return the seconds from the
        PrePrepare to now (None if we never saw it) and the log text: commit_ms and each part's ms from it."""
        phases = self._phases.pop((term, round_), {})
        for stale in [k for k in self._phases if k[1] <= round_]:
            del self._phases[stale]
        seen = phases.get("preprepare")
        if seen is None:
            return None, ""
        text = f" commit_ms={1000 * (now - seen):.2f}"
        for phase, label in self.PARTS:
            if phase in phases:
                text += f" {label}_ms={1000 * (phases[phase] - seen):.2f}"
        return now - seen, text

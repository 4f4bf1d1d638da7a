"""Adaptive timeouts: a moving estimate of round time plus a margin, doubled on each failed term."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TimingConfig:
    heartbeat_interval: float = 0.5
    min_round_timeout: float = 2.0
    max_timeout: float = 120.0
    margin: float = 4.0  # timeout = margin * estimate, at least min_round_timeout
    ewma_weight: float = 0.25
    candidacy_delay: float = 0.5  # base of the randomized back-off before standing as candidate
    max_backoff_exponent: int = 6


class AdaptiveTimeouts:
    """Round time estimate (EWMA of observed commit latencies) and back-off count of consecutive failed terms."""

    def __init__(self, cfg: TimingConfig):
        self.cfg = cfg
        self.estimate = cfg.min_round_timeout / cfg.margin
        self.failed_terms = 0

    def observe_round(self, seconds: float) -> None:
        w = self.cfg.ewma_weight
        self.estimate = (1 - w) * self.estimate + w * max(0.0, seconds)
        self.failed_terms = 0

    def term_failed(self) -> None:
        self.failed_terms = min(self.failed_terms + 1, self.cfg.max_backoff_exponent)

    def _backoff(self) -> float:
        return float(2 ** self.failed_terms)

    def round_timeout(self) -> float:
        """How long a follower waits for a round to commit once it has payloads or a proposal."""
        base = max(self.cfg.min_round_timeout, self.cfg.margin * self.estimate)
        return min(self.cfg.max_timeout, base * self._backoff())

    def leader_silence_timeout(self) -> float:
        """How long without a heartbeat before the leader is presumed dead."""
        return min(self.cfg.max_timeout, max(4 * self.cfg.heartbeat_interval, self.round_timeout() / 2))

    def _election_backoff(self) -> float:
        """Elections back off linearly: unbounded growth still outlasts any delay bound after GST, but a few split or
        wasted terms (a candidate the others refuse) no longer push the next election minutes away."""
        return 1.0 + self.failed_terms

    def election_timeout(self) -> float:
        """How long a term without a leader lasts before moving on."""
        base = max(self.cfg.min_round_timeout, self.cfg.margin * self.estimate)
        return min(self.cfg.max_timeout, 2 * base * self._election_backoff())

    def candidacy_slot(self) -> float:
        """The gap between successive candidates of a term (see election.candidate_rank), backed off like the rest."""
        return min(self.cfg.max_timeout, self.cfg.candidacy_delay * self._election_backoff())

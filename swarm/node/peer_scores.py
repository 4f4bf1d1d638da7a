"""Local peer scores: what this node alone saw of a peer (garbage, forged signatures, flooding).

Kept apart from the committed reputation (which every node agrees on): a local score decides only what this node
accepts from whom. Each rejection costs a penalty by reason; a peer whose score reaches zero is banned for a while
(its messages are dropped unread). Scores recover slowly with valid traffic.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

log = logging.getLogger("swarm.node.peer_scores")

PENALTIES = {
    "bad_signature": 0.3, "unknown_peer": 0.3, "equivocation": 0.5, "garbage": 0.2, "non_finite": 0.3,
    "wrong_shape": 0.3, "flooding": 0.1, "wrong_round": 0.02, "wrong_parent": 0.02,
}
DEFAULT_PENALTY = 0.1
RECOVERY = 0.01
BAN_SECONDS = 30.0


@dataclass
class LocalScore:
    score: float = 1.0
    rejected: int = 0
    last_reason: str = ""
    banned_until: float = 0.0
    reasons: Counter = field(default_factory=Counter)


class PeerScores:
    def __init__(self) -> None:
        self._scores: dict[str, LocalScore] = {}
        self.rejections_by_reason: Counter = Counter()

    def get(self, peer: str) -> LocalScore:
        return self._scores.setdefault(peer, LocalScore())

    def penalize(self, peer: str, reason: str, now: float, detail: str = "") -> LocalScore:
        entry = self.get(peer)
        entry.score = max(0.0, entry.score - PENALTIES.get(reason, DEFAULT_PENALTY))
        entry.rejected += 1
        entry.last_reason = reason
        entry.reasons[reason] += 1
        self.rejections_by_reason[reason] += 1
        log.warning("rejected message from %s: %s %s", peer[:16], reason, detail)
        if entry.score <= 0.0 and entry.banned_until <= now:
            entry.banned_until = now + BAN_SECONDS
            log.warning("banning %s for %.0f s (local score exhausted)", peer[:16], BAN_SECONDS)
        return entry

    def reward(self, peer: str) -> None:
        entry = self.get(peer)
        entry.score = min(1.0, entry.score + RECOVERY)

    def is_banned(self, peer: str, now: float) -> bool:
        entry = self._scores.get(peer)
        return entry is not None and entry.banned_until > now

"""Local peer scores: what this node alone saw of a peer (garbage, forged signatures, flooding).

Kept apart from the committed reputation (which every node agrees on): a local score decides only what this node
accepts from whom. Each rejection costs a penalty by reason; a peer whose score reaches zero is banned for a while
(its messages are dropped unread). Scores recover slowly with valid traffic.

Reasons are labels from a fixed set (``REASONS``): they key counters and Prometheus series, so a reason that is not
one of them (a transport report, a text a peer could shape) is counted as "other" and its text goes to the log only.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

log = logging.getLogger("swarm.node.peer_scores")

PENALTIES = {
    "bad_signature": 0.3, "unknown_peer": 0.3, "equivocation": 0.5, "garbage": 0.2, "non_finite": 0.3,
    "wrong_shape": 0.3, "invalid_certificate": 0.3, "flooding": 0.1, "wrong_round": 0.02, "wrong_parent": 0.02,
}
DEFAULT_PENALTY = 0.1
# Every label a rejection may be counted under: the DecodeError reasons (crypto/wire.py and the decoders), the
# node's own, and the transport's reports (TRANSPORT_REASONS). Anything else is "other".
REASONS = frozenset({
    "bad_bytes", "bad_chunk", "bad_code", "bad_count", "bad_dtype", "bad_fields", "bad_id", "bad_index", "bad_int",
    "bad_digest", "bad_list", "bad_magic", "bad_params", "bad_round", "bad_rule", "bad_scale", "bad_scheme",
    "bad_shape", "bad_sig", "bad_signature", "bad_state", "bad_tag", "bad_type", "bad_utf8", "bad_version", "bad_vote",
    "non_canonical", "non_finite", "relayed", "too_deep", "too_large", "trailing_bytes", "truncated",
    "uncertified_state", "unknown_peer", "wrong_dim", "wrong_dtype", "wrong_parent", "wrong_round", "wrong_shape",
    "wrong_swarm", "wrong_type", "equivocation", "flooding", "garbage", "banned", "stale_or_future_round",
    "non_member", "malformed_frame", "bad_fetch_answer", "bad_certificate", "invalid_certificate", "other",
})
# The transport's misbehaviour reports (fixed texts, swarm/transport/engine.py) and the label each is counted under.
TRANSPORT_REASONS = {
    "not a genesis member: connection refused": "non_member", "stream from a non-member": "non_member",
    "malformed frame": "malformed_frame", "bad fetch answer": "bad_fetch_answer", "flooding": "flooding",
}


def label(reason: str) -> str:
    """The fixed label a rejection reason is counted under: itself if it is one, else "other"."""
    if reason in REASONS:
        return reason
    return TRANSPORT_REASONS.get(reason, "other")
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
        if reason not in REASONS:
            detail, reason = f"({reason!r}) {detail}", label(reason)
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

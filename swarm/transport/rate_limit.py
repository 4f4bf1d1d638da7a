"""Per-peer token buckets for inbound control messages.

Every control message costs a signature check and a step of the consensus core, and a member can sign valid
messages as fast as it likes. The core bounds what such a flood makes it remember (consensus.bounds); this bounds
what it costs to read: past its burst, a peer gets ``rate`` messages a second, and each one over is dropped with a
"flooding" penalty to its local score, so a peer that keeps it up is banned (swarm.node.peer_scores). An honest member
sends a few messages per round and heartbeat, two orders of magnitude under the default rate; the default burst
is a full outbound queue, the most an honest peer delivers at once (its backlog after a partition heals).
"""
from __future__ import annotations


class TokenBucket:
    def __init__(self, rate: float, burst: float, now: float):
        if rate <= 0 or burst < 1:
            raise ValueError(f"need rate > 0 and burst >= 1, got {rate}, {burst}")
        self.rate, self.burst = rate, burst
        self.tokens, self.updated = burst, now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """``cost`` tokens if there are that many (refilled at ``rate`` per second up to ``burst``)."""
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False


class PeerRateLimiter:
    """One bucket per peer; only peers that got past the handshake (genesis members) ever reach it."""

    def __init__(self, rate: float, burst: float):
        TokenBucket(rate, burst, 0.0)  # reject bad settings at start, not on the first message
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, TokenBucket] = {}

    def allow(self, peer: str, now: float, cost: float = 1.0) -> bool:
        """Whether ``peer`` may have ``cost`` more units of work now (a message is 1; each signature it makes us
        check beyond its own costs 1 more, consensus.quorum.signature_work)."""
        bucket = self._buckets.get(peer)
        if bucket is None:
            bucket = self._buckets[peer] = TokenBucket(self.rate, self.burst, now)
        return bucket.take(now, cost)

"""What the transport knows of each genesis member: its addresses, connection, last heartbeat, outbound control
queue and the slots and budgets that bound what it may make us do at once."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import multiaddr
import trio
from libp2p.peer.peerinfo import info_from_p2p_addr

from swarm.transport.base import PeerInfo
from swarm.transport.control import OutboundQueue
from swarm.transport.rate_limit import TokenBucket

BULK_SLOTS_PER_PEER = 2      # pushes from one peer received at once; also idle push streams kept per peer
FETCH_SLOTS_PER_PEER = 2     # fetches from one peer served at once: an honest node asks for one payload at a time


@dataclass
class Member:
    """Mutable per-member state, owned by the trio thread (other threads only read it)."""

    peer_id: str
    queue: OutboundQueue
    addrs: list[str] = field(default_factory=list)
    connected: bool = False
    last_seen: float | None = None
    last_seen_wall: float | None = None
    wake: trio.Event = field(default_factory=trio.Event)
    session: trio.CancelScope | None = None
    timed_out: bool = False
    bulk_slots: trio.Semaphore = field(default_factory=lambda: trio.Semaphore(BULK_SLOTS_PER_PEER))
    idle_push: list[tuple[Any, float]] = field(default_factory=list)  # (stream, idle since): reusable push streams
    fetch_slots: trio.Semaphore = field(default_factory=lambda: trio.Semaphore(FETCH_SLOTS_PER_PEER))
    fetch_budget: TokenBucket | None = None  # made on the first fetch, from the transport config
    fetches_refused: int = 0
    flooding_reported_at: float = float("-inf")
    removed: bool = False  # a committed membership change took it out: its supervisor stops

    def touch(self) -> None:
        self.last_seen = time.monotonic()
        self.last_seen_wall = time.time()

    def snapshot(self) -> PeerInfo:
        return PeerInfo(self.connected, self.last_seen, self.last_seen_wall, tuple(self.addrs))


def split_p2p(addr: str) -> tuple[str, str]:
    """'/ip4/../tcp/N/p2p/ID' -> ('/ip4/../tcp/N', 'ID'); ValueError when malformed."""
    info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
    if not info.addrs:
        raise ValueError(f"no transport address in {addr!r}")
    return str(info.addrs[0]), info.peer_id.to_base58()

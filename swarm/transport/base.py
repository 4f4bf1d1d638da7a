"""The transport interface the node is written against, so the node never touches libp2p (or trio) directly.

Threading contract for every implementation: all public methods are called from the node's asyncio loop; every
callback is an asyncio coroutine function awaited on that same loop. Payload bytes are opaque: the transport frames
and checksums them but never parses envelopes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable, Collection, Protocol, runtime_checkable

OnPayload = Callable[[str, bytes, bytes], Awaitable[None]]          # (peer_id, sha256 of data, checked, data)
OnControl = Callable[[str, bytes], Awaitable[None]]                  # (peer_id, data)
OnMisbehaviour = Callable[[str, str], Awaitable[None]]               # (peer_id, reason)
OnPeerChange = Callable[[str, bool], Awaitable[None]]                # (peer_id, connected)
GetPayload = Callable[[bytes], "Awaitable[bytes | None] | bytes | None"]  # digest -> payload, sync or async
# (digest, offset, length) -> (total size of the object, its bytes from offset: length of them, fewer at its end)
GetRange = Callable[[bytes, int, int], "Awaitable[tuple[int, bytes] | None]"]


@dataclass(frozen=True)
class PeerInfo:
    """What the transport knows about one genesis member (a snapshot; replaced, never mutated)."""

    connected: bool
    last_seen: float | None          # time.monotonic() of the last frame heard, None if never
    last_seen_wall: float | None     # time.time() of the same instant, for humans and the API
    addrs: tuple[str, ...] = ()


@dataclass(frozen=True)
class PushResult:
    """Outcome of one push to one peer: ok, or the error text."""

    ok: bool
    error: str | None = None
    seconds: float = 0.0


@dataclass
class Callbacks:
    """The node's hooks; any left as None is ignored (get_payload / get_range None = serve nothing; may_fetch None = any
    member may fetch). ``may_fetch(peer_id)`` is called from the transport's thread and must not block: False (a
    peer the node has banned) means its fetch and push streams are reset before any body is read, each reported as
    misbehaviour "banned" (a drop to count, not a new offence). Misbehaviour reasons are fixed texts
    (swarm/transport/engine.py), never text from a peer."""

    on_payload: OnPayload | None = None
    on_control: OnControl | None = None
    on_misbehaviour: OnMisbehaviour | None = None
    on_peer_change: OnPeerChange | None = None
    get_payload: GetPayload | None = None
    get_range: GetRange | None = None
    may_fetch: Callable[[str], bool] | None = None


@runtime_checkable
class Transport(Protocol):
    """Authenticated member-only links with a bulk channel (push / fetch by digest) and an ordered control channel."""

    @property
    def peer_id(self) -> str: ...

    @property
    def listen_addrs(self) -> list[str]: ...

    async def start(self) -> None:
        """Listen, then dial the bootstrap list in the background; returns once listening."""

    async def stop(self) -> None:
        """Close every stream and connection and stop background work, within a couple of seconds."""

    async def push(self, payload: bytes, to: Collection[str] | None = None) -> dict[str, PushResult]:
        """Send ``payload`` to every connected member (or those of ``to``) concurrently; one result per member tried."""

    async def fetch(self, peer_id: str, digest: bytes) -> bytes | None:
        """Ask ``peer_id`` for the payload with this SHA-256 digest; None if it has none or the answer is bad."""

    async def fetch_range(self, peer_id: str, digest: bytes, offset: int, length: int) -> tuple[int, bytes] | None:
        """Ask ``peer_id`` for ``length`` bytes (at most bulk.MAX_RANGE_BYTES) from ``offset`` of the object with
        this SHA-256 digest: (its total size, the bytes; fewer only at its end), or None if it has none, refused or
        failed. The bytes are not checked against anything: the caller verifies the whole object."""

    def send(self, peer_id: str, data: bytes) -> bool:
        """Queue a control message for ``peer_id`` (in order, at most once); False if an older message was dropped."""

    def broadcast(self, data: bytes) -> dict[str, bool]:
        """``send`` to every other member."""

    def peers(self) -> dict[str, PeerInfo]: ...


__all__ = ["Callbacks", "PeerInfo", "PushResult", "Transport"]

"""Libp2pTransport: the Transport interface over py-libp2p, driven from the node's asyncio loop.

libp2p runs in its own trio thread (bridge.TrioThread, engine.Engine). This class is the asyncio face: it hands
calls over in one hop each, and delivers what arrives to the node's coroutine callbacks. Control messages and
peer changes are delivered by one consumer task, in arrival order; payloads and misbehaviour reports run
concurrently. Inbound control messages waiting for the node are bounded: past the bound the trio reader stops
reading, which pushes back on the sender through the stream's flow control.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Collection
from typing import Any

from crypto.keys import NodeKey
from swarm.config import TransportConfig
from swarm.transport.base import Callbacks, PeerInfo, PushResult
from swarm.transport.bridge import BridgeClosed, TrioThread
from swarm.transport.engine import BANNED, Engine
from swarm.transport.framing import KIND_DATA, MAX_CONTROL_BYTES, encode_control

log = logging.getLogger(__name__)

BACKLOG_HIGH = 8192


class Libp2pTransport:
    """Member-only libp2p links: see swarm.transport.base.Transport for the contract."""

    def __init__(self, key: NodeKey, listen: str, bootstrap: list[str], members: list[str],
                 config: TransportConfig | None = None, callbacks: Callbacks | None = None) -> None:
        self.config = config or TransportConfig()
        self.callbacks = callbacks or Callbacks()
        self._engine = Engine(key, listen, list(bootstrap), list(members), self.config, self)
        self._thread = TrioThread(self._engine.main)
        self._events: asyncio.Queue[tuple[str, str, Any]] | None = None
        self._arrived = 0    # written only by the trio thread
        self._consumed = 0   # written only by the asyncio loop
        self._drained: asyncio.Event | None = None
        self._consumer: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        self.dropped_inbound = 0

    # ---- Transport API ----------------------------------------------------------------------------------
    @property
    def peer_id(self) -> str:
        return self._engine.peer_id

    @property
    def listen_addrs(self) -> list[str]:
        return list(self._engine.listen_addrs)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._events = asyncio.Queue()
        self._drained = asyncio.Event()
        self._consumer = asyncio.create_task(self._consume(), name="transport-events")
        await self._thread.start()

    async def stop(self) -> None:
        await self._thread.stop(timeout=3.0)
        if self._consumer is not None:
            self._consumer.cancel()
            await asyncio.gather(self._consumer, return_exceptions=True)
            self._consumer = None

    async def push(self, payload: bytes, to: Collection[str] | None = None) -> dict[str, PushResult]:
        if len(payload) > self.config.max_payload_bytes:
            raise ValueError(f"payload of {len(payload)} bytes exceeds {self.config.max_payload_bytes}")
        return await self._thread.run(self._engine.push, bytes(payload), None if to is None else frozenset(to))

    async def fetch(self, peer_id: str, digest: bytes) -> bytes | None:
        try:
            return await self._thread.run(self._engine.fetch, peer_id, bytes(digest))
        except BridgeClosed:
            return None

    async def fetch_range(self, peer_id: str, digest: bytes, offset: int, length: int) -> tuple[int, bytes] | None:
        try:
            return await self._thread.run(self._engine.fetch_range, peer_id, bytes(digest), offset, length)
        except BridgeClosed:
            return None

    def send(self, peer_id: str, data: bytes) -> bool:
        member = self._engine.members.get(peer_id)
        if member is None:
            raise KeyError(f"{peer_id} is not another member")
        if len(data) > MAX_CONTROL_BYTES:
            raise ValueError(f"control message of {len(data)} bytes exceeds {MAX_CONTROL_BYTES}")
        return member.queue.put(encode_control(KIND_DATA, bytes(data)))

    def broadcast(self, data: bytes) -> dict[str, bool]:
        frame = encode_control(KIND_DATA, bytes(data))
        return {pid: member.queue.put(frame) for pid, member in list(self._engine.members.items())}

    def set_members(self, members: list[str]) -> None:
        """Follow a committed membership change: link with the members in force, refuse the others."""
        try:
            self._thread.call_soon(self._engine.set_members, list(members))
        except BridgeClosed:
            pass  # not running: nothing to change

    def peers(self) -> dict[str, PeerInfo]:
        return {pid: member.snapshot() for pid, member in list(self._engine.members.items())}

    def stats(self) -> dict[str, Any]:
        """Counters for diagnostics: control frames sent / dropped (queue full) / lost (stream failed); push streams
        opened (pushes reuse them) and pushes retried on a new stream after a reused one had broken."""
        members = list(self._engine.members.values())
        return {"control_sent": sum(m.queue.sent for m in members),
                "control_dropped": sum(m.queue.dropped for m in members),
                "control_lost": sum(m.queue.lost for m in members),
                "control_queued": sum(len(m.queue) for m in members),
                "refused_connections": self._engine.refused,
                "push_streams_opened": self._engine.push_streams_opened,
                "push_stream_retries": self._engine.push_retries}

    @property
    def _pending(self) -> int:
        return self._arrived - self._consumed

    # ---- Sink: called from the trio thread ----------------------------------------------------------------
    def _post(self, kind: str, peer_id: str, value: Any) -> None:
        loop = self._loop
        if loop is None or self._events is None:
            return
        try:
            loop.call_soon_threadsafe(self._events.put_nowait, (kind, peer_id, value))
        except RuntimeError:
            pass  # loop closed during shutdown

    def control(self, peer_id: str, bodies: list[bytes]) -> None:
        self._arrived += len(bodies)
        self._post("control", peer_id, bodies)

    def peer_change(self, peer_id: str, connected: bool) -> None:
        self._post("peer", peer_id, connected)

    def misbehaviour(self, peer_id: str, reason: str) -> None:
        if reason == BANNED:  # a banned peer's stream reset unread: routine while the ban lasts
            log.debug("dropped a stream from banned peer %s", peer_id[:16])
        else:
            log.warning("peer %s misbehaved: %s", peer_id[:16], reason)
        if self.callbacks.on_misbehaviour is not None:
            self._thread.submit(self.callbacks.on_misbehaviour(peer_id, reason))

    async def payload(self, peer_id: str, digest: bytes, data: bytes) -> None:
        if self.callbacks.on_payload is not None:
            await self._thread.await_asyncio(self.callbacks.on_payload(peer_id, digest, data))

    def may_fetch(self, peer_id: str) -> bool:
        return self.callbacks.may_fetch is None or self.callbacks.may_fetch(peer_id)

    async def lookup(self, digest: bytes) -> bytes | None:
        if self.callbacks.get_payload is None:
            return None
        return await self._thread.await_asyncio(self._lookup(digest))

    async def _lookup(self, digest: bytes) -> bytes | None:
        result = self.callbacks.get_payload(digest)  # type: ignore[misc]
        if inspect.isawaitable(result):
            result = await result
        return result

    async def lookup_range(self, digest: bytes, offset: int, length: int) -> tuple[int, bytes] | None:
        if self.callbacks.get_range is None:
            return None
        return await self._thread.await_asyncio(self.callbacks.get_range(digest, offset, length))

    async def control_backlog(self) -> None:
        if self._pending > BACKLOG_HIGH:
            await self._thread.await_asyncio(self._wait_drained())

    async def _wait_drained(self) -> None:
        assert self._drained is not None
        while self._pending > BACKLOG_HIGH // 2:
            self._drained.clear()
            await self._drained.wait()

    # ---- ordered delivery on the asyncio loop -------------------------------------------------------------
    async def _consume(self) -> None:
        assert self._events is not None and self._drained is not None
        while True:
            kind, peer_id, value = await self._events.get()
            try:
                if kind == "control":
                    for body in value:
                        if self.callbacks.on_control is not None:
                            await self.callbacks.on_control(peer_id, body)
                    self._consumed += len(value)
                    if self._pending <= BACKLOG_HIGH // 2:
                        self._drained.set()
                elif kind == "peer" and self.callbacks.on_peer_change is not None:
                    await self.callbacks.on_peer_change(peer_id, value)
            except Exception:  # noqa: BLE001 - a failing callback must not stop delivery
                log.exception("transport callback %s for %s failed", kind, peer_id[:16])

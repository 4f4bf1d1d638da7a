"""The control channel's sending side: a bounded per-peer queue and the one writer task that drains it.

Yamux interleaves concurrent writes to one stream (TRANSPORT-NOTES bug 2), so exactly one task writes each
control stream; it batches every queued frame into one write and sends heartbeats when idle, which is how a
frozen peer (never reported by libp2p) is noticed. The queue drops its oldest frames past its bounds and counts
them, so memory never grows without bound while a peer is slow or away.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable

import trio

from swarm.transport.framing import KIND_HEARTBEAT, encode_control


class OutboundQueue:
    """Thread-safe bounded FIFO of encoded control frames for one peer, drop-oldest."""

    def __init__(self, max_messages: int = 4096, max_bytes: int = 16 << 20) -> None:
        self._lock = threading.Lock()
        self._frames: deque[bytes] = deque()
        self._bytes = 0
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self._signalled = False
        self._wake: Callable[[], None] | None = None
        self.dropped = 0
        self.sent = 0
        self.lost = 0

    def put(self, frame: bytes) -> bool:
        """Queue ``frame``; False when older frames had to be dropped to make room."""
        kept_all = True
        with self._lock:
            self._frames.append(frame)
            self._bytes += len(frame)
            while len(self._frames) > self._max_messages or self._bytes > self._max_bytes:
                self._bytes -= len(self._frames.popleft())
                self.dropped += 1
                kept_all = False
            wake = None if self._signalled else self._wake
            if wake is not None:
                self._signalled = True
        if wake is not None:
            wake()
        return kept_all

    def take_all(self) -> list[bytes]:
        with self._lock:
            frames = list(self._frames)
            self._frames.clear()
            self._bytes = 0
            self._signalled = False
        return frames

    def attach(self, wake: Callable[[], None] | None) -> None:
        """Install (or remove, with None) the thread-safe function that wakes the current writer."""
        with self._lock:
            self._wake = wake
            self._signalled = False

    def __len__(self) -> int:
        return len(self._frames)


class Writer:
    """Drains one OutboundQueue into one stream; returns (by raising) when the stream fails."""

    def __init__(self, stream: Any, queue: OutboundQueue, heartbeat_s: float, on_write: Callable[[], None]) -> None:
        self._stream = stream
        self._queue = queue
        self._heartbeat_s = heartbeat_s
        self._on_write = on_write
        self._event = trio.Event()

    def _set(self) -> None:
        self._event.set()

    async def run(self, first: bytes = b"") -> None:
        token = trio.lowlevel.current_trio_token()

        def wake() -> None:
            try:
                token.run_sync_soon(self._set)
            except trio.RunFinishedError:
                pass

        self._queue.attach(wake)
        heartbeat = encode_control(KIND_HEARTBEAT)
        try:
            if first:
                await self._stream.write(first)
            last_write = time.monotonic()
            while True:
                frames = self._queue.take_all()
                if frames:
                    try:
                        await self._stream.write(b"".join(frames))
                    except BaseException:
                        self._queue.lost += len(frames)
                        raise
                    self._queue.sent += len(frames)
                    last_write = time.monotonic()
                    self._on_write()
                    continue
                idle = time.monotonic() - last_write
                if idle >= self._heartbeat_s:
                    await self._stream.write(heartbeat)
                    last_write = time.monotonic()
                    continue
                with trio.move_on_after(self._heartbeat_s - idle):
                    await self._event.wait()
                self._event = trio.Event()
        finally:
            self._queue.attach(None)

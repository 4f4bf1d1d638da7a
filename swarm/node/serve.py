"""What this node gives peers that fetch by digest: a pooled gradient, its current state (a certified snapshot
is named by its state hash), an older snapshot file or a stored gradient envelope. Never damaged bytes.

Ranges of the same objects are served too (snapshot transfers in chunks, swarm/node/snapshot_transfer.py). A
snapshot file is then read range by range, not whole: its hash is checked once (streamed, in a worker thread) and
remembered with the file's size and modification time, so each further range costs one read of its own bytes.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from pathlib import Path
from typing import Callable

from swarm.ledger.restore import set_aside
from swarm.ledger.state import ReplicatedState
from swarm.ledger.store import Store
from swarm.round.gradient import digest_of
from swarm.round.pool import GradientPool

HASH_BLOCK = 1 << 20


class PayloadServer:
    def __init__(self, pool: GradientPool, store: Store, current_state: Callable[[], ReplicatedState]):
        self.pool, self.store, self._current_state = pool, store, current_state
        self._served_state: tuple[bytes, bytes] | None = None  # (hash, bytes) of our state as peers fetched it
        self._checked_files: dict[bytes, tuple[int, int]] = {}  # digest -> (size, mtime_ns) of a file that hashed right
        self._check_lock = threading.Lock()  # one check of a file at a time: parallel first ranges wait for it

    async def get(self, digest: bytes) -> bytes | None:
        """A gradient in the pool at once; anything that costs an fsync, a serialization or a file read of
        megabytes, in a worker thread so the event loop keeps answering."""
        gradient = self.pool.by_digest(digest)
        if gradient is not None:
            return gradient.raw
        return await asyncio.to_thread(self._read, digest, self._current_state())

    async def get_range(self, digest: bytes, offset: int, length: int) -> tuple[int, bytes] | None:
        """(total size, ``length`` bytes from ``offset``; fewer at the end) of what ``get`` would give, or None.
        An offset past the end gives (total, b"") for the transport to refuse."""
        gradient = self.pool.by_digest(digest)
        if gradient is not None:
            return len(gradient.raw), gradient.raw[offset:offset + length]
        return await asyncio.to_thread(self._read_range, digest, offset, length, self._current_state())

    def _read(self, digest: bytes, state: ReplicatedState) -> bytes | None:
        if digest == state.hash:
            return self._state_bytes(state)
        snapshot = self.store.snapshot_path(digest)
        if snapshot.exists():
            data = snapshot.read_bytes()
            if digest_of(data) == digest:
                return data
            set_aside(snapshot)  # damaged on disk: peers would take us for a liar; never served again
            return None
        stored = self.store.gradient_envelope(digest)
        return stored if stored is not None and digest_of(stored) == digest else None

    def _read_range(self, digest: bytes, offset: int, length: int,
                    state: ReplicatedState) -> tuple[int, bytes] | None:
        if digest == state.hash:
            data = self._state_bytes(state)
            return len(data), data[offset:offset + length]
        snapshot = self.store.snapshot_path(digest)
        if snapshot.exists():
            return self._file_range(snapshot, digest, offset, length)
        stored = self.store.gradient_envelope(digest)
        if stored is None or digest_of(stored) != digest:
            return None
        return len(stored), stored[offset:offset + length]

    def _state_bytes(self, state: ReplicatedState) -> bytes:
        self.store.sync()  # the state of our newest commit leaves: its row is durable first
        served = self._served_state
        if served is None or served[0] != state.hash:
            served = self._served_state = (state.hash, state.serialize())  # built once per state, not per ask
        return served[1]

    def _file_range(self, path: Path, digest: bytes, offset: int, length: int) -> tuple[int, bytes] | None:
        """A range of a snapshot file whose whole hash was checked (once per size and modification time)."""
        try:
            with open(path, "rb") as handle:
                stat = os.fstat(handle.fileno())
                if not self._file_checked(handle, digest, (stat.st_size, stat.st_mtime_ns), path):
                    return None
                handle.seek(offset)
                return stat.st_size, handle.read(length) if offset < stat.st_size else b""
        except OSError:
            return None  # pruned or replaced meanwhile

    def _file_checked(self, handle, digest: bytes, identity: tuple[int, int], path: Path) -> bool:
        with self._check_lock:
            if self._checked_files.get(digest) == identity:
                return True
            hasher = hashlib.sha256()
            while block := handle.read(HASH_BLOCK):
                hasher.update(block)
            if hasher.digest() != digest:
                self._checked_files.pop(digest, None)
                set_aside(path)  # damaged on disk: never served again
                return False
            if len(self._checked_files) > 64:
                self._checked_files.clear()
            self._checked_files[digest] = identity
            return True

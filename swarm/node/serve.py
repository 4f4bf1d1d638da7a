"""What this node gives peers that fetch by digest: a pooled gradient, its current state (a certified snapshot
is named by its state hash), an older snapshot file or a stored gradient envelope. Never damaged bytes."""
from __future__ import annotations

import asyncio
from typing import Callable

from swarm.ledger.restore import set_aside
from swarm.ledger.state import ReplicatedState
from swarm.ledger.store import Store
from swarm.round.gradient import digest_of
from swarm.round.pool import GradientPool


class PayloadServer:
    def __init__(self, pool: GradientPool, store: Store, current_state: Callable[[], ReplicatedState]):
        self.pool, self.store, self._current_state = pool, store, current_state
        self._served_state: tuple[bytes, bytes] | None = None  # (hash, bytes) of our state as peers fetched it

    async def get(self, digest: bytes) -> bytes | None:
        """A gradient in the pool at once; anything that costs an fsync, a serialization or a file read of
        megabytes, in a worker thread so the event loop keeps answering."""
        gradient = self.pool.by_digest(digest)
        if gradient is not None:
            return gradient.raw
        return await asyncio.to_thread(self._read, digest, self._current_state())

    def _read(self, digest: bytes, state: ReplicatedState) -> bytes | None:
        if digest == state.hash:
            self.store.sync()  # the state of our newest commit leaves: its row is durable first
            served = self._served_state
            if served is None or served[0] != digest:
                served = self._served_state = (digest, state.serialize())  # built once per state, not per ask
            return served[1]
        snapshot = self.store.snapshot_path(digest)
        if snapshot.exists():
            data = snapshot.read_bytes()
            if digest_of(data) == digest:
                return data
            set_aside(snapshot)  # damaged on disk: peers would take us for a liar; never served again
            return None
        stored = self.store.gradient_envelope(digest)
        return stored if stored is not None and digest_of(stored) == digest else None

"""A node's state after a restart: its newest certified snapshot, then its own stored rows replayed on top.

A snapshot counts only when its bytes decode to a state whose hash is both the one it was saved under and the one
the chain row of its round certifies; otherwise an older one is tried, and finally the genesis state. Replay stops
at the first row the store cannot reproduce: a missing or damaged payload leaves the node behind (it catches up
from peers), while a certified entry that intact payloads do not reproduce means this node diverged.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from crypto import wire
from crypto.wire import DecodeError
from swarm.config import Genesis
from swarm.ledger.replay import Replayer, Stop
from swarm.ledger.state import ReplicatedState
from swarm.ledger.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestoreResult:
    state: ReplicatedState
    snapshot_round: int | None   # the certified snapshot replay started from; None: the genesis state
    stop: Stop | None            # the first row that could not be replayed; None: the whole stored chain was

    @property
    def diverged(self) -> bool:
        """Intact stored payloads do not reproduce a certified round: fetching copies from peers cannot help."""
        return self.stop is not None and not self.stop.reason.payload_unusable


def restore(store: Store, genesis: Genesis, genesis_state: ReplicatedState, max_size: int) -> RestoreResult:
    """Rebuild the replicated state from ``store``; ``genesis_state`` is state_0, ``max_size`` the payload limit."""
    if store.last_round() == 0:
        return RestoreResult(genesis_state, None, None)
    dim = genesis_state.params.numel()
    start = newest_certified_snapshot(store, dim, None)
    snapshot_round = None if start is None else start.round
    state = genesis_state if start is None else start
    previous = store.row(state.round)
    replayer = Replayer(genesis, dim, max_size, store.gradient_envelope)
    stop = None
    for step in replayer.replay(state, store.rows(state.round + 1), previous.digest if previous else None):
        if step.stop is not None:
            stop = step.stop
            if stop.reason.payload_unusable:
                log.warning("restart: stored payload unusable (%s); will catch up from peers", stop)
            break
        state = step.state
    return RestoreResult(state, snapshot_round, stop)


def newest_certified_snapshot(store: Store, dim: int, members: list[str] | None) -> ReplicatedState | None:
    """The newest stored snapshot that the chain certifies, or None. A snapshot file that is not its certified
    state (damaged, crafted, another model's) is set aside (renamed ``*.state.bad``, unless the store is read-only)
    so it is neither tried nor served again; the node then starts from an older one or the genesis and catches up."""
    for round_, state_hash in store.snapshots():
        row = store.row(round_)
        if row is None or row.state_hash != state_hash:
            continue
        path = store.snapshot_path(state_hash)
        try:
            data = path.read_bytes()
        except OSError:
            continue  # pruned
        try:
            return certified_snapshot(data, state_hash, dim, members)
        except DecodeError as exc:
            log.error("snapshot of round %d unusable (%s); trying an older one or the genesis", round_, exc)
            set_aside(path, read_only=getattr(store, "read_only", False))
    return None


def set_aside(path: Path, read_only: bool = False) -> Path | None:
    """Rename a file that failed its hash check to ``<name>.bad`` (kept for a post-mortem, never read again);
    the new path, or None when the store is read-only or the rename failed."""
    if read_only:
        return None
    bad = path.with_name(path.name + ".bad")
    try:
        os.replace(path, bad)
    except OSError as exc:
        log.error("could not set aside %s: %s", path, exc)
        return None
    log.error("set aside %s as %s", path.name, bad.name)
    return bad


def certified_snapshot(data: bytes, certified_hash: bytes, dim: int, members: list[str] | None) -> ReplicatedState:
    """The state in a snapshot's bytes if it is the one a certificate signs; DecodeError otherwise. A snapshot
    is trusted for its certified hash alone, wherever it came from (our disk, a peer, a store under audit): the
    bytes are hashed before anything parses them, so a file nobody certified never reaches the decoder."""
    if hashlib.sha256(data).digest() != certified_hash:
        raise DecodeError("uncertified_state", "the snapshot does not hash to the certified state hash")
    try:
        state = ReplicatedState.deserialize(data, dim, members)
    except DecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - certified bytes that still do not decode here (another model, say)
        raise DecodeError("bad_state", f"snapshot does not decode: {type(exc).__name__}") from None
    if state.hash != certified_hash:
        raise DecodeError("uncertified_state", "the snapshot does not hash to the certified state hash")
    return state


def snapshot_dim(data: bytes, certified_hash: bytes) -> int | None:
    """The parameter count a certified snapshot's header states (hash checked first), or None: how an audit that
    may not build the model learns its size from what the chain certifies."""
    if hashlib.sha256(data).digest() != certified_hash or len(data) < 4:
        return None
    try:
        header_len = int.from_bytes(data[-4:], "little")
        if header_len > len(data) - 4:
            return None
        header = wire.loads(data[len(data) - 4 - header_len:len(data) - 4])
        dim = header.get("dim") if isinstance(header, dict) else None
    except Exception:  # noqa: BLE001 - any failure: no size from this file
        return None
    return dim if isinstance(dim, int) and not isinstance(dim, bool) and 0 < dim < (1 << 40) else None

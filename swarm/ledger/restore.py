"""A node's state after a restart: its newest certified snapshot, then its own stored rows replayed on top.

A snapshot counts only when its bytes decode to a state whose hash is both the one it was saved under and the one
the chain row of its round certifies; otherwise an older one is tried, and finally the genesis state. Replay stops
at the first row the store cannot reproduce: a missing or damaged payload leaves the node behind (it catches up
from peers), while a certified entry that intact payloads do not reproduce means this node diverged.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

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
    start = newest_certified_snapshot(store, dim, genesis.peer_ids)
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


def newest_certified_snapshot(store: Store, dim: int, members: list[str]) -> ReplicatedState | None:
    """The newest stored snapshot that the chain certifies, or None."""
    for round_, state_hash in store.snapshots():
        row = store.row(round_)
        if row is None or row.state_hash != state_hash:
            continue
        try:
            data = store.snapshot_path(state_hash).read_bytes()
        except OSError:
            continue  # pruned
        try:
            return certified_snapshot(data, state_hash, dim, members)
        except DecodeError as exc:
            log.error("snapshot of round %d unusable (%s); trying an older one or the genesis", round_, exc)
    return None


def certified_snapshot(data: bytes, certified_hash: bytes, dim: int, members: list[str]) -> ReplicatedState:
    """The state in a snapshot's bytes if it is the one a certificate signs; DecodeError otherwise. A snapshot
    is trusted for its certified hash alone, wherever it came from (our disk, a peer, a store under audit)."""
    state = ReplicatedState.deserialize(data, dim, members)
    if state.hash != certified_hash:
        raise DecodeError("uncertified_state", "the snapshot does not hash to the certified state hash")
    return state

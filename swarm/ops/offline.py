"""A stopped node seen through its store: the same read-only view the API serves (swarm/ops/view.py), so that
`swarm status`, `swarm peers` and `swarm log --data-dir` still answer after a run ended: who was quarantined, the
committed rounds, the local scores and why peers were penalised.

Nothing is written and no code named by the bundle is imported. The replicated state is the newest snapshot the
chain certifies, replayed forward with the stored gradients when the model is a built-in one (then it is exactly
the state the node held); with a custom model it is the snapshot's state as of its round, and the view says so.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from swarm.config import Genesis, NodeConfig, load_genesis, load_node_config
from swarm.ledger.entry_rules import genesis_hash, rules_of
from swarm.ledger.restore import newest_certified_snapshot, restore, snapshot_dim
from swarm.ledger.state import ReplicatedState, genesis_state
from swarm.ledger.store import Store
from swarm.node.peer_scores import PeerScores
from swarm.node.records import Metrics, RoundRecord
from swarm.training.build import custom_code, initial_parameters
from swarm.transport.base import PeerInfo

log = logging.getLogger(__name__)

STOPPED = "stopped"


@dataclass
class _Core:
    term: int
    role: str = STOPPED
    leader: str | None = None


@dataclass
class _NoTransport:
    listen_addrs: list[str] = field(default_factory=list)

    def peers(self) -> dict[str, PeerInfo]:
        return {}


class OfflineNode:
    """NodeView of a node that is not running, read from ``data_dir``."""

    def __init__(self, data_dir: Path, genesis: Genesis, config: NodeConfig | None = None):
        self.store = Store(data_dir, read_only=True)
        self.genesis, self.rules = genesis, rules_of(genesis)
        self.name = data_dir.resolve().name
        self.id = next((m.peer_id for m in genesis.members if m.name == self.name), "")
        self.core = _Core(term=int((self.store.get_meta("hard") or {}).get("term", 0)))
        self.transport = _NoTransport()
        self.metrics = Metrics()
        self.scores = PeerScores()
        for peer, (score, rejected, last_reason) in self.store.local_scores().items():
            entry = self.scores.get(peer)
            entry.score, entry.rejected, entry.last_reason = score, rejected, last_reason
        self.diverged: str | None = None
        self.started = time.time()
        self.history: deque[RoundRecord] = deque()
        self.last_eval: tuple[float, float] | None = None
        self.state, self.exact = self._state(config)

    def _state(self, config: NodeConfig | None) -> tuple[ReplicatedState, bool]:
        """(the replicated state, whether it is the node's newest one rather than its newest snapshot's)."""
        config = config or NodeConfig(identity="", genesis="", data_dir=str(self.store.dir))
        custom = custom_code(config, self.genesis)
        if not custom:
            state_0 = genesis_state(initial_parameters(config, self.genesis), self.genesis.peer_ids,
                                    genesis_hash(self.genesis))
            restored = restore(self.store, self.genesis, state_0, config.transport.max_payload_bytes)
            return restored.state, restored.stop is None
        snapshot = self._newest_snapshot(config)
        return snapshot, snapshot is not None and snapshot.round == self.store.last_round()

    def _newest_snapshot(self, config: NodeConfig) -> ReplicatedState:
        """The newest certified snapshot; its dimension read from the file itself (no model is built)."""
        snapshots = self.store.snapshots()
        if not snapshots:
            raise FileNotFoundError(f"{self.store.dir} holds no snapshot, and its model is custom code that this "
                                    f"inspection does not import")
        dim = next((d for _round, state_hash in snapshots
                    if (d := _snapshot_dim(self.store.snapshot_path(state_hash), state_hash)) is not None), None)
        state = newest_certified_snapshot(self.store, dim, None) if dim is not None else None
        if state is None:
            raise FileNotFoundError(f"no certified snapshot in {self.store.dir}")
        return state

    def close(self) -> None:
        self.store.close()


def _snapshot_dim(path: Path, state_hash: bytes) -> int | None:
    """The model size a snapshot file states, read as the audit reads it (hash checked first); None if unreadable."""
    try:
        return snapshot_dim(path.read_bytes(), state_hash)
    except OSError:
        return None


def open_offline(data_dir: Path, genesis_path: Path | None = None) -> OfflineNode:
    """The stopped node in ``data_dir``; its genesis and config from the cluster layout (CLUSTER/data/<name>, with
    CLUSTER/genesis.yaml and CLUSTER/<name>.yaml) unless the genesis is given."""
    resolved = data_dir.resolve()
    genesis_path = genesis_path or resolved.parent.parent / "genesis.yaml"
    if not (resolved / "node.sqlite").exists():
        raise FileNotFoundError(f"no node store in {data_dir}")
    if not genesis_path.exists():
        raise FileNotFoundError(f"no genesis at {genesis_path}")
    config_path = resolved.parent.parent / f"{resolved.name}.yaml"
    config = load_node_config(config_path, check_secrets=False) if config_path.exists() else None
    return OfflineNode(data_dir, load_genesis(genesis_path), config)

"""Which training samples a node owns: iid shards or Dirichlet(alpha) label skew, from (index, count, seed).

Every node computes the full partition from the same seed and keeps its own part, so the parts are disjoint
and cover the training set without any coordination.
"""
from __future__ import annotations

import numpy as np


def partition_indices(labels: np.ndarray, node_index: int, num_nodes: int, seed: int,
                      scheme: str = "iid", alpha: float = 0.5) -> np.ndarray:
    labels = np.asarray(labels)
    if not 0 <= node_index < num_nodes:
        raise ValueError(f"node_index {node_index} outside [0, {num_nodes})")
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        return np.sort(np.array_split(rng.permutation(len(labels)), num_nodes)[node_index])
    if scheme != "dirichlet":
        raise ValueError(f"unknown partition {scheme!r}; use 'iid' or 'dirichlet'")
    if not alpha > 0:
        raise ValueError("Dirichlet alpha must be positive")
    parts: list[list[int]] = [[] for _ in range(num_nodes)]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        shares = rng.dirichlet(np.full(num_nodes, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
        for node, piece in enumerate(np.split(members, cuts)):
            parts[node].extend(piece.tolist())
    return np.sort(np.array(parts[node_index], dtype=np.int64))

"""Nearest-neighbour mixing (Allouah et al., AISTATS 2023), a pre-aggregation step composable with any rule.

Each row is replaced by the mean of its n - f nearest rows, itself included (ties to the lower index). The
neighbour sets are those of the exact distances; certified.py takes them from a fast pass when its bounds
leave no doubt (for every row, the chosen neighbours' upper bounds are below the others' lower bounds).
"""
from __future__ import annotations

import torch

from ._common import row_mean
from .certified import decide


def nnm_neighbours(dist: list[list[float]], n: int, f: int) -> list[list[int]]:
    neighbours = []
    for i in range(n):
        ranked = sorted(range(n), key=lambda j: (dist[i][j], j != i, j))
        neighbours.append(sorted(ranked[:n - f]))
    return neighbours


def certified_neighbours(intervals, n: int, f: int) -> list[list[int]] | None:
    """nnm_neighbours on the estimates, or None unless the bounds prove the exact path picks the same sets.
    A row is always its own first neighbour (distance exactly 0 and first in the tie-break on both paths)."""
    neighbours = nnm_neighbours(intervals.estimate, n, f)
    for i, chosen in enumerate(neighbours):
        inside = [j for j in chosen if j != i]
        outside = [j for j in range(n) if j not in chosen]
        if inside and outside and max(intervals.hi[i][j] for j in inside) >= min(intervals.lo[i][j] for j in outside):
            return None
    return neighbours


def nearest_neighbour_mixing(vectors: torch.Tensor, f: int) -> tuple[torch.Tensor, list[list[int]], str]:
    """(n, d) float64 mixed stack, each row's neighbour list, and the pass that chose them (certified.py)."""
    n, d = vectors.shape
    if n - f < 1:
        raise ValueError(f"NNM needs n > f, got n={n}, f={f}")
    neighbours, path = decide(vectors, lambda iv: certified_neighbours(iv, n, f),
                           lambda dist: nnm_neighbours(dist, n, f))
    mixed = torch.empty(n, d, dtype=torch.float64)
    for i in range(n):
        mixed[i] = row_mean(vectors, neighbours[i])
    return mixed, neighbours, path

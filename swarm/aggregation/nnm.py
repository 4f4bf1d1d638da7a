"""Nearest-neighbour mixing (Allouah et al., AISTATS 2023), a pre-aggregation step composable with any rule.

Each row is replaced by the mean of its n - f nearest rows, itself included (ties to the lower index).
"""
from __future__ import annotations

import torch

from ._common import row_mean
from .exact_gram import squared_distances


def nnm_neighbours(dist: list[list[float]], n: int, f: int) -> list[list[int]]:
    neighbours = []
    for i in range(n):
        ranked = sorted(range(n), key=lambda j: (dist[i][j], j != i, j))
        neighbours.append(sorted(ranked[:n - f]))
    return neighbours


def nearest_neighbour_mixing(vectors: torch.Tensor, f: int) -> tuple[torch.Tensor, list[list[int]]]:
    """(n, d) float64 mixed stack and each row's neighbour list."""
    n, d = vectors.shape
    if n - f < 1:
        raise ValueError(f"NNM needs n > f, got n={n}, f={f}")
    neighbours = nnm_neighbours(squared_distances(vectors).tolist(), n, f)
    mixed = torch.empty(n, d, dtype=torch.float64)
    for i in range(n):
        mixed[i] = row_mean(vectors, neighbours[i])
    return mixed, neighbours

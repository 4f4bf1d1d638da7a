"""Coordinate-wise trimmed mean: drop the f largest and f smallest values per coordinate, average the rest.

With weights: the same trimming by count, then the reputation-weighted mean of the kept values.
"""
from __future__ import annotations

import torch

from ._common import AggregationResult, finish
from .order_stats import columnwise, fixed_order_sum
from .weighted import weighted_trimmed_mean


def coordinate_trimmed_mean(vectors: torch.Tensor, f: int) -> torch.Tensor:
    n = vectors.shape[0]
    positions = tuple(range(f, n - f))
    return columnwise(vectors, positions, lambda rows: fixed_order_sum(rows) / len(positions))


def aggregate_trimmed_mean(vectors: torch.Tensor, f: int, weights: torch.Tensor | None = None) -> AggregationResult:
    n = vectors.shape[0]
    if n < 2 * f + 1:
        raise ValueError(f"trimmed mean needs n >= 2f + 1, got n={n}, f={f}")
    if weights is None:
        vector = coordinate_trimmed_mean(vectors, f)
    else:
        vector = weighted_trimmed_mean(vectors, weights, f)
    return AggregationResult(finish(vector), list(range(n)))

"""Coordinate-wise median (even n: mean of the two middle values); weighted median when weights are given."""
from __future__ import annotations

import torch

from ._common import AggregationResult, finish
from .order_stats import columnwise
from .weighted import weighted_median


def median_positions(n: int) -> tuple[int, ...]:
    return ((n - 1) // 2,) if n % 2 else (n // 2 - 1, n // 2)


def coordinate_median(vectors: torch.Tensor) -> torch.Tensor:
    """(d,) float64 coordinate-wise median, exact selection."""
    positions = median_positions(vectors.shape[0])
    if len(positions) == 1:
        return columnwise(vectors, positions, lambda rows: rows[0].to(torch.float64))
    return columnwise(vectors, positions, lambda rows: (rows[0].to(torch.float64) + rows[1]) * 0.5)


def aggregate_median(vectors: torch.Tensor, f: int, weights: torch.Tensor | None = None) -> AggregationResult:
    n = vectors.shape[0]
    if n < 2 * f + 1:
        raise ValueError(f"median needs n >= 2f + 1, got n={n}, f={f}")
    equal = weights is None or bool((weights == weights[0]).all())  # equal weights: the plain median, faster
    vector = coordinate_median(vectors) if equal else weighted_median(vectors, weights)
    return AggregationResult(finish(vector), list(range(n)))

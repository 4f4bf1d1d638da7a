"""Krum and Multi-Krum (Blanchard et al., NeurIPS 2017).

score(i) = sum of squared distances from row i to its n - f - 2 nearest other rows; Krum returns the row with
the lowest score (ties to the lowest index), Multi-Krum averages the m best rows (default m = n - f),
weighted by reputation when weights are given. Requires n >= 2f + 3.
"""
from __future__ import annotations

import torch

from ._common import AggregationResult, finish, row_mean
from .exact_gram import squared_distances


def krum_scores(dist: list[list[float]], rows: list[int], neighbours: int) -> dict[int, float]:
    """Score of each row in ``rows`` against the other rows in ``rows``: sum of its ``neighbours`` smallest distances."""
    scores = {}
    for i in rows:
        others = sorted(dist[i][j] for j in rows if j != i)
        total = 0.0
        for value in others[:neighbours]:  # ascending, fixed order
            total += value
        scores[i] = total
    return scores


def require_krum(n: int, f: int) -> None:
    if n < 2 * f + 3:
        raise ValueError(f"Krum needs n >= 2f + 3, got n={n}, f={f}")


def aggregate_multikrum(vectors: torch.Tensor, f: int, weights: torch.Tensor | None = None,
                        m: int | None = None) -> AggregationResult:
    n = vectors.shape[0]
    require_krum(n, f)
    if m is None:
        m = n - f
    if not isinstance(m, int) or not 1 <= m <= n:
        raise ValueError(f"Multi-Krum m must be an integer in [1, n={n}], got {m!r}")
    dist = squared_distances(vectors).tolist()
    rows = list(range(n))
    scores = krum_scores(dist, rows, n - f - 2)
    ranked = sorted(rows, key=lambda i: (scores[i], i))
    selected = sorted(ranked[:m])
    vector = row_mean(vectors, selected, weights)
    return AggregationResult(finish(vector), selected, [scores[i] for i in rows], {"m": m})


def aggregate_krum(vectors: torch.Tensor, f: int, weights: torch.Tensor | None = None) -> AggregationResult:
    return aggregate_multikrum(vectors, f, weights, m=1)

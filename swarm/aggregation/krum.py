"""Krum and Multi-Krum (Blanchard et al., NeurIPS 2017).

score(i) = sum of squared distances from row i to its n - f - 2 nearest other rows; Krum returns the row with
the lowest score (ties to the lowest index), Multi-Krum averages the m best rows (default m = n - f),
weighted by reputation when weights are given. Requires n >= 2f + 3.

The selection is the one the exact distances (exact_gram.py) give; certified.py takes it from a fast float32
pass when the bounds prove it the same. The rows enter the first pass without a separate finiteness check
(aggregate() defers it here): a NaN or Inf makes that pass's Gram non-finite, which sends it to the check.
"""
from __future__ import annotations

import torch

from ._common import AggregationResult, finish, row_mean
from .certified import decide, score_bounds, separated


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


def best_rows(dist: list[list[float]], rows: list[int], neighbours: int, m: int):
    """The m rows with the lowest scores (ties to the lowest index), in rank order, and all scores."""
    scores = krum_scores(dist, rows, neighbours)
    return sorted(rows, key=lambda i: (scores[i], i))[:m], scores


def certified_best_rows(intervals, rows: list[int], neighbours: int, m: int):
    """best_rows on the fast estimates, or None unless the bounds prove the exact path picks the same set."""
    ranked, scores = best_rows(intervals.estimate, rows, neighbours, len(rows))
    low, high = score_bounds(intervals, rows, neighbours)
    return (ranked[:m], scores) if separated(ranked[:m], ranked[m:], low, high) else None


def aggregate_multikrum(vectors: torch.Tensor, f: int, weights: torch.Tensor | None = None,
                        m: int | None = None) -> AggregationResult:
    n = vectors.shape[0]
    require_krum(n, f)
    if m is None:
        m = n - f
    if not isinstance(m, int) or not 1 <= m <= n:
        raise ValueError(f"Multi-Krum m must be an integer in [1, n={n}], got {m!r}")
    rows = list(range(n))
    k = n - f - 2
    (chosen, scores), path = decide(vectors, lambda iv: certified_best_rows(iv, rows, k, m),
                                    lambda dist: best_rows(dist, rows, k, m))
    selected = sorted(chosen)
    if len(selected) == 1 and vectors.dtype == torch.float32 and _moderate(weights, selected[0]):
        # (w x) / w in float64 is within 2 float64 ulps of the float32 x (no under/overflow for such w), so cast
        # back to float32 it is x: a copy gives the same bytes as row_mean without its three float64 passes.
        vector = vectors[selected[0]].clone()
    else:
        vector = finish(row_mean(vectors, selected, weights))
    return AggregationResult(vector, selected, [scores[i] for i in rows], {"m": m, "distance_path": path})


def _moderate(weights: torch.Tensor | None, row: int) -> bool:
    return weights is None or 1e-100 <= float(weights[row]) <= 1e100


def aggregate_krum(vectors: torch.Tensor, f: int, weights: torch.Tensor | None = None) -> AggregationResult:
    return aggregate_multikrum(vectors, f, weights, m=1)

"""Bulyan (El Mhamdi et al., ICML 2018). Requires n >= 4f + 3.

1. Select theta = n - 2f rows by applying Krum repeatedly to the rows not yet selected (distances computed
   once; on r remaining rows the score sums the max(r - f - 2, 1) nearest distances: the paper's recursion
   would otherwise run Krum below its own n >= 2f + 3 bound in the last steps).
2. Per coordinate, average the beta = theta - 2f selected values closest to their median. Ties between a
   value below and one above the median at equal distance keep the lower one; in sorted order the kept
   values are a window [s, s + beta), slid right while the value entering is strictly closer than the one leaving.
The Krum picks are the exact distances' picks, taken from a fast pass when certified (certified.py).
"""
from __future__ import annotations

import torch

from ._common import AggregationResult, finish
from .certified import decide, score_bounds, separated
from .krum import krum_scores
from .order_stats import COLUMNS_PER_STEP, sorted_positions


def bulyan_select(dist: list[list[float]], n: int, f: int, intervals=None):
    """The rows Krum picks one by one; with ``intervals`` (a fast pass) each pick must be certified (its
    score's upper bound below every other remaining row's lower bound), else None."""
    remaining = list(range(n))
    chosen = []
    first_scores = None
    while len(chosen) < n - 2 * f:
        neighbours = max(len(remaining) - f - 2, 1)
        scores = krum_scores(dist, remaining, neighbours)
        if first_scores is None:
            first_scores = scores
        best = min(remaining, key=lambda i: (scores[i], i))
        if intervals is not None:
            best = certified_pick(intervals, remaining, neighbours, best)
            if best is None:
                return None
        chosen.append(best)
        remaining.remove(best)
    return sorted(chosen), first_scores


def certified_pick(intervals, remaining: list[int], neighbours: int, best: int) -> int | None:
    """The exact path's pick among ``remaining`` if the bounds prove it, else None.

    With one neighbour (the last steps, r <= f + 3 rows left) two mutual nearest rows have bit-equal exact
    scores (both are the one symmetric distance between them), so no bound separates them; the exact path
    then takes the lower index, and so do we once both are proven each other's unique nearest row."""
    low, high = score_bounds(intervals, remaining, neighbours)
    tied = [best]
    if neighbours == 1 and len(remaining) > 2:
        def nearest(i):
            others = sorted((j for j in remaining if j != i), key=lambda j: intervals.estimate[i][j])
            rest = others[1:]
            return others[0] if max(intervals.hi[i][others[0]], 0.0) < min(intervals.lo[i][j] for j in rest) else None
        partner = nearest(best)
        if partner is not None and nearest(partner) == best:
            tied = [best, partner]
    if not separated(tied, [j for j in remaining if j not in tied], low, high):
        return None
    return min(tied)


def closest_to_median_mean(vectors: torch.Tensor, f: int) -> torch.Tensor:
    theta, d = vectors.shape
    beta = theta - 2 * f
    out = torch.empty(d, dtype=torch.float64)
    for start in range(0, d, COLUMNS_PER_STEP):
        lines = sorted_positions(vectors[:, start:start + COLUMNS_PER_STEP], tuple(range(theta)))
        values = torch.stack(lines).to(torch.float64)
        if theta % 2:
            median = values[theta // 2]
        else:
            median = (values[theta // 2 - 1] + values[theta // 2]) * 0.5
        distance = (values - median).abs()
        shift = torch.zeros(values.shape[1], dtype=torch.long)
        moving = torch.ones(values.shape[1], dtype=torch.bool)
        for _ in range(2 * f):
            leaving = distance.gather(0, shift[None])[0]
            entering = distance.gather(0, (shift + beta)[None])[0]
            moving &= entering < leaving
            shift += moving.to(torch.long)
        acc = torch.zeros(values.shape[1], dtype=torch.float64)
        for t in range(beta):
            acc += values.gather(0, (shift + t)[None])[0]
        out[start:start + values.shape[1]] = acc / beta
    return out


def aggregate_bulyan(vectors: torch.Tensor, f: int, weights: torch.Tensor | None = None) -> AggregationResult:
    n = vectors.shape[0]
    if n < 4 * f + 3:
        raise ValueError(f"Bulyan needs n >= 4f + 3, got n={n}, f={f}")
    if weights is not None:
        raise ValueError("Bulyan does not take weights")
    (selected, scores), path = decide(vectors, lambda iv: bulyan_select(iv.estimate, n, f, iv),
                                   lambda dist: bulyan_select(dist, n, f))
    vector = closest_to_median_mean(vectors[selected], f)
    return AggregationResult(finish(vector), selected, [scores[i] for i in range(n)], {"distance_path": path})

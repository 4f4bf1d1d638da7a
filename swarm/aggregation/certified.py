"""Distance-based selections (Krum, Multi-Krum, Bulyan's Krum loop, NNM neighbours): fast when provably exact.

The replicated state needs the selection the exact path (exact_gram.py, identical on every machine) makes.
A fast float32 pass (fast_gram.py) gives, for every pair, an interval that holds the true distance; widened
by the exact path's own error bound (``exact_gram.error_bound``) it holds *the exact path's* distance. A rule
then accepts the fast selection only when the intervals leave no other outcome: every selected row's score
interval lies strictly below every unselected row's, so ties, tie-breaking and rounding cannot change it.
Each machine either proves the unique answer or computes it exactly, and both give the same rows; the
output vector is then computed from the rows alone, in fixed-order float64.

Passes, cheapest first: uncentred float32 (one GEMM's worth of work), then a tighter float32 pass (shorter
chunks, centred when a common offset makes the bound loose) when it can help, then the exact path. ``PATHS`` counts which one decided (tests, benchmark).
Scores a rule reports from a fast pass are estimates (within the bounds, not bit-reproducible across
machines); only the selection and the vector are part of the replicated state.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import torch

from ._common import require_finite
from .exact_gram import error_bound, squared_distances
from .fast_gram import K, U64, distance_bounds, fast_path_allowed, gamma

PATHS: Counter = Counter()
FIRST_K = 128  # terms per float32 dot product in the first pass: fastest, and enough for most Krum decisions
OFFSET_RATIO = 4.0  # centre when sum ||x_i||^2 exceeds sum ||x_i - mean||^2 by this much


@dataclass(frozen=True)
class Intervals:
    """Per pair: an estimate of the distance and bounds [lo, hi] on the exact path's value (lists of lists)."""

    estimate: list[list[float]]
    lo: list[list[float]]
    hi: list[list[float]]
    path: str


def _widen(bounds, largest: float, n: int, d: int, path: str) -> Intervals:
    """Add the exact path's error: eps (R_i + R_j)^2 with R_i >= ||x_i - z_exact||, where the exact path's
    centre z_exact is within gamma_n * largest of the mean and ||x_i - mean|| <= max_j ||x_i - x_j||."""
    eps = error_bound(n, d)
    hi = bounds.hi
    radius = torch.sqrt(hi.max(dim=1).values) + gamma(n + 1, U64) * largest
    radius = radius * (1.0 + 2.0 ** -44)
    extra = eps * (radius[:, None] + radius[None, :]) ** 2 * (1.0 + 2.0 ** -44)
    lo = (bounds.lo - extra - 2.0 ** -44 * (bounds.lo + extra)).clamp_min(0.0)
    hi = (hi + extra) * (1.0 + 2.0 ** -44)
    return Intervals(bounds.estimate.tolist(), lo.tolist(), hi.tolist(), path)


def decide(vectors: torch.Tensor, from_intervals, from_exact):
    """``from_intervals(Intervals) -> result or None`` on each fast pass worth running, else
    ``from_exact(distances)``; returns (result, path).

    Passes: 128-term chunks, uncentred (cheapest); then 32-term chunks (a 4x tighter bound), uncentred or, when
    a common offset inflates the norms, centred. A pass runs only if the rule would accept the first pass's
    estimates with error bars shrunk by the factor the pass is expected to gain, so hopeless passes are skipped.
    """
    if fast_path_allowed(vectors):
        n, d = vectors.shape
        first = distance_bounds(vectors, centre=False, k=FIRST_K)
        if first is None:
            require_finite(vectors)  # raises for NaN or Inf; otherwise float32 overflowed: exact path
        else:
            largest = float(first.norms.max())  # >= ||x_j|| for every row (uncentred pass)
            intervals = _widen(first, largest, n, d, "fast")
            result = from_intervals(intervals)
            if result is not None:
                PATHS[intervals.path] += 1
                return result, intervals.path
            gain = K / FIRST_K
            spread = float(first.estimate.sum()) / (2 * n)  # sum_i ||x_i - mean||^2, estimated
            square_norms = float((first.norms ** 2).sum())
            plans = [(False, gain, "fast-k32")]
            if square_norms > OFFSET_RATIO * spread:  # a common offset: centring tightens the bound
                plans.append((True, gain * spread / square_norms, "fast-centred"))
            for centre, shrink, path in plans:
                if from_intervals(_shrunk(intervals, shrink)) is None:
                    continue
                bounds = distance_bounds(vectors, centre=centre, k=K)
                if bounds is None:
                    continue
                result = from_intervals(_widen(bounds, largest, n, d, path))
                if result is not None:
                    PATHS[path] += 1
                    return result, path
    else:
        require_finite(vectors)  # callers may have deferred the check to this pass
    PATHS["exact"] += 1
    return from_exact(squared_distances(vectors).tolist()), "exact"


def _shrunk(intervals: Intervals, factor: float) -> Intervals:
    """What a pass with ``factor`` times the error would roughly give (only to decide whether to run it)."""
    est = torch.tensor(intervals.estimate, dtype=torch.float64)
    lo = est - (est - torch.tensor(intervals.lo, dtype=torch.float64)) * factor
    hi = est + (torch.tensor(intervals.hi, dtype=torch.float64) - est) * factor
    return Intervals(intervals.estimate, lo.clamp_min(0.0).tolist(), hi.tolist(), intervals.path)


def score_bounds(intervals: Intervals, rows: list[int], neighbours: int) -> tuple[dict, dict]:
    """Bounds on the exact path's Krum scores: the sum of the k smallest values is monotone in each value, so
    summing the k smallest lower (upper) bounds bounds it; the exact path's own float64 sum of k sorted values
    adds gamma_k, and math.fsum's rounding 2^-52."""
    widen = gamma(neighbours, U64) + 2.0 ** -50
    low, high = {}, {}
    for i in rows:
        lows = sorted(intervals.lo[i][j] for j in rows if j != i)[:neighbours]
        highs = sorted(intervals.hi[i][j] for j in rows if j != i)[:neighbours]
        low[i] = math.fsum(lows) * (1.0 - widen)
        high[i] = math.fsum(highs) * (1.0 + widen)
    return low, high


def separated(chosen, rest, low: dict, high: dict) -> bool:
    """Every chosen row's upper bound strictly below every other row's lower bound."""
    return not chosen or not rest or max(high[i] for i in chosen) < min(low[j] for j in rest)

"""Centered clipping (Karimireddy, He and Jaggi, ICML 2021).

v <- v + (1/n) sum_i (x_i - v) * min(1, tau / ||x_i - v||), repeated ``iterations`` times, starting from a
deterministic center: the previous aggregate when given (option ``center``), else the coordinate median.
Distances are summed in a fixed order of exact-per-element operations (row_norms.py) so every node computes the
same clipping factors.

``tau`` is a distance in the units of the updates, so a fixed one suits one workload: where honest updates are
far smaller than it, an outlier moves the result by up to ``iterations * tau / n`` in any direction, and where they
are far larger, every honest row is clipped and the result barely leaves the center. ``tau="auto"`` takes it from
the round itself: the median of the rows' distances to the starting center (the rows within it, a majority of
honest ones when f < n/2, are not clipped; an outlier counts for no more than a typical member).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ._common import AggregationResult, finish
from .row_norms import SUB, add_squared_distances, squared_distances_to, workspace
from .median import coordinate_median


def aggregate_centered_clipping(vectors: torch.Tensor, f: int, weights: torch.Tensor | None = None,
                                tau: float | str = 1.0, iterations: int = 3,
                                center: torch.Tensor | None = None) -> AggregationResult:
    n, d = vectors.shape
    if weights is not None:
        raise ValueError("centered clipping does not take weights")
    adaptive = tau == "auto"
    if not adaptive and not (isinstance(tau, (int, float)) and not isinstance(tau, bool) and math.isfinite(tau)
                             and tau > 0):
        raise ValueError(f"tau must be a positive finite number or 'auto', got {tau!r}")
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be a positive integer, got {iterations!r}")
    info = {}
    if center is None:
        v = coordinate_median(vectors)
        info["median"] = finish(v)  # the stack's coordinate median: a caller scoring rows against it reuses it
    else:
        center = torch.as_tensor(center).detach().cpu()
        if center.shape != (d,) or not bool(torch.isfinite(center).all()):
            raise ValueError(f"center must be a finite vector of shape ({d},)")
        v = center.to(torch.float64).clone()
    squared = squared_distances_to(vectors, v).tolist()
    if adaptive:
        tau = median_distance(squared)
        if tau == 0.0:  # at least half the rows sit on the center: it is the answer
            return AggregationResult(finish(v), list(range(n)), None,
                                     {"clip_factors": [1.0] * n, "tau": 0.0, **info})
    factors, spare = [], torch.empty(d, dtype=torch.float64)
    for iteration in range(iterations):
        factors = [1.0 if r <= tau * tau else tau / math.sqrt(r) for r in squared]
        new, squared = _clipped_step(vectors, v, factors, iteration + 1 < iterations, out=spare)
        v, spare = new, v  # two d-vectors in turn, not a fresh one per iteration
    return AggregationResult(finish(v), list(range(n)), None, {"clip_factors": factors, "tau": float(tau), **info})


COLUMNS = 16 * SUB  # columns per pass step: the step's and the center's slices stay in cache across the n rows


def _clipped_step(vectors: torch.Tensor, v: torch.Tensor, factors: list[float], with_norms: bool,
                  out: torch.Tensor):
    """v + (1/n) sum_i (x_i - v) * factor_i, one column slice at a time (elementwise: the same bits as whole
    rows), and, in the same pass over the rows, the squared distances to the new center that the next
    iteration clips with (slices start at multiples of SUB: ``squared_distances_to``'s bits). The new center is
    written into ``out`` ((d,) float64, not ``v``)."""
    n, d = vectors.shape
    rows, center, new = vectors.numpy(), v.numpy(), out.numpy()  # views: numpy runs the small steps (row_norms.py)
    squared = np.zeros(n) if with_norms else None
    width = min(d, COLUMNS)
    diffs, steps = np.empty(width), np.empty(width)
    scratch = workspace(n) if with_norms else None
    for start in range(0, d, COLUMNS):
        stop = min(d, start + COLUMNS)
        step, diff = steps[:stop - start], diffs[:stop - start]
        step.fill(0.0)
        for i in range(n):
            np.subtract(rows[i, start:stop], center[start:stop], out=diff)
            diff *= factors[i]
            step += diff
        step /= n
        np.add(center[start:stop], step, out=new[start:stop])
        if squared is not None:
            add_squared_distances(squared, rows[:, start:stop], new[start:stop], scratch)
    return out, (squared.tolist() if squared is not None else None)


def median_distance(squared: list[float]) -> float:
    """The median of the rows' distances (from their squares, in float64; the mean of the middle two for even n):
    plain Python floats in a fixed order, the same on every node."""
    ordered = sorted(math.sqrt(r) for r in squared)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2

"""Centered clipping (Karimireddy, He and Jaggi, ICML 2021).

v <- v + (1/n) sum_i (x_i - v) * min(1, tau / ||x_i - v||), repeated ``iterations`` times, starting from a
deterministic center: the previous aggregate when given (option ``center``), else the coordinate median.
Norms use the exact Gram scheme so every node computes the same clipping factors.
"""
from __future__ import annotations

import math

import torch

from ._common import AggregationResult, finish
from .exact_gram import squared_norms_from
from .median import coordinate_median


def aggregate_centered_clipping(vectors: torch.Tensor, f: int, weights: torch.Tensor | None = None,
                                tau: float = 1.0, iterations: int = 3,
                                center: torch.Tensor | None = None) -> AggregationResult:
    n, d = vectors.shape
    if weights is not None:
        raise ValueError("centered clipping does not take weights")
    if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be a positive finite number, got {tau!r}")
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be a positive integer, got {iterations!r}")
    if center is None:
        v = coordinate_median(vectors)
    else:
        center = torch.as_tensor(center).detach().cpu()
        if center.shape != (d,) or not bool(torch.isfinite(center).all()):
            raise ValueError(f"center must be a finite vector of shape ({d},)")
        v = center.to(torch.float64).clone()
    factors = []
    for _ in range(iterations):
        norms = squared_norms_from(vectors, v).tolist()
        factors = [1.0 if r <= tau * tau else tau / math.sqrt(r) for r in norms]
        step = torch.zeros(d, dtype=torch.float64)
        for i in range(n):
            step += (vectors[i] - v) * factors[i]
        v = v + step / n
    return AggregationResult(finish(v), list(range(n)), None, {"clip_factors": factors})

"""Reputation-weighted coordinate-wise rules, for stacks whose rows all carry positive weights.

Weighted median: sort each coordinate; the first value whose cumulative weight reaches half the total, or the
mean of it and the next value when the cumulative weight equals exactly half (so equal weights give the plain
median). Weighted trimmed mean: drop f values per side by count, weighted mean of the rest.
"""
from __future__ import annotations

import torch

COLUMNS_PER_STEP = 1 << 14


def _sorted_with_weights(block: torch.Tensor, weights: torch.Tensor):
    values, order = torch.sort(block, dim=0, stable=True)
    return values.to(torch.float64), weights[order]


def weighted_median(vectors: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    n, d = vectors.shape
    out = torch.empty(d, dtype=torch.float64)
    for start in range(0, d, COLUMNS_PER_STEP):
        values, w = _sorted_with_weights(vectors[:, start:start + COLUMNS_PER_STEP], weights)
        cumulative = torch.cumsum(w, dim=0)  # sequential along the n sorted values
        total = cumulative[-1:]
        first = (2.0 * cumulative >= total).to(torch.uint8).argmax(dim=0, keepdim=True)
        low = values.gather(0, first)
        high = values.gather(0, torch.clamp_max(first + 1, n - 1))
        exactly_half = 2.0 * cumulative.gather(0, first) == total
        out[start:start + values.shape[1]] = torch.where(exactly_half, (low + high) * 0.5, low)[0]
    return out


def weighted_trimmed_mean(vectors: torch.Tensor, weights: torch.Tensor, f: int) -> torch.Tensor:
    n, d = vectors.shape
    out = torch.empty(d, dtype=torch.float64)
    for start in range(0, d, COLUMNS_PER_STEP):
        values, w = _sorted_with_weights(vectors[:, start:start + COLUMNS_PER_STEP], weights)
        numerator = torch.zeros(values.shape[1], dtype=torch.float64)
        denominator = torch.zeros(values.shape[1], dtype=torch.float64)
        for k in range(f, n - f):  # fixed order over sorted positions
            numerator += values[k] * w[k]
            denominator += w[k]
        out[start:start + values.shape[1]] = numerator / denominator
    return out

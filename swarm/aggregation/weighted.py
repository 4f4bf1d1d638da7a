"""Reputation-weighted coordinate-wise rules, for stacks whose rows all carry positive weights.

Weighted median: sort each coordinate; the first value whose cumulative weight reaches half the total, or the
mean of it and the next value when the cumulative weight equals exactly half (so equal weights give the plain
median). Weighted trimmed mean: drop f values per side by count, weighted mean of the rest.

Both sort with the same sorting network as the unweighted rules (elementwise compare-exchange on whole rows,
carrying each value's weight along), which is exact and an order of magnitude faster than torch.sort along a
short first dimension.
"""
from __future__ import annotations

import torch

from .order_stats import _batcher_network

COLUMNS_PER_STEP = 1 << 14


def _sorted_with_weights(block: torch.Tensor, weights: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per column, the n values in ascending order and the weight that travels with each. Equal values keep
    their row order (the row index breaks ties), so which of two tied rows a trim drops is defined."""
    n, width = block.shape
    values = list(block.to(torch.float64).unbind(0))
    carried = [weights[i].expand(width) for i in range(n)]
    rows = [torch.full((width,), i, dtype=torch.int16) for i in range(n)]
    for a, b in _batcher_network(n):
        swap = (values[a] > values[b]) | ((values[a] == values[b]) & (rows[a] > rows[b]))
        values[a], values[b] = torch.where(swap, values[b], values[a]), torch.where(swap, values[a], values[b])
        carried[a], carried[b] = torch.where(swap, carried[b], carried[a]), torch.where(swap, carried[a], carried[b])
        rows[a], rows[b] = torch.where(swap, rows[b], rows[a]), torch.where(swap, rows[a], rows[b])
    return values, carried


def weighted_median(vectors: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    n, d = vectors.shape
    weights = weights.to(torch.float64)
    out = torch.empty(d, dtype=torch.float64)
    for start in range(0, d, COLUMNS_PER_STEP):
        values, carried = _sorted_with_weights(vectors[:, start:start + COLUMNS_PER_STEP], weights)
        total = carried[0].clone()
        for k in range(1, n):  # sequential in sorted order, as the cumulative sums below
            total += carried[k]
        result = values[n - 1].clone()
        done = torch.zeros_like(result, dtype=torch.bool)
        cumulative = torch.zeros_like(result)
        for k in range(n):
            cumulative += carried[k]
            hit = ~done & (2.0 * cumulative >= total)
            exactly_half = 2.0 * cumulative == total
            value = torch.where(exactly_half, (values[k] + values[min(k + 1, n - 1)]) * 0.5, values[k])
            result = torch.where(hit, value, result)
            done |= hit
        out[start:start + result.shape[0]] = result
    return out


def weighted_trimmed_mean(vectors: torch.Tensor, weights: torch.Tensor, f: int) -> torch.Tensor:
    n, d = vectors.shape
    weights = weights.to(torch.float64)
    out = torch.empty(d, dtype=torch.float64)
    for start in range(0, d, COLUMNS_PER_STEP):
        values, carried = _sorted_with_weights(vectors[:, start:start + COLUMNS_PER_STEP], weights)
        numerator = torch.zeros_like(values[0])
        denominator = torch.zeros_like(values[0])
        for k in range(f, n - f):  # fixed order over sorted positions
            numerator += values[k] * carried[k]
            denominator += carried[k]
        out[start:start + numerator.shape[0]] = numerator / denominator
    return out

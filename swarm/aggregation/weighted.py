"""Reputation-weighted coordinate-wise rules, for stacks whose rows all carry positive weights.

Weighted median: sort each coordinate; the first value whose cumulative weight reaches half the total, or the
mean of it and the next value when the cumulative weight equals exactly half (so equal weights give the plain
median). Weighted trimmed mean: drop f values per side by count, weighted mean of the rest.

Both avoid torch.sort along a short first dimension (slow, strided): the median ranks each value against the
others with elementwise comparisons; the trimmed mean sorts with the same sorting network as the unweighted
rules, carrying each value's weight along. Both are exact.
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
    """Rank form, n^2 elementwise steps and no data movement: value v_i (rows ordered by value, then index) is the
    weighted median where the weight strictly below it is under half the total and, with its own weight, reaches
    half; when that reaches exactly half, the mean with the next value up."""
    n, d = vectors.shape
    weights = weights.to(torch.float64)
    total = float(weights.sum())  # the same sum for every column, in row order
    out = torch.empty(d, dtype=torch.float64)
    for start in range(0, d, COLUMNS_PER_STEP):
        rows = vectors[:, start:start + COLUMNS_PER_STEP].to(torch.float64).unbind(0)
        result = torch.zeros_like(rows[0])
        for i in range(n):
            below = torch.zeros_like(rows[0])
            above = torch.full_like(rows[0], float("inf"))  # the next value up in (value, index) order
            for j in range(n):
                if j == i:
                    continue
                before = rows[j] < rows[i] if j > i else rows[j] <= rows[i]
                below += torch.where(before, weights[j], 0.0)
                above = torch.where(before, above, torch.minimum(above, rows[j]))
            reached = 2.0 * (below + weights[i])
            chosen = (2.0 * below < total) & (reached >= total)
            value = torch.where(reached == total, (rows[i] + above) * 0.5, rows[i])
            result = torch.where(chosen, value, result)
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

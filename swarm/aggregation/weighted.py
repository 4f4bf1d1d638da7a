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

from . import weighted_small
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


MAX_TABLE_ROWS = 16


def weighted_median(vectors: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Rank form, no data movement: value v_i (rows ordered by value, then index) is the weighted median where
    the weight strictly below it is under half the total and, with its own weight, reaches half; when that
    reaches exactly half, the mean with the next value up.

    The weight below v_i is looked up, not summed: each row's "is below" bits form an integer mask that indexes a
    table of the 2^n subset sums (n <= 16), so each coordinate costs n-1 comparisons and one gather per row.
    Taller stacks (a swarm of more than 16 members) are sorted instead.
    """
    n, d = vectors.shape
    if weighted_small.supports(n):
        fast = weighted_small.weighted_median_small(vectors, weights)
        if fast is not None:
            return fast
    if n > MAX_TABLE_ROWS:
        return _weighted_median_by_sorting(vectors, weights)
    weights = weights.to(torch.float64)
    table = _subset_sums([float(w) for w in weights])
    total = table[-1].item()
    out = torch.empty(d, dtype=torch.float64)
    for start in range(0, d, COLUMNS_PER_STEP):
        rows = vectors[:, start:start + COLUMNS_PER_STEP].unbind(0)
        result = torch.zeros(rows[0].shape, dtype=torch.float64)
        for i in range(n):
            mask = torch.zeros(rows[0].shape, dtype=torch.int64)
            for j in range(n):
                if j != i:
                    mask |= _before(rows, j, i).to(torch.int64) << j
            below = table.index_select(0, mask)  # far faster than table[mask]
            reached = 2.0 * (below + weights[i])
            chosen = (2.0 * below < total) & (reached >= total)
            result = torch.where(chosen, rows[i], result)  # promotes to float64: exact
            exact = chosen & (reached == total)
            if bool(exact.any()):
                where = exact.nonzero().squeeze(1)
                result[where] = _mean_with_next_up([row[where] for row in rows], i)
        out[start:start + result.shape[0]] = result
    return out


SORT_COLUMNS_PER_STEP = 1 << 12


def _weighted_median_by_sorting(vectors: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The same rule for stacks too tall for the subset-sum table (n > 16, a table of 2^n sums): per column, the
    values in (value, row index) order by a stable sort, the weights carried along and summed in that order
    (cumsum runs along the row, one fixed order on any thread count); the first value whose cumulative weight
    reaches half the total, or its mean with the next one when it reaches exactly half. O(n log n) a column."""
    n, d = vectors.shape
    weights = weights.to(torch.float64)
    total = 0.0
    for w in weights.tolist():  # a fixed order, as in the table
        total += w
    out = torch.empty(d, dtype=torch.float64)
    last = torch.tensor(n - 1)
    for start in range(0, d, SORT_COLUMNS_PER_STEP):
        columns = vectors[:, start:start + SORT_COLUMNS_PER_STEP].to(torch.float64).t().contiguous()  # (width, n)
        values, order = torch.sort(columns, dim=1, stable=True)
        reached = 2.0 * torch.cumsum(weights[order], dim=1)
        k = (reached >= total).to(torch.uint8).argmax(dim=1, keepdim=True)  # the first position that reaches half
        chosen = values.gather(1, k).squeeze(1)
        following = values.gather(1, torch.minimum(k + 1, last)).squeeze(1)
        exact = reached.gather(1, k).squeeze(1) == total
        out[start:start + chosen.shape[0]] = torch.where(exact, (chosen + following) * 0.5, chosen)
    return out


def _before(rows, j: int, i: int) -> torch.Tensor:
    """Row j comes before row i in (value, row index) order."""
    return rows[j] < rows[i] if j > i else rows[j] <= rows[i]


def _subset_sums(weights: list[float]) -> torch.Tensor:
    """table[m] = sum of weights[j] for the bits j of m, each built from a smaller entry in a fixed order."""
    table = [0.0] * (1 << len(weights))
    for m in range(1, len(table)):
        low = m & -m
        table[m] = table[m ^ low] + weights[low.bit_length() - 1]
    return torch.tensor(table, dtype=torch.float64)


def _mean_with_next_up(rows: list[torch.Tensor], i: int) -> torch.Tensor:
    above = torch.full(rows[i].shape, float("inf"), dtype=torch.float64)
    for j in range(len(rows)):
        if j != i:
            above = torch.where(_before(rows, j, i), above, torch.minimum(above, rows[j].to(torch.float64)))
    return (rows[i].to(torch.float64) + above) * 0.5


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

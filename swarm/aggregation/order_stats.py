"""Coordinate-wise order statistics of a small stack of rows, exactly and fast.

Median, trimmed mean and Bulyan need, per coordinate, the values of the n rows in sorted order. torch.sort
along dim 0 of an (n, d) tensor with small n is slow (strided, per-column work). A sorting network (Batcher's
odd-even merge sort) needs only elementwise min/max on whole rows, which vectorises well and is exact, so it
is deterministic. Comparators that do not feed the requested output positions are pruned.
"""
from __future__ import annotations

from functools import lru_cache

import torch

COLUMNS_PER_STEP = 1 << 14  # keeps n rows of one step in cache


@lru_cache(maxsize=None)
def _batcher_network(n: int) -> tuple[tuple[int, int], ...]:
    """Comparators (a, b), a < b, of an odd-even merge sort of n lines (padded to a power of two with +inf)."""
    size = 1
    while size < n:
        size *= 2
    pairs = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    # Padding lines hold +inf and never move, so comparators that touch them are no-ops.
    return tuple((a, b) for a, b in pairs if b < n)


@lru_cache(maxsize=None)
def network_for(n: int, positions: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """The comparators needed to place the sorted values at ``positions`` (pruned backwards)."""
    needed = set(positions)
    kept = []
    for a, b in reversed(_batcher_network(n)):
        if a in needed or b in needed:
            kept.append((a, b))
            needed.add(a)
            needed.add(b)
    return tuple(reversed(kept))


def sorted_positions(block: torch.Tensor, positions: tuple[int, ...]) -> list[torch.Tensor]:
    """For an (n, w) block, the rows of its column-wise sort at ``positions`` (a list of (w,) tensors)."""
    n = block.shape[0]
    lines = list(block.unbind(0))
    for a, b in network_for(n, positions):
        low = torch.minimum(lines[a], lines[b])
        lines[b] = torch.maximum(lines[a], lines[b])
        lines[a] = low
    return [lines[p] for p in positions]


def columnwise(vectors: torch.Tensor, positions: tuple[int, ...], combine) -> torch.Tensor:
    """Apply ``combine(list of sorted rows at positions) -> float64 (w,)`` block by block; returns (d,) float64."""
    n, d = vectors.shape
    out = torch.empty(d, dtype=torch.float64)
    for start in range(0, d, COLUMNS_PER_STEP):
        block = vectors[:, start:start + COLUMNS_PER_STEP]
        out[start:start + block.shape[1]] = combine(sorted_positions(block, positions))
    return out


def fixed_order_sum(rows: list[torch.Tensor]) -> torch.Tensor:
    """Float64 sum of rows, one at a time in list order."""
    acc = rows[0].to(torch.float64).clone()
    for row in rows[1:]:
        acc += row
    return acc

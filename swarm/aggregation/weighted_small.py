"""Weighted median for a handful of rows (n <= 5, the usual local swarm), by lookup of each column's ordering.

A column's order among n rows (by value, ties by row index) is fixed by its n(n-1)/2 pairwise comparisons. Those
bits form a code (1,024 codes for n = 5); for every code that is a real ordering, the row that the weighted-median
rule of ``weighted.weighted_median`` picks (and the row whose value it is averaged with at an exact half) is
worked out once per call in plain Python with the very same float64 arithmetic. Each column then costs a
comparison and a shifted add per pair, in one byte, plus a gather (two and a select when some ordering ends at an
exact half), against ~20 operations per row for the general rank form, and the result is bit for bit the same as
the general form (tested), so nodes using either agree.
"""
from __future__ import annotations

from functools import lru_cache
from itertools import combinations

import torch

MAX_ROWS = 5
COLUMNS_PER_STEP = 1 << 16  # few steps: each tensor op releases and retakes the GIL, which costs under contention
NONE = -1


def supports(n: int) -> bool:
    return 2 <= n <= MAX_ROWS


@lru_cache(maxsize=64)
def selection_tables(weights: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(chosen row, row averaged with at an exact half or NONE) per ordering code; None when some ordering would
    choose no row or several (pathological weights): the caller then uses the general form."""
    n = len(weights)
    pairs = list(combinations(range(n), 2))
    subset = [0.0] * (1 << n)  # built exactly like weighted._subset_sums
    for m in range(1, len(subset)):
        low = m & -m
        subset[m] = subset[m ^ low] + weights[low.bit_length() - 1]
    total = subset[-1]
    chosen = torch.zeros(1 << len(pairs), dtype=torch.int64)
    partner = torch.full((1 << len(pairs),), NONE, dtype=torch.int64)
    for code in range(1 << len(pairs)):
        before = [[False] * n for _ in range(n)]
        for bit, (i, j) in enumerate(pairs):  # bit set: row i comes before row j
            first = code >> bit & 1
            before[i][j], before[j][i] = bool(first), not first
        ranks = [sum(before[j][i] for j in range(n)) for i in range(n)]
        if sorted(ranks) != list(range(n)):
            continue  # not transitive: never produced by real comparisons
        picked = []
        for i in range(n):
            below = subset[sum(1 << j for j in range(n) if before[j][i])]
            reached = 2.0 * (below + weights[i])
            if 2.0 * below < total and reached >= total:
                picked.append((i, reached == total))
        if len(picked) != 1:
            return None
        row, exact_half = picked[0]
        chosen[code] = row
        if exact_half:
            following = [j for j in range(n) if ranks[j] == ranks[row] + 1]
            if not following:
                return None
            partner[code] = following[0]
    return chosen, partner


def weighted_median_small(vectors: torch.Tensor, weights: torch.Tensor) -> torch.Tensor | None:
    """(d,) float64 weighted median of an (n <= 5, d) stack; None when the tables cannot be built."""
    n, d = vectors.shape
    tables = selection_tables(tuple(float(w) for w in weights.to(torch.float64)))
    if tables is None:
        return None
    chosen, partner = tables
    half_codes = partner != NONE
    any_half = bool(half_codes.any())
    upper_row = partner.clamp(min=0)  # any row for the codes without a half: their value is not used
    pairs = list(combinations(range(n), 2))
    out = torch.empty(d, dtype=torch.float64)
    width = min(d, COLUMNS_PER_STEP)
    code_type = torch.uint8 if len(pairs) <= 8 else torch.int16  # n <= 4: 6 pair bits; n = 5: 10
    below = torch.empty(width, dtype=torch.bool)
    bits = torch.empty(width, dtype=code_type)
    for start in range(0, d, COLUMNS_PER_STEP):
        block = vectors[:, start:start + COLUMNS_PER_STEP]
        columns = block.shape[1]
        rows = block.unbind(0)
        code = torch.zeros(columns, dtype=code_type)  # the narrowest type that holds the code: fewer bytes per pass
        below_here, bits_here = below[:columns], bits[:columns]
        for bit, (i, j) in enumerate(pairs):
            torch.le(rows[i], rows[j], out=below_here)  # i < j: i first unless strictly greater
            code.add_(bits_here.copy_(below_here).bitwise_left_shift_(bit))
        code = code.to(torch.int32)  # int32 indexes as well as int64, at half the bytes
        result = block.gather(0, chosen.index_select(0, code).unsqueeze(0)).squeeze(0).to(torch.float64)
        if any_half:
            # Dense: gathering every column's partner and selecting costs less than finding the exact halves.
            upper = block.gather(0, upper_row.index_select(0, code).unsqueeze(0)).squeeze(0).to(torch.float64)
            result = torch.where(half_codes.index_select(0, code), (result + upper) * 0.5, result)
        out[start:start + columns] = result
    return out

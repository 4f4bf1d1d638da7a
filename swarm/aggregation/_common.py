"""Shared pieces of every aggregation rule: the result type, input checks, fixed-order float64 sums.

Aggregation is part of the replicated state machine, so every helper here is deterministic: rows are visited
in the given order, accumulation is float64 on the CPU, and no reduction's order depends on the thread count.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

#: Columns processed per step by the chunked helpers; bounds temporary memory to O(n * CHUNK). Below torch's
#: 32768-element grain, so each step runs on one thread: no wake-ups, 3x faster here than 1 << 16 on a busy CPU.
CHUNK = 1 << 14


@dataclass(frozen=True)
class AggregationResult:
    """What a rule produced: the aggregate (float32, shape (d,)), the rows it used, and per-row scores.

    ``selected`` lists original row indices (ascending) whose values entered the aggregate as a whole row
    (all rows for coordinate-wise rules, minus any excluded by the weight floor). ``scores`` holds one float
    per original row where the rule scores rows (Krum, Bulyan), else None; rows excluded by the floor get None.
    Scores from a certified fast pass (certified.py) are estimates within its bounds, not bit-reproducible
    across machines: only ``vector`` and ``selected`` belong to the replicated state.
    """

    vector: torch.Tensor
    selected: list[int]
    scores: list[float | None] | None = None
    info: dict = field(default_factory=dict)


def check_stack(vectors: torch.Tensor, finite: bool = True) -> torch.Tensor:
    """Return ``vectors`` as a CPU float tensor after checking shape and (unless ``finite`` is False, for a rule
    that checks as it goes) finiteness; ValueError otherwise."""
    if not isinstance(vectors, torch.Tensor):
        raise ValueError(f"vectors must be a torch.Tensor, not {type(vectors).__name__}")
    if vectors.dim() != 2:
        raise ValueError(f"vectors must be a 2-D (n, d) stack, got shape {tuple(vectors.shape)}")
    n, d = vectors.shape
    if n < 1 or d < 1:
        raise ValueError(f"vectors must have at least one row and one column, got shape {(n, d)}")
    if vectors.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"vectors must be float32 or float64, got {vectors.dtype}")
    vectors = vectors.detach().to("cpu")
    if finite:
        require_finite(vectors)
    return vectors


def require_finite(vectors: torch.Tensor) -> None:
    """ValueError naming the rows that hold NaN or Inf.

    One sum decides the common case: under IEEE arithmetic a NaN or an infinity makes any sum that includes it
    non-finite, in any order, so a finite sum proves every entry finite (torch.isfinite(x).all() is ~15x
    slower). Only a non-finite sum (a bad entry, or finite values that overflowed) looks row by row.
    """
    if bool(torch.isfinite(vectors.sum())):
        return
    bad = [i for i in range(vectors.shape[0]) if not bool(torch.isfinite(vectors[i]).all())]
    if bad:
        raise ValueError(f"rows {bad} contain NaN or Inf; filter them before aggregating")


def check_f(f: int) -> int:
    if not isinstance(f, int) or isinstance(f, bool) or f < 0:
        raise ValueError(f"f must be a non-negative integer, got {f!r}")
    return f


def check_weights(weights, n: int) -> torch.Tensor | None:
    """Weights as a float64 tensor of n finite non-negative values with a positive sum, or None."""
    if weights is None:
        return None
    w = torch.as_tensor(weights, dtype=torch.float64).detach().cpu().reshape(-1)
    if w.numel() != n:
        raise ValueError(f"got {w.numel()} weights for {n} rows")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError("weights must be finite and non-negative")
    if float(w.sum()) <= 0:
        raise ValueError("weights must not all be zero")
    return w


def row_sum(vectors: torch.Tensor, rows: list[int], coefficients: list[float] | None = None) -> torch.Tensor:
    """Float64 sum (optionally weighted) of the given rows, added one row at a time in the given order.

    Column block by column block, so the float64 accumulator stays in cache; every element still sees the
    same additions in the same order, so the bytes do not depend on the blocking."""
    d = vectors.shape[1]
    acc = torch.empty(d, dtype=torch.float64)
    for start in range(0, d, CHUNK):
        part = acc[start:start + CHUNK]
        part.zero_()
        for k, i in enumerate(rows):  # in-place promotion to float64: no temporary copy of the row
            if coefficients is None:
                part.add_(vectors[i, start:start + CHUNK])
            else:
                part.add_(vectors[i, start:start + CHUNK], alpha=coefficients[k])
    return acc


def row_mean(vectors: torch.Tensor, rows: list[int], weights: torch.Tensor | None = None) -> torch.Tensor:
    """Float64 mean (or weights-normalised mean) of the given rows, in their given order."""
    if not rows:
        raise ValueError("no rows to average")
    if weights is None:
        return row_sum(vectors, rows) / len(rows)
    coefficients = [float(weights[i]) for i in rows]
    total = 0.0
    for c in coefficients:  # fixed-order scalar sum
        total += c
    if total <= 0:
        return row_sum(vectors, rows) / len(rows)
    return row_sum(vectors, rows, coefficients) / total


def finish(vector64: torch.Tensor) -> torch.Tensor:
    """Cast the float64 aggregate to the float32 the model uses."""
    return vector64.to(torch.float32).contiguous()

"""Plain (or reputation-weighted) mean: the non-robust baseline, FedAvg's server step."""
from __future__ import annotations

import torch

from ._common import AggregationResult, finish, row_mean


def aggregate_mean(vectors: torch.Tensor, f: int, weights: torch.Tensor | None = None) -> AggregationResult:
    rows = list(range(vectors.shape[0]))
    return AggregationResult(finish(row_mean(vectors, rows, weights)), rows)

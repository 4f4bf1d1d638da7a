"""The server (outer) step of the replicated state machine.

    buf' = momentum * buf + aggregate
    heavy ball (default):  params <- params - lr * buf'
    Nesterov:              params <- params - lr * (aggregate + momentum * buf')

Elementwise float64 arithmetic on the CPU, cast back to float32: the same bytes on every machine and thread
count. With local_steps > 1 the aggregate is a pseudo-gradient (start - end): lr = 1, momentum = 0 is FedAvg, and
lr 0.7, momentum 0.9, Nesterov over H inner AdamW steps is DiLoCo's outer step. The buffer is part of the
replicated state (stored float32); the inner optimizer's state never is.
"""
from __future__ import annotations

import math

import torch

from swarm.round.tensor_codec import all_finite


def apply_update(params: torch.Tensor, aggregate: torch.Tensor, server_lr: float, momentum: float = 0.0,
                 momentum_buf: torch.Tensor | None = None, nesterov: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (new float32 params, new float32 momentum buffer)."""
    if params.dim() != 1 or aggregate.shape != params.shape:
        raise ValueError(f"params {tuple(params.shape)} and aggregate {tuple(aggregate.shape)} must be equal 1-D shapes")
    if not (math.isfinite(server_lr) and server_lr > 0):
        raise ValueError(f"server_lr must be positive and finite, got {server_lr!r}")
    if not (math.isfinite(momentum) and 0.0 <= momentum < 1.0):
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    if momentum_buf is not None and momentum_buf.shape != params.shape:
        raise ValueError("momentum buffer shape differs from params")
    aggregate = aggregate.detach().to("cpu", torch.float32)
    if momentum_buf is None or momentum == 0.0:
        # 0 * (finite buffer) + update == update exactly, and float32 -> float64 -> float32 is exact: skipping the
        # momentum arithmetic gives the same bytes for less than half the passes over memory.
        update, new_momentum = aggregate.to(torch.float64), aggregate.clone()
    else:
        update = momentum_buf.detach().to("cpu", torch.float64) * momentum + aggregate
        new_momentum = update.to(torch.float32)
    if nesterov and momentum != 0.0:
        update = aggregate.to(torch.float64) + update * momentum
    new_params = (params.detach().to("cpu", torch.float64) - update * server_lr).to(torch.float32)
    if not all_finite(new_params):
        raise ValueError("update produced non-finite parameters")
    return new_params, new_momentum

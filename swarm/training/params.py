"""Flat float32 views of a model's parameters: the unit that is compressed, sent, aggregated and stored."""
from __future__ import annotations

import torch
from torch import nn


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flatten_parameters(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).to("cpu", torch.float32)


def flatten_gradients(model: nn.Module) -> torch.Tensor:
    parts = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in model.parameters()]
    return torch.cat(parts).to("cpu", torch.float32)


def load_flat_parameters(model: nn.Module, flat: torch.Tensor) -> None:
    """Copy a flat vector into the model's parameters (ValueError on a size mismatch)."""
    if flat.dim() != 1 or flat.numel() != parameter_count(model):
        raise ValueError(f"flat vector of shape {tuple(flat.shape)} does not fit {parameter_count(model)} parameters")
    offset = 0
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(flat[offset:offset + p.numel()].reshape(p.shape))
            offset += p.numel()

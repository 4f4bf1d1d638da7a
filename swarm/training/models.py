"""Models: a small MLP and a small CNN, or a user's ``"module:function"`` taking (input_shape, num_classes)."""
from __future__ import annotations

import math

import torch
from torch import nn

from .loading import is_import_spec, load_callable


def mlp(input_shape: tuple[int, ...], num_classes: int, hidden: int = 128) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))


def cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    if len(input_shape) != 3:
        raise ValueError(f"cnn needs (channels, height, width) inputs, got {input_shape}")
    channels, height, width = input_shape
    return nn.Sequential(
        nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * (height // 4) * (width // 4), num_classes))


MODELS = {"mlp": mlp, "cnn": cnn}


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, seed: int) -> nn.Module:
    """Build the model with initial weights that depend only on ``seed`` (global RNG left untouched)."""
    if name in MODELS:
        factory = MODELS[name]
    elif is_import_spec(name):
        factory = load_callable(name)
    else:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)} or 'module:function'")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = factory(input_shape, num_classes)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model factory {name!r} did not return a torch.nn.Module")
    return model

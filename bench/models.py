"""Models used only by benchmarks, loaded by "module:function" like a user's own model."""
from __future__ import annotations

from swarm.training.models import mlp


def mlp_1m(input_shape: tuple[int, ...], num_classes: int):
    """The MLP widened to ~1.0M parameters (784*1270 + 1270 + 1270*10 + 10 = 1,009,660)."""
    return mlp(input_shape, num_classes, hidden=1270)

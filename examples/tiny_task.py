"""A complete user task for swarm: regression of a hidden function, with each member's own private data.

Run it (4 local node processes, the genesis naming this class by import string):

    swarm cluster up --dir /tmp/tiny --task examples.tiny_task:TinyRegression --dataset examples.tiny_task:own_data --rounds 10

What the genesis holds (equal on every member, it decides the model): ``model.task:
examples.tiny_task:TinyRegression`` and ``model.options`` (``features``, ``hidden``). What each node config holds (its
own business): ``dataset.custom: examples.tiny_task:own_data`` and its training settings. The module must be
importable by every node (here: run from the repository root, or pip-install your package).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from swarm.training.tasks import DataSource, InnerOptimizer, Task, TaskData, TaskError

SAMPLES = 2000


def own_data(node_index: int = 0, features: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """This member's private samples: a different draw on every member, the same hidden function for all.
    (A real deployment would read the party's own files here.)"""
    rng = np.random.default_rng(1000 + node_index)
    x = rng.normal(size=(SAMPLES, features)).astype(np.float32)
    hidden = np.random.default_rng(0).normal(size=features).astype(np.float32)  # the truth, shared
    y = np.sin(x @ hidden) + 0.05 * rng.normal(size=SAMPLES).astype(np.float32)
    return x, y.astype(np.float32)


class TinyRegression(Task):
    # Every hyper-parameter the genesis may set, with its default (and so its type).
    defaults: ClassVar[dict[str, Any]] = {"features": 8, "hidden": 32}
    partitions = ("none",)               # each member trains on everything it holds
    accuracy_metric = "r2"               # what the node's log and API show beside the loss

    def build_model(self) -> nn.Module:
        # Replicated: a function of the hyper-parameters only (the caller seeds the RNG with the genesis seed).
        features, hidden = self.hyper["features"], self.hyper["hidden"]
        return nn.Sequential(nn.Linear(features, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def load_data(self, source: DataSource) -> TaskData:
        # Local: the node config's dataset.custom names a function; this one takes the member's index.
        from swarm.training.loading import load_callable
        x, y = load_callable(source.name)(source.node_index, self.hyper["features"])
        if x.ndim != 2 or x.shape[1] != self.hyper["features"]:
            raise TaskError("dataset.custom", f"samples have shape {list(x.shape[1:])}, the genesis model takes "
                                              f"[{self.hyper['features']}] (model.options.features)")
        cut = int(len(y) * 0.8)
        x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
        return TaskData((x_t[:cut], y_t[:cut]), (x_t[cut:], y_t[cut:]), cut)

    def train_batches(self, data: TaskData, batch_size: int, rng: np.random.Generator) -> Iterator[Any]:
        x, y = data.train
        while True:
            picks = torch.from_numpy(rng.integers(0, len(y), size=batch_size))
            yield x[picks], y[picks]

    def validation_batches(self, data: TaskData, batch_size: int) -> Iterable[Any]:
        x, y = data.validation
        return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(y), batch_size)]

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(model(x).squeeze(-1), y)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
        errors, targets = [], []
        for x, y in batches:
            errors.append(model(x).squeeze(-1) - y)
            targets.append(y)
        error, target = torch.cat(errors), torch.cat(targets)
        mse = float((error ** 2).mean())
        return {"loss": mse, "r2": 1.0 - mse / float(target.var(unbiased=False))}

    def inner_optimizer(self) -> InnerOptimizer:
        return InnerOptimizer(name="adamw", lr=3e-3, weight_decay=0.0, warmup_steps=5, grad_clip=1.0)

"""Built-in task ``classification``: an MLP or CNN (or a user's ``module:function`` network) on labelled samples
(``mnist5k``, ``digits``, ``synthetic`` or a user's ``module:function`` dataset), cross-entropy, argmax accuracy.

Hyper-parameters (genesis ``model.options``): ``network`` (``mlp``, ``cnn`` or ``module:function`` taking
``(input_shape, num_classes)``), ``num_classes`` and ``input_shape``. A genesis that sets no shape takes the
published shape of the built-in dataset the node config names (a constant table, not the node's data); a user's
dataset needs both in the genesis. A node whose samples do not fit them is refused at start.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from swarm.training.datasets import BUILTIN_SHAPES, DATASETS, load_dataset
from swarm.training.loading import is_import_spec, load_callable
from swarm.training.models import MODELS
from swarm.training.partition import partition_indices

from .base import DataSource, InnerOptimizer, Task, TaskData, TaskError
from .registry import register


@register("classification")
class ClassificationTask(Task):
    defaults: ClassVar[dict[str, Any]] = {"network": "mlp", "num_classes": 0, "input_shape": []}
    default_dataset = "mnist5k"
    datasets = tuple(DATASETS)
    partitions = ("iid", "dirichlet", "none")

    def __init__(self, options: dict[str, Any] | None = None, seed: int = 0):
        super().__init__(options, seed)
        network = self.hyper["network"]
        if network not in MODELS and not is_import_spec(network):
            raise TaskError("model.name", f"unknown model {network!r}; known: {sorted(MODELS)} or 'module:function'")
        if self.hyper["num_classes"] < 1:
            raise TaskError("model.options.num_classes", "required (>= 1): the number of classes comes from the "
                                                         "genesis, never from a node's labels")
        shape = self.hyper["input_shape"]
        if not shape or any(not isinstance(d, int) or d < 1 for d in shape):
            raise TaskError("model.options.input_shape", f"required: a list of positive integers, got {shape!r}")
        self.num_classes = int(self.hyper["num_classes"])
        self.input_shape = tuple(int(d) for d in shape)

    def build_model(self) -> nn.Module:
        network = self.hyper["network"]
        factory = MODELS[network] if network in MODELS else load_callable(network)
        return factory(self.input_shape, self.num_classes)

    def load_data(self, source: DataSource) -> TaskData:
        if source.name not in DATASETS and not is_import_spec(source.name):
            raise TaskError("dataset.name", f"task classification reads {', '.join(DATASETS)} or a user's "
                                            f"'module:function', got {source.name!r}")
        data = load_dataset(source.name)
        if data.input_shape != self.input_shape:
            raise TaskError("dataset", f"samples of {source.name!r} have shape {list(data.input_shape)} but the "
                                       f"genesis model takes {list(self.input_shape)} (model.options.input_shape)")
        for split, labels in (("train", data.train_y), ("test", data.test_y)):
            if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
                raise TaskError("dataset", f"{split} labels of {source.name!r} span [{int(labels.min())}, "
                                           f"{int(labels.max())}] but the genesis has "
                                           f"{self.num_classes} classes (model.options.num_classes)")
        if source.partition == "none":
            own = np.arange(len(data.train_y))
        else:
            own = partition_indices(data.train_y.numpy(), source.node_index, source.num_nodes, source.seed,
                                    source.partition, source.alpha)
        if len(own) == 0:
            raise TaskError("dataset.partition", f"node {source.node_index} received no training samples")
        own_t = torch.from_numpy(np.asarray(own, dtype=np.int64))
        return TaskData((data.train_x[own_t], data.train_y[own_t]), (data.test_x, data.test_y), len(own))

    def train_batches(self, data: TaskData, batch_size: int, rng: np.random.Generator) -> Iterator[Any]:
        x, y = data.train
        while True:  # sampling with replacement, as the swarm always has (the golden run depends on it)
            picks = torch.from_numpy(rng.integers(0, len(y), size=batch_size))
            yield x[picks], y[picks]

    def validation_batches(self, data: TaskData, batch_size: int) -> Iterable[Any]:
        x, y = data.validation
        return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(y), batch_size)]

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(model(x), y)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
        parts = []  # (mean loss, accuracy, examples) per batch
        for x, y in batches:
            logits = model(x)
            parts.append((float(nn.functional.cross_entropy(logits, y)),
                          float((logits.argmax(dim=1) == y).float().mean()), len(y)))
        if len(parts) == 1:  # the whole split in one batch: exactly the numbers a single forward pass gives
            return {"loss": parts[0][0], "accuracy": parts[0][1]}
        count = max(sum(n for _, _, n in parts), 1)
        return {"loss": sum(loss * n for loss, _, n in parts) / count,
                "accuracy": sum(acc * n for _, acc, n in parts) / count}

    def inner_optimizer(self) -> InnerOptimizer:
        return InnerOptimizer(name="sgd", lr=0.2)

    def flip_labels(self, batch: Any) -> Any:
        x, y = batch
        return x, self.num_classes - 1 - y


def published_shape(dataset: str) -> tuple[list[int], int] | None:
    """(input shape, classes) of a built-in dataset, known without loading it; None for a user's dataset."""
    if dataset in BUILTIN_SHAPES:
        shape, classes = BUILTIN_SHAPES[dataset]
        return list(shape), classes
    return None

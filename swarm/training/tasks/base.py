"""What a user implements to bring a workload to the swarm: a :class:`Task`.

A task has two halves, and the line between them is the line between what is replicated and what is not:

- **replicated** (equal on every member, bit for bit): the model. ``build_model()`` must be a function of the
  task's hyper-parameters alone (they come from the genesis, ``model.options``) and of the torch RNG, which the
  caller seeds with the genesis seed. It must never look at a node's data: state_0 is hashed and two members that
  built different models would never agree on a round. A model's persistent buffers (BatchNorm running statistics)
  are refused: only parameters are replicated.
- **local** (a node's own business, never hashed): its data (``load_data``, from the node config's ``dataset``),
  the batches (``train_batches``, ``validation_batches``: iterators of CPU batches, moved to the device one batch
  at a time, so nothing requires the shard to fit on the device), the loss of a batch (``loss``), the inner
  optimizer's defaults (``inner_optimizer``; a node config may override each field) and the evaluation
  (``evaluate``: named metrics, ``loss`` first).

Built-in tasks register under short names (``classification``, ``lm``); a user's task is named in the genesis as
``module:Class`` and imported with importlib. See examples/ and the README section "Bring your own model".
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn


class TaskError(ValueError):
    """A task cannot start: ``key`` names the setting (genesis ``model.*`` or node config ``dataset.*`` /
    ``training.*``) and the message says why."""

    def __init__(self, key: str, reason: str):
        self.key, self.reason = key, reason
        super().__init__(f"{key}: {reason}")


class NonFiniteLoss(ArithmeticError):
    """A local step produced a non-finite loss or update: the round's update is dropped (and logged)."""


@dataclass(frozen=True)
class InnerOptimizer:
    """The local (inner) optimizer of one node. Its state (AdamW's moments) stays on the node: it is kept from
    round to round in memory, rebuilt from zero after a restart, and never enters the replicated state.

    ``lr`` is the peak rate; ``warmup_steps`` ramp it linearly from lr/warmup, then ``decay_steps`` (0 = none)
    follow a cosine down to ``lr * min_lr_ratio``, counted in local optimizer steps. ``grad_clip`` > 0 clips the
    global gradient norm of each step; ``grad_accum`` micro-batches of ``batch_size`` make one step."""

    name: str = "sgd"                    # "sgd" | "adamw"
    lr: float = 0.2
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 0
    decay_steps: int = 0
    min_lr_ratio: float = 0.1
    grad_clip: float = 0.0
    grad_accum: int = 1

    def check(self) -> None:
        if self.name not in ("sgd", "adamw"):
            raise TaskError("training.optimizer", f"expected sgd or adamw, got {self.name!r}")
        for key, value, ok in (("training.lr", self.lr, self.lr > 0),
                               ("training.weight_decay", self.weight_decay, self.weight_decay >= 0),
                               ("training.warmup_steps", self.warmup_steps, self.warmup_steps >= 0),
                               ("training.decay_steps", self.decay_steps, self.decay_steps >= 0),
                               ("training.min_lr_ratio", self.min_lr_ratio, 0 <= self.min_lr_ratio <= 1),
                               ("training.grad_clip", self.grad_clip, self.grad_clip >= 0),
                               ("training.grad_accum", self.grad_accum, self.grad_accum >= 1)):
            if not (ok and math.isfinite(value)):
                raise TaskError(key, f"out of range: {value!r}")

    def lr_at(self, step: int) -> float:
        """The learning rate of local optimizer step ``step`` (0-based)."""
        if self.warmup_steps and step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if not self.decay_steps:
            return self.lr
        progress = min(1.0, (step - self.warmup_steps) / self.decay_steps)
        floor = self.lr * self.min_lr_ratio
        return floor + (self.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class DataSource:
    """What a node config says about its local data, and which member this node is."""

    name: str                  # a built-in dataset name or a user's "module:function"
    partition: str = "none"    # "none" (everything loaded), "iid" or "dirichlet" (simulations)
    alpha: float = 0.5
    node_index: int = 0
    num_nodes: int = 1
    seed: int = 0              # the partition seed, equal on every node so that shards are disjoint


@dataclass
class TaskData:
    """A node's data, as the task keeps it (CPU memory, a memory map, files...): ``train`` and ``validation``
    are whatever the task's batch iterators take; ``train_size`` counts training examples (for logs)."""

    train: Any
    validation: Any
    train_size: int
    extra: dict[str, Any] = field(default_factory=dict)


class Task:
    """Subclass this. ``defaults`` lists every hyper-parameter the genesis may set (``model.options``) with its
    default; its type is the default's type (an int option accepts no float, a list no scalar). Unknown keys are
    refused at start, naming the key."""

    name: str = "task"
    defaults: ClassVar[dict[str, Any]] = {}
    default_dataset: str | None = None
    datasets: tuple[str, ...] = ()       # built-in dataset names this task reads
    partitions: tuple[str, ...] = ("none", "iid")

    def __init__(self, options: dict[str, Any] | None = None, seed: int = 0):
        self.seed = seed
        self.hyper = resolve_options(self.defaults, options or {})

    # ---- replicated: a function of self.hyper (and the seeded torch RNG) only --------------------------------
    def build_model(self) -> nn.Module:
        raise NotImplementedError

    # ---- local --------------------------------------------------------------------------------------------
    def load_data(self, source: DataSource) -> TaskData:
        raise NotImplementedError

    def train_batches(self, data: TaskData, batch_size: int, rng: np.random.Generator) -> Iterator[Any]:
        """An endless iterator of CPU training batches; draws only from ``rng`` (seeded per node)."""
        raise NotImplementedError

    def validation_batches(self, data: TaskData, batch_size: int) -> Iterable[Any]:
        """The fixed validation batches (the same on every call)."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        raise NotImplementedError

    def batch_size_of(self, batch: Any) -> int:
        """Examples in a batch, to weight batch means in ``evaluate``."""
        first = batch[0] if isinstance(batch, (tuple, list)) else batch
        return int(first.shape[0])

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
        """Named metrics over ``batches`` (already on the model's device); ``loss`` must be one of them.
        The default: the example-weighted mean loss."""
        total, count = 0.0, 0
        for batch in batches:
            size = self.batch_size_of(batch)
            total += float(self.loss(model, batch)) * size
            count += size
        return {"loss": total / max(count, 1)}

    def inner_optimizer(self) -> InnerOptimizer:
        """The inner optimizer's defaults for this task; a node config may override any field."""
        return InnerOptimizer()

    def to_device(self, batch: Any, device: torch.device) -> Any:
        if isinstance(batch, torch.Tensor):
            return batch.to(device, non_blocking=True)
        if isinstance(batch, (tuple, list)):
            return type(batch)(self.to_device(b, device) for b in batch)
        if isinstance(batch, dict):
            return {k: self.to_device(v, device) for k, v in batch.items()}
        return batch

    def flip_labels(self, batch: Any) -> Any:
        """The label_flip attack profile's view of a batch; tasks without labels leave it unchanged."""
        return batch

    @property
    def accuracy_metric(self) -> str:
        """The metric the node shows beside the loss (its API's "accuracy" column)."""
        return "accuracy"


def resolve_options(defaults: dict[str, Any], given: dict[str, Any], prefix: str = "model.options") -> dict[str, Any]:
    """``defaults`` updated with ``given``, every key and type checked."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise TaskError(f"{prefix}.{unknown[0]}",
                        f"unknown hyper-parameter (known: {', '.join(sorted(defaults)) or 'none'})")
    resolved = dict(defaults)
    for key, value in given.items():
        default = defaults[key]
        if default is not None and not _same_kind(default, value):
            raise TaskError(f"{prefix}.{key}",
                            f"expected {type(default).__name__} like {default!r}, got {type(value).__name__} {value!r}")
        resolved[key] = list(value) if isinstance(value, (list, tuple)) else value
    return resolved


def _same_kind(default: Any, value: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and math.isfinite(value)
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                        for v in value)
    return isinstance(value, type(default))

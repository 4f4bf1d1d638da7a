"""One node's local training: start from the shared parameters, run H inner steps on its own data, return the
update.

Blocking and CPU/GPU heavy: call it from a worker thread, never from the event loop. The update it returns is
the node's own contribution and never enters the replicated state directly, so GPU nondeterminism is fine here.
What is trained is a :class:`swarm.training.tasks.Task` (model, data, loss, inner optimizer, metrics).
"""
from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from .params import flatten_gradients, flatten_parameters, load_flat_parameters
from .tasks.base import DataSource, InnerOptimizer, NonFiniteLoss, Task, TaskError

log = logging.getLogger("swarm.training")

EVAL_BATCH_SIZE = 1024
# training.precision: "fp32" trains in float32; "bf16" runs the forward pass and the loss of local training under
# torch.autocast(dtype=torch.bfloat16) on the trainer's device (CUDA, or the CPU, whose autocast supports bf16).
PRECISIONS = ("fp32", "bf16")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def build_task_model(task: Task, seed: int) -> nn.Module:
    """The task's model with initial weights that depend only on ``seed`` and its hyper-parameters (the global
    RNG is left untouched). Refused: anything but a Module, and persistent buffers (BatchNorm running statistics):
    only parameters are replicated, so a buffer would silently differ between members."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = task.build_model()
    if not isinstance(model, nn.Module):
        raise TaskError("model.task", f"task {task.name!r}: build_model() returned {type(model).__name__}, "
                                      f"not a torch.nn.Module")
    state_keys = set(model.state_dict())
    buffers = [name for name, _ in model.named_buffers() if name in state_keys]
    if buffers:
        raise TaskError("model.task", f"task {task.name!r}: the model has persistent buffers "
                                      f"({', '.join(buffers[:4])}{', ...' if len(buffers) > 4 else ''}) that the "
                                      f"swarm does not replicate; use a model without them (e.g. LayerNorm or "
                                      f"GroupNorm instead of BatchNorm, or register_buffer(..., persistent=False) "
                                      f"for a constant)")
    if not any(True for _ in model.parameters()):
        raise TaskError("model.task", f"task {task.name!r}: the model has no parameters")
    return model


class Trainer:
    """Local training for node ``node_index`` of ``num_nodes``.

    local_update(params) returns, as a flat float32 CPU tensor:
      - local_steps == 1 with SGD: the mini-batch gradient at ``params``;
      - otherwise: the pseudo-gradient params - params_after_H_inner_steps (FedAvg / DiLoCo), with the optional
        FedProx term (prox_mu / 2) * ||w - params||^2 in the local loss.
    The inner optimizer (``optimizer``, default: the task's) keeps its state (AdamW moments, the schedule's step)
    from round to round on this node only; it is rebuilt from zero after a restart.
    ``label_flip=True`` trains on flipped labels (an attack profile), for tasks that have labels.
    ``precision="bf16"`` runs each forward pass and loss of local training under ``torch.autocast`` with bfloat16
    on the trainer's device type; the backward pass, the parameters, the inner optimizer's state and the update
    stay float32 (no loss scaling is needed for bf16), so the update the node signs is float32 either way.
    Evaluation always runs in float32, so a member's reported metrics do not depend on its precision. The setting
    is local (node config ``training.precision``): the replicated state is computed on the CPU in float64 whatever
    precision each member trains in.

    Built without ``task``, it trains the built-in classification task on ``model_name`` and ``dataset_name``
    with the dataset's own shape (the simulations in bench/ do this; a node builds its task from the genesis).
    """

    def __init__(self, model_name: str = "mlp", dataset_name: str = "mnist5k", node_index: int = 0,
                 num_nodes: int = 1, seed: int = 0, batch_size: int = 64, lr: float | None = 0.1,
                 local_steps: int = 1, partition: str = "iid", alpha: float = 0.5, device: str = "auto",
                 prox_mu: float = 0.0, label_flip: bool = False, task: Task | None = None,
                 optimizer: InnerOptimizer | None = None, eval_batch_size: int = EVAL_BATCH_SIZE,
                 precision: str = "fp32"):
        if task is None:
            task = _simulation_task(model_name, dataset_name, seed)
        optimizer = optimizer or task.inner_optimizer()
        if lr is not None:
            optimizer = replace(optimizer, lr=lr)
        optimizer.check()
        if local_steps < 1 or batch_size < 1 or prox_mu < 0:
            raise ValueError("need local_steps >= 1, batch_size >= 1, prox_mu >= 0")
        if precision not in PRECISIONS:
            raise TaskError("training.precision", f"expected one of {', '.join(PRECISIONS)}, got {precision!r}")
        if partition not in task.partitions:
            raise TaskError("dataset.partition", f"task {task.name!r} takes {', '.join(task.partitions)}, "
                                                 f"got {partition!r}")
        self.task, self.opt = task, optimizer
        self.device = resolve_device(device)
        self.precision = precision
        self.seed, self.batch_size, self.lr = seed, batch_size, optimizer.lr
        self.local_steps, self.prox_mu, self.label_flip = local_steps, prox_mu, label_flip
        self.eval_batch_size = eval_batch_size
        self.model = build_task_model(task, seed).to(self.device)
        self._initial = flatten_parameters(self.model)
        self.data = task.load_data(DataSource(dataset_name, partition, alpha, node_index, num_nodes, seed))
        if self.data.train_size < 1:
            raise TaskError("dataset", f"node {node_index} received no training samples")
        self._rng = np.random.default_rng([seed, node_index])
        self._train = task.train_batches(self.data, batch_size, self._rng)
        self._inner: torch.optim.Optimizer | None = None  # AdamW, created on first use, kept across rounds
        # (rank, world): a worker of a multi-worker node (swarm/training/distributed.py) trains on its slice of
        # each batch the node would draw, so that the group's total batch is the single process's batch.
        self.shard = (0, 1)
        self._step = 0                                      # inner optimizer steps taken (for the schedule)
        self.last_metrics: dict[str, float] = {}

    def initial_parameters(self) -> torch.Tensor:
        """Flat float32 parameters, a function of the seed and the genesis hyper-parameters only."""
        return self._initial.clone()

    @property
    def dimension(self) -> int:
        return self._initial.numel()

    # The classification task's tensors and loss under their old names (tests and benches read them).
    loss_fn = nn.CrossEntropyLoss()

    @property
    def train_x(self) -> torch.Tensor:
        return self.data.train[0]

    @property
    def train_y(self) -> torch.Tensor:
        return self.data.train[1]

    @property
    def test_x(self) -> torch.Tensor:
        return self.data.validation[0]

    @property
    def test_y(self) -> torch.Tensor:
        return self.data.validation[1]

    def _next_batch(self):
        batch = next(self._train)
        if self.shard[1] > 1:
            batch = shard_of(batch, *self.shard)
        batch = self.task.to_device(batch, self.device)
        return self.task.flip_labels(batch) if self.label_flip else batch

    def local_update(self, flat_params: torch.Tensor) -> torch.Tensor:
        load_flat_parameters(self.model, flat_params.to(self.device, torch.float32))
        self.model.train()
        params = list(self.model.parameters())
        prox = self.prox_mu > 0 and self.local_steps > 1
        start = [p.detach().clone() for p in params] if prox else None
        accum = self.opt.grad_accum
        for step in range(self.local_steps):
            self.model.zero_grad(set_to_none=True)
            for _ in range(accum):
                batch = self._next_batch()
                with self.autocast():
                    loss = self.task.loss(self.model, batch)
                loss = loss.float()
                if not bool(torch.isfinite(loss.detach())):
                    raise NonFiniteLoss(f"task {self.task.name!r}: non-finite loss ({float(loss.detach())}) at local step "
                                        f"{step + 1} of {self.local_steps}; this round's update is dropped")
                if prox:
                    loss = loss + 0.5 * self.prox_mu * sum(((p - s) ** 2).sum() for p, s in zip(params, start))
                if accum > 1:
                    loss = loss / accum
                loss.backward()
            if self.opt.grad_clip > 0:
                nn.utils.clip_grad_norm_(params, self.opt.grad_clip)
            if self.local_steps == 1 and self.opt.name == "sgd":
                return _finite(flatten_gradients(self.model), self.task)
            self._inner_step(params)
        return _finite(flat_params.detach().to("cpu", torch.float32) - flatten_parameters(self.model), self.task)

    def autocast(self):
        """The context local training's forward pass and loss run in: bf16 autocast on the trainer's device type
        with ``precision="bf16"``, nothing otherwise."""
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _inner_step(self, params: list[nn.Parameter]) -> None:
        lr = self.opt.lr_at(self._step)
        self._step += 1
        if self.opt.name == "sgd":
            with torch.no_grad():
                for p in params:
                    if p.grad is not None:
                        p -= lr * p.grad
            return
        if self._inner is None:
            self._inner = torch.optim.AdamW(params, lr=lr, betas=self.opt.betas,
                                            weight_decay=self.opt.weight_decay)
        for group in self._inner.param_groups:
            group["lr"] = lr
        self._inner.step()

    @torch.no_grad()
    def evaluate_metrics(self, flat_params: torch.Tensor) -> dict[str, float]:
        """The task's named metrics (``loss`` first) on its fixed validation split, batch by batch, in float32
        whatever ``precision`` local training uses (no autocast here)."""
        load_flat_parameters(self.model, flat_params.to(self.device, torch.float32))
        self.model.eval()
        batches = (self.task.to_device(b, self.device)
                   for b in self.task.validation_batches(self.data, self.eval_batch_size))
        metrics = dict(self.task.evaluate(self.model, batches))
        if "loss" not in metrics:
            raise TaskError("model.task", f"task {self.task.name!r}: evaluate() returned no 'loss'")
        self.last_metrics = metrics
        if set(metrics) - {"loss", "accuracy"}:
            log.info("evaluation: %s", " ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        return metrics

    def evaluate(self, flat_params: torch.Tensor) -> tuple[float, float]:
        """(loss, accuracy-like metric) on the fixed validation split: what the node's log and API show. The
        second is the task's ``accuracy_metric`` (NaN if the task reports none); every metric is in
        ``last_metrics``."""
        metrics = self.evaluate_metrics(flat_params)
        return float(metrics["loss"]), float(metrics.get(self.task.accuracy_metric, math.nan))

    def close(self) -> None:
        """Nothing to release in process; a multi-worker trainer stops its worker group here."""


def shard_of(batch, rank: int, world: int):
    """Rank ``rank``'s contiguous 1/``world`` of a batch: every tensor in it cut along its first dimension,
    which must divide evenly (equal slices make DDP's mean of the slices' mean losses the whole batch's mean)."""
    if isinstance(batch, torch.Tensor):
        size = batch.shape[0]
        if size % world:
            raise TaskError("training.batch_size", f"a batch of {size} does not split into {world} equal slices")
        step = size // world
        return batch[rank * step:(rank + 1) * step]
    if isinstance(batch, (tuple, list)):
        return type(batch)(shard_of(b, rank, world) for b in batch)
    if isinstance(batch, dict):
        return {k: shard_of(v, rank, world) for k, v in batch.items()}
    raise TaskError("model.task", f"a multi-worker node splits batches of tensors, tuples, lists or dicts; "
                                  f"the task's batch is a {type(batch).__name__}")


def _finite(update: torch.Tensor, task: Task) -> torch.Tensor:
    if not bool(torch.isfinite(update).all()):
        raise NonFiniteLoss(f"task {task.name!r}: the local update is not finite; this round's update is dropped")
    return update


def _simulation_task(model_name: str, dataset_name: str, seed: int) -> Task:
    """The classification task shaped by the dataset itself: for in-process simulations only."""
    from .datasets import dataset_shape
    from .tasks.classification import ClassificationTask
    shape, classes = dataset_shape(dataset_name)
    return ClassificationTask({"network": model_name, "num_classes": classes, "input_shape": list(shape)}, seed)

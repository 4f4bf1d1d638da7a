"""Build a node's Trainer, or only state_0's parameters, from its config and the genesis.

The genesis names the task and its hyper-parameters (``model.task``, ``model.options``) and the seed: the model
and state_0 follow from them alone and are equal everywhere. The node config names its local data
(``dataset``) and its inner optimizer (``training``); a simulation's partition uses the genesis seed on every node
so that shards are disjoint, and the node's index in the genesis picks its shard.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from swarm.config import Genesis, NodeConfig
from swarm.training.loading import is_import_spec
from swarm.training.params import flatten_parameters
from swarm.training.tasks.base import InnerOptimizer, Task, TaskError
from swarm.training.tasks.registry import make_task
from swarm.training.trainer import Trainer, build_task_model


def model_name(genesis: Genesis) -> str:
    return genesis.model.custom or genesis.model.name


def dataset_name(config: NodeConfig, task: Task | None = None) -> str:
    name = config.dataset.custom or config.dataset.name
    if task is not None and task.default_dataset and name == "mnist5k" and "mnist5k" not in task.datasets:
        return task.default_dataset  # the node config's default dataset belongs to the classification task
    return name


def partition_of(config: NodeConfig) -> str:
    """The node config's partition, or its default: everything it loads for a user's own dataset, its iid share
    of a built-in one (simulations: every member loads the same data)."""
    if config.dataset.partition is not None:
        return config.dataset.partition
    return "none" if config.dataset.custom else "iid"


def task_options(config: NodeConfig, genesis: Genesis) -> dict[str, Any]:
    """The task's hyper-parameters from the genesis. For the classification task the network is
    ``model.name`` / ``model.custom``, and a genesis that gives no shape takes the published shape of the built-in
    dataset the node names (a constant table, never the node's samples); a user's dataset needs it in the genesis."""
    options = dict(genesis.model.options)
    if genesis.model.task not in (None, "classification"):
        return options
    from swarm.training.tasks.classification import published_shape
    if "network" in options and options["network"] != model_name(genesis):
        raise TaskError("model.options.network", "the classification network is model.name or model.custom")
    options["network"] = model_name(genesis)
    if "num_classes" not in options or "input_shape" not in options:
        name = dataset_name(config)
        shape = published_shape(name)
        if shape is None:
            hint = ""
            if is_import_spec(name):
                from swarm.training.datasets import load_dataset
                data = load_dataset(name)  # only to say what to write: the genesis decides the model
                hint = (f" (this node's data: input_shape {list(data.input_shape)}, labels up to "
                        f"{int(data.train_y.max())})")
            raise TaskError("model.options.num_classes",
                            f"a user's dataset ({name!r}) needs model.options.num_classes and input_shape in the "
                            f"genesis: every member must build the same model{hint}")
        options.setdefault("input_shape", shape[0])
        options.setdefault("num_classes", shape[1])
    return options


def build_task(config: NodeConfig, genesis: Genesis) -> Task:
    return make_task(genesis.model.task, task_options(config, genesis), seed=genesis.model.seed)


def inner_optimizer(config: NodeConfig, task: Task) -> InnerOptimizer:
    """The task's inner optimizer with the node config's overrides (``training.*`` set in the file)."""
    training = config.training
    overrides = {"name": training.optimizer, "lr": training.lr, "weight_decay": training.weight_decay,
                 "warmup_steps": training.warmup_steps, "decay_steps": training.decay_steps,
                 "min_lr_ratio": training.min_lr_ratio, "grad_clip": training.grad_clip,
                 "grad_accum": training.grad_accum}
    optimizer = replace(task.inner_optimizer(), **{k: v for k, v in overrides.items() if v is not None})
    optimizer.check()
    return optimizer


def build_trainer(config: NodeConfig, genesis: Genesis, peer_id: str) -> Trainer:
    task = build_task(config, genesis)
    trainer = Trainer(
        dataset_name=dataset_name(config, task), node_index=genesis.data_index(peer_id), num_nodes=genesis.n,
        seed=genesis.model.seed, batch_size=config.training.batch_size, lr=None,
        local_steps=config.training.local_steps, partition=partition_of(config), alpha=config.dataset.alpha,
        device=config.training.device, prox_mu=config.training.prox_mu, task=task,
        optimizer=inner_optimizer(config, task), precision=config.training.precision)
    check_model(genesis, task, trainer.initial_parameters())
    return trainer


def build_node_trainer(config: NodeConfig, genesis: Genesis, peer_id: str):
    """The node's trainer: the in-process Trainer, or with ``training.workers`` > 1 the same Trainer whose local
    updates a started torch.distributed worker group computes (swarm/training/distributed.py). Either has
    ``local_update``, ``evaluate`` and ``close``."""
    trainer = build_trainer(config, genesis, peer_id)
    if config.training.workers == 1:
        return trainer
    from swarm.training.distributed import start_worker_group
    return start_worker_group(trainer, config, genesis, peer_id)


def check_count(genesis: Genesis, task: Task, flat: torch.Tensor) -> None:
    expected = genesis.model.parameters
    if expected and flat.numel() != expected:
        raise TaskError("model.parameters", f"task {task.name!r} built a model with {flat.numel()} parameters, "
                                            f"the genesis says {expected}")


def check_model(genesis: Genesis, task: Task, flat: torch.Tensor) -> None:
    """Refuse at start a model that disagrees with the genesis: another parameter count than ``model.parameters``,
    or (for a user's task) one that is not a function of the seed and hyper-parameters alone."""
    check_count(genesis, task, flat)
    if is_import_spec(genesis.model.task or ""):
        again = flatten_parameters(build_task_model(task, genesis.model.seed))
        if again.shape != flat.shape or not torch.equal(again, flat.to(again.device)):
            raise TaskError("model.task", f"task {task.name!r}: build_model() gave two different models for the "
                                          f"same seed and hyper-parameters; it must depend on nothing else")


def custom_code(config: NodeConfig, genesis: Genesis) -> list[str]:
    """The "module:..." names that building state_0 would import: a user's task or model (genesis) or a user's
    dataset (node config, for the classification model's shape). Empty for the built-in ones."""
    return [spec for spec in (genesis.model.task, genesis.model.custom, config.dataset.custom)
            if spec and is_import_spec(spec)]


def initial_parameters(config: NodeConfig, genesis: Genesis) -> torch.Tensor:
    """The same flat parameters as ``build_trainer(...).initial_parameters()``, from the model alone: no data is
    loaded or partitioned, so tools that need only state_0 stay cheap."""
    task = build_task(config, genesis)
    flat = flatten_parameters(build_task_model(task, genesis.model.seed))
    check_count(genesis, task, flat)
    return flat

"""Build a node's Trainer, or only state_0's parameters, from its config and the genesis.

The model and its seed come from the genesis (state_0 must be equal everywhere); the data partition uses the same
seed on every node so that the shards are disjoint, and the node's index in the genesis picks its shard.
"""
from __future__ import annotations

import torch

from swarm.config import Genesis, NodeConfig
from swarm.training.datasets import dataset_shape
from swarm.training.models import build_model
from swarm.training.params import flatten_parameters
from swarm.training.trainer import Trainer


def model_name(genesis: Genesis) -> str:
    return genesis.model.custom or genesis.model.name


def dataset_name(config: NodeConfig) -> str:
    return config.dataset.custom or config.dataset.name


def build_trainer(config: NodeConfig, genesis: Genesis, peer_id: str) -> Trainer:
    return Trainer(
        model_name=model_name(genesis), dataset_name=dataset_name(config),
        node_index=genesis.index_of(peer_id), num_nodes=genesis.n, seed=genesis.model.seed,
        batch_size=config.training.batch_size, lr=config.training.lr, local_steps=config.training.local_steps,
        partition=config.dataset.partition, alpha=config.dataset.alpha, device=config.training.device,
        prox_mu=config.training.prox_mu)


def custom_code(config: NodeConfig, genesis: Genesis) -> list[str]:
    """The "module:function" names that building state_0 would import: a custom model (genesis) or a custom
    dataset (node config, for the model's input shape). Empty for the built-in ones, which import nothing."""
    return [spec for spec in (genesis.model.custom, config.dataset.custom) if spec]


def initial_parameters(config: NodeConfig, genesis: Genesis) -> torch.Tensor:
    """The same flat parameters as ``build_trainer(...).initial_parameters()``, from the model alone: no data is
    loaded or partitioned (for a built-in dataset), so tools that need only state_0 stay cheap."""
    input_shape, num_classes = dataset_shape(dataset_name(config))
    return flatten_parameters(build_model(model_name(genesis), input_shape, num_classes, genesis.model.seed))

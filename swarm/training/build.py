"""Build a node's Trainer from its config and the genesis.

The model and its seed come from the genesis (state_0 must be equal everywhere); the data partition uses the same
seed on every node so that the shards are disjoint, and the node's index in the genesis picks its shard.
"""
from __future__ import annotations

from swarm.config import Genesis, NodeConfig
from swarm.training.trainer import Trainer


def build_trainer(config: NodeConfig, genesis: Genesis, peer_id: str) -> Trainer:
    return Trainer(
        model_name=genesis.model.custom or genesis.model.name,
        dataset_name=config.dataset.custom or config.dataset.name,
        node_index=genesis.index_of(peer_id), num_nodes=genesis.n, seed=genesis.model.seed,
        batch_size=config.training.batch_size, lr=config.training.lr, local_steps=config.training.local_steps,
        partition=config.dataset.partition, alpha=config.dataset.alpha, device=config.training.device,
        prox_mu=config.training.prox_mu)

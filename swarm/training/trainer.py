"""One node's local training: start from the shared parameters, run K steps on its own data, return the update.

Blocking and CPU/GPU heavy: call it from a worker thread, never from the event loop. The update it returns is
the node's own contribution and never enters the replicated state directly, so GPU nondeterminism is fine here.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .datasets import load_dataset
from .models import build_model
from .params import flatten_gradients, flatten_parameters, load_flat_parameters
from .partition import partition_indices


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Trainer:
    """Local training for node ``node_index`` of ``num_nodes``.

    local_update(params) returns, as a flat float32 CPU tensor:
      - local_steps == 1: the mini-batch gradient at ``params``;
      - local_steps > 1: the pseudo-gradient params - params_after_K_SGD_steps (FedAvg-style), with the
        optional FedProx term (prox_mu / 2) * ||w - params||^2 in the local loss.
    ``label_flip=True`` trains on labels y -> (num_classes - 1 - y) (an attack profile).
    """

    def __init__(self, model_name: str = "mlp", dataset_name: str = "mnist5k", node_index: int = 0,
                 num_nodes: int = 1, seed: int = 0, batch_size: int = 64, lr: float = 0.1, local_steps: int = 1,
                 partition: str = "iid", alpha: float = 0.5, device: str = "auto", prox_mu: float = 0.0,
                 label_flip: bool = False):
        if local_steps < 1 or batch_size < 1 or not lr > 0 or prox_mu < 0:
            raise ValueError("need local_steps >= 1, batch_size >= 1, lr > 0, prox_mu >= 0")
        self.device = resolve_device(device)
        self.data = load_dataset(dataset_name)
        self.seed, self.batch_size, self.lr = seed, batch_size, lr
        self.local_steps, self.prox_mu, self.label_flip = local_steps, prox_mu, label_flip
        self.model = build_model(model_name, self.data.input_shape, self.data.num_classes, seed).to(self.device)
        own = partition_indices(self.data.train_y.numpy(), node_index, num_nodes, seed, partition, alpha)
        if len(own) == 0:
            raise ValueError(f"node {node_index} received no training samples")
        self.train_x = self.data.train_x[own].to(self.device)
        self.train_y = self.data.train_y[own].to(self.device)
        self.test_x = self.data.test_x.to(self.device)
        self.test_y = self.data.test_y.to(self.device)
        self._rng = np.random.default_rng([seed, node_index])
        self._initial = flatten_parameters(self.model)
        self.loss_fn = nn.CrossEntropyLoss()

    def initial_parameters(self) -> torch.Tensor:
        """Flat float32 parameters, a function of the seed only (the same on every node)."""
        return self._initial.clone()

    @property
    def dimension(self) -> int:
        return self._initial.numel()

    def _batch(self):
        picks = torch.from_numpy(self._rng.integers(0, len(self.train_y), size=self.batch_size)).to(self.device)
        labels = self.train_y[picks]
        if self.label_flip:
            labels = self.data.num_classes - 1 - labels
        return self.train_x[picks], labels

    def local_update(self, flat_params: torch.Tensor) -> torch.Tensor:
        load_flat_parameters(self.model, flat_params.to(self.device, torch.float32))
        self.model.train()
        start = [p.detach().clone() for p in self.model.parameters()]
        for _ in range(self.local_steps):
            x, y = self._batch()
            self.model.zero_grad(set_to_none=True)
            loss = self.loss_fn(self.model(x), y)
            if self.prox_mu > 0 and self.local_steps > 1:
                loss = loss + 0.5 * self.prox_mu * sum(((p - s) ** 2).sum() for p, s in zip(self.model.parameters(), start))
            loss.backward()
            if self.local_steps == 1:
                return flatten_gradients(self.model)
            with torch.no_grad():
                for p in self.model.parameters():
                    p -= self.lr * p.grad
        return flat_params.detach().to("cpu", torch.float32) - flatten_parameters(self.model)

    @torch.no_grad()
    def evaluate(self, flat_params: torch.Tensor) -> tuple[float, float]:
        """(mean cross-entropy, accuracy) on the fixed test split."""
        load_flat_parameters(self.model, flat_params.to(self.device, torch.float32))
        self.model.eval()
        logits = self.model(self.test_x)
        loss = float(self.loss_fn(logits, self.test_y))
        accuracy = float((logits.argmax(dim=1) == self.test_y).float().mean())
        return loss, accuracy

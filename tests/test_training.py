"""Training: datasets, partitions, parameter plumbing, local updates, the server step, and MNIST accuracy."""
from __future__ import annotations

import sys
import time

import numpy as np
import pytest
import torch

from swarm.ledger.server_optimizer import apply_update
from swarm.config import Genesis, Member, NodeConfig
from swarm.training import DATASETS, Trainer, build_model, flatten_parameters, load_dataset, partition_indices
from swarm.training.build import build_trainer, initial_parameters
from swarm.training.datasets import BUILTIN_SHAPES
from swarm.training.params import load_flat_parameters


@pytest.fixture(scope="module")
def digits_trainer():
    return Trainer("mlp", "digits", node_index=0, num_nodes=2, seed=3, local_steps=1, device="cpu")


def test_split_is_fixed_and_disjoint():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert torch.equal(a.test_y, b.test_y) and torch.equal(a.train_x, b.train_x)
    total = len(a.train_y) + len(a.test_y)
    assert len(a.test_y) == round(total * 0.2)
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    syn = load_dataset("synthetic")
    assert syn.input_shape == (20,)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_partitions_cover_and_are_disjoint(scheme):
    labels = np.random.default_rng(0).integers(0, 10, 1000)
    parts = [partition_indices(labels, i, 5, seed=9, scheme=scheme, alpha=0.3) for i in range(5)]
    joined = np.concatenate(parts)
    assert len(joined) == 1000 and len(np.unique(joined)) == 1000
    if scheme == "dirichlet":  # label skew: some node's label histogram is far from uniform
        skews = [np.bincount(labels[p], minlength=10).max() / max(len(p), 1) for p in parts]
        assert max(skews) > 0.3
    assert np.array_equal(parts[2], partition_indices(labels, 2, 5, seed=9, scheme=scheme, alpha=0.3))


def test_initial_parameters_depend_only_on_seed():
    a = Trainer("cnn", "digits", seed=5, device="cpu").initial_parameters()
    b = Trainer("cnn", "digits", seed=5, node_index=1, num_nodes=3, device="cpu").initial_parameters()
    c = Trainer("cnn", "digits", seed=6, device="cpu").initial_parameters()
    assert a.dtype == torch.float32 and torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_builtin_shapes_are_those_of_the_loaded_data(name):
    data = load_dataset(name)
    assert BUILTIN_SHAPES[name] == (data.input_shape, data.num_classes)


@pytest.mark.parametrize("model, dataset", [("cnn", "digits"), ("mlp", "synthetic")])
def test_state_0_from_the_model_alone_is_the_trainers_bit_for_bit(model, dataset):
    from crypto.keys import NodeKey
    genesis = Genesis(swarm_id="s", members=[Member(f"n{i}", NodeKey.generate().peer_id) for i in range(2)])
    genesis.model.name, genesis.model.seed = model, 11
    config = NodeConfig(identity="", genesis="", data_dir="")
    config.dataset.name, config.training.device = dataset, "cpu"
    cheap = initial_parameters(config, genesis)
    trained = build_trainer(config, genesis, genesis.peer_ids[1]).initial_parameters()
    assert cheap.dtype == trained.dtype == torch.float32
    assert cheap.numpy().tobytes() == trained.numpy().tobytes()


def test_flatten_round_trip():
    model = build_model("cnn", (1, 8, 8), 10, seed=0)
    flat = flatten_parameters(model)
    load_flat_parameters(model, flat * 2)
    assert torch.equal(flatten_parameters(model), flat * 2)
    with pytest.raises(ValueError):
        load_flat_parameters(model, flat[:-1])


def test_one_step_update_is_the_gradient(digits_trainer):
    p = digits_trainer.initial_parameters()
    g = digits_trainer.local_update(p)
    assert g.shape == p.shape and g.dtype == torch.float32 and g.device.type == "cpu"
    assert float(g.norm()) > 0
    # a small step along -g lowers the loss on the training data
    loss_before = _train_loss(digits_trainer, p)
    assert _train_loss(digits_trainer, p - 0.5 * g) < loss_before


def _train_loss(trainer, flat):
    load_flat_parameters(trainer.model, flat)
    with torch.no_grad():
        return float(trainer.loss_fn(trainer.model(trainer.train_x), trainer.train_y))


def test_multi_step_pseudo_gradient_and_prox():
    plain = Trainer("mlp", "synthetic", seed=1, local_steps=5, lr=0.1, device="cpu")
    prox = Trainer("mlp", "synthetic", seed=1, local_steps=5, lr=0.1, device="cpu", prox_mu=5.0)
    p = plain.initial_parameters()
    u_plain, u_prox = plain.local_update(p), prox.local_update(p)
    load_flat_parameters(plain.model, p)
    assert float(u_prox.norm()) < float(u_plain.norm())  # the proximal term holds the update back
    end = p - u_plain
    assert _train_loss(plain, end) < _train_loss(plain, p)


def test_label_flip_trains_towards_wrong_labels():
    honest = Trainer("mlp", "synthetic", seed=2, local_steps=20, lr=0.2, device="cpu")
    flipped = Trainer("mlp", "synthetic", seed=2, local_steps=20, lr=0.2, device="cpu", label_flip=True)
    p = honest.initial_parameters()
    for _ in range(5):
        p = p - flipped.local_update(p)
    assert honest.evaluate(p)[1] < 0.3


def test_custom_model_and_dataset_by_import_string(tmp_path, monkeypatch):
    (tmp_path / "my_plugin.py").write_text(
        "import numpy as np, torch\n"
        "def data():\n"
        "    rng = np.random.default_rng(0)\n"
        "    x = rng.normal(size=(200, 4)).astype('float32'); y = (x[:, 0] > 0).astype('int64')\n"
        "    return x, y\n"
        "def model(shape, classes):\n"
        "    return torch.nn.Linear(shape[0], classes)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    t = Trainer("my_plugin:model", "my_plugin:data", device="cpu")
    assert t.dimension == 4 * 2 + 2
    with pytest.raises(ValueError):
        Trainer("os:system('x')", "digits", device="cpu")
    sys.modules.pop("my_plugin", None)


def test_apply_update_float64_and_momentum():
    p = torch.tensor([1.0, 2.0, 3.0])
    g = torch.tensor([0.5, -1.0, 0.25])
    new, buf = apply_update(p, g, 0.1, 0.9, None)
    assert torch.equal(buf, g) and torch.allclose(new, p - 0.1 * g)
    new2, buf2 = apply_update(new, g, 0.1, 0.9, buf)
    expected_buf = (0.9 * g.double() + g.double())
    assert torch.equal(buf2, expected_buf.float())
    assert torch.equal(new2, (new.double() - 0.1 * expected_buf).float())
    for bad in (dict(server_lr=0.0), dict(server_lr=float("nan")), dict(momentum=1.0)):
        args = dict(server_lr=0.1, momentum=0.0) | bad
        with pytest.raises(ValueError):
            apply_update(p, g, args["server_lr"], args["momentum"], None)
    with pytest.raises(ValueError):
        apply_update(p, g[:2], 0.1)


def test_apply_update_thread_independent():
    gen = torch.Generator().manual_seed(0)
    p, g, b = (torch.randn(300_001, generator=gen) for _ in range(3))
    before = torch.get_num_threads()
    try:
        out = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            new, buf = apply_update(p, g, 0.05, 0.9, b)
            out.append(new.numpy().tobytes() + buf.numpy().tobytes())
    finally:
        torch.set_num_threads(before)
    assert out[0] == out[1]


def test_mlp_reaches_90_percent_on_mnist5k():
    start = time.perf_counter()
    trainer = Trainer("mlp", "mnist5k", seed=0, local_steps=10, lr=0.1, batch_size=64, device="cpu")
    params, buf = trainer.initial_parameters(), None
    accuracy = 0.0
    for round_ in range(60):
        params, buf = apply_update(params, trainer.local_update(params), 1.0, 0.5, buf)
        if round_ >= 20 and round_ % 5 == 4:
            accuracy = trainer.evaluate(params)[1]
            if accuracy >= 0.9:
                break
    assert accuracy >= 0.9, accuracy
    assert time.perf_counter() - start < 40

"""Tasks (issue 16): the Task interface and registry, shapes from the genesis, bad input refused at start with
the key, partition none, buffers refused, the inner optimizer's schedule, and the default path unchanged."""
from __future__ import annotations

import itertools
import math
import sys
import textwrap

import numpy as np
import pytest
import torch

from crypto.keys import NodeKey
from swarm.config import Genesis, Member, NodeConfig, genesis_to_dict
from swarm.training.build import build_trainer, custom_code, initial_parameters
from swarm.training.tasks import (
    InnerOptimizer,
    NonFiniteLoss,
    TaskError,
    make_task,
    task_class,
)
from swarm.training.tasks.classification import ClassificationTask

USER_MODULE = '''
import numpy as np, torch
from torch import nn
from swarm.training.tasks import Task, TaskData

def three_labels():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype("float32")
    return x, (np.abs(x[:, 0]) * 2).astype("int64").clip(0, 2)

def wide():
    x, y = three_labels()
    return np.concatenate([x, x], axis=1), y

class Linear(Task):
    defaults = {"features": 4, "classes": 3, "scale": 1.0, "batchnorm": False}
    def build_model(self):
        layers = [nn.Linear(self.hyper["features"], self.hyper["classes"])]
        if self.hyper["batchnorm"]:
            layers.insert(0, nn.BatchNorm1d(self.hyper["features"]))
        return nn.Sequential(*layers)
    def load_data(self, source):
        x, y = three_labels()
        x = torch.from_numpy(x) * self.hyper["scale"]
        y = torch.from_numpy(y)
        return TaskData((x[:240], y[:240]), (x[240:], y[240:]), 240)
    def train_batches(self, data, batch_size, rng):
        x, y = data.train
        while True:
            i = torch.from_numpy(rng.integers(0, len(y), size=batch_size))
            yield x[i], y[i]
    def validation_batches(self, data, batch_size):
        return [data.validation]
    def loss(self, model, batch):
        x, y = batch
        return nn.functional.cross_entropy(model(x), y)

class Moody(Linear):
    """Not a function of its hyper-parameters: refused."""
    calls = 0
    def build_model(self):
        Moody.calls += 1
        return nn.Linear(4 + Moody.calls % 2, 3)
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_tasks_mod.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "user_tasks_mod"
    sys.modules.pop("user_tasks_mod", None)


def _genesis(n=2, **model) -> Genesis:
    genesis = Genesis(swarm_id="t", members=[Member(f"n{i}", NodeKey.from_seed(bytes([i + 1]) * 32).peer_id)
                                             for i in range(n)])
    for key, value in model.items():
        setattr(genesis.model, key, value)
    return genesis


def _config(**dataset) -> NodeConfig:
    config = NodeConfig(identity="", genesis="", data_dir="")
    config.training.device = "cpu"
    for key, value in dataset.items():
        setattr(config.dataset, key, value)
    return config


def _refused(key, fn, *args, **kwargs) -> str:
    with pytest.raises(TaskError) as info:
        fn(*args, **kwargs)
    assert info.value.key == key, str(info.value)
    return str(info.value)


def test_a_default_genesis_is_written_and_hashed_as_before():
    plain = genesis_to_dict(_genesis())
    assert set(plain["model"]) == {"name", "custom", "seed"}
    assert set(plain["server_optimizer"]) == {"lr", "momentum"}
    lm = genesis_to_dict(_genesis(task="lm", options={"layers": 1}))
    assert lm["model"]["task"] == "lm" and lm["model"]["options"] == {"layers": 1}


def test_builtins_register_under_short_names_and_users_load_by_import_string(user_module):
    assert task_class(None) is task_class("classification") is ClassificationTask
    assert task_class("lm").name == "lm"
    assert task_class(f"{user_module}:Linear").__name__ == "Linear"
    _refused("model.task", task_class, "nope")
    assert "cannot import" in _refused("model.task", task_class, "no_such_module_xyz:Task")
    _refused("model.task", task_class, f"{user_module}:three_labels")  # not a Task


def test_hyper_parameters_are_checked_by_key_and_type(user_module):
    _refused("model.options.width", make_task, f"{user_module}:Linear", {"width": 3})
    assert "expected int" in _refused("model.options.features", make_task, f"{user_module}:Linear", {"features": 2.5})
    assert make_task(f"{user_module}:Linear", {"scale": 2}).hyper["scale"] == 2  # an int is a fine float
    _refused("model.options.num_classes", make_task, "classification", {"input_shape": [4]})


def test_the_number_of_classes_comes_from_the_genesis_not_the_nodes_labels(user_module):
    genesis = _genesis(options={"num_classes": 5, "input_shape": [4]}, custom=None)
    trainer = build_trainer(_config(custom=f"{user_module}:three_labels"), genesis, genesis.peer_ids[0])
    assert int(trainer.train_y.max()) == 2
    assert trainer.model(torch.zeros(1, 4)).shape == (1, 5)
    assert trainer.dimension == initial_parameters(_config(custom=f"{user_module}:three_labels"), genesis).numel()


def test_bad_shapes_and_labels_are_refused_at_start_naming_the_key(user_module):
    bare = _genesis()
    message = _refused("model.options.num_classes", build_trainer, _config(custom=f"{user_module}:three_labels"),
                       bare, bare.peer_ids[0])
    assert "input_shape [4]" in message  # says what to write
    few = _genesis(options={"num_classes": 2, "input_shape": [4]})
    assert "labels" in _refused("dataset", build_trainer, _config(custom=f"{user_module}:three_labels"), few,
                                few.peer_ids[0])
    assert "shape [8]" in _refused("dataset", build_trainer, _config(custom=f"{user_module}:wide"),
                                   _genesis(options={"num_classes": 3, "input_shape": [4]}), bare.peer_ids[0])
    counted = _genesis(parameters=123)
    assert "parameters" in _refused("model.parameters", build_trainer, _config(name="digits"), counted,
                                    counted.peer_ids[0])
    _refused("model.parameters", initial_parameters, _config(name="digits"), counted)


def test_a_user_task_by_import_string_trains_and_is_named_as_custom_code(user_module):
    genesis = _genesis(task=f"{user_module}:Linear", options={"classes": 3})
    config = _config(custom=f"{user_module}:three_labels")
    assert custom_code(config, genesis) == [f"{user_module}:Linear", f"{user_module}:three_labels"]
    trainer = build_trainer(config, genesis, genesis.peer_ids[1])
    params = trainer.initial_parameters()
    assert torch.equal(params, initial_parameters(config, genesis))
    update = trainer.local_update(params)
    assert update.shape == params.shape and float(update.norm()) > 0
    loss, accuracy = trainer.evaluate(params)
    assert math.isfinite(loss) and math.isnan(accuracy)  # this task reports no accuracy
    moody = _genesis(task=f"{user_module}:Moody")
    assert "two different models" in _refused("model.task", build_trainer, config, moody, moody.peer_ids[0])


def test_a_model_with_buffers_is_refused_naming_the_task(user_module):
    genesis = _genesis(task=f"{user_module}:Linear", options={"batchnorm": True})
    message = _refused("model.task", build_trainer, _config(), genesis, genesis.peer_ids[0])
    assert "Linear" in message and "running_mean" in message and "buffers" in message
    _refused("model.task", initial_parameters, _config(), genesis)


def test_a_non_finite_loss_drops_the_update(user_module):
    genesis = _genesis(task=f"{user_module}:Linear", options={"scale": 1e38})
    trainer = build_trainer(_config(), genesis, genesis.peer_ids[0])
    trainer.opt = InnerOptimizer(name="sgd", lr=1e30)
    with pytest.raises(NonFiniteLoss, match="dropped"):
        for _ in range(5):
            trainer.local_update(trainer.initial_parameters() * 1e30)


def test_partition_none_trains_on_every_local_sample_and_is_the_default_for_a_users_dataset(user_module):
    genesis = _genesis(n=4, options={"num_classes": 3, "input_shape": [4]})
    config = _config(custom=f"{user_module}:three_labels")
    assert config.dataset.partition is None
    sizes = {build_trainer(config, genesis, genesis.peer_ids[i]).data.train_size for i in range(4)}
    assert sizes == {240}  # 300 samples, 20% held out: everything, on every node
    config.dataset.partition = "iid"
    shares = [build_trainer(config, genesis, genesis.peer_ids[i]).data.train_size for i in range(4)]
    assert sum(shares) == 240 and max(shares) <= 60
    builtin, four = _config(name="digits"), _genesis(n=4)
    assert build_trainer(builtin, four, four.peer_ids[0]).data.train_size < 1437 // 3


def test_inner_optimizer_schedule_and_overrides():
    opt = InnerOptimizer(name="adamw", lr=1.0, warmup_steps=4, decay_steps=10, min_lr_ratio=0.1)
    rates = [opt.lr_at(s) for s in range(20)]
    assert rates[:4] == [0.25, 0.5, 0.75, 1.0] and rates[4] == 1.0
    assert all(a >= b for a, b in itertools.pairwise(rates[4:])) and rates[14] == pytest.approx(0.1)
    assert InnerOptimizer(lr=0.3).lr_at(1000) == 0.3
    _refused("training.grad_accum", InnerOptimizer(grad_accum=0).check)
    genesis = _genesis()
    config = _config(name="digits")
    config.training.optimizer, config.training.lr, config.training.grad_clip = "adamw", 0.01, 1.0
    config.training.grad_accum, config.training.local_steps = 2, 3
    trainer = build_trainer(config, genesis, genesis.peer_ids[0])
    assert (trainer.opt.name, trainer.opt.lr, trainer.opt.grad_clip, trainer.opt.grad_accum) == ("adamw", 0.01, 1.0, 2)
    p = trainer.initial_parameters()
    trainer.local_update(p)
    moments = trainer._inner.state[next(iter(trainer.model.parameters()))]["exp_avg"].clone()
    trainer.local_update(p)  # the AdamW moments stay on the node from round to round
    assert trainer._step == 6 and not torch.equal(moments, trainer._inner.state[next(iter(trainer.model.parameters()))]["exp_avg"])


def test_the_classification_task_matches_the_old_trainer_bit_for_bit():
    """The node's path (task from the genesis) and the simulation path (dataset shape) give the same bytes."""
    genesis = _genesis(n=3, name="cnn", seed=4)
    config = _config(name="digits")
    config.training.local_steps, config.training.lr = 3, 0.2
    from swarm.training.trainer import Trainer
    node = build_trainer(config, genesis, genesis.peer_ids[2])
    sim = Trainer("cnn", "digits", node_index=2, num_nodes=3, seed=4, lr=0.2, local_steps=3, device="cpu")
    p = node.initial_parameters()
    assert torch.equal(p, sim.initial_parameters())
    assert node.local_update(p).numpy().tobytes() == sim.local_update(p).numpy().tobytes()
    assert node.evaluate(p) == sim.evaluate(p)
    assert np.array_equal(node.train_y.numpy(), sim.train_y.numpy())

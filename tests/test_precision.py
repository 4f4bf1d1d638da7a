"""training.precision (issue 16, step 6): bf16 autocast for local training, a node-local setting.

CPU autocast supports bfloat16, so everything but the CUDA run is tested here: a bf16 trainer lowers the loss of
the LM task and of the MNIST MLP, its update is float32 and finite, a bf16 member's signed gradient is accepted by
apply() beside fp32 members and every replica reaches the same state hash, and a bad value is refused naming the
key. The `gpu` test trains the LM task on CUDA with bf16 and skips (with its reason) where there is no CUDA."""
from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest
import torch

from crypto.keys import NodeKey
from swarm.config import ConfigError, Genesis, Member, NodeConfig, load_node_config
from swarm.ledger.apply import apply
from swarm.ledger.entry_rules import genesis_hash, open_gradient, rules_of
from swarm.ledger.state import genesis_state
from swarm.round.compression import Compressor
from swarm.round.gradient import make_gradient
from swarm.training.build import build_trainer
from swarm.training.tasks import TaskError
from swarm.training.trainer import Trainer

SMALL_LM = {"layers": 1, "width": 32, "heads": 2, "context": 32, "corpus_bytes": 200_000, "validation_bytes": 4_096}
KEYS = [NodeKey.from_seed(bytes([i + 31]) * 32) for i in range(4)]


def _genesis() -> Genesis:
    genesis = Genesis(swarm_id="bf16", members=[Member(f"n{i}", key.peer_id) for i, key in enumerate(KEYS)])
    genesis.model.task, genesis.model.options = "lm", dict(SMALL_LM)
    return genesis


def _config(precision: str = "fp32", device: str = "cpu", local_steps: int = 3) -> NodeConfig:
    config = NodeConfig(identity="", genesis="", data_dir="")
    config.training.device, config.training.precision = device, precision
    config.training.batch_size, config.training.local_steps = 8, local_steps
    return config


def _losses(trainer: Trainer, rounds: int) -> tuple[list[float], torch.Tensor]:
    """Validation loss before and after each of ``rounds`` local updates applied as plain FedAvg steps."""
    params = trainer.initial_parameters()
    losses = [trainer.evaluate(params)[0]]
    update = None
    for _ in range(rounds):
        update = trainer.local_update(params)
        params = params - update
        losses.append(trainer.evaluate(params)[0])
    return losses, update


def test_the_default_is_fp32_and_the_config_passes_the_setting_to_the_trainer():
    genesis = _genesis()
    assert NodeConfig(identity="", genesis="", data_dir="").training.precision == "fp32"
    assert build_trainer(_config(), genesis, genesis.peer_ids[0]).precision == "fp32"
    assert build_trainer(_config("bf16"), genesis, genesis.peer_ids[0]).precision == "bf16"
    # a multi-worker node's workers build their Trainer from the node's config the same way (distributed._join)
    config = _config("bf16")
    worker = replace(config, training=replace(config.training, workers=1, device="cpu"))
    assert build_trainer(worker, genesis, genesis.peer_ids[0]).precision == "bf16"


def test_bf16_on_cpu_trains_the_lm_task_and_its_update_is_float32():
    torch.manual_seed(0)
    genesis = _genesis()
    trainer = build_trainer(_config("bf16", local_steps=8), genesis, genesis.peer_ids[0])
    assert trainer.device.type == "cpu"
    seen = []
    hook = trainer.model.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    losses, update = _losses(trainer, 3)
    hook.remove()
    assert torch.bfloat16 in seen            # training ran under autocast ...
    assert seen[-1] == torch.float32         # ... evaluation did not
    assert all(math.isfinite(v) for v in losses), losses
    assert losses[-1] < losses[0] - 0.1, losses
    assert update.dtype == torch.float32 and update.device.type == "cpu"
    assert bool(torch.isfinite(update).all())
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    for state in trainer._inner.state.values():  # AdamW moments stay float32
        assert all(v.dtype == torch.float32 for v in state.values() if v.dim() > 0)


def test_bf16_on_cpu_trains_the_mnist_mlp():
    trainer = Trainer("mlp", "mnist5k", seed=3, local_steps=5, lr=0.1, device="cpu", precision="bf16")
    losses, update = _losses(trainer, 3)
    assert all(math.isfinite(v) for v in losses), losses
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < losses[0] - 0.2, losses
    assert update.dtype == torch.float32 and bool(torch.isfinite(update).all())
    fp32 = Trainer("mlp", "mnist5k", seed=3, local_steps=5, lr=0.1, device="cpu")
    full, _ = _losses(fp32, 3)
    assert abs(full[-1] - losses[-1]) < 0.1 * full[-1], (full, losses)  # bf16 rounding, not another result


def test_a_bf16_member_is_accepted_beside_fp32_members_and_every_replica_agrees():
    genesis = _genesis()
    precisions = ["bf16", "fp32", "fp32", "fp32"]
    trainers = [build_trainer(_config(p), genesis, genesis.peer_ids[i]) for i, p in enumerate(precisions)]
    compressors = [Compressor("fp16") for _ in trainers]
    rules = rules_of(genesis)
    dim = trainers[0].dimension
    start = genesis_state(trainers[0].initial_parameters(), genesis.peer_ids, genesis_hash(genesis))
    replicas = [start] * 4
    for round_ in (1, 2, 3):
        state = replicas[0]
        raws = [make_gradient(key, genesis.swarm_id, round_, state.hash,
                              compressor.compress(trainer.local_update(state.params)))
                for key, trainer, compressor in zip(KEYS, trainers, compressors)]
        for replica_index, replica in enumerate(replicas):
            order = list(raws)
            random.Random(replica_index).shuffle(order)  # each replica received them in its own order
            gradients = [open_gradient(raw, genesis, dim, 1 << 30, round_, replica.hash) for raw in order]
            signers = frozenset(genesis.peer_ids) if round_ > 1 else None
            applied = apply(replica, gradients, rules, signers)
            assert genesis.peer_ids[0] in applied.aggregated  # the bf16 member's update counted
            assert not applied.quarantined
            replicas[replica_index] = applied.state
        assert len({r.hash for r in replicas}) == 1, round_
        assert replicas[0].params.dtype == start.params.dtype
    assert replicas[0].hash != start.hash


@pytest.mark.parametrize("value", ["fp16", "BF16", "float32"])
def test_a_bad_precision_is_refused_naming_the_key(tmp_path, value):
    path = tmp_path / "node.yaml"
    path.write_text(f"identity: k\ngenesis: g\ntraining: {{precision: {value}}}\n")
    with pytest.raises(ConfigError) as info:
        load_node_config(path)
    assert info.value.key == "training.precision"
    assert "fp32, bf16" in str(info.value) and str(path) in str(info.value)
    with pytest.raises(TaskError) as refused:
        Trainer("mlp", "synthetic", device="cpu", precision=value)
    assert refused.value.key == "training.precision"


@pytest.mark.gpu
def test_bf16_on_cuda_trains_the_lm_task():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine (torch.cuda.is_available() is False)")
    torch.manual_seed(0)
    genesis = _genesis()
    trainer = build_trainer(_config("bf16", device="cuda", local_steps=8), genesis, genesis.peer_ids[0])
    assert trainer.device.type == "cuda"
    assert next(trainer.model.parameters()).is_cuda
    losses, update = _losses(trainer, 3)
    assert all(math.isfinite(v) for v in losses), losses
    assert losses[-1] < losses[0] - 0.1, losses
    assert update.dtype == torch.float32 and update.device.type == "cpu"
    assert bool(torch.isfinite(update).all())

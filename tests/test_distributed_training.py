"""Multi-worker nodes (issue 20): a node's local update computed by a torch.distributed group of W gloo workers on
this machine's CPU equals the single process's on the same total batch, a worker crash fails one local round and
the group comes back, a group that cannot start is refused with its reason, and no worker outlives the group."""
from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time

import pytest
import torch

from crypto.keys import NodeKey
from swarm.config import ConfigError, Genesis, Member, NodeConfig, TrainingConfig
from swarm.config_schema import build
from swarm.training.build import build_node_trainer, build_trainer
from swarm.training.distributed import (
    GroupSpec,
    WorkerGroup,
    WorkerGroupError,
    group_spec,
    start_worker_group,
)
from swarm.training.tasks.base import TaskError
from swarm.training.trainer import Trainer, shard_of

TOLERANCE = 1e-5  # relative to the update's norm: float sums in another order over a few local steps


def _setup(workers: int = 2, **training) -> tuple[NodeConfig, Genesis, str]:
    genesis = Genesis(swarm_id="s", members=[Member(f"n{i}", NodeKey.generate().peer_id) for i in range(2)])
    genesis.model.name, genesis.model.seed = "mlp", 7
    config = NodeConfig(identity="", genesis="", data_dir="")
    config.dataset.name = "digits"
    config.training.device, config.training.workers = "cpu", workers
    config.training.batch_size, config.training.local_steps = 64, 4
    for key, value in training.items():
        setattr(config.training, key, value)
    config.torch_threads = 2
    return config, genesis, genesis.peer_ids[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # our own child: reaped means gone
        return waited == 0
    except ChildProcessError:
        return True


def _gone(pids: list[int], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_alive(pid) for pid in pids):
            return True
        time.sleep(0.1)
    return False


def _our_workers() -> set[int]:
    """Pids of this test process's worker processes still running (active_children also reaps finished ones)."""
    return {p.pid for p in multiprocessing.active_children() if p.name.startswith("swarm-train")}


def _relative_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / a.norm())


# ------------------------------------------------------------------------------------------------ no processes
def test_a_batch_is_cut_into_equal_contiguous_slices_whatever_its_structure():
    x, y = torch.arange(12).reshape(6, 2), torch.arange(6)
    assert torch.equal(shard_of((x, y), 1, 3)[0], x[2:4]) and torch.equal(shard_of((x, y), 1, 3)[1], y[2:4])
    assert torch.equal(shard_of({"ids": y}, 2, 3)["ids"], y[4:])
    joined = torch.cat([shard_of(y, rank, 2) for rank in range(2)])
    assert torch.equal(joined, y)
    with pytest.raises(TaskError, match="does not split into 4 equal slices"):
        shard_of(y, 0, 4)


def test_settings_that_cannot_work_are_refused_before_anything_is_spawned():
    config, genesis, peer = _setup(workers=3)
    with pytest.raises(TaskError, match="training.batch_size: 64 does not split into 3 equal slices"):
        group_spec(config, genesis, peer)
    if not torch.cuda.is_available():
        config, genesis, peer = _setup(workers=2, device="cuda")
        with pytest.raises(TaskError, match="training.workers: 2 workers need one GPU each"):
            group_spec(config, genesis, peer)
    for bad in (0, 65, 1.5):
        with pytest.raises(ConfigError, match="workers"):
            build(TrainingConfig, {"workers": bad}, "node.yaml", "training")
    assert build(TrainingConfig, {"workers": 2}, "node.yaml", "training").workers == 2


def test_one_worker_is_the_in_process_trainer():
    config, genesis, peer = _setup(workers=1)
    assert type(build_node_trainer(config, genesis, peer)) is Trainer


# ------------------------------------------------------------------------------------------------ worker groups
@pytest.fixture(scope="module")
def sgd_group():
    """A started W = 2 gloo group (SGD, 4 local steps) and the node's in-process trainer of the same config."""
    config, genesis, peer = _setup(workers=2)
    trainer = start_worker_group(build_trainer(config, genesis, peer), config, genesis, peer)
    try:
        yield trainer, (config, genesis, peer)
    finally:
        trainer.close()


@pytest.mark.slow
def test_two_gloo_workers_give_the_single_process_update_round_after_round(sgd_group):
    group_trainer, (config, genesis, peer) = sgd_group
    single = build_trainer(config, genesis, peer)
    params = single.initial_parameters()
    gaps = []
    for _ in range(3):  # the batch stream goes on from round to round in both
        expected, got = single.local_update(params), group_trainer.local_update(params)
        assert got.dtype == torch.float32 and got.shape == expected.shape
        gaps.append(_relative_gap(expected, got))
        params = params - 0.5 * expected
    assert max(gaps) < TOLERANCE, gaps
    assert group_trainer.workers == 2 and group_trainer.group.starts == 1


@pytest.mark.slow
def test_a_killed_worker_fails_the_round_and_the_next_round_starts_a_new_group(sgd_group, caplog):
    group_trainer, (config, genesis, peer) = sgd_group
    group = group_trainer.group
    params = group_trainer.initial_parameters()
    group_trainer.local_update(params)  # running
    old = group.pids
    os.kill(old[1], signal.SIGKILL)
    started = time.monotonic()
    with pytest.raises(WorkerGroupError, match=r"failed: .*worker 1 \(pid \d+\) exited with code -9"):
        group_trainer.local_update(params)
    assert time.monotonic() - started < 10, "a dead worker must fail the round at once, not hang it"
    assert _gone(old), "the surviving worker of a failed group is stopped"
    with caplog.at_level("WARNING", "swarm.training"):
        again = group_trainer.local_update(params)
    assert "starting the worker group of 2 again" in caplog.text
    assert group.starts == 2 and set(group.pids).isdisjoint(old)
    # A new group starts where a restarted node starts: a fresh batch stream and optimizer.
    fresh = build_trainer(config, genesis, peer).local_update(params)
    assert _relative_gap(fresh, again) < TOLERANCE


@pytest.mark.slow
def test_a_worker_killed_in_the_middle_of_a_round_fails_it_at_once_and_leaves_nothing():
    config, genesis, peer = _setup(workers=2, local_steps=100_000)  # a round of minutes, unless cut short
    group_trainer = start_worker_group(build_trainer(config, genesis, peer), config, genesis, peer)
    try:
        pids = group_trainer.group.pids
        killer = threading.Timer(1.0, os.kill, (pids[1], signal.SIGKILL))
        killer.start()
        started = time.monotonic()
        with pytest.raises(WorkerGroupError, match=r"worker 1 \(pid \d+\) exited with code -9"):
            group_trainer.local_update(group_trainer.initial_parameters())
        assert time.monotonic() - started < 15, "the survivor blocked in a collective must not hang the round"
        assert _gone(pids, timeout=1.0)
    finally:
        group_trainer.close()


@pytest.mark.slow
def test_stopping_the_group_leaves_no_worker_process(sgd_group):
    group_trainer, _ = sgd_group
    pids = group_trainer.group.pids
    assert len(pids) == 2 and all(_alive(pid) for pid in pids)
    group_trainer.close()
    assert _gone(pids, timeout=1.0)
    with pytest.raises(WorkerGroupError, match="stopped"):
        group_trainer.local_update(group_trainer.initial_parameters())


@pytest.mark.slow
def test_adamw_with_accumulation_clipping_prox_and_flipped_labels_agrees_too():
    config, genesis, peer = _setup(workers=2, optimizer="adamw", lr=0.01, grad_accum=2, grad_clip=0.5, prox_mu=0.1,
                                   local_steps=3, batch_size=32)
    single = build_trainer(config, genesis, peer)
    single.label_flip = True
    group_trainer = start_worker_group(build_trainer(config, genesis, peer), config, genesis, peer)
    try:
        group_trainer.label_flip = True
        params = single.initial_parameters()
        gaps = []
        for _ in range(2):  # AdamW's moments carry over between rounds in the workers as in the single process
            expected, got = single.local_update(params), group_trainer.local_update(params)
            gaps.append(_relative_gap(expected, got))
            params = params - expected
        assert max(gaps) < TOLERANCE, gaps
    finally:
        group_trainer.close()


@pytest.mark.slow
def test_a_group_whose_workers_fail_to_start_is_refused_with_their_reason_and_leaves_nothing():
    config, genesis, peer = _setup(workers=2)
    config.dataset.name = "no-such-dataset"  # the workers cannot build the node's trainer
    spec = GroupSpec(config, genesis, peer, ("cpu", "cpu"), threads=1, timeout_s=60)
    group, before = WorkerGroup(spec, dim=10), _our_workers()
    with pytest.raises(WorkerGroupError, match=r"did not start: worker \d: TaskError: .*no-such-dataset"):
        group.start()
    assert group.pids == [] and _our_workers() <= before


@pytest.mark.slow
def test_a_group_that_is_not_ready_in_time_is_refused_and_killed():
    config, genesis, peer = _setup(workers=2)
    dim = build_trainer(config, genesis, peer).dimension
    group, before = WorkerGroup(group_spec(config, genesis, peer), dim, start_timeout_s=0.01), _our_workers()
    with pytest.raises(WorkerGroupError, match="start-up took longer than 0.01 s"):
        group.start()
    assert group.pids == [] and _our_workers() <= before

"""`python -m bench gpu` (issue 16, step 6): without CUDA it writes a section saying so and starts nothing; the parts
of the CUDA run that need no GPU (the cluster's configs, the local-update timing, reading committed hashes from a
node's log) run here with node0 pointed at the CPU."""
from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import torch

from bench import gpu, report
from bench.__main__ import main
from swarm.config import load_node_config
from swarm.ops import cluster


def _section(path: Path) -> str:
    text = path.read_text()
    return text[text.index(report.start_marker("gpu")):text.index(report.end_marker("gpu"))]


def test_without_cuda_it_writes_that_no_gpu_was_available_and_starts_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def refuse(*args, **kwargs):
        raise AssertionError("bench gpu started something without a GPU")
    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(cluster, "init_cluster", refuse)
    monkeypatch.setattr(cluster.Cluster, "start", refuse)
    monkeypatch.setattr(gpu, "prepare_cluster", refuse)
    monkeypatch.setattr(gpu, "time_local_updates", refuse)
    out = tmp_path / "BENCHMARKS.md"
    assert main(["gpu", "--output", str(out)]) == 0
    section = _section(out)
    assert "No GPU was available on this machine" in section
    assert "nothing was measured" in section
    assert report.cpu_model() in section and "no GPU" in section   # the machine is named
    assert "_Command:_ `python -m bench gpu --output" in section
    assert gpu.HEADING in out.read_text()
    assert not list(tmp_path.glob("bench-gpu-*"))


def _args(**kw) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    gpu.add_arguments(parser)
    args = parser.parse_args([])
    args.rounds, args.quick = None, True
    for key, value in kw.items():
        setattr(args, key, value)
    return args


def test_the_cluster_has_node0_on_cuda_with_bf16_and_the_others_on_cpu_in_fp32(tmp_path):
    specs = gpu.prepare_cluster(tmp_path, _args())
    configs = {s.name: load_node_config(s.config_path) for s in specs}
    assert (configs["node0"].training.device, configs["node0"].training.precision) == ("cuda", "bf16")
    for name in ("node1", "node2", "node3"):
        assert (configs[name].training.device, configs[name].training.precision) == ("cpu", "fp32")
    assert all(c.training.eval_every == 0 and c.training.local_steps == 20 for c in configs.values())


def test_local_update_timing_runs_with_the_nodes_configs(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu, "CUDA_DEVICE", "cpu")   # node0's config on the CPU: everything else as on a GPU
    monkeypatch.setattr(gpu, "TIMED_UPDATES", 1)
    specs = gpu.prepare_cluster(tmp_path, _args(local_steps=2, batch_size=4))
    seconds = gpu.time_local_updates(specs)
    assert set(seconds) == {"cpu, bf16 (node0)", "cpu, fp32", "cpu, fp32 (node1..3)"}
    assert all(s > 0 for s in seconds.values())


def test_committed_hashes_are_read_from_the_nodes_log_line():
    # the line swarm/node/round_log.py writes, with and without an evaluation and a commit time
    text = ("2026-12-06 INFO swarm.node committed round 3 term 1 leader node2 hash 0123456789ab (41 ms)\n"
            "2026-12-06 INFO swarm.node committed round 4 term 2 leader - loss 2.5000 acc 0.1000 hash "
            "ba9876543210\n")
    assert gpu.committed_hashes(text) == {3: "0123456789ab", 4: "ba9876543210"}


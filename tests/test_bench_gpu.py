"""`python -m bench gpu` (issue 16, step 6): without CUDA it writes a section saying so and starts nothing; the parts
of the CUDA run that need no GPU (the cluster's configs, the local-update timing, reading committed hashes from a
node's log) run here with node0 pointed at the CPU."""
from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import pytest
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



@pytest.mark.parametrize("diverge", [False, True])
def test_the_cuda_path_end_to_end_with_the_processes_faked(tmp_path, monkeypatch, diverge):
    """The part as it runs on a GPU machine, with node0 on the CPU, the node processes replaced by a fake cluster
    whose /status advances a round per poll and whose logs name the committed hashes: the checks and the table."""
    import time as _time

    from swarm.ops import http_json
    monkeypatch.setattr(gpu, "cuda_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "Fake GPU")
    monkeypatch.setattr(gpu, "CUDA_DEVICE", "cpu")
    monkeypatch.setattr(gpu, "time_local_updates", lambda specs: {"cpu, bf16 (node0)": 0.5, "cpu, fp32": 0.8,
                                                                  "cpu, fp32 (node1..3)": 2.0})
    polls: dict[str, int] = {}

    class FakeCluster:
        def __init__(self, folder, specs):
            self.folder, self.specs, self.procs = folder, specs, {}
            (folder / "logs").mkdir(exist_ok=True)

        def start(self):
            pass

        def stop(self):
            for spec in self.specs:
                rounds = range(1, 6)
                (self.folder / "logs" / f"{spec.name}.log").write_text("".join(
                    f"INFO committed round {r} term 1 leader node1 hash "
                    f"{r + 1000 * (diverge and spec.name == 'node3' and r == 3):012x} (12 ms)\n" for r in rounds))

    def status(url, timeout):
        if "/history" in url:
            return [{"round": 5, "reputation": {"node0": 1.0, "node1": 1.0}}]
        name = next(n for n in ("node0", "node1", "node2", "node3") if f":{ports[n]}/" in url)
        polls[name] = min(5, polls.get(name, 0) + 1)
        return {"round": polls[name], "state_hash": "ab" * 32}
    ports: dict[str, int] = {}
    real_prepare = gpu.prepare_cluster

    def prepare(folder, args):
        specs = real_prepare(folder, args)
        ports.update({s.name: s.api_port for s in specs})
        return specs
    monkeypatch.setattr(gpu, "prepare_cluster", prepare)
    monkeypatch.setattr(cluster, "Cluster", FakeCluster)
    monkeypatch.setattr(http_json, "get_json", status)
    monkeypatch.setattr(_time, "sleep", lambda s: None)
    out = tmp_path / "BENCHMARKS.md"
    if diverge:
        with pytest.raises(SystemExit, match="did not agree"):
            main(["gpu", "--rounds", "4", "--output", str(out)])
        section = _section(out)
        assert "DIFFERENT at rounds [3]" in section and "CHECK FAILED" in section
        return
    assert main(["gpu", "--rounds", "4", "--output", str(out)]) == 0
    section = _section(out)
    assert "node0 trains on Fake GPU" in section
    assert "equal at all 5 rounds (1..5)" in section and "equal on all 4: abababab" in section
    assert "| node0's reputation (node1's last history row) | 1.000 |" in section
    assert "0.500 s (4.0x the CPU node)" in section and "| 2.000 s |" in section
    assert "The CUDA bf16 node and the CPU nodes reached the same state hashes" in section

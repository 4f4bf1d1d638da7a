"""GPU check of multi-worker nodes (issue 20): the worker group on CUDA (NCCL, one GPU per worker) gives the same
local update as the in-process Trainer on the same GPU, a killed worker fails one round at once, and the group
comes back.

    python scripts/gpu_multiworker_check.py [--workers 1] [--out report.json] [--require-gpu]

A lent machine has one GPU, so the default is W = 1: a one-rank NCCL group running DDP on cuda:0. That exercises
everything a multi-GPU node runs (spawning, NCCL rendezvous, DDP on CUDA, the shared-memory hand-over, failure and
restart) except gradients crossing between GPUs; W = 2 averaging is checked on CPU with gloo by
tests/test_distributed_training.py. On a machine without CUDA it says so and exits 0 (1 with --require-gpu).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TOLERANCE = 1e-4  # relative: cuBLAS/cuDNN may pick other kernels in another process


DEVICE = "cuda"


def _setup(model: str, workers: int, local_steps: int):
    from crypto.keys import NodeKey
    from swarm.config import Genesis, Member, NodeConfig
    genesis = Genesis(swarm_id="gpu-check", members=[Member(f"n{i}", NodeKey.generate().peer_id) for i in range(4)])
    genesis.model.name, genesis.model.seed = model, 3
    config = NodeConfig(identity="", genesis="", data_dir="")
    config.dataset.name = "mnist5k"
    config.training.device, config.training.workers = DEVICE, workers
    config.training.batch_size, config.training.local_steps = 64 * workers, local_steps
    config.training.worker_timeout_s = 120.0
    return config, genesis, genesis.peer_ids[0]


def check_model(model: str, workers: int, rounds: int) -> dict:
    """W workers against the in-process Trainer on the same GPU, round after round."""
    import torch

    from swarm.training.build import build_trainer
    from swarm.training.distributed import start_worker_group
    config, genesis, peer = _setup(model, workers, local_steps=10)
    single = build_trainer(config, genesis, peer)
    started = time.monotonic()
    group = start_worker_group(build_trainer(config, genesis, peer), config, genesis, peer)
    start_s = time.monotonic() - started
    try:
        params, gaps, single_s, group_s = single.initial_parameters(), [], [], []
        for _ in range(rounds):
            t0 = time.monotonic()
            expected = single.local_update(params)
            if DEVICE == "cuda":
                torch.cuda.synchronize()
            t1 = time.monotonic()
            got = group.local_update(params)
            t2 = time.monotonic()
            gaps.append(float((expected - got).norm() / expected.norm()))
            single_s.append(t1 - t0)
            group_s.append(t2 - t1)
            params = params - 0.5 * expected
    finally:
        group.close()
    return {"model": model, "workers": workers, "backend": group.group.spec.backend,
            "devices": list(group.group.spec.devices), "parameters": single.dimension,
            "group_start_s": round(start_s, 2), "relative_gaps": gaps, "max_relative_gap": max(gaps),
            "agrees": max(gaps) < TOLERANCE, "in_process_round_s": [round(s, 4) for s in single_s],
            "group_round_s": [round(s, 4) for s in group_s]}


def check_crash(workers: int) -> dict:
    """Kill the last worker in the middle of a long round: the round fails at once, every worker is gone, and
    the group starts again."""
    from swarm.training.build import build_trainer
    from swarm.training.distributed import WorkerGroupError, start_worker_group
    config, genesis, peer = _setup("mlp", workers, local_steps=1_000_000)  # minutes, unless cut short
    trainer = build_trainer(config, genesis, peer)
    group = start_worker_group(trainer, config, genesis, peer)
    try:
        pids = group.group.pids
        threading.Timer(3.0, os.kill, (pids[-1], signal.SIGKILL)).start()
        started = time.monotonic()
        try:
            group.local_update(trainer.initial_parameters())
            failed, reason = False, None
        except WorkerGroupError as exc:
            failed, reason = True, str(exc)
        failed_after = time.monotonic() - started
        time.sleep(1.0)
        left = [pid for pid in pids if _running(pid)]
        started = time.monotonic()
        group.group.start()
        restart_s = time.monotonic() - started
        restarted = len(group.group.pids) == workers and not set(group.group.pids) & set(pids)
    finally:
        group.close()
    return {"round_failed": failed, "reason": reason, "failed_after_s": round(failed_after - 3.0, 2),
            "workers_left": left, "restarted": restarted, "restart_s": round(restart_s, 2),
            "ok": failed and failed_after - 3.0 < 15 and not left and restarted}


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1, help="GPUs to use, one worker each (default 1)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--out", type=Path, help="also write the report here (JSON)")
    parser.add_argument("--require-gpu", action="store_true", help="exit 1 when there is no CUDA device")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: the same check with gloo, to try the script on a machine without a GPU")
    args = parser.parse_args(argv)
    import torch
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, args.workers)))
    elif not torch.cuda.is_available():
        print(json.dumps({"skipped": "no CUDA device on this machine"}))
        return 1 if args.require_gpu else 0
    gpu = torch.cuda.get_device_name(0) if DEVICE == "cuda" else None
    report = {"device": DEVICE, "gpu": gpu, "gpus": torch.cuda.device_count(), "torch": torch.__version__,
              "checks": [check_model(model, args.workers, args.rounds) for model in args.models.split(",")],
              "crash": check_crash(args.workers)}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    ok = all(c["agrees"] for c in report["checks"]) and report["crash"]["ok"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

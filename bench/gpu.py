"""A CUDA node among CPU nodes (issue 16, step 6): node0 trains the ``lm`` task on the GPU with bf16 autocast
(``training.device: cuda, precision: bf16``), node1..3 on the CPU in float32, in a real 4-process cluster on
127.0.0.1 (the ``swarm cluster up --task lm`` genesis and configs, libp2p, PBFT commit, fp16 updates).

Checked: every node committed the same state hash at every round they all committed (each node's log line
"committed round R ... hash H") and the same full hash on ``/status`` at a round they all reached; node0's
reputation on node1's last history row (its bf16 updates were counted, not filtered out).
Measured: seconds per committed round, and the time of one local update (H inner AdamW steps) with each node's
own config, in this process before the cluster starts: node0's (cuda, bf16), the same on cuda in fp32, and a CPU
node's (cpu, fp32, with the torch threads a cluster node gets).

Where ``torch.cuda.is_available()`` is False it starts nothing, writes a section saying that no GPU was available
on this machine and that nothing was measured, and exits 0.

    python -m bench gpu [--rounds 8] [--local-steps 20] [--batch-size 16] [--timeout 240]
"""
from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

from bench import report
from bench.report import table

PART = "gpu"
HEADING = "## GPU: a CUDA bf16 node among CPU nodes, equal state hashes"
COMMITTED = re.compile(r"committed round (\d+) term \d+ leader \S+.*? hash ([0-9a-f]{12})")
CUDA_NODE = "node0"
CUDA_DEVICE = "cuda"   # node0's training.device (a test points it at the CPU to run the rest of the part)
DEFAULT_ROUNDS = 8
TIMED_UPDATES = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--local-steps", type=int, default=20, help="inner AdamW steps per round (H)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--layers", type=int, default=None, help="lm layers (default: `swarm cluster up --task lm`'s)")
    parser.add_argument("--width", type=int, default=None, help="lm width (default: `swarm cluster up --task lm`'s)")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds for the cluster part")


def cuda_available() -> bool:
    import torch
    return bool(torch.cuda.is_available())


def no_gpu_body() -> str:
    return (f"No GPU was available on this machine ({report.machine()}): `torch.cuda.is_available()` is False, so "
            f"no node trained on CUDA, no cluster was started and nothing was measured. On a machine with CUDA, "
            f"`python -m bench gpu` runs a 4-process `lm` cluster with {CUDA_NODE} on `cuda` + `precision: bf16` and "
            f"the other nodes on the CPU in fp32, checks that every node commits the same state hashes, and records "
            f"seconds per round and {CUDA_NODE}'s local-training time against a CPU node's (a few minutes); "
            f"`pytest -m gpu` trains the `lm` task on CUDA with bf16. bf16 autocast itself (on the CPU), its float32 "
            f"update and a bf16 member agreeing with fp32 members on every state hash are tested here in "
            f"`tests/test_precision.py`.")


def task_options(args) -> dict:
    from swarm.ops.cluster import LM_DEMO_OPTIONS
    options = dict(LM_DEMO_OPTIONS)
    if args.layers is not None:
        options["layers"] = args.layers
    if args.width is not None:
        options["width"] = args.width
    return options


def prepare_cluster(folder: Path, args) -> list:
    """Genesis and configs as `swarm cluster up --task lm` writes them, every node on the CPU in fp32 but node0,
    which trains on cuda with bf16."""
    import yaml

    from swarm.ops.cluster import ClusterOptions, init_cluster
    overrides = {"training": {"device": "cpu", "precision": "fp32", "eval_every": 0}}
    specs = init_cluster(folder, ClusterOptions(nodes=4, task="lm", dataset="stdlib", task_options=task_options(args),
                                                lr=None, batch_size=args.batch_size, local_steps=args.local_steps,
                                                compression="fp16", node_overrides=overrides))
    spec = next(s for s in specs if s.name == CUDA_NODE)
    config = yaml.safe_load(spec.config_path.read_text())
    config["training"].update({"device": CUDA_DEVICE, "precision": "bf16"})
    spec.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return specs


def time_local_updates(specs: list) -> dict[str, float]:
    """Seconds per local update (the mean of TIMED_UPDATES after one warm-up) with the nodes' own configs."""
    from dataclasses import replace

    import torch

    from swarm.config import load_genesis, load_node_config
    from swarm.training.build import build_trainer
    cpu_config = load_node_config(next(s for s in specs if s.name != CUDA_NODE).config_path)
    cuda_config = load_node_config(next(s for s in specs if s.name == CUDA_NODE).config_path)
    genesis = load_genesis(cuda_config.genesis)
    cases = {
        f"{CUDA_DEVICE}, bf16 (node0)": (cuda_config, None),
        f"{CUDA_DEVICE}, fp32": (replace(cuda_config, training=replace(cuda_config.training, precision="fp32")), None),
        "cpu, fp32 (node1..3)": (cpu_config, cpu_config.torch_threads),
    }
    seconds = {}
    default_threads = torch.get_num_threads()
    for name, (config, threads) in cases.items():
        torch.set_num_threads(threads or default_threads)
        try:
            trainer = build_trainer(config, genesis, genesis.peer_ids[0])
            params = trainer.initial_parameters()
            trainer.local_update(params)  # warm-up: CUDA context, kernels, the optimizer's state
            times = []
            for _ in range(TIMED_UPDATES):
                started = time.perf_counter()
                trainer.local_update(params)  # returns a CPU tensor: the GPU has finished
                times.append(time.perf_counter() - started)
            seconds[name] = statistics.mean(times)
        finally:
            torch.set_num_threads(default_threads)
    return seconds


def committed_hashes(log_text: str) -> dict[int, str]:
    return {int(r): h for r, h in COMMITTED.findall(log_text)}


def run_cluster(folder: Path, specs: list, rounds: int, timeout_s: float, log=print) -> dict:
    from swarm.ops.cluster import Cluster
    from swarm.ops.http_json import get_json
    cluster = Cluster(folder, specs)
    names = [s.name for s in specs]
    deadline = time.monotonic() + timeout_s
    result: dict = {}

    def statuses() -> dict:
        return {s.name: get_json(f"{s.api}/status", 2.0) for s in specs}

    def wait(what: str, done) -> dict:
        while time.monotonic() < deadline:
            st = statuses()
            if all(st.values()) and done(st):
                return st
            dead = [n for n, p in cluster.procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{dead} exited; logs in {folder / 'logs'}")
            time.sleep(0.2)
        raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}; logs in {folder / 'logs'}")

    def head(st: dict) -> int:
        return min(st[n]["round"] for n in names)

    started = time.monotonic()
    try:
        cluster.start()
        st = wait("the first commit on every node", lambda st: head(st) >= 1)
        first = (time.monotonic(), head(st))
        result["startup_s"] = first[0] - started
        log(f"round {first[1]} committed by every node after {result['startup_s']:.1f} s")
        st = wait(f"round {rounds} on every node", lambda st: head(st) >= rounds)
        last = (time.monotonic(), head(st))
        result["s_per_round"] = (last[0] - first[0]) / max(1, last[1] - first[1])
        result["timed_rounds"] = (first[1], last[1])
        st = wait("every node on one round", lambda st: len({st[n]["round"] for n in names}) == 1)
        result["common_round"] = st[names[0]]["round"]
        result["status_hashes"] = {n: st[n]["state_hash"] for n in names}
        history = get_json(f"{specs[1].api}/history?limit=10000", 5.0) or []
        result["node0_reputation"] = (history[-1].get("reputation") or {}).get(CUDA_NODE) if history else None
        log(f"every node at round {result['common_round']}")
    finally:
        cluster.stop()
    result["log_hashes"] = {n: committed_hashes((folder / "logs" / f"{n}.log").read_text(errors="replace"))
                            for n in names}
    return result


def run(args) -> str:
    if not cuda_available():
        print("  no CUDA device: nothing started, nothing measured", flush=True)
        return no_gpu_body()
    import torch

    from swarm.ops.cluster import cores_per_node
    rounds = args.rounds or (4 if args.quick else DEFAULT_ROUNDS)
    began = time.monotonic()

    def log(line: str) -> None:
        print(f"  [{time.monotonic() - began:6.1f} s] {line}", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        folder = Path(tmp)
        specs = prepare_cluster(folder, args)
        update_s = time_local_updates(specs)
        log("local update: " + ", ".join(f"{k} {v:.3f} s" for k, v in update_s.items()))
        r = run_cluster(folder, specs, rounds, args.timeout, log)
    total_s = time.monotonic() - began
    per_node = r["log_hashes"]
    common = sorted(set.intersection(*(set(h) for h in per_node.values())))
    differing = [k for k in common if len({per_node[n][k] for n in per_node}) != 1]
    status = set(r["status_hashes"].values())
    options = task_options(args)
    cpu = update_s["cpu, fp32 (node1..3)"]
    rows = [
        ["state hashes, every round all 4 nodes committed (from each node's log)",
         (f"equal at all {len(common)} rounds ({common[0]}..{common[-1]})" if common and not differing
          else f"DIFFERENT at rounds {differing}" if differing else "no common round")],
        [f"full state hash on /status at round {r['common_round']}",
         ("equal on all 4: " if len(status) == 1 else "DIFFERENT: ") + ", ".join(sorted(h[:16] for h in status))],
        [f"{CUDA_NODE}'s reputation (node1's last history row)",
         "not read" if r["node0_reputation"] is None else f"{r['node0_reputation']:.3f}"],
        ["seconds per round (4 nodes)",
         f"{r['s_per_round']:.2f} (rounds {r['timed_rounds'][0]}..{r['timed_rounds'][1]})"],
        ["start to the first round committed by every node", f"{r['startup_s']:.1f} s"],
    ]
    rows += [[f"one local update ({args.local_steps} AdamW steps, batch {args.batch_size}): {name}",
              f"{s:.3f} s ({cpu / s:.1f}x the CPU node)" if s != cpu else f"{s:.3f} s"]
             for name, s in update_s.items()]
    rows.append(["whole run", f"{total_s:.0f} s"])
    ok = common and not differing and len(status) == 1
    body = [
        (f"Four node processes on 127.0.0.1 (the genesis and configs of `swarm cluster up --task lm`: "
         f"{options['layers']} layers, width {options['width']}, context {options['context']}; inner AdamW, "
         f"fp16 updates, the default rule, no evaluation). {CUDA_NODE} trains on {torch.cuda.get_device_name(0)} "
         f"with `training.device: cuda, precision: bf16`; node1..3 on the CPU in fp32. Each node trains "
         f"{args.local_steps} inner steps of batch {args.batch_size} per round. Local-update times are taken in "
         f"the bench's own process with each node's config before the cluster starts (the mean of "
         f"{TIMED_UPDATES} after a warm-up; the CPU case with the {cores_per_node(4)} torch threads a "
         f"cluster node gets here)."),
        "",
        table(["", "value"], rows),
        "",
        ("**The CUDA bf16 node and the CPU nodes reached the same state hashes.**" if ok else
         "**CHECK FAILED: the nodes did not agree on the state hashes.**"),
    ]
    if not ok:  # keep what was measured, then fail
        report.write_section(PART, "\n".join(body), None, args.output, HEADING)
        raise SystemExit("bench gpu: the nodes did not agree on the state hashes")
    return "\n".join(body)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    add_arguments(parser)
    print(run(parser.parse_args()))

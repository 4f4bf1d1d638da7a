"""Seconds per round of a 4-node swarm with a ~1M-parameter update, against a plain mean-averaging round over the
same transport with no consensus and no robust filtering, in one run; plus commit latency (PrePrepare -> commit).

    python -m bench.round [--rounds 20] [--nodes 4] [--compression fp16 topk] [--repeat 2]

Both sides train the same model (bench.models:mlp_1m, 10 local steps), compress, sign and push with the same code,
with the machine's cores split between the nodes the same way;
the swarm adds verification of every payload, robust aggregation, reputation and the three-phase commit.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from swarm.ops.cluster import Cluster, ClusterOptions, cores_per_node, free_port, init_cluster
from swarm.ops.http_json import get_json

MODEL = "bench.models:mlp_1m"
WARMUP = 2
LATENCY_PARTS = ("commit", "validate", "prepare", "certify")  # the <part>_ms fields of a commit log line


def swarm_rounds(folder: Path, nodes: int, rounds: int, compression: str,
                 eval_every: int = 0, model: str = MODEL) -> tuple[list[float], dict[str, list[float]]]:
    """Per-round wall seconds at node0 (from the commit times in its log, so that measuring does not load the
    node), and from every follower's log the commit latency's parts in ms: PrePrepare seen -> own validation
    done ('validate'), -> prepare quorum in and Commit sent ('prepare'), -> commit certificate formed ('certify'),
    -> applied ('commit')."""
    specs = init_cluster(folder, ClusterOptions(nodes=nodes, model=model, compression=compression,
                                                max_rounds=rounds + WARMUP,
                                                node_overrides={"training": {"eval_every": eval_every}}))
    cluster = Cluster(folder, specs)
    cluster.start()
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            status = get_json(f"{specs[0].api}/status", 1.0)
            if status is not None and status["round"] >= rounds + WARMUP:
                break
            time.sleep(0.5)
    finally:
        cluster.stop()
    stamps = commit_times((folder / "logs" / f"{specs[0].name}.log").read_text())
    ordered = [stamps[r] for r in sorted(stamps) if r >= WARMUP]
    per_round = [b - a for a, b in zip(ordered, ordered[1:])]
    latencies: dict[str, list[float]] = {name: [] for name in LATENCY_PARTS}
    for log in (folder / "logs").glob("*.log"):
        text = log.read_text()
        for name, values in latencies.items():
            values += [float(m) for m in re.findall(rf"\b{name}_ms=([0-9.]+)", text)]
    return per_round, latencies


COMMITTED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) .* committed round (\d+) ", re.MULTILINE)


def commit_times(log: str) -> dict[int, float]:
    """Round -> seconds (epoch) of its 'committed round' log line."""
    out = {}
    for stamp, millis, round_ in COMMITTED.findall(log):
        seconds = time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1000
        out.setdefault(int(round_), seconds)
    return out


def plain_rounds(folder: Path, nodes: int, rounds: int, compression: str, model: str = MODEL) -> list[float]:
    keys = sorted((folder / "keys").glob("*.pem"))[:nodes]
    from crypto.keys import load_key
    ids = [load_key(k).peer_id for k in keys]
    ports = [free_port() for _ in keys]
    addrs = [f"/ip4/127.0.0.1/tcp/{port}/p2p/{pid}" for port, pid in zip(ports, ids)]
    procs = []
    for i, key in enumerate(keys):
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "bench.plain_peer", "--key", str(key), "--listen", f"/ip4/127.0.0.1/tcp/{ports[i]}",
             "--bootstrap", ",".join(a for j, a in enumerate(addrs) if j != i), "--members", ",".join(ids),
             "--model", model, "--compression", compression, "--index", str(i), "--rounds", str(rounds + WARMUP),
             "--threads", str(cores_per_node(nodes))],
            stdout=subprocess.PIPE, text=True))
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=900)
        results.append(json.loads(out.strip().splitlines()[-1])["round_seconds"][WARMUP:])
    # A round of the plain swarm ends when its slowest peer has averaged: per round, take the max over peers.
    return [max(column) for column in zip(*results)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--compression", nargs="+", default=["fp16", "topk"])
    parser.add_argument("--repeat", type=int, default=1, help="runs of each side, alternated (medians over all)")
    parser.add_argument("--eval-every", type=int, default=0,
                        help="swarm nodes evaluate the test set every N rounds (0: never, as the plain peers)")
    parser.add_argument("--model", default=MODEL,
                        help="model of both sides (default: the 1M-parameter MLP; 'mlp', the swarm's small default, "
                             "leaves the CPU far from saturated, which shows the protocol's own latency)")
    args = parser.parse_args()
    print(f"{'compression':12} {'swarm s/round':>14} {'plain s/round':>14} {'overhead':>9} "
          f"{'commit p50 ms':>14} {'commit p99 ms':>14} {'certified p50':>14} {'prepared p50':>13} "
          f"{'validated p50':>14}")
    for compression in args.compression:
        swarm, plain = [], []
        latencies: dict[str, list[float]] = {name: [] for name in LATENCY_PARTS}
        for _ in range(args.repeat):  # alternate the two sides, so that a change in machine load hits both
            with tempfile.TemporaryDirectory(prefix="bench-round-") as tmp:
                folder = Path(tmp)
                seconds, run_latencies = swarm_rounds(folder, args.nodes, args.rounds, compression, args.eval_every,
                                                      args.model)
                swarm += seconds
                for name, values in run_latencies.items():
                    latencies[name] += values
                plain += plain_rounds(folder, args.nodes, args.rounds, compression, args.model)
        s, p = statistics.median(swarm), statistics.median(plain)
        print(f"{compression:12} {s:14.3f} {p:14.3f} {100 * (s / p - 1):8.1f}% "
              f"{percentile(latencies['commit'], 0.5):14.2f} {percentile(latencies['commit'], 0.99):14.2f} "
              f"{percentile(latencies['certify'], 0.5):14.2f} {percentile(latencies['prepare'], 0.5):13.2f} "
              f"{percentile(latencies['validate'], 0.5):14.2f}",
              flush=True)
    print("commit: a follower's PrePrepare -> entry applied; certified: -> commit certificate formed; prepared: ->"
          " prepare quorum in, lock persisted, Commit sent; validated: -> its own check of the proposal done"
          " (all at the followers, ms)")
    print(f"test-set evaluation on the swarm nodes: {'every %d rounds' % args.eval_every if args.eval_every else 'off'}"
          " (the plain peers never evaluate)")


if __name__ == "__main__":
    main()

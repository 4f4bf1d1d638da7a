"""Seconds per round of a 4-node swarm with a ~1M-parameter update, against a plain mean-averaging round over the
same transport with no consensus and no robust filtering, in one run; plus commit latency (PrePrepare -> commit).

    python -m bench.round [--rounds 20] [--nodes 4] [--compression fp16 topk]

Both sides train the same model (bench.models:mlp_1m, 10 local steps), compress, sign and push with the same code;
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

from swarm.cluster import Cluster, ClusterOptions, free_port, get_json, init_cluster

MODEL = "bench.models:mlp_1m"
WARMUP = 2


def swarm_rounds(folder: Path, nodes: int, rounds: int, compression: str) -> tuple[list[float], list[float]]:
    """Per-round wall seconds seen at node0, and commit latencies (ms) from every node's log."""
    specs = init_cluster(folder, ClusterOptions(nodes=nodes, model=MODEL, compression=compression,
                                                max_rounds=rounds + WARMUP))
    cluster = Cluster(folder, specs)
    cluster.start()
    stamps: dict[int, float] = {}
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            status = get_json(f"{specs[0].api}/status", 1.0)
            if status is not None:
                stamps.setdefault(status["round"], time.monotonic())
                if status["round"] >= rounds + WARMUP:
                    break
            time.sleep(0.02)
    finally:
        cluster.stop()
    ordered = [stamps[r] for r in sorted(stamps) if r >= WARMUP]
    per_round = [b - a for a, b in zip(ordered, ordered[1:])]
    commit_ms = []
    for log in (folder / "logs").glob("*.log"):
        commit_ms += [float(m) for m in re.findall(r"commit_ms=([0-9.]+)", log.read_text())]
    return per_round, commit_ms


def plain_rounds(folder: Path, nodes: int, rounds: int, compression: str) -> list[float]:
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
             "--model", MODEL, "--compression", compression, "--index", str(i), "--rounds", str(rounds + WARMUP)],
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
    args = parser.parse_args()
    print(f"{'compression':12} {'swarm s/round':>14} {'plain s/round':>14} {'overhead':>9} "
          f"{'commit p50 ms':>14} {'commit p99 ms':>14}")
    for compression in args.compression:
        with tempfile.TemporaryDirectory(prefix="bench-round-") as tmp:
            folder = Path(tmp)
            swarm, commits = swarm_rounds(folder, args.nodes, args.rounds, compression)
            plain = plain_rounds(folder, args.nodes, args.rounds, compression)
        s, p = statistics.median(swarm), statistics.median(plain)
        print(f"{compression:12} {s:14.3f} {p:14.3f} {100 * (s / p - 1):8.1f}% "
              f"{percentile(commits, 0.5):14.2f} {percentile(commits, 0.99):14.2f}", flush=True)


if __name__ == "__main__":
    main()

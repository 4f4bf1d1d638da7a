"""Soak: a 4-node swarm for N minutes, sampling each node's RSS and CPU from /proc, counting log errors.

Not run in CI. Why: leaks and slow drifts (queues, caches, libp2p state) show only over minutes of traffic. The
traffic is the swarm's own: every round each node pushes a gradient to every peer and runs a consensus instance,
and the API is polled each sample. The RSS bound is checked on the slope after a warm-up (the first third of the
run, when torch and the dataset load): the run fails when any node grows faster than --max-growth MB/min.

    python -m bench.soak --minutes 10 [--nodes 4] [--interval 5] [--max-growth 2.0] [--dir DIR]
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from swarm.ops.cluster import Cluster, ClusterOptions, init_cluster
from swarm.ops.http_json import get_json

PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")
ERROR_LINE = re.compile(r" (ERROR|CRITICAL) |Traceback \(most recent call last\)")


@dataclass
class Series:
    """One node's samples: (seconds since start, RSS in MiB, CPU seconds used)."""

    samples: list[tuple[float, float, float]] = field(default_factory=list)
    rounds: int = 0


def proc_sample(pid: int) -> tuple[float, float] | None:
    """(RSS MiB, CPU seconds) from /proc, or None when the process is gone."""
    try:
        rss_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, IndexError, ValueError):
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after the command name, which may hold spaces
    cpu = (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime
    return rss_pages * PAGE / (1 << 20), cpu


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (per second); 0 for fewer than two points."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return 0.0 if var == 0 else sum((x - mx) * (y - my) for x, y in points) / var


def count_errors(log: Path) -> int:
    if not log.exists():
        return 0
    return sum(1 for line in log.read_text(errors="replace").splitlines() if ERROR_LINE.search(line))


def run(minutes: float, nodes: int, interval: float, folder: Path) -> dict[str, Series]:
    specs = init_cluster(folder, ClusterOptions(nodes=nodes))
    cluster = Cluster(folder, specs)
    series = {spec.name: Series() for spec in specs}
    cluster.start()
    started = time.monotonic()
    try:
        while (elapsed := time.monotonic() - started) < minutes * 60:
            for spec in specs:
                sample = proc_sample(cluster.procs[spec.name].pid)
                if sample is not None:
                    series[spec.name].samples.append((elapsed, *sample))
                status = get_json(f"{spec.api}/status", 2.0)
                if status is not None:
                    series[spec.name].rounds = status["round"]
            time.sleep(interval)
    finally:
        cluster.stop()
    return series


def report(series: dict[str, Series], folder: Path, max_growth: float, minutes: float) -> bool:
    warm = minutes * 60 / 3
    print(f"{'node':6} {'rounds':>6} {'rss start':>9} {'rss end':>8} {'rss max':>8} {'growth':>12} "
          f"{'cpu %':>6} {'errors':>6}")
    ok = True
    for name, s in series.items():
        if not s.samples:
            print(f"{name:6} no samples")
            ok = False
            continue
        after_warm = [(t, rss) for t, rss, _ in s.samples if t >= warm]
        growth = slope(after_warm) * 60
        duration = s.samples[-1][0] - s.samples[0][0]
        cpu = 100 * (s.samples[-1][2] - s.samples[0][2]) / duration if duration else 0.0
        errors = count_errors(folder / "logs" / f"{name}.log")
        ok &= growth <= max_growth
        print(f"{name:6} {s.rounds:6d} {s.samples[0][1]:8.1f}M {s.samples[-1][1]:7.1f}M "
              f"{max(r for _, r, _ in s.samples):7.1f}M {growth:+8.2f}MB/min {cpu:6.1f} {errors:6d}")
    verdict = "within" if ok else "EXCEEDS"
    print(f"RSS growth after a {warm:.0f} s warm-up {verdict} the bound of {max_growth} MB/min per node")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--max-growth", type=float, default=2.0, help="allowed RSS slope, MB/min, after warm-up")
    parser.add_argument("--dir", help="cluster folder (default: a new temporary folder, kept for its logs)")
    args = parser.parse_args(argv)
    folder = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="swarm-soak-"))
    series = run(args.minutes, args.nodes, args.interval, folder)
    print(f"soak: {args.nodes} nodes, {args.minutes} min, logs in {folder / 'logs'}")
    return 0 if report(series, folder, args.max_growth, args.minutes) else 1


if __name__ == "__main__":
    sys.exit(main())

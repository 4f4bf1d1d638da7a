"""Runs a real multi-process swarm for a fixed number of rounds and returns its per-round accuracy and timing.

Shared by the time-to-accuracy and scaling parts. Clock: wall seconds since the earliest node finished building
its trainer (``/status`` uptime), so Python and torch imports and the dataset load are not counted, as they are
not for the single-node baseline. Every node evaluates the committed model it holds; all honest nodes hold the
same state, so a round's accuracy is taken from whichever node evaluated it (a node skips evaluating a round when
it is already behind).
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bench.report import rule_text
from swarm.config import load_genesis
from swarm.ops.cluster import Cluster, ClusterOptions, init_cluster
from swarm.ops.http_json import get_json


@dataclass
class SwarmRun:
    nodes: int
    rounds: list[int] = field(default_factory=list)        # committed rounds, ascending
    seconds: list[float] = field(default_factory=list)     # commit time of each, since start
    accuracy: list[float | None] = field(default_factory=list)
    startup_s: float = 0.0                                  # launch -> earliest node ready
    settings: str = ""                                      # what ran, read from the genesis and configs written

    def evaluated(self) -> list[tuple[int, float, float]]:
        """(round, seconds, accuracy) of the rounds some node evaluated."""
        return [(r, s, a) for r, s, a in zip(self.rounds, self.seconds, self.accuracy) if a is not None]

    def seconds_per_round(self, warmup: int = 2) -> float:
        """Median commit-to-commit interval after ``warmup`` rounds."""
        gaps = sorted(b - a for a, b in zip(self.seconds[warmup:], self.seconds[warmup + 1:]))
        return gaps[len(gaps) // 2] if gaps else float("nan")


def run_swarm(nodes: int, rounds: int, *, device: str = "auto", folder: Path | None = None,
              timeout_s: float = 900.0, options: dict | None = None,
              prepare: Callable[[Path, list], None] | None = None) -> SwarmRun:
    """Start ``nodes`` node processes, wait for ``rounds`` commits (or the timeout), stop them, return the run.
    ``prepare(folder, specs)``: called once the genesis and configs are written, before any node starts (a bench
    that changes a genesis setting or one node's config)."""
    with tempfile.TemporaryDirectory(prefix="bench-swarm-") as tmp:
        folder = Path(folder or tmp)
        overrides = {"training": {"device": device}}
        # No max_rounds: a node exits when it reaches it, and its /history would go with it.
        cluster_options = ClusterOptions(nodes=nodes, node_overrides=overrides, **(options or {}))
        specs = init_cluster(folder, cluster_options)
        if prepare is not None:
            prepare(folder, specs)
        settings = describe(folder / "genesis.yaml", cluster_options)
        cluster = Cluster(folder, specs)
        launched = time.time()
        started: dict[str, float] = {}
        histories = []
        try:
            cluster.start()
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                for spec in specs:
                    status = get_json(f"{spec.api}/status", 1.0)
                    if status is not None and spec.name not in started:
                        started[spec.name] = time.time() - status["uptime_s"]
                head = get_json(f"{specs[0].api}/status", 1.0)
                if head is not None and head["round"] > rounds:  # one more: round `rounds` got evaluated
                    histories = [get_json(f"{spec.api}/history?limit=10000", 5.0) or [] for spec in specs]
                    break
                if any(proc.poll() is not None for proc in cluster.procs.values()):
                    raise RuntimeError(f"a node exited early; logs in {folder / 'logs'}")
                time.sleep(0.5)
        finally:
            cluster.stop()
    if not histories:
        raise RuntimeError(f"the swarm did not reach round {rounds} in {timeout_s:.0f} s")
    run = _merge(nodes, histories, min(started.values(), default=launched), launched, rounds)
    run.settings = settings
    return run


def describe(genesis_path: Path, options: ClusterOptions) -> str:
    """The settings a bench's prose names, read from what the swarm ran with (not typed into the prose): the
    genesis' aggregation rule, its options and reputation handling, and the nodes' training and compression."""
    aggregation = load_genesis(genesis_path).aggregation
    rule = rule_text(aggregation.rule, aggregation.options, aggregation.nnm)
    weighting = "reputation-weighted" if aggregation.reputation_weighted else "unweighted"
    return (f"{rule}, {weighting}, reputation floor {aggregation.reputation_floor:g}, {options.compression} "
            f"updates, K={options.local_steps} local steps of batch {options.batch_size}")


def _merge(nodes: int, histories: list[list[dict]], t0: float, launched: float, last: int) -> SwarmRun:
    commit: dict[int, float] = {}
    accuracy: dict[int, float] = {}
    for history in histories:
        for row in (row for row in history if row["round"] <= last):
            commit[row["round"]] = min(commit.get(row["round"], float("inf")), row["committed_at"])
            if row.get("accuracy") is not None:
                accuracy[row["round"]] = row["accuracy"]
    run = SwarmRun(nodes, startup_s=t0 - launched)
    for r in sorted(commit):
        run.rounds.append(r)
        run.seconds.append(commit[r] - t0)
        run.accuracy.append(accuracy.get(r))
    return run


def first_reaching(points: list[tuple[int, float, float]], target: float) -> tuple[int, float] | None:
    """(round, seconds) of the first point whose accuracy is >= target, or None."""
    for round_, seconds, acc in points:
        if acc >= target:
            return round_, seconds
    return None

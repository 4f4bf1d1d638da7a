"""Scaling: real swarms of 4, 7 and 10 node processes on this one machine, seconds per round and rounds to 85%.

Why it is worth reading despite the small machine: every node process shares the same few cores, so seconds
per round grow with n here for the CPU work alone (n trainings, n^2 payload checks, PBFT's n^2 messages); on n
machines the training would run in parallel. Each node keeps K local steps on its 1/n shard, so a round sees
n*K batches: more nodes, more samples per round.

    python -m bench scaling [--sizes 4 7 10] [--rounds 20]
"""
from __future__ import annotations

import argparse
import os

from bench import live, plotting
from bench.report import table

PART = "scaling"
HEADING = "## Scaling: 4, 7 and 10 nodes on one machine"
TARGET = 0.85


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="swarm sizes (default 4 7 10)")
    parser.add_argument("--device", default="cpu")


def run(args) -> str:
    sizes = args.sizes or ([4, 7] if args.quick else [4, 7, 10])
    rounds = args.rounds or (10 if args.quick else 20)
    rows, series, settings = [], {}, ""
    for n in sizes:
        swarm = live.run_swarm(n, rounds, device=args.device)
        settings = swarm.settings
        points = swarm.evaluated()
        hit = live.first_reaching(points, TARGET)
        rows.append([n, (n - 1) // 3, f"{swarm.seconds_per_round():.2f}",
                     hit[0] if hit else "not reached", f"{hit[1]:.1f}" if hit else "-",
                     f"{points[-1][2]:.1%}" if points else "n/a", swarm.rounds[-1] if swarm.rounds else 0])
        series[f"{n} nodes"] = ([p[1] for p in points], [p[2] for p in points])
    path = plotting.line_plot(PART, [{"xlabel": "wall seconds", "ylabel": "test accuracy", "ylim": (0.5, 1.0),
                                      "hlines": [TARGET], "series": series}],
                              "swarm size on one machine", args.output)
    return "\n".join([
        f"{rounds} rounds per size, default settings ({settings}). "
        f"All node processes share this machine's {os.cpu_count()} cores.",
        "",
        table(["nodes", "f", "s / round", f"rounds to {TARGET:.0%}", f"s to {TARGET:.0%}", "final acc",
               "rounds committed"], rows),
        "",
        plotting.link(path, "accuracy against time per swarm size"),
    ])


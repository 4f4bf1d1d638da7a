"""Time-to-accuracy: a real 4-node swarm on mnist5k against one node training alone on all the data.

Why this baseline: it sees the same samples per round. Each swarm round, n nodes run K local steps of batch B on
their shards; the single node runs n*K steps of batch B on the whole training set, then applies its update with
the same server step (lr 1), same model, same seed, same learning rate. Both evaluate on the same test split
after every round. The swarm's clock starts when its first node is ready (imports and data load excluded); the
single node's clock runs only while it trains (its evaluation is not counted).

    python -m bench time_to_accuracy [--rounds 40] [--nodes 4] [--device cpu|cuda|auto]
"""
from __future__ import annotations

import argparse
import time

from bench import live, plotting
from bench.report import table
from swarm.ops.cluster import ClusterOptions
from swarm.training.trainer import Trainer

PART = "time_to_accuracy"
HEADING = "## Time to accuracy: 4-node swarm vs one node"
TARGETS = (0.85, 0.88, 0.90)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--device", default="cpu", help="training device for both sides: cpu, cuda or auto")


def single_node(rounds: int, steps: int, device: str) -> list[tuple[int, float, float]]:
    """(round, training seconds so far, accuracy) for one node doing ``steps`` local steps per round."""
    defaults = ClusterOptions()
    trainer = Trainer(model_name=defaults.model, dataset_name=defaults.dataset, node_index=0, num_nodes=1, seed=0,
                      batch_size=defaults.batch_size, lr=defaults.lr, local_steps=steps, device=device)
    params = trainer.initial_parameters()
    clock, points = 0.0, []
    for round_ in range(1, rounds + 1):
        start = time.perf_counter()
        params = params - trainer.local_update(params)
        clock += time.perf_counter() - start
        points.append((round_, clock, trainer.evaluate(params)[1]))
    return points


def run(args) -> str:
    rounds = args.rounds or (12 if args.quick else 40)
    steps = ClusterOptions().local_steps
    swarm = live.run_swarm(args.nodes, rounds, device=args.device)
    alone = single_node(rounds, args.nodes * steps, args.device)
    ours = swarm.evaluated()
    rows = []
    for target in TARGETS:
        s, a = live.first_reaching(ours, target), live.first_reaching(alone, target)
        ratio = f"{s[1] / a[1]:.2f}x" if s and a else "n/a"
        rows.append([f"{target:.0%}", *(_cell(s)), *(_cell(a)), ratio])
    body = [
        f"Swarm: {args.nodes} node processes on 127.0.0.1 (libp2p, PBFT commit; {swarm.settings} per node per "
        f"round). Single node: {args.nodes * steps} steps of the same batch size per round on the whole training "
        f"set, same model ({ClusterOptions().model}), seed, lr. Device: {args.device}. All processes share this machine's cores.",
        "",
        table(["target", "swarm rounds", "swarm s", "single rounds", "single s", "swarm time / single time"], rows),
        "",
        f"Seconds per round: swarm {swarm.seconds_per_round():.2f} (median after 2 rounds), single node "
        f"{alone[-1][1] / len(alone):.2f}. Final accuracy after {rounds} rounds: swarm "
        f"{_pct(ours[-1][2] if ours else None)}, single node {_pct(alone[-1][2])}. Swarm start-up (launch to first "
        f"node ready, not counted above): {swarm.startup_s:.1f} s.",
        "",
    ]
    path = plotting.line_plot(PART, [
        {"xlabel": "wall seconds", "ylabel": "test accuracy", "ylim": (0.5, 1.0), "hlines": list(TARGETS),
         "series": {f"swarm ({args.nodes} nodes)": ([p[1] for p in ours], [p[2] for p in ours]),
                    "single node": ([p[1] for p in alone], [p[2] for p in alone])}},
        {"xlabel": "round", "ylabel": "test accuracy", "ylim": (0.5, 1.0), "hlines": list(TARGETS),
         "series": {f"swarm ({args.nodes} nodes)": ([p[0] for p in ours], [p[2] for p in ours]),
                    "single node": ([p[0] for p in alone], [p[2] for p in alone])}},
    ], "mnist5k: swarm vs single node, same samples per round", args.output)
    body.append(plotting.link(path, "accuracy against time and rounds"))
    return "\n".join(body)


def _cell(hit):
    return ("not reached", "-") if hit is None else (str(hit[0]), f"{hit[1]:.1f}")


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:.1%}"

"""Stragglers: a real 4-node swarm where one node trains 3x slower, with late updates dropped (the default) and kept
within a bound (genesis ``staleness``, swarm/ledger/staleness.py), against the same swarm with no slow node.

Why this comparison: the slow node's shard is only seen through its updates. With late updates off, an update that
misses its round is lost (and with it the node's participation score); kept, it enters a later round scaled by
decay ** staleness. Non-iid shards (Dirichlet) make the slow node's data matter to the model. The slow node is
``fault_injection.slow_training: 3`` (it sleeps twice its training time after each local update, as on a machine
a third as fast). Local steps are many enough that training, not the commit, sets the pace of a round.

Reported per configuration: test accuracy at the last round and its best, seconds per round, how many committed
entries counted a gradient of the slow node (on time / late, with the staleness seen) and its committed
participation and score at the end (node0's store, after the run).

    python -m bench stragglers [--rounds 40] [--repeats 1] [--bound 3] [--decay 0.5]
"""
from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from pathlib import Path

import yaml

from bench import live
from bench.report import table
from swarm.config import genesis_to_dict, load_genesis, write_yaml
from swarm.ledger import reputation
from swarm.ledger.restore import snapshot_dim
from swarm.ledger.state import ReplicatedState
from swarm.ledger.store import Store

PART = "stragglers"
HEADING = "## Stragglers: late updates kept within a bound (4 nodes, one 3x slower)"
SLOW = "node3"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bound", type=int, default=3, help="genesis staleness.bound for the 'kept' runs")
    parser.add_argument("--decay", type=float, default=0.5, help="genesis staleness.decay")
    parser.add_argument("--slow", type=float, default=3.0, help="the slow node's fault_injection.slow_training")
    parser.add_argument("--local-steps", type=int, default=100)
    parser.add_argument("--alpha", type=float, default=0.3, help="Dirichlet concentration of the shards")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu")


def _prepare(bound: int, decay: float, slow: float, alpha: float):
    """Genesis staleness settings, Dirichlet shards on every node, and the slow node's fault injection."""
    def prepare(folder: Path, specs) -> None:
        genesis = load_genesis(folder / "genesis.yaml")
        genesis.staleness.bound, genesis.staleness.decay = bound, decay
        write_yaml(folder / "genesis.yaml", genesis_to_dict(genesis))
        for spec in specs:
            config = yaml.safe_load(spec.config_path.read_text())
            config["dataset"] = {**config["dataset"], "partition": "dirichlet", "alpha": alpha}
            if spec.name == SLOW and slow > 1.0:
                config.setdefault("fault_injection", {})["slow_training"] = slow
            write_yaml(spec.config_path, config)
    return prepare


def _slow_node_counts(folder: Path, last: int) -> dict:
    """From node0's store: entries (rounds 1..last) counting a gradient of the slow node on time and late, the
    staleness of the late ones, and the slow node's committed reputation in the newest snapshot."""
    store = Store(folder / "data" / "node0", read_only=True)
    try:
        genesis = load_genesis(folder / "genesis.yaml")
        slow_id = next(m.peer_id for m in genesis.members if m.name == SLOW)
        on_time = late = 0
        staleness = Counter()
        for row in store.rows(1, last):
            if slow_id in store.gradient_senders(row.entry["gradients"]):
                on_time += 1
            for digest, s in row.entry["params"].get("stale", []):
                if store.gradient_senders([digest]) == [slow_id]:
                    late += 1
                    staleness[s] += 1
        newest = store.latest_snapshot()
        rep = _reputation(newest[1], newest[2], genesis, slow_id) if newest is not None else None
        return {"on_time": on_time, "late": late, "staleness": dict(sorted(staleness.items())), "rep": rep}
    finally:
        store.close()


def _reputation(state_hash: bytes, data: bytes, genesis, slow_id: str):
    """(round, participation, score) of the slow node in a snapshot (its size read as the audit reads it)."""
    state = ReplicatedState.deserialize(data, snapshot_dim(data, state_hash), genesis.peer_ids)
    rep = state.reputation_of(slow_id)
    return state.round, rep.participation, reputation.score(rep)


def _one(label: str, args, rounds: int, bound: int, slow: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-stragglers-") as tmp:
        folder = Path(tmp)
        run = live.run_swarm(4, rounds, device=args.device, folder=folder,
                             options={"local_steps": args.local_steps},
                             prepare=_prepare(bound, args.decay, slow, args.alpha))
        counts = _slow_node_counts(folder, rounds)
    points = run.evaluated()
    final = points[-1][2] if points else float("nan")
    best = max((p[2] for p in points), default=float("nan"))
    return {"label": label, "final": final, "best": best, "s_per_round": run.seconds_per_round(),
            "seconds": run.seconds[-1] if run.seconds else float("nan"), "settings": run.settings, **counts}


def run(args) -> str:
    rounds = args.rounds or (15 if args.quick else 40)
    configs = [("no slow node, late updates off", 0, 1.0),
               (f"{SLOW} {args.slow:g}x slower, late updates off", 0, args.slow),
               (f"{SLOW} {args.slow:g}x slower, kept (bound {args.bound}, decay {args.decay:g})", args.bound,
                args.slow)]
    rows, settings = [], ""
    for repeat in range(args.repeats):
        for label, bound, slow in configs:
            result = _one(label, args, rounds, bound, slow)
            rep, settings = result["rep"], result["settings"]
            rep_cell = f"{rep[1]:.2f} / {rep[2]:.2f} (round {rep[0]})" if rep else "n/a"
            stale = ", ".join(f"s={s}: {n}" for s, n in result["staleness"].items()) or "-"
            rows.append([label, f"{result['final']:.3f}", f"{result['best']:.3f}", f"{result['s_per_round']:.2f}",
                         f"{result['seconds']:.0f}", result["on_time"], result["late"], stale, rep_cell])
            print(" | ".join(map(str, rows[-1])), flush=True)
    headers = ["configuration", f"accuracy at round {rounds}", "best accuracy", "s/round (median)",
               f"s to round {rounds}", f"entries with {SLOW} on time", f"entries with {SLOW} late",
               "late by", f"{SLOW} participation / score at the end"]
    body = [
        f"A real 4-node swarm (node processes on 127.0.0.1, libp2p, PBFT commit; {settings}) on mnist5k, mlp, "
        f"Dirichlet shards (alpha {args.alpha}), {rounds} rounds, {args.repeats} run(s) per configuration. {SLOW} has `fault_injection.slow_training: "
        f"{args.slow:g}` (each local update takes {args.slow:g}x as long). Late updates: genesis `staleness.bound` "
        f"and `decay` (a late update enters scaled by decay ** staleness). Accuracy: test split, the committed model.",
        "",
        table(headers, rows),
    ]
    return "\n".join(body)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    add_arguments(parser)
    print(run(parser.parse_args()))

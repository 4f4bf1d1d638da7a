"""Compression: bytes on the wire per round and final accuracy for each scheme, with and without error feedback.

Bytes are the real encoded payload sizes from swarm.round.compression (plus the signed envelope around each one, measured
on a real envelope), times the n(n-1) pushes of a round's all-to-all fan-out. Accuracy comes from the in-process
simulation (bench/sim.py) of a 4-node swarm without attackers, under the genesis default rule (read from
swarm/ops/cluster.py, as `swarm cluster init` writes it) and under the reputation-weighted mean: a robust rule over
sparse top-k updates whose supports barely overlap keeps little of them, so the rule matters as much as the scheme.

    python -m bench compression [--seeds 3] [--rounds 20]
"""
from __future__ import annotations

import argparse
import statistics
import sys

from bench import plotting
from bench.report import table
from bench.robustness import default_variant, split_rule
from bench.sim import DATASET, SimConfig, run_all
from crypto.keys import NodeKey
from swarm.round.gradient import make_gradient

PART = "compression"
HEADING = "## Compression: wire bytes and accuracy (in-process simulation)"
SCHEMES = ("none", "fp16", "int8", "topk", "topk_int8")
MEAN = (("mean", (), True), "mean + rep. weights")
TARGET = 0.85


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--topk", type=float, default=0.01, help="top-k fraction")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--device", default="cpu")


def envelope_overhead(payload_size: int = 1000) -> int:
    """Bytes a signed gradient envelope adds around its payload (header, fields, Ed25519 signature)."""
    return len(make_gradient(NodeKey.generate(), "local", 1, b"\0" * 32, b"\0" * payload_size)) - payload_size


def rules() -> tuple[tuple[tuple, str], ...]:
    """((rule, options, weighted), label) of the genesis default, then of the reputation-weighted mean."""
    default = default_variant()
    rule, options = split_rule(default.rule)
    label = f"{default.rule}{' + rep. weights' if default.weighted else ''}, default"
    return ((rule, options, default.weighted), label), MEAN


def run(args) -> str:
    compared = rules()
    seeds = args.seeds or (1 if args.quick else 3)
    rounds = args.rounds or (8 if args.quick else 20)
    configs = [SimConfig(nodes=args.nodes, f=(args.nodes - 1) // 3, rule=rule, options=options, weighted=weighted,
                         seed=seed, rounds=rounds, compression=scheme, topk=args.topk, error_feedback=ef,
                         device=args.device)
               for scheme in SCHEMES for ef in (True, False) for (rule, options, weighted), _ in compared
               for seed in range(seeds)]
    results = run_all(configs, workers=args.workers or _cores(),
                      progress=lambda d, t: print(f"  compression: {d}/{t}", file=sys.stderr) if d == t else None)
    by = {}
    for res in results:
        c = res.config
        by.setdefault((c.compression, c.error_feedback), {}).setdefault((c.rule, c.options, c.weighted), []).append(res)
    overhead = envelope_overhead()
    fanout = args.nodes * (args.nodes - 1)
    baseline = statistics.fmean(r.payload_bytes[-1] for r in by[("none", True)][compared[0][0]]) + overhead
    rows, series = [], {}
    for (scheme, ef), per_rule in by.items():
        payload = statistics.fmean(p for runs in per_rule.values() for r in runs for p in r.payload_bytes)
        wire = (payload + overhead) * fanout
        row = [_scheme(scheme, args.topk), "on" if ef else "off", f"{payload / 1024:.1f} KiB",
               f"{wire / (1 << 20):.2f} MiB", f"{(payload + overhead) / baseline:.3f}"]
        for key, label in compared:
            runs = per_rule[key]
            final = statistics.fmean(r.final for r in runs)
            reach = [next((i + 1 for i, a in enumerate(r.accuracy) if a >= TARGET), None) for r in runs]
            hits = [x for x in reach if x is not None]
            row += [f"{100 * final:.1f}",
                    f"{statistics.median(hits):g}" + ("" if len(hits) == len(reach) else f" ({len(hits)}/{len(reach)})")
                    if hits else "not reached"]
            if key == compared[0][0]:
                curve = [statistics.fmean(a) for a in zip(*(r.accuracy for r in runs))]
                series[f"{_scheme(scheme, args.topk)}{'' if ef else ' no EF'}"] = (list(range(1, rounds + 1)), curve)
        rows.append(row)
    header = ["scheme", "error feedback", "payload / node / round", f"wire / round (x{fanout} pushes)",
              "vs none"]
    for _, label in compared:
        header += [f"final acc % ({label})", f"rounds to {TARGET:.0%} ({label})"]
    path = plotting.line_plot(PART, [{"xlabel": "round", "ylabel": "test accuracy", "ylim": (0.0, 1.0),
                                      "hlines": [TARGET], "series": series}],
                              f"{args.nodes} nodes, {compared[0][1]}: accuracy per round by scheme", args.output)
    return "\n".join([
        f"{args.nodes} nodes, no attacker, iid, {configs[0].model} on {DATASET} ({results[0].params.numel():,} "
        f"parameters), {rounds} rounds, seeds "
        f"0..{seeds - 1} (accuracy: mean over seeds). Wire bytes: mean encoded payload plus the {overhead}-byte "
        f"signed envelope, times {fanout} pushes per round (each node to each peer; fetches by digest not counted). "
        f"top-k keeps {args.topk:.0%} of the coordinates.",
        "",
        table(header, rows),
        "",
        plotting.link(path, "accuracy per round by compression scheme"),
    ])


def _scheme(scheme: str, k: float) -> str:
    return {"topk": f"top-k {k:.0%}", "topk_int8": f"top-k {k:.0%} + int8"}.get(scheme, scheme)


def _cores() -> int:
    import os
    return os.cpu_count() or 1

"""Robustness under attack: final and best accuracy, and when the attackers were quarantined, per rule and attack.

Grid: f=1 of 4 and f=2 of 7 (the last f nodes attack); attacks sign_flip, alie, ipm, gaussian, label_flip (and
no attack as the baseline); every rule a genesis can select (nnm+ rules: nearest-neighbour mixing first), plain,
some also reputation-weighted (--weighted), plus a mean with quarantine off (the textbook average); iid shards and
Dirichlet(alpha) label skew; several seeds. The genesis default (swarm/config.py AggregationSpec) is marked. Runs
in-process with bench/sim.py (the real Trainer, attacks, compressor and apply()), because the grid has hundreds of
cells; the multi-process swarm is measured by the time-to-accuracy and scaling parts.

    python -m bench robustness [--seeds 3] [--rounds 12] [--attacks ...] [--rules ...] [--sizes 4 7]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, replace

from bench import plotting
from bench.report import table
from bench.sim import DATASET, SimConfig, SimResult, run_all
from swarm.config import WEIGHTABLE_RULES, AggregationSpec
from swarm.faults.attacks import parse_attack
from swarm.ledger.apply import FALLBACK_RULE
from swarm.ops.cluster import DEFAULT_RULE, RULE_OPTIONS

PART = "robustness"
HEADING = "## Robustness under attack (in-process simulation)"
ATTACKS = ("none", "sign_flip", "alie", "ipm", "gaussian", "label_flip")
RULES = ("mean", "krum", "multikrum", "median", "trimmed_mean", "bulyan", "centered_clipping",
         "centered_clipping:auto", "nnm+median", "nnm+trimmed_mean", "nnm+krum")
# A row name "rule:tau" runs the rule with that option (genesis aggregation.options); "auto" is centered
# clipping's radius taken from the round (swarm/aggregation/centered_clipping.py).
OPTION_IN_ROW_NAME = {"centered_clipping": "tau"}
WEIGHTED = ("mean", "median")  # rules also run reputation-weighted by default (--weighted)
SIZES = {4: 1, 7: 2}   # n -> f (and the number of attackers)
FAILING = 0.80         # cells under this final accuracy are bold
BROKEN = 0.50          # a rule whose worst attack falls under this needs a warning in the README
FLOOR = AggregationSpec().reputation_floor   # the genesis reputation floor: quarantine for every row but one
NEED = {"krum": (2, 3), "multikrum": (2, 3), "bulyan": (4, 3)}  # rule -> (a, b): apply() needs n >= a*f + b


@dataclass(frozen=True)
class Variant:
    rule: str
    weighted: bool
    floor: float = FLOOR

    @property
    def label(self) -> str:
        if self.floor == 0.0:
            return f"{self.rule}, no reputation"
        label = f"{self.rule} + rep. weights" if self.weighted else self.rule
        return label + (" **(default)**" if self == default_variant() else "")


def default_variant() -> Variant:
    """The aggregation a new genesis gets (swarm/ops/cluster.py DEFAULT_RULE, the rest AggregationSpec's
    defaults), read from the code so that the table cannot drift from it."""
    spec = AggregationSpec()
    written = tuple(RULE_OPTIONS.get(DEFAULT_RULE, {}).items())
    return Variant(row_name(DEFAULT_RULE, written), spec.reputation_weighted, spec.reputation_floor)


def variants(rules, weighted=WEIGHTED) -> list[Variant]:
    """Each rule plain (the plain mean with quarantine off: the textbook average) and, for the rules in
    ``weighted``, reputation-weighted; the genesis default always included."""
    out = []
    for rule in rules:
        out.append(Variant(rule, False, 0.0 if rule == "mean" else FLOOR))
        if rule in weighted:
            out.append(Variant(rule, True))
    if default_variant() not in out:
        out.append(default_variant())
    return out


def split_rule(name: str) -> tuple[str, tuple]:
    """("centered_clipping:auto") -> ("centered_clipping", (("tau", "auto"),)); a plain name has no options."""
    rule, _, value = name.partition(":")
    return (rule, ((OPTION_IN_ROW_NAME[rule], value),)) if value else (rule, ())


def row_name(rule: str, options: tuple) -> str:
    return f"{rule}:{dict(options)[OPTION_IN_ROW_NAME[rule]]}" if options else rule


def falls_back(cfg: SimConfig) -> bool:
    """apply() replaces Krum, Multi-Krum (n < 2f+3) and Bulyan (n < 4f+3) by the median for every round
    (swarm/ledger/apply.py); with NNM first the fallback median runs without it."""
    need = _need(cfg.rule, cfg.f)
    return need is not None and cfg.nodes < need


def _need(rule: str, f: int) -> int | None:
    """The fewest rows apply() runs ``rule`` on (NEED), None for a rule that runs on any n."""
    a, b = NEED.get(rule.removeprefix("nnm+"), (None, None))
    return None if a is None else a * f + b


def simulate_grid(configs: list[SimConfig], workers: int) -> list[SimResult]:
    """Run the grid, simulating a falling-back Krum cell once as the median cell it is (same inputs, same
    aggregate); its rules_used still says median, so the table labels the row "(→median)"."""
    as_median = {cfg: replace(cfg, rule=FALLBACK_RULE) for cfg in configs if falls_back(cfg)}
    unique = list(dict.fromkeys(as_median.get(cfg, cfg) for cfg in configs))
    by_config = dict(zip(unique, run_all(unique, workers=workers, progress=_progress)))
    return [replace(by_config[as_median.get(cfg, cfg)], config=cfg) for cfg in configs]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=ATTACKS)
    parser.add_argument("--rules", nargs="+", default=list(RULES), choices=RULES)
    parser.add_argument("--weighted", nargs="*", default=list(WEIGHTED),
                        choices=[r for r in RULES if r.removeprefix("nnm+") in WEIGHTABLE_RULES],
                        help="rules also run reputation-weighted")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, choices=sorted(SIZES))
    parser.add_argument("--partitions", nargs="+", default=["iid", "dirichlet"], choices=["iid", "dirichlet"])
    parser.add_argument("--alpha", type=float, default=0.3)
    parser.add_argument("--workers", type=int, default=None, help="simulation processes (default: cores)")
    parser.add_argument("--device", default="cpu")


def grid(args) -> list[SimConfig]:
    seeds = args.seeds or (1 if args.quick else 3)
    rounds = args.rounds or (8 if args.quick else 12)
    sizes = args.sizes or list(SIZES)
    configs = []
    for n in sizes:
        for partition in args.partitions:
            for attack in args.attacks:
                for v in variants(args.rules, args.weighted):
                    rule, options = split_rule(v.rule)
                    for seed in range(seeds):
                        configs.append(SimConfig(
                            nodes=n, f=SIZES[n], byzantine=0 if attack == "none" else SIZES[n], attack=attack,
                            rule=rule, options=options, weighted=v.weighted, reputation_floor=v.floor, partition=partition,
                            alpha=args.alpha, seed=seed, rounds=rounds, device=args.device))
    return configs


CEILING = "honest members only, mean (ceiling)"


def ceiling_grid(configs: list[SimConfig]) -> list[SimConfig]:
    """Per size, partition and seed: the honest members alone on their own shards (sim.SimConfig.honest_only).
    The most any rule can reach under attack: the attackers' shards are lost to the swarm whatever it does."""
    keys = dict.fromkeys((c.nodes, c.partition, c.alpha, c.seed, c.rounds, c.device) for c in configs)
    return [SimConfig(nodes=n, f=SIZES[n], byzantine=SIZES[n], rule="mean", weighted=False, reputation_floor=0.0,
                      partition=partition, alpha=alpha, seed=seed, rounds=rounds, device=device, honest_only=True)
            for n, partition, alpha, seed, rounds, device in keys]


def run(args) -> str:
    configs = grid(args)
    started = time.perf_counter()
    results = simulate_grid(configs, args.workers or _cores())
    ceilings: dict = {}
    if any(a != "none" for a in args.attacks):
        for res in run_all(ceiling_grid(configs), workers=args.workers or _cores()):
            ceilings.setdefault((res.config.nodes, res.config.partition), []).append(res)
    elapsed = time.perf_counter() - started
    cells = _group(results)
    c0 = configs[0]
    observing = [a for a in args.attacks if a != "none" and parse_attack(a).needs_observed]
    sees = (f" ({' and '.join(a for a in observing)} see{'s' if len(observing) == 1 else ''} the honest updates "
            f"of the round)" if observing else "")
    compression = "no compression" if c0.compression == "none" else f"{c0.compression} compression"
    body = [
        f"In-process simulation ({len(configs)} cells, {_simulated(configs)} simulated, "
        f"{sum(map(len, ceilings.values()))} honest-only ceiling runs, {elapsed / 60:.1f} min on "
        f"this machine): every round each "
        f"node runs the real Trainer ({c0.model} on {DATASET}, K={c0.local_steps} local steps of batch "
        f"{c0.batch_size}, lr {c0.lr}), the last f nodes replace their update by the attack{sees}, and the real "
        f"`apply()` aggregates with reputation and quarantine (floor {FLOOR:g}). Not real "
        f"processes: the multi-process swarm is covered by the time-to-accuracy and scaling parts and by the tests. "
        f"{c0.rounds} rounds, seeds 0..{max(c.seed for c in configs)}, {compression}. {_fallback_text(args)}"
        f"`nnm+rule`: nearest-neighbour mixing (Allouah et al. "
        f"2023) before the rule. `centered_clipping`: {_clipping_options()}, from the coordinate median; "
        f"`centered_clipping:auto`: tau taken each round as the median of the rows' distances to that median.",
        "",
        f"Cell: final / best test accuracy (%), mean over seeds; `q3` = median round at which the attackers were "
        f"first quarantined (with the share of attacker-seed pairs ever quarantined when not all). **Bold**: final "
        f"accuracy under {FAILING:.0%}. \"+ rep. weights\": rows weighted by committed reputation "
        f"(`RoundRules(reputation_weighted=True)`). Plain rules keep quarantine (floor {FLOOR:g}), except the plain "
        f"mean, which runs without reputation at all (\"no reputation\"). **(default)**: the genesis default "
        f"(what `swarm cluster init` writes: `DEFAULT_RULE` in swarm/ops/cluster.py). \"{CEILING}\": the "
        f"attackers take no part at all and the honest members average their own shards' updates (the same "
        f"shards as in the attacked cells): the most a perfect filter could reach, since the attackers' data are "
        f"lost to the swarm whatever the rule does; under no attack, every member is honest and the row is the "
        f"plain mean's.",
        "",
        *_summary(cells, args, ceilings),
    ]
    for (n, partition), rows in cells.items():
        attacks = [a for a in args.attacks]
        header = [f"rule (n={n}, f={SIZES[n]}, {_partition(partition, args.alpha)})", *attacks]
        lines = [[_row_label(v, rows[v]), *(_cell(rows[v].get(a)) for a in attacks)] for v in rows]
        if (n, partition) in ceilings:
            mean = rows.get(Variant("mean", False, 0.0), {}).get("none")
            lines.append([CEILING, *(_cell(mean) if a == "none" else _cell(ceilings[(n, partition)])
                                     for a in attacks)])
        body += [f"### n={n}, f={SIZES[n]}, {_partition(partition, args.alpha)}", "", table(header, lines), ""]
    body += _worst_case(cells, args, ceilings)
    body.append(_plot(cells, args))
    return "\n".join(body)


def _fallback_text(args) -> str:
    """What apply() does with this grid's Krum, Multi-Krum and Bulyan rows, from NEED and the sizes that ran."""
    ran = {r.removeprefix("nnm+") for r in args.rules} & set(NEED)
    if not ran:
        return ""
    groups: dict = {}
    for rule in sorted(ran, key=list(NEED).index):
        groups.setdefault(NEED[rule], []).append(_RULE_NAMES.get(rule, rule))
    needs = ", ".join(f"{' and '.join(names)} need{'s' if len(names) == 1 else ''} n >= {a}f+{b}"
                      for (a, b), names in groups.items())
    text = (f"{needs[0].upper()}{needs[1:]}: where n is smaller `apply()` uses the {FALLBACK_RULE} for every round "
            f"(rows marked →{FALLBACK_RULE}, simulated once as the {FALLBACK_RULE} cell they equal)")
    sizes = args.sizes or list(SIZES)
    running = []
    for (a, b), names in groups.items():
        for n in sizes:
            f = SIZES[n]
            if n >= a * f + b:
                running.append(f"with f={f} of {n} {' and '.join(names)} run{'s' if len(names) == 1 else ''} as "
                               f"{'itself' if len(names) == 1 else 'themselves'} until the quarantine leaves fewer "
                               f"than {a * f + b} rows")
    return text + ("; " + "; ".join(running) if running else "") + ". "


_RULE_NAMES = {"krum": "Krum", "multikrum": "Multi-Krum", "bulyan": "Bulyan"}


def _clipping_options() -> str:
    from inspect import signature

    from swarm.aggregation.centered_clipping import aggregate_centered_clipping
    params = signature(aggregate_centered_clipping).parameters
    return f"tau {params['tau'].default:g}, {params['iterations'].default} iterations"


def _summary(cells: dict, args, ceilings: dict) -> list[str]:
    """The headline: the default against the textbook mean without attack, its worst attack, and every row whose
    worst attack falls under BROKEN, per setting."""
    default, mean = default_variant(), Variant("mean", False, 0.0)
    attacked = [a for a in args.attacks if a != "none"]
    lines = []
    for (n, partition), rows in cells.items():
        setting = f"n={n}, f={SIZES[n]}, {_partition(partition, args.alpha)}"
        parts = []
        if default in rows and "none" in rows[default]:
            text = f"default {_final(rows[default]['none']):.1f}% without attack"
            if mean in rows and "none" in rows[mean]:
                text += f" (mean {_final(rows[mean]['none']):.1f}%)"
            parts.append(text)
            if attacked:
                worst = min(attacked, key=lambda a: _final(rows[default][a]))
                text = f"worst attack {_final(rows[default][worst]):.1f}% ({worst})"
                if (n, partition) in ceilings:
                    text += f", honest-only ceiling {_final(ceilings[(n, partition)]):.1f}%"
                parts.append(text)
        broken = [f"{_row_label(v, by)} {_final(by[a]):.1f}% ({a})" for v, by in rows.items()
                  for a in [min(attacked, key=lambda a: _final(by[a]))] if attacked and _final(by[a]) < 100 * BROKEN]
        if broken:
            parts.append(f"under {BROKEN:.0%}: " + "; ".join(broken))
        lines.append(f"- {setting}: " + "; ".join(parts) + ".")
    return [*lines, ""] if lines else []


def _final(runs: list[SimResult]) -> float:
    return 100 * statistics.fmean(r.final for r in runs)


def _simulated(configs: list[SimConfig]) -> int:
    return len({replace(c, rule=FALLBACK_RULE) if falls_back(c) else c for c in configs})


def _group(results: list[SimResult]) -> dict:
    """{(n, partition): {Variant: {attack: [results over seeds]}}} in grid order."""
    cells: dict = {}
    for res in results:
        c = res.config
        row = cells.setdefault((c.nodes, c.partition), {}).setdefault(
            Variant(row_name(c.rule, c.options), c.weighted, c.reputation_floor), {})
        row.setdefault(c.attack, []).append(res)
    return cells


def _row_label(v: Variant, by_attack: dict) -> str:
    """The variant's name, plus the rule apply() used instead and in what share of the row's rounds: Krum needs
    n >= 2f+3 usable gradients, so with f=1 of 4 it is always the median, and with f=2 of 7 it becomes the median
    once the quarantine leaves fewer than 7."""
    used = [rule for runs in by_attack.values() for res in runs for rule in res.rules_used]
    others = sorted(set(used) - {split_rule(v.rule)[0]})
    if not others:
        return v.label
    share = sum(rule != split_rule(v.rule)[0] for rule in used) / len(used)
    return v.label + f" (→{', '.join(others)}" + ("" if share == 1 else f" in {share:.0%} of rounds") + ")"


def _cell(runs: list[SimResult] | None) -> str:
    if not runs:
        return ""
    final = statistics.fmean(r.final for r in runs)
    best = statistics.fmean(r.best for r in runs)
    text = f"{100 * final:.1f} / {100 * best:.1f}"
    if final < FAILING:
        text = f"**{text}**"
    rounds = [q for r in runs for q in r.quarantined_at.values()]
    caught = [q for q in rounds if q is not None]
    if caught:
        text += f" · q{statistics.median(caught):g}"
        if len(caught) < len(rounds):
            text += f" ({len(caught)}/{len(rounds)})"
    return text


def _worst_case(cells: dict, args, ceilings: dict) -> list[str]:
    """Per variant and setting: the lowest mean final accuracy over the attacks, and which attack it was."""
    settings = list(cells)
    attacked = [a for a in args.attacks if a != "none"]
    if not attacked:
        return []
    rows = []
    first = next(iter(cells.values()))
    for v in first:
        row = [v.label]   # what apply() used instead differs per setting: said in each cell, not in the label
        for key in settings:
            by_attack = cells[key][v]
            worst = min(attacked, key=lambda a: statistics.fmean(r.final for r in by_attack[a]))
            row.append(f"{100 * statistics.fmean(r.final for r in by_attack[worst]):.1f} ({worst})"
                       + _row_label(v, by_attack).removeprefix(v.label))
        rows.append(row)
    if ceilings:
        rows.append([CEILING, *(f"{_final(ceilings[key]):.1f}" if key in ceilings else "" for key in settings)])
    header = ["rule", *(f"n={n}, {_partition(p, args.alpha)}" for n, p in settings)]
    return ["### Worst attack per rule (mean final accuracy %, attack; →: the rule apply() used instead in that "
            "setting, over all its attacks)", "", table(header, rows), ""]


def _plot(cells: dict, args) -> str:
    key = next(iter(cells))
    rows = cells[key]
    attacked = [a for a in args.attacks if a != "none"] or list(args.attacks)
    wanted = [v for v in rows if v.rule == "mean" or v == default_variant()]
    panels = []
    for attack in attacked:
        series = {}
        for v in wanted:
            runs = rows[v][attack]
            curve = [statistics.fmean(acc) for acc in zip(*(r.accuracy for r in runs))]
            series[v.label] = (list(range(1, len(curve) + 1)), curve)
        panels.append({"xlabel": f"round ({attack})", "ylabel": "test accuracy", "ylim": (0.0, 1.0),
                       "series": series})
    n, partition = key
    title = f"n={n}, f={SIZES[n]}, {partition}: accuracy per round, mean over seeds"
    path = plotting.line_plot(PART, panels, title, args.output)
    return plotting.link(path, "accuracy per round under each attack")


def _partition(partition: str, alpha: float) -> str:
    return f"Dirichlet α={alpha:g}" if partition == "dirichlet" else "iid"


def _progress(done: int, total: int) -> None:
    if done == total or done % 25 == 0:
        print(f"  robustness: {done}/{total} runs", file=sys.stderr, flush=True)


def _cores() -> int:
    import os
    return os.cpu_count() or 1

"""Reputation drift: does a clean run keep every honest member over the floor, and are attackers still caught?

Issue 18: in clean 4-node runs an honest member was quarantined (and stayed out) or drifted down. This script runs
the real ``swarm.ledger.apply.apply`` (the default RoundRules: median rule, f=1 of 4, floor 0.6, every member
signing every certificate) in process, with the working tree's code ("new") or the code at ``--old-rev`` loaded
from git ("old", with the old genesis default of reputation-weighted rows), on:

- ``real``: 4 honest members training for real (bench/sim.py's setup: mlp on mnist5k, iid shards, 10 local
  steps of batch 64, lr 0.2): late in training the shared signal has shrunk and the updates are mostly each
  member's own noise;
- ``synthetic``: update_i = g_r + sigma_i * z_i with a shared true gradient g_r whose size decays as
  1 / (1 + r / 50) (SNR from 3 down to ~0.05 per coordinate) and independent noise, members' noise levels equal
  (``iid``) or 1, 1, 1.5, 2.5 (``noniid``);
- ``attack``: the real setup with node03 attacking from round 1 and, for the late case, from round 301 on a
  trained model (sign_flip, scale:10, gaussian:1, ipm:0.5, zero (a free rider), alie:1.5).

Per run: the worst honest member's lowest score, the member-rounds in which an honest member was quarantined (and
the first), and for attacks the attacker's first quarantined round counted from the start of the attack, and in
how many of its 30 attacking rounds it was out. ``--trace FILE`` writes every member's per-round geometry (distance
over the median distance, cosine, norm over the median norm), observed quality and score as CSV.

    PYTHONPATH=. OMP_NUM_THREADS=1 python bench/reputation_drift.py [--rounds 1000] [--seeds 0 1 2] \
        [--parts real synthetic attack] [--code new]
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import torch

import swarm.ledger
from swarm.faults.attacks import parse_attack
from swarm.ledger.state import genesis_state
from swarm.round.gradient import Gradient

ROOT = Path(__file__).resolve().parent.parent
MEMBERS = ["node00", "node01", "node02", "node03"]
ATTACKS = ("sign_flip", "scale:10", "gaussian:1", "ipm:0.5", "zero", "alie:1.5")
_CODE: dict[str, tuple] = {}


def code(which: str, old_rev: str):
    """(apply module, reputation module) of the working tree ("new") or of ``old_rev`` ("old")."""
    if which not in _CODE:
        if which == "new":
            from swarm.ledger import apply as new_apply
            from swarm.ledger import reputation as new_reputation
            _CODE[which] = (new_apply, new_reputation)
        else:
            saved = sys.modules["swarm.ledger.reputation"], swarm.ledger.reputation
            rep = _load_from_git(old_rev, "swarm/ledger/reputation.py", "swarm_old_reputation")
            sys.modules["swarm.ledger.reputation"] = swarm.ledger.reputation = rep  # the old apply binds it
            try:
                app = _load_from_git(old_rev, "swarm/ledger/apply.py", "swarm_old_apply")
            finally:
                sys.modules["swarm.ledger.reputation"], swarm.ledger.reputation = saved
            _CODE[which] = (app, rep)
    return _CODE[which]


def _load_from_git(rev: str, path: str, name: str):
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path}"], check=True, capture_output=True,
                            text=True).stdout
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    exec(compile(source, f"{rev}:{path}", "exec"), module.__dict__)  # noqa: S102 (this repository's own code)
    return module


NEW_RULE = ("median", False)  # (rule, nnm) the working tree's code runs with: --rule
NEW_OPTIONS: dict = {}  # the rule's options (genesis aggregation.options): --option KEY=VALUE


class Run:
    """One simulated swarm: state, rules and bookkeeping; ``step(updates)`` applies one round."""

    def __init__(self, which: str, old_rev: str, params: torch.Tensor, label: str = "", trace=None):
        self.apply_mod, self.rep = code(which, old_rev)
        # the old code's genesis default weighted rows by reputation; the new default does not
        name, nnm = NEW_RULE if which == "new" else ("median", False)
        options = NEW_OPTIONS if which == "new" else {}
        self.rules = self.apply_mod.RoundRules(f=1, rule=name, nnm=nnm, reputation_weighted=which == "old",
                                               **({"options": dict(options)} if options else {}))
        self.state = genesis_state(params, MEMBERS, b"\0" * 32)
        self.lowest = {m: 1.0 for m in MEMBERS}
        self.quarantined_rounds = {m: 0 for m in MEMBERS}
        self.first = {m: None for m in MEMBERS}
        self.already_out = False  # node03 was quarantined (while honest) when its attack began
        self.label, self.trace = label, trace

    def step(self, round_: int, updates: dict[str, torch.Tensor]) -> None:
        gradients = [Gradient(m, round_, self.state.hash, b"", b"", updates[m]) for m in MEMBERS]
        aggregated = self.apply_mod.aggregate_round(self.state, gradients, self.rules)
        before = dict(self.state.reputation)
        applied = self.apply_mod.finish(self.state, aggregated, frozenset(MEMBERS))
        self.state = applied.state
        for m, rep in self.state.reputation:
            self.lowest[m] = min(self.lowest[m], self.rep.score(rep))
        for m in applied.quarantined:
            self.quarantined_rounds[m] += 1
            if self.first[m] is None:
                self.first[m] = round_
        if self.trace is not None:
            self._trace(round_, aggregated, before, applied)

    def _trace(self, round_, aggregated, before, applied) -> None:
        geometry = aggregated.geometry
        mid = lambda xs: sorted(xs)[1] * 0.5 + sorted(xs)[2] * 0.5  # noqa: E731 (4 members)
        md = mid([g[0] for g in geometry.values()])
        mn = mid([g[2] for g in geometry.values()]) if len(next(iter(geometry.values()))) > 2 else 0.0
        after = dict(self.state.reputation)
        for m in MEMBERS:
            g = geometry[m]
            norm = g[2] / mn if mn > 0 else 1.0
            self.trace.write(f"{self.label},{round_},{m},{g[0] / md if md > 0 else 0.0:.4f},{g[1]:.4f},{norm:.4f},"
                             f"{before[m].quality:.4f},{after[m].quality:.4f},{self.rep.score(after[m]):.4f},"
                             f"{int(m in applied.quarantined)}\n")

    def honest_summary(self, honest=MEMBERS) -> str:
        worst = min(honest, key=lambda m: self.lowest[m])
        q = sum(self.quarantined_rounds[m] for m in honest)
        firsts = [self.first[m] for m in honest if self.first[m] is not None]
        return (f"worst honest min score {self.lowest[worst]:.3f} ({worst}); honest quarantined in {q} "
                f"member-rounds, first at round {min(firsts) if firsts else '-'}")


def trainers(seed: int):
    from bench.sim import CACHED
    from swarm.training.trainer import Trainer
    return {m: Trainer(model_name="mlp", dataset_name=CACHED, node_index=i, num_nodes=4, seed=seed, batch_size=64,
                       lr=0.2, local_steps=10, partition="iid", device="cpu") for i, m in enumerate(MEMBERS)}


def real(which: str, seed: int, rounds: int, old_rev: str, attack: str = "none", attack_from: int = 1,
         trace=None) -> Run:
    local = trainers(seed)
    run = Run(which, old_rev, local[MEMBERS[0]].initial_parameters(), f"real:{seed}:{attack}:{attack_from}", trace)
    bad = parse_attack(attack, seed=seed)
    rng = torch.Generator().manual_seed(seed)
    for r in range(1, rounds + 1):
        if attack != "none" and r == attack_from and r > 1:  # count the attacker's quarantine from here on
            run.already_out = run.rep.is_quarantined(dict(run.state.reputation)["node03"],
                                                     run.rules.reputation_floor)
            run.first["node03"], run.quarantined_rounds["node03"] = None, 0
        updates = {m: local[m].local_update(run.state.params) for m in MEMBERS}
        if attack != "none" and r >= attack_from:
            updates["node03"] = bad.apply(updates["node03"], observed=[updates[m] for m in MEMBERS[:3]], rng=rng)
        run.step(r, updates)
    return run


def synthetic(which: str, seed: int, rounds: int, old_rev: str, noise=(1.0, 1.0, 1.0, 1.0), d: int = 20000,
              trace=None) -> Run:
    gen = torch.Generator().manual_seed(seed)
    run = Run(which, old_rev, torch.zeros(d), f"synthetic:{seed}:{noise}", trace)
    direction = torch.randn(d, generator=gen)  # the true gradient drifts slowly: a new direction mixed in each round
    for r in range(1, rounds + 1):
        direction = 0.9 * direction + 0.1 * torch.randn(d, generator=gen)
        shared = direction / float(direction.std()) * (3.0 / (1.0 + r / 50.0))
        run.step(r, {m: shared + torch.randn(d, generator=gen) * sigma for m, sigma in zip(MEMBERS, noise)})
    return run


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--old-rev", default="a8f1d5f", help="git revision of the code before the fix")
    parser.add_argument("--parts", nargs="+", default=["real", "synthetic", "attack"],
                        choices=["real", "synthetic", "attack"])
    parser.add_argument("--attacks", nargs="+", default=list(ATTACKS))
    parser.add_argument("--code", nargs="+", default=["old", "new"], choices=["old", "new"])
    parser.add_argument("--trace", type=Path, help="write per-round, per-member geometry and scores (CSV)")
    parser.add_argument("--rule", default="median",
                        help="the new code's rule, nnm+<rule> for nearest-neighbour mixing first (e.g. the default of "
                             "a new genesis, swarm.ops.cluster.DEFAULT_RULE)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="an option of the new code's rule, e.g. tau=auto for centered_clipping (numbers are "
                             "read as floats)")
    args = parser.parse_args(argv)
    global NEW_RULE
    from swarm.aggregation import parse_rule
    NEW_RULE = parse_rule(args.rule)
    for item in args.option:
        key, _, value = item.partition("=")
        try:
            NEW_OPTIONS[key] = float(value)
        except ValueError:
            NEW_OPTIONS[key] = value
    torch.set_num_threads(1)
    trace = open(args.trace, "w") if args.trace else None  # noqa: SIM115
    if trace:
        trace.write("run,round,member,d_over_m,cosine,norm_over_median,quality_before,quality,score,quarantined\n")
    started = time.perf_counter()
    for which in args.code:
        if "real" in args.parts:
            for seed in args.seeds:
                run = real(which, seed, args.rounds, args.old_rev, trace=trace)
                print(f"{which} real iid seed {seed} ({args.rounds} rounds): {run.honest_summary()}", flush=True)
        if "synthetic" in args.parts:
            for label, noise in (("iid", (1.0, 1.0, 1.0, 1.0)), ("noniid", (1.0, 1.0, 1.5, 2.5))):
                for seed in args.seeds:
                    run = synthetic(which, seed, args.rounds, args.old_rev, noise, trace=trace)
                    print(f"{which} synthetic {label} seed {seed} ({args.rounds} rounds): {run.honest_summary()}",
                          flush=True)
        if "attack" in args.parts:
            for attack in args.attacks:
                for start in (1, 301):
                    run = real(which, args.seeds[0], start + 29, args.old_rev, attack, start, trace=trace)
                    caught = run.first["node03"]
                    after = caught - start + 1 if caught is not None else None
                    print(f"{which} attack {attack} from round {start}: attacker quarantined "
                          f"{'never' if after is None else f'in its round {after}'} "
                          f"({run.quarantined_rounds['node03']} of 30 rounds"
                          f"{'; already quarantined while honest when it began' if run.already_out else ''}); "
                          f"{run.honest_summary(MEMBERS[:3])}",
                          flush=True)
    if trace:
        trace.close()
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()

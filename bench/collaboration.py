"""Value of collaboration: each honest member's test accuracy in the swarm against the same member alone.

Why: a party joins a swarm only if it ends up with a better model than it could train on its own data; with label
skew (Dirichlet) the answer is not obvious, since a robust rule may discard the part of the update that only one
member's labels ask for. Per setting (n = 4 and 7, iid and Dirichlet(alpha) shards, no attacker) and seed:

- the swarm: bench/sim.py with the genesis default rule, reputation and quarantine, R rounds;
- alone: each member's Trainer on its own shard, the same R rounds of the same K local steps from the same
  initial parameters, each round's update applied in full (a swarm of one).

Two accuracies per member and model: on the whole test set ("global", the task), and on the test set weighted by
the member's own training label distribution ("own labels", what a member that only meets its own kind of data
sees). The swarm's model is one for all members; its "own labels" accuracy differs per member.

    python -m bench collaboration [--seeds 2] [--rounds 20] [--sizes 4 7] [--alphas 0.3 0.1]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass

import torch

from bench.report import table
from bench.robustness import SIZES, default_variant, split_rule
from bench.sim import CACHED, SimConfig, _init_worker, simulate
from swarm.ledger.server_optimizer import apply_update
from swarm.training.params import load_flat_parameters
from swarm.training.trainer import Trainer

PART = "collaboration"
HEADING = "## Value of collaboration (in-process simulation)"


@dataclass(frozen=True)
class MemberResult:
    swarm_global: float
    swarm_own: float
    alone_global: float
    alone_own: float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", type=int, nargs="+", default=sorted(SIZES), choices=sorted(SIZES))
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.3, 0.1],
                        help="Dirichlet label-skew settings (iid is always run)")
    parser.add_argument("--workers", type=int, default=1, help="accepted for `bench all`; runs in one process")
    parser.add_argument("--device", default="cpu")


@torch.no_grad()
def class_accuracy(trainer: Trainer, params: torch.Tensor) -> torch.Tensor:
    """Test accuracy per class (float64, one entry per class; NaN for a class absent from the test set)."""
    load_flat_parameters(trainer.model, params.to(trainer.device, torch.float32))
    trainer.model.eval()
    predicted = trainer.model(trainer.test_x.to(trainer.device)).argmax(dim=1).cpu()
    labels = trainer.test_y.cpu()
    classes = int(max(labels.max(), trainer.train_y.max())) + 1
    hits = torch.bincount(labels[predicted == labels], minlength=classes).double()
    counts = torch.bincount(labels, minlength=classes).double()
    return hits / counts


def own_distribution(trainer: Trainer, classes: int) -> torch.Tensor:
    """The member's training label distribution (sums to 1)."""
    counts = torch.bincount(trainer.train_y.cpu(), minlength=classes).double()
    return counts / counts.sum()


def accuracies(trainer: Trainer, params: torch.Tensor) -> tuple[float, float]:
    """(global, own labels) test accuracy of ``params`` for this member."""
    per_class = class_accuracy(trainer, params)
    present = ~torch.isnan(per_class)
    weights = own_distribution(trainer, per_class.numel())
    counts = torch.bincount(trainer.test_y.cpu(), minlength=per_class.numel()).double()
    overall = float((per_class[present] * counts[present]).sum() / counts.sum())
    own = float((per_class[present] * weights[present]).sum() / weights[present].sum())
    return overall, own


def alone(cfg: SimConfig, index: int) -> tuple[Trainer, torch.Tensor]:
    """Member ``index`` trained on its own shard for ``cfg.rounds`` rounds; its trainer and final parameters."""
    trainer = Trainer(model_name=cfg.model, dataset_name=CACHED, node_index=index, num_nodes=cfg.nodes,
                      seed=cfg.seed, batch_size=cfg.batch_size, lr=cfg.lr, local_steps=cfg.local_steps,
                      partition=cfg.partition, alpha=cfg.alpha, device=cfg.device)
    params = trainer.initial_parameters()
    for _ in range(cfg.rounds):
        params, _momentum = apply_update(params, trainer.local_update(params), 1.0)
    return trainer, params


def measure(cfg: SimConfig) -> list[MemberResult]:
    """One swarm run and each member alone, for one setting and seed."""
    swarm_params = simulate(cfg).params
    out = []
    for i in range(cfg.nodes):
        trainer, params = alone(cfg, i)
        swarm_global, swarm_own = accuracies(trainer, swarm_params)
        alone_global, alone_own = accuracies(trainer, params)
        out.append(MemberResult(swarm_global, swarm_own, alone_global, alone_own))
    return out


def settings(args) -> list[tuple[int, str, float]]:
    return [(n, partition, alpha) for n in args.sizes
            for partition, alpha in [("iid", 0.0), *(("dirichlet", a) for a in args.alphas)]]


def run(args) -> str:
    _init_worker()
    seeds = args.seeds or (1 if args.quick else 2)
    rounds = args.rounds or (8 if args.quick else 20)
    default = default_variant()
    started = time.perf_counter()
    rows = []
    cfg = SimConfig()
    for n, partition, alpha in settings(args):
        members: list[MemberResult] = []
        for seed in range(seeds):
            rule, options = split_rule(default.rule)  # the default with the options a genesis writes for it
            cfg = SimConfig(nodes=n, f=SIZES[n], rule=rule, options=options, weighted=default.weighted,
                            reputation_floor=default.floor, partition=partition, alpha=alpha or 0.3, seed=seed,
                            rounds=rounds, device=args.device)
            members += measure(cfg)
            print(f"  collaboration: n={n} {partition} {alpha or ''} seed {seed} done", file=sys.stderr, flush=True)
        rows.append(_row(n, partition, alpha, members))
    elapsed = time.perf_counter() - started
    c = cfg  # the configuration that ran (local steps, batch and lr are the same in every setting)
    header = ["setting", "swarm, global", "alone, global (min..max)", "gain, global", "swarm, own labels",
              "alone, own labels (min..max)", "gain, own labels", "better off in the swarm"]
    return "\n".join([
        (f"In-process simulation ({elapsed / 60:.1f} min on this machine), no attacker: the swarm runs the genesis "
        f"default rule (`{default.rule}`, reputation floor {default.floor}) with "
        f"bench/sim.py; alone, each member trains the same model on its own shard only, {rounds} rounds of "
        f"K={c.local_steps} local steps of batch {c.batch_size}, lr {c.lr}, from the same initial parameters. "
        f"Seeds 0..{seeds - 1}; every number is a mean over members and seeds (%)."),
        "",
        ("\"global\": accuracy on the whole test set (the task). \"own labels\": accuracy on the test set weighted by "
        "the member's own training label distribution (what a member that only meets its own kind of data sees). "
        "\"better off\": members (over all seeds) whose own-labels accuracy is higher in the swarm than alone."),
        "",
        table(header, rows),
        "",
    ])


def _row(n: int, partition: str, alpha: float, members: list[MemberResult]) -> list[str]:
    def pct(values) -> str:
        return f"{100 * statistics.fmean(values):.1f}"

    def spread(values) -> str:
        return f"{pct(values)} ({100 * min(values):.1f}..{100 * max(values):.1f})"

    setting = f"n={n}, " + ("iid" if partition == "iid" else f"Dirichlet α={alpha:g}")
    swarm_g, alone_g = [m.swarm_global for m in members], [m.alone_global for m in members]
    swarm_o, alone_o = [m.swarm_own for m in members], [m.alone_own for m in members]
    better = sum(m.swarm_own > m.alone_own for m in members)
    return [setting, pct(swarm_g), spread(alone_g), f"{100 * (statistics.fmean(swarm_g) - statistics.fmean(alone_g)):+.1f}",
            pct(swarm_o), spread(alone_o), f"{100 * (statistics.fmean(swarm_o) - statistics.fmean(alone_o)):+.1f}",
            f"{better} of {len(members)}"]

"""Differential privacy at the update: accuracy against epsilon, and whether noisy honest updates get quarantined.

Four honest members (iid shards of mnist5k, bench/sim.py's cached loader) train for ``--rounds`` rounds through the
real ``swarm.ledger.apply`` (median rule, f = 1, reputation floor 0.6: the genesis defaults), each releasing its
update through the node's own ``swarm.training.privacy.PrivacyGuard`` (clip to C, Gaussian noise sigma*C from an
OS-seeded generator, Opacus' RDP accountant). For each target epsilon the noise multiplier is calibrated with
Opacus (``get_noise_multiplier``) so that the accountant reaches that epsilon at delta after exactly ``--rounds``
rounds at the members' sampling rate; epsilon ``inf`` is the same run without privacy (no clipping, no noise).
Reported per run: the final test accuracy, the epsilon the members' accountants report, sigma, and the lowest
committed reputation score any honest member had, with the member-rounds an honest member spent quarantined.

    PYTHONPATH=. OMP_NUM_THREADS=1 python bench/privacy.py [--rounds 40] [--models mlp linear] [--epsilons 1 4 8 inf]
"""
from __future__ import annotations

import argparse
import math
import time

from torch import nn

from bench.sim import CACHED
from swarm.ledger import reputation
from swarm.ledger.apply import RoundRules, aggregate_round, finish
from swarm.ledger.state import genesis_state
from swarm.round.gradient import Gradient
from swarm.training import privacy as dp
from swarm.training.trainer import Trainer

MEMBERS = ["node00", "node01", "node02", "node03"]


def linear(input_shape, num_classes) -> nn.Module:
    """Multinomial logistic regression: 7,850 parameters for MNIST (the mlp has 101,770)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))


def model_spec(name: str) -> str:
    return "bench.privacy:linear" if name == "linear" else name


def run(model: str, epsilon: float, args) -> dict:
    started = time.perf_counter()
    trainers = {m: Trainer(model_name=model_spec(model), dataset_name=CACHED, node_index=i, num_nodes=len(MEMBERS),
                           seed=args.seed, batch_size=args.batch_size, lr=args.lr, local_steps=args.local_steps,
                           partition="iid", device="cpu") for i, m in enumerate(MEMBERS)}
    records = trainers[MEMBERS[0]].data.train_size
    rate = dp.sample_rate(args.batch_size, args.local_steps, 1, records)
    guards, sigma = {}, 0.0
    if math.isfinite(epsilon):
        from opacus.accountants.utils import get_noise_multiplier
        # Opacus' calibration of the accounted multiplier; the node's noise is twice it (sensitivity 2C)
        sigma = dp.SENSITIVITY_IN_C * get_noise_multiplier(target_epsilon=epsilon, target_delta=args.delta,
                                                           sample_rate=rate, steps=args.rounds, accountant="rdp",
                                                           epsilon_tolerance=0.01)
        settings = dp.PrivacySettings(clip_norm=args.clip, noise_multiplier=sigma, delta=args.delta,
                                      epsilon_budget=epsilon + 0.05)
        guards = {m: dp.PrivacyGuard(settings, rate) for m in MEMBERS}
    rules = RoundRules(f=1, rule="median", server_lr=args.server_lr, momentum=args.momentum)
    state = genesis_state(trainers[MEMBERS[0]].initial_parameters(), MEMBERS, b"\0" * 32)
    lowest, quarantined = 1.0, 0
    for r in range(1, args.rounds + 1):
        updates = {}
        for m in MEMBERS:
            update = trainers[m].local_update(state.params)
            if guards:
                assert guards[m].may_contribute(), f"{m} ran out of budget at round {r}"
                update = guards[m].privatize(update)
            updates[m] = update
        gradients = [Gradient(m, r, state.hash, b"", b"", updates[m]) for m in MEMBERS]
        applied = finish(state, aggregate_round(state, gradients, rules), frozenset(MEMBERS))
        state = applied.state
        quarantined += len(applied.quarantined)
        lowest = min([lowest] + [reputation.score(rep) for _, rep in state.reputation])
    _, accuracy = trainers[MEMBERS[0]].evaluate(state.params)
    spent = max((g.epsilon for g in guards.values()), default=math.inf)
    return {"model": model, "target": epsilon, "epsilon": spent, "sigma": sigma, "rate": rate, "records": records,
            "accuracy": accuracy, "lowest": lowest, "quarantined": quarantined,
            "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--models", nargs="+", default=["linear", "mlp"])
    parser.add_argument("--epsilons", nargs="+", type=float, default=[1.0, 4.0, 8.0, math.inf])
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--local-steps", type=int, default=1)
    parser.add_argument("--lr", type=float, default=0.2)
    parser.add_argument("--server-lr", type=float, default=1.0)
    parser.add_argument("--momentum", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs per cell (the noise is OS-seeded, so each run differs): mean and range shown")
    args = parser.parse_args()
    print(f"4 honest members, iid mnist5k, median rule f=1, {args.rounds} rounds, batch {args.batch_size}, "
          f"{args.local_steps} local steps (lr {args.lr}), server lr {args.server_lr} momentum {args.momentum}, "
          f"clip C={args.clip}, delta={args.delta:g}, seed {args.seed}")
    print(f"| model | target epsilon | epsilon spent | sigma | q | test accuracy, mean (min-max of {args.repeats}) "
          "| min honest reputation | honest member-rounds quarantined | s per run |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model in args.models:
        for epsilon in args.epsilons:
            rows = [run(model, epsilon, args) for _ in range(args.repeats if math.isfinite(epsilon) else 1)]
            row = rows[0]
            spent = "inf" if math.isinf(row["epsilon"]) else f"{max(r['epsilon'] for r in rows):.2f}"
            sigma = "-" if not row["sigma"] else f"{row['sigma']:.2f}"
            acc = [r["accuracy"] for r in rows]
            accuracy = f"{sum(acc) / len(acc):.3f}" + (f" ({min(acc):.3f}-{max(acc):.3f})" if len(acc) > 1 else "")
            print(f"| {model} | {epsilon:g} | {spent} | {sigma} | {row['rate']:.4f} | {accuracy} "
                  f"| {min(r['lowest'] for r in rows):.3f} | {sum(r['quarantined'] for r in rows)} "
                  f"| {sum(r['seconds'] for r in rows) / len(rows):.0f} |", flush=True)


if __name__ == "__main__":
    main()

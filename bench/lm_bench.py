"""Language model: a 4-node DiLoCo swarm against one process that trains on the same total tokens.

Issue 16's benchmark. For H in {1, 10, 50} inner steps per round and each compression scheme, the swarm's members
(built by the real ``build_trainer`` from the genesis that ``swarm cluster up --task lm`` writes: its model
hyper-parameters, its outer Nesterov step, the default aggregation rule) each train H inner AdamW steps per round
from the replicated parameters on their own iid slice of the byte corpus; each update (the pseudo-gradient, start
minus end) goes through its member's real Compressor (error feedback on) and is decoded, and the real
``swarm.ledger.apply.apply`` with ``rules_of(genesis)`` makes the next state. The same grid runs again with the
last member attacking its update (swarm/faults/attacks.py). The single process trains one model for the same
number of inner steps on a batch ``nodes`` times larger over the whole training split (what per-step
data-parallel computes): the same total tokens, the same optimizer and schedule.

In-process, like bench/sim.py and for the same reason: start-up, transport and consensus change none of what is
measured here. Communication: bytes each member sends per round (its payload plus the signed envelope, to each of
the n-1 peers) against an fp32 ring all-reduce of the full gradient at every inner step.

    python -m bench lm [--quick] [--steps 200] [--h 1 10 50] [--schemes fp16 int8 topk] [--attack alie]
                       [--compare-outer 0.7 0.9 [--compare-h 10]]

``--compare-outer LR MOMENTUM`` runs the grid's cells at the ``--compare-h`` values once more with that outer step
(Nesterov on when MOMENTUM > 0) and reports them in a second table next to the same cells with the genesis' step.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field

import torch

from bench.compression_bench import envelope_overhead
from bench.report import table
from bench.sim import names
from crypto.keys import NodeKey
from swarm.config import Genesis, Member, NodeConfig
from swarm.faults.attacks import parse_attack
from swarm.ledger.apply import apply
from swarm.ledger.entry_rules import initial_state, rules_of
from swarm.aggregation import parse_rule
from swarm.ops.cluster import DEFAULT_RULE, LM_DEMO_OPTIONS, LM_DEMO_OUTER, RULE_OPTIONS
from swarm.round import compression
from swarm.round.gradient import Gradient
from swarm.training.build import build_trainer
from swarm.training.params import flatten_parameters

PART = "lm"
HEADING = "## Language model: DiLoCo swarm vs one process at equal tokens (in-process simulation)"
SCHEMES = ("fp16", "int8", "topk")
TARGET_LOSS = 0.03          # the swarm's validation loss within 3% of the single process's
TARGET_LOSS_ATTACKED = 0.05  # within 5% with one attacker
TARGET_REDUCTION = 100.0     # at least 100x less communication than per-step data-parallel


@dataclass(frozen=True)
class Cell:
    """One run: the swarm (``h`` > 0) or the single process (``h`` == 0)."""
    nodes: int
    steps: int                 # inner steps per member (the single process: its steps)
    batch_size: int            # per member; the single process uses nodes * batch_size
    h: int = 0
    scheme: str = "none"
    topk: float = 0.01
    attack: str = "none"
    seed: int = 0
    options: tuple = ()        # the genesis model.options, as sorted items
    outer: tuple = ()          # genesis server_optimizer settings over those of `--task lm`, as items
    rule: str | None = None    # genesis aggregation.rule (None: the genesis default)

    @property
    def single(self) -> bool:
        return self.h == 0


@dataclass
class Outcome:
    cell: Cell
    metrics: dict[str, float] = field(default_factory=dict)   # validation metrics of the final state
    payload: float = 0.0        # mean encoded payload per member per round (bytes)
    rounds: int = 0
    rules_used: tuple[str, ...] = ()
    dimension: int = 0
    seconds: float = 0.0
    optimizer: object = None    # the inner optimizer the members (or the single process) ran
    quarantined: int = 0        # member-rounds left out by the reputation floor (honest ones included)


def genesis_for(cell: Cell, members: int) -> Genesis:
    """The genesis `swarm cluster up --task lm` writes (its model options and outer step), with ``members``."""
    genesis = Genesis(swarm_id="bench-lm", members=[Member(name, NodeKey.from_seed(bytes([i + 1]) * 32).peer_id)
                                                    for i, name in enumerate(names(members))])
    genesis.model.task, genesis.model.seed = "lm", cell.seed
    genesis.model.options = dict(cell.options)
    for key, value in {**LM_DEMO_OUTER, **dict(cell.outer)}.items():
        setattr(genesis.server_optimizer, key, value)
    rule = cell.rule or DEFAULT_RULE  # what `swarm cluster init` writes: the rule, nnm and the rule's options
    genesis.aggregation.rule, genesis.aggregation.nnm = parse_rule(rule)
    genesis.aggregation.options = dict(RULE_OPTIONS.get(genesis.aggregation.rule, {}))
    return genesis


def node_config(batch_size: int, local_steps: int, partition: str | None) -> NodeConfig:
    config = NodeConfig(identity="", genesis="", data_dir="")
    config.training.device = "cpu"
    config.training.batch_size, config.training.local_steps = batch_size, local_steps
    config.dataset.partition = partition
    return config


def run_cell(cell: Cell) -> Outcome:
    started = time.perf_counter()
    out = run_single(cell) if cell.single else run_swarm(cell)
    out.seconds = time.perf_counter() - started
    return out


def run_single(cell: Cell) -> Outcome:
    """One process, the whole training split, a batch ``nodes`` times a member's, ``steps`` inner steps."""
    genesis = genesis_for(cell, 1)
    trainer = build_trainer(node_config(cell.nodes * cell.batch_size, cell.steps, "none"), genesis,
                            genesis.peer_ids[0])
    trainer.local_update(trainer.initial_parameters())
    params = flatten_parameters(trainer.model).to("cpu", torch.float32)
    return Outcome(cell, trainer.evaluate_metrics(params), dimension=params.numel(), optimizer=trainer.opt)


def run_swarm(cell: Cell) -> Outcome:
    """``steps / h`` rounds of the swarm; the last member attacks when ``cell.attack`` is not "none"."""
    genesis = genesis_for(cell, cell.nodes)
    config = node_config(cell.batch_size, cell.h, None)  # a built-in corpus: each member its iid slice
    members = names(cell.nodes)
    peer = dict(zip(members, genesis.peer_ids))
    attack = parse_attack(cell.attack, seed=cell.seed)
    attackers = {members[-1]} if cell.attack != "none" else set()
    trainers = {name: build_trainer(config, genesis, peer[name]) for name in members
                if name not in attackers or not attack.needs_observed}
    compressors = {name: compression.Compressor(cell.scheme, k=cell.topk) for name in members}
    noise = {name: torch.Generator().manual_seed(cell.seed * 1000 + i) for i, name in enumerate(members)}
    rules = rules_of(genesis)
    state = initial_state(genesis, config)
    everyone = frozenset(genesis.peer_ids)
    sizes, used, quarantined = [], [], 0
    for round_ in range(1, cell.steps // cell.h + 1):
        updates = {name: trainer.local_update(state.params) for name, trainer in trainers.items()}
        honest = [updates[name] for name in members if name not in attackers]
        for name in attackers:
            updates[name] = attack.apply(updates.get(name, honest[0]), observed=honest, rng=noise[name])
        gradients = []
        for name in members:
            payload = compressors[name].compress(updates[name])
            sizes.append(len(payload))
            vector = compression.decode(payload, state.params.numel(), len(payload))
            gradients.append(Gradient(peer[name], round_, state.hash, b"", b"", vector))
        applied = apply(state, gradients, rules, certificate_signers=everyone)
        state = applied.state
        used.append(applied.rule_used)
        quarantined += len(applied.quarantined)
    evaluator = trainers[members[0]]
    return Outcome(cell, evaluator.evaluate_metrics(state.params), statistics.fmean(sizes), state.round,
                   tuple(dict.fromkeys(used)), state.params.numel(), optimizer=evaluator.opt,
                   quarantined=quarantined)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--h", type=int, nargs="+", default=None, help="inner steps per round (default 1 10 50)")
    parser.add_argument("--steps", type=int, default=None,
                        help="inner steps per member, a multiple of every H (default 200; --quick 20)")
    parser.add_argument("--batch-size", type=int, default=None, help="sequences per member per step (default 16)")
    parser.add_argument("--schemes", nargs="+", default=list(SCHEMES), choices=sorted(compression.SCHEMES))
    parser.add_argument("--topk", type=float, default=0.01, help="top-k fraction")
    parser.add_argument("--attack", default="alie", help="the attacker's profile (swarm/faults/attacks.py); "
                                                         "'none' skips the attacked runs")
    parser.add_argument("--model", nargs="*", default=[], metavar="KEY=VALUE",
                        help="genesis model.options over those of `swarm cluster up --task lm`")
    parser.add_argument("--outer-lr", type=float, default=None, help="outer step lr (default: the genesis')")
    parser.add_argument("--outer-momentum", type=float, default=None, help="outer momentum (0 turns Nesterov off)")
    parser.add_argument("--rule", default=None, help="aggregation rule (default: the genesis')")
    parser.add_argument("--compare-outer", type=float, nargs=2, default=None, metavar=("LR", "MOMENTUM"),
                        help="also run the --compare-h cells with this outer step (Nesterov on when MOMENTUM > 0), "
                             "reported in a second table")
    parser.add_argument("--compare-h", type=int, nargs="+", default=[10],
                        help="the H values --compare-outer runs (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="model and data seed (one seed: the grid is long)")
    parser.add_argument("--workers", type=int, default=1, help="processes running cells at once")
    parser.add_argument("--device", default="cpu", help="ignored: the members train on the CPU")


def cells(args) -> tuple[Cell, list[Cell]]:
    hs = args.h or ([1, 10] if args.quick else [1, 10, 50])
    steps = args.steps or (20 if args.quick else 200)
    bad = [h for h in hs if h < 1 or steps % h]
    if bad:
        raise SystemExit(f"--steps {steps} must be a positive multiple of every H (not of {bad})")
    batch = args.batch_size or (8 if args.quick else 16)
    options = {**LM_DEMO_OPTIONS}
    for item in args.model:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--model takes KEY=VALUE, got {item!r}")
        options[key] = int(value)
    outer = {"lr": args.outer_lr, "momentum": args.outer_momentum,
             "nesterov": None if args.outer_momentum is None else args.outer_momentum > 0}
    base = {"outer": tuple((k, v) for k, v in outer.items() if v is not None), "rule": args.rule,
            "nodes": args.nodes, "steps": steps, "batch_size": batch, "topk": args.topk, "seed": args.seed,
            "options": tuple(sorted(options.items()))}
    attacks = ["none"] + ([args.attack] if args.attack != "none" else [])
    parse_attack(args.attack)  # an unknown profile fails before anything runs
    swarm = [Cell(h=h, scheme=scheme, attack=attack, **base) for attack in attacks for h in hs
             for scheme in args.schemes]
    compare = getattr(args, "compare_outer", None)
    if compare:
        lr, momentum = compare
        compare_hs = args.compare_h
        bad = [h for h in compare_hs if h < 1 or steps % h]
        if bad:
            raise SystemExit(f"--steps {steps} must be a positive multiple of every --compare-h (not of {bad})")
        outer = (("lr", lr), ("momentum", momentum), ("nesterov", momentum > 0))
        if outer == base["outer"]:
            raise SystemExit("--compare-outer is the outer step the grid already runs")
        swarm += [Cell(h=h, scheme=scheme, attack=attack, **{**base, "outer": outer}) for attack in attacks
                  for h in compare_hs for scheme in args.schemes]
    return Cell(**base), swarm


def run_cells(todo: list[Cell], workers: int) -> list[Outcome]:
    def progress(done: int) -> None:
        print(f"  lm: {done}/{len(todo)}", file=sys.stderr, flush=True)
    if workers <= 1:
        torch.set_num_threads(1)
        out = []
        for cell in todo:
            out.append(run_cell(cell))
            progress(len(out))
        return out
    import multiprocessing

    from bench.sim import _init_worker
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
        out = []
        for outcome in pool.imap(run_cell, todo):
            out.append(outcome)
            progress(len(out))
        return out


def dp_bytes_per_round(n: int, d: int, h: int) -> float:
    """Bytes one worker sends in a round of per-step data-parallel: a ring all-reduce of d fp32 values sends
    2(n-1)/n * 4d bytes per worker, once per inner step."""
    return h * 2 * (n - 1) / n * 4 * d


def run(args) -> str:
    single, swarm = cells(args)
    started = time.perf_counter()
    outcomes = run_cells([single, *swarm], args.workers)
    elapsed = time.perf_counter() - started
    return report(outcomes[0], outcomes[1:], envelope_overhead(), elapsed)


def report(base: Outcome, swarm: list[Outcome], overhead: int, elapsed: float) -> str:
    c = base.cell
    n, d = c.nodes, base.dimension
    runs = len(swarm) + 1
    compared = [o for o in swarm if o.cell.outer != c.outer]   # --compare-outer's cells
    swarm = [o for o in swarm if o.cell.outer == c.outer]
    by = {(o.cell.h, o.cell.scheme, o.cell.attack): o for o in swarm}
    hs = list(dict.fromkeys(o.cell.h for o in swarm))
    schemes = list(dict.fromkeys(o.cell.scheme for o in swarm))
    attack = next((o.cell.attack for o in swarm if o.cell.attack != "none"), None)
    ref = base.metrics["loss"]
    rules = rules_of(genesis_for(c, n))
    opt = swarm[0].optimizer
    context = dict(c.options)["context"]
    tokens = c.steps * n * c.batch_size * context

    def gap(o: Outcome) -> float:
        return o.metrics["loss"] / ref - 1.0

    rows, checks = [], []
    for h in hs:
        for scheme in schemes:
            o = by[(h, scheme, "none")]
            sent = (n - 1) * (o.payload + overhead)
            reduction = dp_bytes_per_round(n, d, h) / sent
            ok = gap(o) <= TARGET_LOSS and reduction >= TARGET_REDUCTION
            checks.append(ok)
            row = [h, _scheme(scheme, c.topk), o.rounds, _kib(o.payload), _kib(sent), _kib(dp_bytes_per_round(n, d, h)),
                   f"{reduction:.1f}x", f"{o.metrics['loss']:.4f} ({o.metrics['bits_per_byte']:.3f})",
                   f"{100 * gap(o):+.2f}%", _verdict(ok)]
            if attack:
                a = by[(h, scheme, attack)]
                ok_a = gap(a) <= TARGET_LOSS_ATTACKED
                checks.append(ok_a)
                row += [f"{a.metrics['loss']:.4f} ({a.metrics['bits_per_byte']:.3f})", f"{100 * gap(a):+.2f}%",
                        _verdict(ok_a)]
            used = sorted({r for x in (o, by.get((h, scheme, attack), o)) for r in x.rules_used})
            row.append(", ".join(used))
            rows.append(row)
    header = ["H", "scheme", "rounds", "payload / member / round", f"sent / member / round (x{n - 1} peers)",
              "per-step DP / member / round", "reduction", "val loss (bits/byte)", "vs single",
              f"target <= {TARGET_LOSS:.0%} and >= {TARGET_REDUCTION:g}x"]
    if attack:
        header += [f"val loss, 1 of {n} {attack}", "vs single", f"target <= {TARGET_LOSS_ATTACKED:.0%}"]
    header.append("rule applied")
    attack_text = ""
    if attack:
        profile = parse_attack(attack)
        attack_text = (f" Attacked runs: the last member sends `{attack}`"
                       f"{f' (parameter {profile.param:g})' if profile.param is not None else ''} instead of its "
                       f"update{', computed from the honest updates of the round' if profile.needs_observed else ''}"
                       f"; it then trains nothing, so the honest members train on {n - 1}/{n} of the tokens; the "
                       f"reference stays the single process.")
    options = ", ".join(f"{k} {v}" for k, v in c.options)
    changed = [f"server_optimizer.{k} {v}" for k, v in c.outer] + ([f"aggregation.rule {c.rule}"] if c.rule else [])
    overrides = f", with {', '.join(changed)} set by this run's options," if changed else ""
    schedule = f"warmup {opt.warmup_steps} steps" + (f", cosine over {opt.decay_steps}" if opt.decay_steps else
                                                      ", then constant")
    return "\n".join([
        f"In-process simulation ({runs} runs, {elapsed / 60:.1f} min on this machine, one seed "
        f"({c.seed})): the members are built by the real `build_trainer` from the genesis `swarm cluster up --task "
        f"lm` writes{overrides} (byte-level GPT, {options}: {d:,} parameters) and each trains on its iid slice of the "
        f"stdlib corpus; every round each member runs H inner {opt.name} steps (lr {opt.lr:g}, betas "
        f"{opt.betas[0]:g}/{opt.betas[1]:g}, weight decay {opt.weight_decay:g}, clip {opt.grad_clip:g}, "
        f"{schedule}; moments kept across rounds) from the replicated parameters, compresses its pseudo-gradient "
        f"with its real Compressor (error feedback on), and the real `apply()` aggregates with the genesis rules "
        f"(`{rules.rule}`, f={rules.f}, reputation floor {rules.reputation_floor:g}) and takes the outer step "
        f"(lr {rules.server_lr:g}, momentum {rules.momentum:g}, Nesterov {'on' if rules.nesterov else 'off'}). "
        f"Every member runs {c.steps} inner steps of {c.batch_size} sequences of {context} bytes, H x rounds = "
        f"{c.steps}; the single process runs {c.steps} steps of {n * c.batch_size} sequences (equal compute: "
        f"{tokens:,} training tokens each, the batch per-step data-parallel would use) on the whole training "
        f"split with the same optimizer. Validation: the fixed split of the final state, loss in nats per byte "
        f"(bits per byte in brackets).{attack_text} Not real processes: transport and consensus are measured by "
        f"the other parts and the LM cluster test.",
        "",
        f"Communication: a member sends its payload plus the {overhead}-byte signed envelope to each of the "
        f"{n - 1} peers once per round (fetches by digest and consensus messages not counted). Per-step "
        f"data-parallel: a ring all-reduce of the fp32 gradient at every inner step, 2(n-1)/n x 4d = "
        f"{_kib(dp_bytes_per_round(n, d, 1))} per member per step (n={n}, d={d:,}), times H per round. top-k "
        f"keeps {c.topk:.0%} of the coordinates.",
        "",
        f"Single process: validation loss **{ref:.4f}** ({base.metrics['bits_per_byte']:.3f} bits/byte, next-byte "
        f"accuracy {base.metrics['accuracy']:.1%}) after {c.steps} steps ({base.seconds:.0f} s).",
        "",
        table(header, rows),
        "",
        f"Targets met in {sum(checks)} of {len(checks)} checks.",
        *_compared(compared, by, ref, attack, n),
    ])


def _compared(compared: list[Outcome], by: dict, ref: float, attack: str | None, n: int) -> list[str]:
    """The second table: ``--compare-outer``'s cells against the same cells with the genesis' outer step."""
    if not compared:
        return []
    cell = compared[0].cell
    rules = rules_of(genesis_for(cell, n))
    outer = dict(cell.outer)
    mine = {(o.cell.h, o.cell.scheme, o.cell.attack): o for o in compared}
    hs = list(dict.fromkeys(o.cell.h for o in compared))
    schemes = list(dict.fromkeys(o.cell.scheme for o in compared))

    def gap(o: Outcome) -> str:
        return f"{100 * (o.metrics['loss'] / ref - 1.0):+.2f}%"

    def loss(o: Outcome) -> str:
        return f"{o.metrics['loss']:.4f} ({o.metrics['bits_per_byte']:.3f})"

    rows, checks = [], []
    for h in hs:
        for scheme in schemes:
            o, g = mine[(h, scheme, "none")], by[(h, scheme, "none")]
            ok = o.metrics["loss"] / ref - 1.0 <= TARGET_LOSS
            checks.append(ok)
            row = [h, _scheme(scheme, cell.topk), o.rounds, loss(o), gap(o), gap(g), _verdict(ok)]
            if attack:
                a, ga = mine[(h, scheme, attack)], by[(h, scheme, attack)]
                ok_a = a.metrics["loss"] / ref - 1.0 <= TARGET_LOSS_ATTACKED
                checks.append(ok_a)
                row += [loss(a), gap(a), gap(ga), _verdict(ok_a)]
            row.append(", ".join(sorted({r for x in (o, mine.get((h, scheme, attack), o)) for r in x.rules_used})))
            rows.append(row)
    header = ["H", "scheme", "rounds", "val loss (bits/byte)", "vs single", "vs single, genesis outer step",
              f"target <= {TARGET_LOSS:.0%}"]
    if attack:
        header += [f"val loss, 1 of {n} {attack}", "vs single", "vs single, genesis outer step",
                   f"target <= {TARGET_LOSS_ATTACKED:.0%}"]
    header.append("rule applied")
    return [
        "",
        (f"Outer step compared (`--compare-outer {outer['lr']:g} {outer['momentum']:g}`): the same cells at "
         f"H = {', '.join(str(h) for h in hs)} with server_optimizer lr {rules.server_lr:g}, momentum "
         f"{rules.momentum:g}, Nesterov {'on' if rules.nesterov else 'off'}, everything else as above (payloads and "
         f"communication unchanged); \"genesis outer step\" is the same row of the table above. Reduction is "
         f"not re-checked here."),
        "",
        table(header, rows),
        "",
        f"Outer-step comparison: loss targets met in {sum(checks)} of {len(checks)} checks.",
    ]


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _kib(value: float) -> str:
    return f"{value / 1024:,.1f} KiB"


def _scheme(scheme: str, k: float) -> str:
    return {"topk": f"top-k {k:.0%}", "topk_int8": f"top-k {k:.0%} + int8"}.get(scheme, scheme)


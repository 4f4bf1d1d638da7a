"""Run seeds, collect violations, and say how to replay a failing one."""
from __future__ import annotations

from dataclasses import dataclass

from .invariants import Violation
from .scenarios import build_world


@dataclass
class SeedResult:
    scenario: str
    seed: int
    n: int
    byzantine: int | None
    violation: str | None
    live: bool
    steps: int
    rounds: int

    def replay_command(self, quorum_override: int | None = None) -> str:
        cmd = f"python -m consensus.sim --scenario {self.scenario} --first-seed {self.seed} --seeds 1 --nodes {self.n}"
        if self.byzantine is not None:
            cmd += f" --byzantine {self.byzantine}"
        if quorum_override is not None:
            cmd += f" --quorum {quorum_override}"
        return cmd


def run_seed(scenario: str, seed: int, n: int, byzantine: int | None = None,
             quorum_override: int | None = None) -> SeedResult:
    world = build_world(scenario, seed, n, byzantine, quorum_override)
    violation = None
    live = False
    try:
        result = world.run()
        live = result["live"]
        if not live:
            violation = (f"liveness: honest nodes did not reach round {world.target_round} within "
                         f"{world.liveness_bound}s after GST ({world.faults.gst}s)")
    except Violation as exc:
        violation = str(exc)
    if violation is None and world.checks:
        violation = f"liveness: {world.checks[0][1]}"
        live = False
    rounds = min((len(node.store.chain) for node in world.honest_nodes()), default=0)
    return SeedResult(scenario, seed, n, byzantine, violation, live, world.steps, rounds)


def run_many(scenarios, seeds, sizes, byzantine=None, quorum_override=None):
    """Yield a SeedResult per (scenario, seed, size)."""
    for scenario in scenarios:
        for n in sizes:
            for seed in seeds:
                yield run_seed(scenario, seed, n, byzantine, quorum_override)

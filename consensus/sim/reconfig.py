"""Membership changes in the simulator: a seeded plan of joins and leaves that honest leaders propose one at a
time, the check honest validators make of a proposed change, and the configuration the swarm ends in.

The plan grows the swarm by adding the joiners one by one, then shrinks it by removing members at random (never
below 4, never back to a configuration it already had, and never leaving more faulty members than the new
configuration tolerates). Honest leaders propose the
next step every other round; a validator accepts a change only if it is the plan's next step from the configuration
in force at that round, as a real node accepts only a change a member signed for.
"""
from __future__ import annotations

import random

Members = tuple[str, ...]
MIN_MEMBERS = 4


def make_plan(rng: random.Random, genesis: list[str], joiners: list[str], faulty: set[str]) -> list[Members]:
    """Configurations in order, starting with the genesis one."""
    plan = [tuple(sorted(genesis))]
    current = set(genesis)
    for joiner in joiners:
        current.add(joiner)
        plan.append(tuple(sorted(current)))
    for _ in range(len(joiners)):
        if len(current) <= MIN_MEMBERS:
            break
        f_after = (len(current) - 2) // 3
        bad = current & faulty
        pool = sorted(bad) if len(bad) > f_after else sorted(current)
        fresh = [m for m in pool if tuple(sorted(current - {m})) not in plan]  # each configuration once in a plan
        current.discard(rng.choice(fresh or pool))
        plan.append(tuple(sorted(current)))
    return plan


def next_change(plan: list[Members], current: Members, round_: int) -> Members | None:
    """What an honest leader proposes with round ``round_``: the plan's next step after the latest occurrence of
    the configuration in force, on even rounds (odd rounds carry none, so plain rounds run between changes)."""
    if round_ % 2:
        return None
    steps = [k for k, config in enumerate(plan) if config == current]
    if not steps or steps[-1] + 1 >= len(plan):
        return None
    return plan[steps[-1] + 1]


def change_is_valid(plan: list[Members], current: Members, proposed: Members | None) -> bool:
    """An honest validator's check: no change, or a step of the plan from the configuration in force."""
    if proposed is None:
        return True
    return any(plan[k] == current and plan[k + 1] == proposed for k in range(len(plan) - 1))

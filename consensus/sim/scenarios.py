"""Named scenarios: a fault plan for the network plus which Byzantine script the faulty nodes run."""
from __future__ import annotations

from dataclasses import replace

from .byzantine import SCRIPTS, Twin
from .reconfig import make_plan
from .world import FaultPlan, World

NETWORK = {
    "happy": FaultPlan(gst=0.0),
    "lossy": FaultPlan(gst=8.0, drop=0.2, duplicate=0.2, max_delay=0.6),
    "partition": FaultPlan(gst=10.0, drop=0.05, max_delay=0.3, partitions=True),
    "crash": FaultPlan(gst=10.0, drop=0.05, max_delay=0.2, crashes=3),
    "isolate_heal": FaultPlan(gst=0.0, max_delay=0.05, isolate_heal=True),
}
BYZANTINE = sorted(SCRIPTS) + ["twins"]
SCENARIOS = sorted(NETWORK) + BYZANTINE + ["chaos"]
# The same faults while the swarm grows by three joiners and shrinks again (sim/reconfig.py); "reconfig_byzantine"
# runs f genesis members on a seeded Byzantine script, "reconfig_chaos" mixes everything.
RECONFIG = [f"reconfig_{name}" for name in ("happy", "lossy", "partition", "crash", "byzantine", "chaos")]
ALL_SCENARIOS = SCENARIOS + RECONFIG
JOINERS = 3
MILD = FaultPlan(gst=5.0, drop=0.05, duplicate=0.05, max_delay=0.2)


def build_world(scenario: str, seed: int, n: int, byzantine: int | None = None, quorum_override: int | None = None,
                rounds_after_gst: int = 2) -> World:
    """Set up a world for ``scenario``; ``byzantine`` defaults to f for Byzantine scenarios and 0 otherwise."""
    if scenario not in ALL_SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose from {', '.join(ALL_SCENARIOS)}")
    if scenario in RECONFIG:
        return _reconfig_world(scenario.removeprefix("reconfig_"), seed, n, byzantine, quorum_override)
    f = (n - 1) // 3
    script_name = scenario
    if scenario == "chaos":
        import random
        pick = random.Random(seed ^ 0x5EED)
        plan = FaultPlan(gst=10.0, drop=0.1, duplicate=0.1, max_delay=0.4, partitions=pick.random() < 0.5,
                         crashes=pick.randrange(3))
        script_name = pick.choice(BYZANTINE)
    elif scenario in NETWORK:
        plan = replace(NETWORK[scenario])
        script_name = None
    else:
        plan = MILD
    count = (f if script_name else 0) if byzantine is None else byzantine
    world = World(seed, n, plan, rounds_after_gst=rounds_after_gst, quorum_override=quorum_override,
                  wire_roundtrip=seed % 16 == 0)
    faulty = set(world.members[-count:]) if count else set()
    for member in world.members:
        if member not in faulty:
            world.add_node(member)
        elif script_name == "twins":
            world.add_node(member, 0, Twin(0))
            world.add_node(member, 1, Twin(1))
        elif script_name:
            world.add_node(member, 0, SCRIPTS[script_name]())
        else:  # faulty count given for a network-only scenario: they crash for good
            node = world.add_node(member, 0, SCRIPTS["silent_leader"]())
            world.crash(node)
    return world


def _reconfig_world(base: str, seed: int, n: int, byzantine: int | None, quorum_override: int | None) -> World:
    import random
    pick = random.Random(seed ^ 0xC0F1)
    script_name = None
    if base == "chaos":
        plan = FaultPlan(gst=10.0, drop=0.1, duplicate=0.1, max_delay=0.4, partitions=pick.random() < 0.5,
                         crashes=pick.randrange(3))
        script_name = pick.choice(sorted(SCRIPTS))
    elif base == "byzantine":
        plan = replace(MILD)
        script_name = pick.choice(sorted(SCRIPTS))
    else:
        plan = replace(NETWORK[base])
    count = ((n - 1) // 3 if script_name else 0) if byzantine is None else byzantine
    world = World(seed, n, plan, quorum_override=quorum_override, wire_roundtrip=seed % 16 == 0, joiners=JOINERS)
    faulty = set(world.members[-count:]) if count else set()
    world.plan = make_plan(world.rng, world.members, world.joiners, faulty)
    # Liveness is checked once every change has had its turn: each takes two rounds and an election.
    world.rounds_after_gst = 2 * len(world.plan) + 2
    for member in world.ids:
        world.add_node(member, 0, SCRIPTS[script_name]() if member in faulty else None)
    return world

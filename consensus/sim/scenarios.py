"""Named scenarios: a fault plan for the network plus which Byzantine script the faulty nodes run."""
from __future__ import annotations

from dataclasses import replace

from .byzantine import SCRIPTS, Twin
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
MILD = FaultPlan(gst=5.0, drop=0.05, duplicate=0.05, max_delay=0.2)


def build_world(scenario: str, seed: int, n: int, byzantine: int | None = None, quorum_override: int | None = None,
                rounds_after_gst: int = 2) -> World:
    """Set up a world for ``scenario``; ``byzantine`` defaults to f for Byzantine scenarios and 0 otherwise."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")
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

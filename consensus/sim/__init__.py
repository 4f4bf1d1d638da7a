"""Deterministic simulator for the consensus core: ``python -m consensus.sim --help``.

One seed = one world (``world.py``): a seeded event queue, a faulty network, crashes and restarts from persisted state
only, Byzantine scripts (``byzantine.py``), and invariants checked after every action (``invariants.py``)."""
from .runner import run_seed, run_many  # noqa: F401

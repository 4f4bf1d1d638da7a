"""The deterministic simulator over thousands of seeds, and proof that it catches a planted bug."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from multiprocessing import get_context

import pytest

from consensus.sim.runner import run_seed
from consensus.sim.scenarios import SCENARIOS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS_PER_SIZE = {4: 90, 7: 55, 10: 25}  # 14 scenarios x 170 = 2,380 seeds


def _run_chunk(job):
    scenario, n, seeds = job
    failures = []
    for seed in seeds:
        res = run_seed(scenario, seed, n)
        if res.violation:
            failures.append(f"{res.violation}\n  replay: {res.replay_command()}")
    return len(seeds), failures


def test_simulator_finds_no_violation_in_2000_seeds_across_all_scenarios():
    jobs = []
    for scenario in SCENARIOS:
        for n, count in SEEDS_PER_SIZE.items():
            seeds = list(range(count))
            jobs += [(scenario, n, seeds[i::4]) for i in range(4)]
    start = time.perf_counter()
    with get_context("fork").Pool(max(1, min(2, os.cpu_count() or 1))) as pool:
        results = pool.map(_run_chunk, jobs, chunksize=1)
    total = sum(count for count, _ in results)
    failures = [f for _, fs in results for f in fs]
    elapsed = time.perf_counter() - start
    print(f"\n{total} seeds in {elapsed:.1f}s")
    assert total >= 2000
    assert not failures, "\n".join(failures[:10])
    assert elapsed < 300


def test_planted_f_plus_1_quorum_is_caught_by_the_simulator():
    """With Q = f+1 instead of 2f+1, an equivocating leader gets two entries committed for one round."""
    found = [run_seed("equivocate", seed, 4, quorum_override=2) for seed in range(40)]
    violations = [r.violation for r in found if r.violation]
    assert any(v.startswith("agreement") for v in violations), violations
    # The same seeds with the real quorum are clean: the simulator is not crying wolf.
    assert not [r for r in (run_seed("equivocate", s, 4) for s in range(40)) if r.violation]


def test_a_heavy_flood_of_signed_junk_leaves_replicas_live_and_bounded(monkeypatch):
    from consensus.sim.byzantine import StateFlooder

    monkeypatch.setattr(StateFlooder, "batches", 4)
    results = [run_seed("state_flood", seed, n) for n in (4, 7) for seed in range(4)]
    assert not [r.violation for r in results if r.violation]


@pytest.mark.parametrize("cap", ["record_signature", "record_proposal", "evidence"])
def test_planted_unbounded_table_is_caught_by_the_simulator(monkeypatch, cap):
    """Lift one of the caps of consensus.bounds / _evidence_wanted and the flooder's junk piles up past the limit."""
    import consensus.commit_path as commit_path_module
    import consensus.replica as replica_module
    from consensus.sim.byzantine import StateFlooder

    monkeypatch.setattr(StateFlooder, "batches", 4)

    if cap == "record_signature":
        monkeypatch.setattr(commit_path_module, cap, lambda table, term, rnd, digest, sender, sig: (
            table.setdefault((term, rnd, digest), {}).__setitem__(sender, sig), True)[1])
    elif cap == "record_proposal":
        monkeypatch.setattr(commit_path_module, cap, lambda seen, sender, term, rnd, digest, sig: seen.__setitem__(
            (sender, term, rnd), (digest, sig)))
    else:
        monkeypatch.setattr(replica_module.Replica, "_evidence_wanted", lambda self, e: e.digest() not in self.reported)
    violations = [run_seed("state_flood", seed, 4).violation for seed in range(3)]
    assert all(v and v.startswith("bounded memory") for v in violations), violations


def test_cli_exits_nonzero_and_prints_a_replay_command_on_violation():
    proc = subprocess.run([sys.executable, "-m", "consensus.sim", "--scenario", "equivocate", "--seeds", "40",
                           "--nodes", "4", "--quorum", "2"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    replay = next(line.split("replay: ", 1)[1] for line in proc.stdout.splitlines() if "replay: " in line)
    again = subprocess.run([sys.executable] + replay.split()[1:], cwd=ROOT, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 1 and "VIOLATION" in again.stdout  # the printed command reproduces it


def test_cli_exits_zero_when_every_seed_is_clean():
    proc = subprocess.run([sys.executable, "-m", "consensus.sim", "--scenario", "happy", "lossy", "--seeds", "5",
                           "--nodes", "4", "7"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "20 seeds, 0 with violations" in proc.stdout


def test_a_seed_replays_exactly():
    a, b = run_seed("chaos", 11, 7), run_seed("chaos", 11, 7)
    assert (a.steps, a.rounds, a.violation) == (b.steps, b.rounds, b.violation)
    assert run_seed("chaos", 12, 7).steps != a.steps


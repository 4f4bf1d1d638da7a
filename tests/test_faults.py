"""Network faults against real node processes, each in its own network namespace (tests/netns.py).

One 4-node swarm serves the whole module: every test injects one fault, checks what must happen during it, heals,
and then asserts that all honest nodes converge to one chain (same digest and state hash for every round), which
also leaves the swarm healthy for the next test.
"""
from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from swarm.ops.cluster import ClusterOptions, api_token, init_cluster
from swarm.ops.http_json import get_json
from tests.netns import NetLab, missing_requirements, stop_processes

WHY_NOT = missing_requirements()
pytestmark = [pytest.mark.fault, pytest.mark.slow, pytest.mark.timeout(200),
              pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")]
NAMES = ["node0", "node1", "node2", "node3"]


class Swarm:
    """The running nodes as the test sees them: their APIs on the namespace addresses."""

    def __init__(self, lab: NetLab, specs, procs, token: str, folder):
        self.lab, self.specs, self.procs, self.token, self.folder = lab, {s.name: s for s in specs}, procs, token, folder

    def get(self, name: str, path: str):
        return get_json(f"{self.specs[name].api}{path}", 3.0, self.token)

    def status(self, name: str) -> dict | None:
        return self.get(name, "/status")

    def round(self, name: str) -> int:
        status = self.status(name)
        assert status is not None, f"{name}'s API does not answer"
        return status["round"]

    def leader(self, names: list[str], above_term: int = -1) -> str:
        """The leader that every one of the given nodes follows, in a term above ``above_term``."""
        def agreed():
            views = [(s["leader_name"], s["term"]) for s in (self.status(n) for n in names) if s]
            leaders = {name for name, term in views if term > above_term}
            return next(iter(leaders)) if len(views) == len(names) and len(leaders) == 1 and None not in leaders \
                and all(term > above_term for _, term in views) else None
        return wait_until(agreed, 30, f"{names} to agree on a leader", lambda: self.roles(names))

    def roles(self, names: list[str]) -> dict:
        return {n: (lambda s: s and (s["role"], s["term"], s["leader_name"], s["round"]))(self.status(n))
                for n in names}

    def wait_round(self, names: list[str], round_: int, timeout: float) -> None:
        wait_until(lambda: all((self.status(n) or {}).get("round", -1) >= round_ for n in names), timeout,
                   f"{names} to reach round {round_}", lambda: self.rounds())

    def rounds(self) -> dict[str, int | None]:
        return {n: (self.status(n) or {}).get("round") for n in NAMES}

    def converge(self, names: list[str], timeout: float = 90) -> int:
        """Wait until every node is 2 rounds past the current front, then assert identical chains."""
        target = max(r for r in self.rounds().values() if r is not None) + 2
        self.wait_round(names, target, timeout)
        chains = {n: [(row["round"], row["digest"], row["state_hash"])
                      for row in self.get(n, f"/log?from=1&limit={target}")] for n in names}
        first = chains[names[0]]
        assert [row[0] for row in first] == list(range(1, target + 1))
        for name in names[1:]:
            assert chains[name] == first, f"{name}'s chain differs from {names[0]}'s"
        for name in names:
            status = self.status(name)
            assert not status["diverged"], (name, status["diverged"])
        return target

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.folder / "logs" / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_until(predicate, timeout: float, what: str, last=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; now {last() if last else ''}")


@pytest.fixture(scope="module")
def swarm(tmp_path_factory):
    lab = NetLab(len(NAMES))
    procs = []
    try:
        lab.open()
        folder = tmp_path_factory.mktemp("faults")
        specs = init_cluster(folder, ClusterOptions(
            nodes=len(NAMES), base_port=9000, hosts=[lab.ip(i) for i in range(len(NAMES))], api_host="0.0.0.0",
            local_steps=3))
        (folder / "logs").mkdir()
        if os.environ.get("SWARM_TEST_LOG_LEVEL"):  # e.g. DEBUG, to chase a failure in the nodes' logs
            for spec in specs:
                with open(spec.config_path, "a") as config:
                    config.write(f"log_level: {os.environ['SWARM_TEST_LOG_LEVEL']}\n")
        for i, spec in enumerate(specs):
            procs.append(lab.popen(i, [sys.executable, "-m", "cli.main", "node", "--config", str(spec.config_path)],
                                   folder / "logs" / f"{spec.name}.log"))
        view = Swarm(lab, specs, procs, api_token(folder), folder)
        view.wait_round(NAMES, 2, timeout=120)
        yield view
    finally:
        stop_processes(procs)
        lab.close()


def test_isolated_minority_stops_committing_and_catches_up_after_heal(swarm):
    leader = swarm.leader(NAMES)
    minority = next(n for n in reversed(NAMES) if n != leader)
    majority = [n for n in NAMES if n != minority]
    swarm.lab.isolate(NAMES.index(minority))
    try:
        time.sleep(3)  # a commit already in flight may still land
        frozen = swarm.round(minority)
        swarm.wait_round(majority, max(swarm.round(n) for n in majority) + 3, timeout=60)
        assert swarm.round(minority) == frozen, "an isolated node committed without a quorum"
        assert min(swarm.round(n) for n in majority) > frozen
    finally:
        swarm.lab.heal(NAMES.index(minority))
    swarm.converge(NAMES)
    leader = swarm.leader(majority)
    wait_until(lambda: swarm.status(minority)["leader_name"] == leader, 15, f"{minority} to follow {leader}",
               lambda: swarm.roles(NAMES))


def test_partitioned_leader_is_replaced_and_converges_after_heal(swarm):
    leader = swarm.leader(NAMES)
    rest = [n for n in NAMES if n != leader]
    term = max(swarm.status(n)["term"] for n in rest if swarm.status(n)["leader_name"] == leader)
    swarm.lab.isolate(NAMES.index(leader))
    try:
        new_leader = swarm.leader(rest, above_term=term)
        assert new_leader in rest
        swarm.wait_round(rest, max(swarm.round(n) for n in rest) + 2, timeout=60)
        assert swarm.leader(rest) == new_leader
    finally:
        swarm.lab.heal(NAMES.index(leader))
    swarm.converge(NAMES)


def test_stopped_leader_is_replaced_then_rejoins_as_follower(swarm):
    leader = swarm.leader(NAMES)
    rest = [n for n in NAMES if n != leader]
    term = max(swarm.status(n)["term"] for n in rest if swarm.status(n)["leader_name"] == leader)
    proc = swarm.procs[NAMES.index(leader)]
    proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(3 * 2.0)  # three election timeouts
        swarm.wait_round(rest, max(swarm.round(n) for n in rest) + 2, timeout=60)
        new_leader = swarm.leader(rest, above_term=term)
        assert new_leader != leader
    finally:
        proc.send_signal(signal.SIGCONT)
    swarm.converge(NAMES)
    status = swarm.status(leader)
    assert status["role"] != "leader" and status["leader_name"] != leader, status


def test_slow_link_to_one_node_does_not_stop_the_swarm(swarm):
    leader = swarm.leader(NAMES)
    slow = next(n for n in reversed(NAMES) if n != leader)
    swarm.lab.slow(NAMES.index(slow), "1mbit")
    try:
        start = max(swarm.round(n) for n in NAMES)
        swarm.wait_round([n for n in NAMES if n != slow], start + 3, timeout=90)
    finally:
        swarm.lab.unslow(NAMES.index(slow))
    swarm.converge(NAMES)

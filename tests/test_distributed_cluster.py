"""A multi-worker node in a real cluster (issue 20): four node processes on 127.0.0.1, node0 training through a
group of two gloo workers; its updates are committed like anyone's, a worker killed under it costs it one local
round (logged) and not its place in the swarm, and stopping the cluster leaves none of its processes behind."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import yaml

from swarm.config import write_yaml
from swarm.ops.cluster import Cluster, ClusterOptions, init_cluster
from tests.cluster_harness import api, logs_tail, status, wait_for_round, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
NAMES = [f"node{i}" for i in range(4)]


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, from /proc (Linux)."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _descendants(pid: int) -> list[tuple[int, int]]:
    """(pid, depth) of every process below ``pid``."""
    tree, found, todo = _children(), [], [(pid, 0)]
    while todo:
        parent, depth = todo.pop()
        for child in tree.get(parent, []):
            found.append((child, depth + 1))
            todo.append((child, depth + 1))
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _included_after(cluster: Cluster, round_: int) -> list[int]:
    rows = api(cluster, "node1", f"/log?from={round_ + 1}&limit=50") or []
    return [row["round"] for row in rows if "node0" in row["included"]]


def test_a_node_with_two_gloo_workers_commits_rounds_and_survives_a_worker_crash(tmp_path):
    specs = init_cluster(tmp_path, ClusterOptions(nodes=4, dataset="digits", local_steps=5, batch_size=32))
    config = yaml.safe_load(specs[0].config_path.read_text())
    config["training"]["workers"] = 2
    write_yaml(specs[0].config_path, config)
    cluster = Cluster(tmp_path, specs)
    cluster.start()
    node0 = cluster.procs["node0"].pid
    below: list[tuple[int, int]] = []
    try:
        try:
            wait_for_round(cluster, NAMES, 3, timeout=150)
            assert status(cluster, "node0")["training_workers"] == 2
            assert status(cluster, "node1")["training_workers"] == 1
            assert wait_until(lambda: _included_after(cluster, 0), 60, "a round that counts node0's update")
            # The workers are forked by multiprocessing's fork server, a child of the node: its children.
            below = _descendants(node0)
            workers = [pid for pid, depth in below if depth == 2]
            assert len(workers) == 2, below
            killed_at = status(cluster, "node1")["round"]
            os.kill(workers[1], signal.SIGKILL)
            log_path = tmp_path / "logs" / "node0.log"
            wait_until(lambda: "multi-worker local training failed: worker 1" in log_path.read_text(), 60,
                       "node0 to log the failed round")
            # The group starts again for a later round and node0's updates count again.
            wait_until(lambda: _included_after(cluster, killed_at + 1), 90,
                       "a round after the crash that counts node0's update")
            wait_until(lambda: log_path.read_text().count("worker group started") == 2, 10, "the restart's log line")
            below += _descendants(node0)
            rounds = {name: status(cluster, name)["round"] for name in NAMES}
            assert min(rounds.values()) > killed_at, rounds
        except AssertionError:
            print(logs_tail(cluster, "node0", 60))
            raise
    finally:
        cluster.stop(timeout=90)  # exiting takes 15 s on two cores shared by four nodes and their tests
    assert cluster.procs["node0"].returncode == 0, "node0 shuts down cleanly"
    wait_until(lambda: not any(_running(pid) for pid, _ in below), 15, "node0's workers and fork server to exit")

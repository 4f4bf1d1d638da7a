"""`swarm cluster up/down` as a user runs them: the supervisor stops every child it started, on SIGTERM, on
Ctrl-C (SIGINT) and through `swarm cluster down`; `--rounds N --json` exits with a summary."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.cluster_harness import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as handle:  # a zombie has exited
        return handle.read().split(") ")[1][0] != "Z"


def start_cluster(folder, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cli.main", "cluster", "up", "--nodes", "2", "--dir", str(folder),
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def node_pids(folder) -> list[int]:
    pids_file = folder / "cluster.pids"
    data = json.loads(pids_file.read_text()) if pids_file.exists() else {"nodes": {}}
    return list(data["nodes"].values())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stopping_the_supervisor_leaves_no_orphans(tmp_path, signum):
    proc = start_cluster(tmp_path)
    try:
        pids = wait_until(lambda: node_pids(tmp_path) if len(node_pids(tmp_path)) == 2 else None, 60, "nodes")
        assert all(alive(pid) for pid in pids)
        time.sleep(2)  # let the nodes get going
        proc.send_signal(signum)
        assert proc.wait(timeout=60) == 0
        assert not any(alive(pid) for pid in pids), [pid for pid in pids if alive(pid)]
        assert not (tmp_path / "cluster.pids").exists()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_cluster_down_stops_a_background_cluster(tmp_path):
    proc = start_cluster(tmp_path)
    try:
        pids = wait_until(lambda: node_pids(tmp_path) if len(node_pids(tmp_path)) == 2 else None, 60, "nodes")
        down = subprocess.run([sys.executable, "-m", "cli.main", "cluster", "down", "--dir", str(tmp_path)],
                              capture_output=True, text=True, timeout=60)
        assert down.returncode == 0 and "stopped" in down.stdout
        assert proc.wait(timeout=60) == 0
        assert not any(alive(pid) for pid in pids)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_rounds_json_summary_and_reuse_of_keys(tmp_path):
    result = subprocess.run([sys.executable, "-m", "cli.main", "cluster", "up", "--nodes", "2", "--dir", str(tmp_path),
                             "--rounds", "3", "--json"], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    nodes = summary["nodes"]
    assert set(nodes) == {"node0", "node1"}
    assert all(node["round"] == 3 for node in nodes.values())
    assert len({node["state_hash"] for node in nodes.values()}) == 1
    keys_before = {p.name: p.read_bytes() for p in (tmp_path / "keys").iterdir()}
    again = subprocess.run([sys.executable, "-m", "cli.main", "cluster", "init", "--nodes", "2", "--dir", str(tmp_path)],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "keys").iterdir()} == keys_before


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_node_shuts_down_cleanly_with_exit_code_zero(tmp_path, signum):
    from swarm.ops.cluster import ClusterOptions, init_cluster
    from swarm.ops.http_json import get_json
    (spec,) = init_cluster(tmp_path, ClusterOptions(nodes=1))
    log_path = tmp_path / "node.log"
    with open(log_path, "wb") as log:  # a file, not a pipe: a full pipe would stall the node's logging
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", "node", "--config", str(spec.config_path)],
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        status = wait_until(lambda: get_json(f"{spec.api}/status", 1.0), 60, "the node's API")
        wait_until(lambda: (get_json(f"{spec.api}/status", 1.0) or {}).get("round", 0) >= 2, 60, "two rounds")
        assert status["peer_id"] == spec.peer_id
        proc.send_signal(signum)
        proc.wait(timeout=30)
        output = log_path.read_text()
        assert proc.returncode == 0, output[-2000:]
        assert "stopped at round" in output
        assert not (spec.data_dir / "api.port").exists()
    finally:
        if proc.poll() is None:
            proc.kill()

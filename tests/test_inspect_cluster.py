"""Inspecting a real 4-node swarm with a sign-flipping attacker: CLI, /metrics, the dashboard in headless Chromium,
and `swarm verify` on every store once the nodes stop (and on a copy with one flipped byte).

One cluster for the whole module (CI time); the tests that need live nodes run first, in file order, then the
fixture `stopped` stops the cluster so the stores are closed before the audits read them.
"""
from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from cli.main import main
from crypto import wire
from swarm.ops.http_json import get_json
from tests.cluster_harness import logs_tail, metrics, running_cluster, wait_for_round, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
NAMES = ["node0", "node1", "node2", "node3"]
HONEST = NAMES[:3]
ROUNDS = 12


@pytest.fixture(scope="module")
def swarm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inspect")
    with running_cluster(folder, max_rounds=ROUNDS, attacks={"node3": "sign_flip"}) as cluster:
        try:
            url = cluster.spec("node0").api
            wait_until(lambda: (get_json(url + "/status") or {}).get("round", 0) >= 1, 240, "round 1", 0.05)
            early = metrics(cluster, "node0")
            wait_for_round(cluster, HONEST, ROUNDS, timeout=300)
        except AssertionError:
            print(logs_tail(cluster, "node0"))
            raise
        cluster.early_metrics = early
        yield cluster


@pytest.fixture(scope="module")
def stopped(swarm):
    swarm.stop()
    return swarm


def _cli_json(capsys, *argv) -> object:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_peers_shows_every_member_and_the_attacker_quarantined(swarm, capsys):
    rows = _cli_json(capsys, "peers", "--data-dir", str(swarm.spec("node0").data_dir))
    assert sorted(row["name"] for row in rows) == NAMES
    assert all(0.1 <= row["reputation"] <= 1.0 for row in rows)
    by_name = {row["name"]: row for row in rows}
    assert by_name["node3"]["quarantined"] and "under the floor" in by_name["node3"]["why"]
    assert not any(by_name[name]["quarantined"] for name in HONEST)


def test_log_has_one_entry_per_round_with_a_quorum_of_distinct_signers(swarm, capsys):
    rows = _cli_json(capsys, "log", "--api", swarm.spec("node1").api)
    assert [row["round"] for row in rows] == list(range(1, len(rows) + 1)) and len(rows) >= ROUNDS
    for row in rows:
        assert len(set(row["certificate_signer_ids"])) >= 3, row  # 2f+1 with f = 1
        assert len(row["digest"]) == 64 and len(row["state_hash"]) == 64


def test_metrics_parse_and_counters_move_as_rounds_commit(swarm):
    early, late = swarm.early_metrics, metrics(swarm, "node0")
    assert early["swarm_round"] < ROUNDS <= late["swarm_round"]
    assert late["swarm_rounds_committed_total"] > early["swarm_rounds_committed_total"]
    assert late["swarm_round_seconds_count"] > early["swarm_round_seconds_count"]
    assert late["swarm_bytes_in_total"] > early["swarm_bytes_in_total"]
    assert late["swarm_term"] >= 1
    attacker = next(v for k, v in late.items() if k.startswith("swarm_peer_reputation") and '"node3"' in k)
    assert attacker < 0.6


def test_top_once_shows_every_node_and_reputation_bars(swarm, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["top", "--dir", str(swarm.folder), "--once"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in NAMES)
    assert "quarantined" in out and "█" in out


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if path is None:
        pytest.skip("no chromium in PATH (Debian: apt-get install chromium chromium-driver)")
    return path


def _headless(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--window-size=1280,900", "--virtual-time-budget=8000"]
    return subprocess.run([chromium, *flags, *args], capture_output=True, text=True, timeout=120)


def test_dashboard_draws_curves_and_reputation_in_headless_chromium(swarm, tmp_path):
    chromium = _chromium()
    url = swarm.spec("node0").api + "/"
    dom = _headless(chromium, tmp_path / "profile-dom", "--dump-dom", url).stdout
    assert 'data-loaded="true"' in dom, dom[:2000]
    import re
    points = {m.group(1): int(m.group(2)) for m in re.finditer(r'<svg id="chart-(\w+)"[^>]*data-points="(\d+)"', dom)}
    assert points["loss"] >= ROUNDS and points["accuracy"] >= ROUNDS, points
    assert points["reputation"] >= 4 * 2, points  # four members, sampled over several rounds
    assert dom.count("<polyline") >= 2 + 4
    assert "node3" in dom and "quarantined" in dom
    shot = tmp_path / "dashboard.png"
    _headless(chromium, tmp_path / "profile-shot", f"--screenshot={shot}", url)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


@pytest.mark.parametrize("name", NAMES)
def test_verify_passes_on_every_store(stopped, name, capsys):
    code = main(["verify", "--data-dir", str(stopped.spec(name).data_dir)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "OK" in out


def _copy_node(cluster, name: str, dest: Path) -> Path:
    """The cluster layout for one node (genesis, config, data) under ``dest``; returns its data folder."""
    shutil.copy(cluster.folder / "genesis.yaml", dest / "genesis.yaml")
    shutil.copy(cluster.folder / f"{name}.yaml", dest / f"{name}.yaml")
    shutil.copytree(cluster.spec(name).data_dir, dest / "data" / name)
    return dest / "data" / name


def _flip_byte_in(db_path: Path, table: str, column: str, key: str, value, inside: bytes) -> None:
    """Flip one byte of ``inside`` where it sits in the stored blob (a signature in a certificate, a payload)."""
    with sqlite3.connect(db_path) as db:
        blob = bytearray(db.execute(f"SELECT {column} FROM {table} WHERE {key} = ?", (value,)).fetchone()[0])
        at = blob.find(inside) + len(inside) // 2
        assert at >= len(inside) // 2, "the bytes to flip are not in the blob"
        blob[at] ^= 0x01
        db.execute(f"UPDATE {table} SET {column} = ? WHERE {key} = ?", (bytes(blob), value))


def _verify_json(data_dir: Path, capsys) -> tuple[int, dict]:
    code = main(["verify", "--data-dir", str(data_dir), "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_verify_names_the_round_of_a_flipped_certificate_signature(stopped, tmp_path, capsys):
    data_dir = _copy_node(stopped, "node1", tmp_path)
    db_path = data_dir / "node.sqlite"
    with sqlite3.connect(db_path) as db:
        cert = wire.loads(db.execute("SELECT certificate FROM chain WHERE round = 5").fetchone()[0])
    _flip_byte_in(db_path, "chain", "certificate", "round", 5, cert["sigs"][0][1])
    code, report = _verify_json(data_dir, capsys)
    assert code == 1 and not report["ok"]
    assert {(f["round"], f["check"]) for f in report["failures"]} >= {(5, "certificate")}, report
    assert all(f["round"] == 5 for f in report["failures"]), report


def test_verify_names_the_round_of_a_flipped_gradient_byte(stopped, tmp_path, capsys):
    data_dir = _copy_node(stopped, "node2", tmp_path)
    db_path = data_dir / "node.sqlite"
    with sqlite3.connect(db_path) as db:
        (digest,) = db.execute("SELECT digest FROM payloads WHERE round = 7 ORDER BY digest").fetchone()
    path = data_dir / "payloads" / digest.hex()[:2] / digest.hex()
    flipped = bytearray(path.read_bytes())
    flipped[len(flipped) // 2] ^= 0x01
    path.write_bytes(bytes(flipped))
    code = main(["verify", "--data-dir", str(data_dir)])
    out = capsys.readouterr().out
    assert code == 1
    assert "round 7: gradient" in " ".join(out.split()), out

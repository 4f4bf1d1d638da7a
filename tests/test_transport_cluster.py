"""The transport between real processes on 127.0.0.1: four member nodes (peer_process) plus a rogue client.

One cluster is shared by the module (starting libp2p processes costs ~1.5 s each on 2 cores); tests that kill
or freeze a node bring it back before they return, and the fixture stops every process and checks exit code 0.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crypto.keys import NodeKey
from swarm.transport.bulk import FETCH_PROTOCOL, PUSH_PROTOCOL
from swarm.transport.engine import CONTROL_PROTOCOL
from swarm.transport.framing import BULK_MAGIC, KIND_DATA, bulk_header, encode_control
from swarm.transport.harness.cluster import REPO, Cluster, free_port, make_key
from swarm.transport.harness.rogue import raw_tcp_garbage, run_rogue

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    c = Cluster(tmp_path_factory.mktemp("transport"), 4, spare_members=1)
    try:
        c.start_all()
        c.wait_mesh(timeout=20)
        yield c
    finally:
        codes = [c.stop(p) for p in c.peers]
    assert codes == [0, 0, 0, 0], f"clean SIGTERM exits expected, got {codes}"


def wait_for(predicate, timeout: float, step: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError("condition not met in time")


def assert_healthy(cluster: Cluster, sender_index: int = 1, size: int = 100_000, seed: int = 7) -> None:
    """Every node answers /status and a fresh push + control burst from one node reaches the others."""
    for peer in cluster.peers:
        assert peer.status()["peer_id"] == peer.peer_id
    sender = cluster.peers[sender_index]
    others = [p for p in cluster.peers if p is not sender]
    before = {p.name: len(p.received()["payloads"]) for p in others}
    result = sender.call("POST", "/push", {"size": size, "seed": seed})
    assert all(r["ok"] for r in result["results"].values()), result
    sender.call("POST", "/send", {"count": 20})
    for p in others:
        rec = wait_for(lambda p=p: (r := p.received()) and len(r["payloads"]) > before[p.name] and r, 5)
        assert rec["payloads"][-1]["digest"] == result["digest"] and rec["payloads"][-1]["digest_ok"]
        wait_for(lambda p=p: p.received()["control"].get(sender.peer_id, {}).get("in_order") is not None, 5)
        assert p.received()["control"][sender.peer_id]["in_order"]


def test_four_nodes_mesh_from_bootstrap_list(cluster: Cluster) -> None:
    for peer in cluster.peers:
        status = peer.status()
        assert status["listen_addrs"][0].endswith(peer.peer_id)
        assert peer.connected() == {q.peer_id for q in cluster.peers if q is not peer}
        assert status["peers"][cluster.spare_keys[0].peer_id]["connected"] is False


def test_8mb_push_arrives_intact_at_three_peers_and_can_be_fetched(cluster: Cluster) -> None:
    src = cluster.peers[0]
    result = src.call("POST", "/push", {"size": 8 << 20, "seed": 42})
    assert set(result["results"]) == {p.peer_id for p in cluster.peers[1:]}
    assert all(r["ok"] for r in result["results"].values()), result
    for peer in cluster.peers[1:]:
        got = [x for x in peer.received()["payloads"] if x["digest"] == result["digest"]]
        assert len(got) == 1 and got[0]["size"] == 8 << 20 and got[0]["digest_ok"] and got[0]["from"] == src.peer_id
    fetched = cluster.peers[2].call("POST", "/fetch", {"peer": cluster.peers[1].peer_id, "digest": result["digest"]})
    assert fetched == {"found": True, "size": 8 << 20}
    missing = cluster.peers[2].call("POST", "/fetch", {"peer": cluster.peers[1].peer_id, "digest": "00" * 32})
    assert missing["found"] is False


def test_push_to_chosen_peers_reaches_only_them(cluster: Cluster) -> None:
    """What a follower uses to hand a round's payloads to a leader that lacks them."""
    src, chosen = cluster.peers[3], cluster.peers[1]
    result = src.call("POST", "/push", {"size": 100_000, "seed": 7, "to": [chosen.peer_id]})
    assert list(result["results"]) == [chosen.peer_id] and result["results"][chosen.peer_id]["ok"], result
    for peer in cluster.peers[:3]:
        got = [x for x in peer.received()["payloads"] if x["digest"] == result["digest"]]
        assert len(got) == (1 if peer is chosen else 0), peer.peer_id


def test_pushes_reuse_one_stream_per_peer(cluster: Cluster) -> None:
    """Back-to-back pushes travel on the stream the first one opened (no negotiation per push), intact."""
    src = cluster.peers[2]
    src.call("POST", "/push", {"size": 70_000, "seed": 1})
    opened = src.status()["stats"]["push_streams_opened"]
    assert opened >= 3
    digests = [src.call("POST", "/push", {"size": size, "seed": i})["digest"]
               for i, size in enumerate([10, 1 << 20, 3 << 20, 0, 65_536, 300_001])]
    assert src.status()["stats"]["push_streams_opened"] == opened
    for peer in cluster.peers:
        if peer is not src:
            rec = [p for p in peer.received()["payloads"] if p["from"] == src.peer_id]
            assert [p["digest"] for p in rec[-6:]] == digests and all(p["digest_ok"] for p in rec)


def test_1000_control_messages_arrive_complete_and_in_order(cluster: Cluster) -> None:
    src, dst = cluster.peers[0], cluster.peers[3]
    dst.call("POST", "/clear")
    src.call("POST", "/send", {"peer": dst.peer_id, "count": 1000, "pad": 200})
    entry = wait_for(lambda: (c := dst.received()["control"].get(src.peer_id)) and c["count"] >= 1000 and c, 10)
    assert entry["count"] == 1000 and entry["in_order"] and entry["last"] - entry["first"] == 999
    assert src.status()["stats"]["control_dropped"] == 0


def test_kill_9_is_noticed_within_2s_and_restart_reconnects(cluster: Cluster) -> None:
    victim, others = cluster.peers[3], cluster.peers[:3]
    cluster.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(lambda: all(victim.peer_id not in p.connected() for p in others), 2.0)
    noticed = time.monotonic() - killed_at
    assert noticed < 2.0
    changes = others[0].received()["peer_changes"]
    assert changes[-1] == {**changes[-1], "peer": victim.peer_id, "connected": False}

    cluster.spawn(victim, [others[0].addr])
    cluster.wait_ready(victim)
    cluster.wait_mesh(timeout=10)
    assert_healthy(cluster, sender_index=3)
    assert_healthy(cluster, sender_index=0)  # node0's push streams to the old process are gone: new ones work


def test_frozen_peer_is_noticed_from_heartbeats(cluster: Cluster) -> None:
    victim, others = cluster.peers[2], [p for i, p in enumerate(cluster.peers) if i != 2]
    os.kill(victim.proc.pid, signal.SIGSTOP)  # type: ignore[union-attr]
    try:
        stopped_at = time.monotonic()
        wait_for(lambda: all(victim.peer_id not in p.connected() for p in others), 4.0)
        assert time.monotonic() - stopped_at < 3.5  # peer_timeout_s (2 s) + a heartbeat
    finally:
        os.kill(victim.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
    cluster.wait_mesh(timeout=15)
    assert_healthy(cluster, sender_index=2, seed=8)


def test_non_member_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    target = cluster.peers[0]
    before = target.status()["stats"]["refused_connections"]
    report = run_rogue(NodeKey.generate(), target.addr, [(CONTROL_PROTOCOL, encode_control(KIND_DATA, b"hi"))])
    assert not report.connected and report.error
    assert target.status()["stats"]["refused_connections"] > before
    assert any("not a genesis member" in m["reason"] for m in target.received()["misbehaviour"])

    # and a whole outsider node started with the member list but its own key never joins the mesh
    key_path, outsider_id = make_key(tmp_path, "outsider")
    refused = sum(p.status()["stats"]["refused_connections"] for p in cluster.peers)
    proc = subprocess.Popen([sys.executable, "-m", "swarm.transport.harness.peer_process", "--key", str(key_path),
                             "--members", ",".join(cluster.members + [outsider_id]), "--bootstrap",
                             *[p.addr for p in cluster.peers]], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: sum(p.status()["stats"]["refused_connections"] for p in cluster.peers) > refused, 8, 0.2)
        for peer in cluster.peers:
            assert outsider_id not in peer.status()["peers"]
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


@pytest.mark.parametrize("security,muxer", [("plaintext", "yamux"), ("noise", "mplex")])
def test_plaintext_or_mplex_dialer_is_refused(cluster: Cluster, security: str, muxer: str) -> None:
    report = run_rogue(cluster.spare_keys[0], cluster.peers[1].addr,
                       [(CONTROL_PROTOCOL, encode_control(KIND_DATA, b"0:x"))], security=security, muxer=muxer)
    assert not report.connected, report
    assert cluster.peers[1].received()["control"].get(cluster.spare_keys[0].peer_id) is None


GARBAGE = [
    (CONTROL_PROTOCOL, os.urandom(4096)),
    (CONTROL_PROTOCOL, b"\xff\xff\xff\xff\x00" + b"x" * 100),                  # length far past the limit
    (CONTROL_PROTOCOL, b"\x00\x00\x00\x05\x07hello"),                            # unknown kind
    (CONTROL_PROTOCOL, encode_control(2, b"\xff\xfe not utf8")),                 # hello that is not text
    (CONTROL_PROTOCOL, b"\x00\x00\x10\x00\x00" + b"truncated"),                  # body never completes
    (PUSH_PROTOCOL, os.urandom(4096)),                                            # bad magic
    (PUSH_PROTOCOL, BULK_MAGIC + b"\xff" * 8 + b"\0" * 32),                       # 16 EiB announced
    (PUSH_PROTOCOL, bulk_header(10, b"\0" * 32) + b"0123456789"),                 # wrong digest
    (PUSH_PROTOCOL, bulk_header(1 << 20, b"\0" * 32) + b"short"),                 # truncated body
    (FETCH_PROTOCOL, b"\x01\x02"),                                                # short digest
    (FETCH_PROTOCOL, os.urandom(5000)),
    ("/swarm/nonexistent/1.0.0", b"hello"),
]


def test_garbage_never_kills_a_node(cluster: Cluster) -> None:
    target = cluster.peers[0]
    target.call("POST", "/clear")
    # a member's key (genesis member with no process) speaking garbage on every protocol
    report = run_rogue(cluster.spare_keys[0], target.addr, GARBAGE)
    assert report.connected, report
    reasons = target.received()["misbehaviour"]
    assert len([m for m in reasons if m["peer"] == cluster.spare_keys[0].peer_id]) >= 5, reasons
    # a non-member trying the same, and raw bytes under libp2p's negotiation
    outsider = run_rogue(NodeKey.generate(), target.addr, GARBAGE[:3])
    assert not outsider.connected
    for blob in (os.urandom(2000), b"/multistream/1.0.0\n" * 50, b"\x13/multistream/1.0.0\n\x07/noise\n" + os.urandom(300)):
        raw_tcp_garbage(target.port, blob)
    assert target.received()["control"].get(cluster.spare_keys[0].peer_id) is None
    assert_healthy(cluster, sender_index=0, seed=9)
    assert_healthy(cluster, sender_index=1, seed=10)


def test_listen_port_is_not_shared(cluster: Cluster, tmp_path: Path) -> None:
    """SO_REUSEPORT is off: a second process on a member's port fails instead of stealing its dials."""
    key_path, _ = make_key(tmp_path, "squatter")
    proc = subprocess.run([sys.executable, "-m", "swarm.transport.harness.peer_process", "--key", str(key_path),
                           "--listen", f"/ip4/127.0.0.1/tcp/{cluster.peers[1].port}", "--members",
                           ",".join(cluster.members)], cwd=REPO, capture_output=True, timeout=30)
    assert proc.returncode != 0
    assert free_port() != cluster.peers[1].port
    assert_healthy(cluster, sender_index=1, seed=11)

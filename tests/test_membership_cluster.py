"""Members leave and join a running swarm (issue 19), with real node processes on 127.0.0.1: a 5-member swarm
removes node4 through `swarm members remove`, goes on committing with n = 4, adds node4 back through `swarm members
add`, which catches up and counts again, and `swarm verify` passes across both changes."""
from __future__ import annotations

import pytest

from cli.main import main as swarm
from tests.cluster_harness import api, logs_tail, running_cluster, wait_until

pytestmark = pytest.mark.slow
NAMES = [f"node{i}" for i in range(5)]


def members_of(cluster, name):
    view = api(cluster, name, "/members")
    return None if view is None else view


def hashes_at(cluster, names, round_):
    """Each node's committed state hash of ``round_`` (from its /log), None where it has not got there."""
    out = {}
    for name in names:
        rows = api(cluster, name, f"/log?from={round_}&limit=1")
        out[name] = rows[0]["state_hash"] if rows and rows[0]["round"] == round_ else None
    return out


def wait_equal_hashes(cluster, names, round_, timeout=90):
    def equal():
        hashes = hashes_at(cluster, names, round_)
        return hashes if None not in hashes.values() and len(set(hashes.values())) == 1 else None
    return wait_until(equal, timeout, f"{names} to commit round {round_} with one state hash")


def test_a_member_is_removed_and_added_back_while_the_swarm_commits(tmp_path):
    folder = tmp_path / "swarm"
    with running_cluster(folder, nodes=5, local_steps=2) as cluster:
        try:
            wait_equal_hashes(cluster, NAMES, 3, timeout=240)  # five processes starting on a busy machine
            config0, config1 = cluster.spec("node0").config_path, cluster.spec("node1").config_path
            node4 = cluster.spec("node4").peer_id

            assert swarm(["members", "remove", "node4", "--config", str(config0)]) == 0
            view = wait_until(lambda: (v := members_of(cluster, "node1")) and v["n"] == 4 and v, 60,
                              "the removal to commit")
            removed_at = view["history"][-1]["round"]
            assert (view["f"], view["quorum"], view["since"]) == (1, 3, removed_at + 1)
            assert node4 not in [m["peer_id"] for m in view["members"]]
            # the four go on; node4 says it is out and its round stops
            wait_equal_hashes(cluster, NAMES[:4], removed_at + 3)
            assert wait_until(lambda: (v := members_of(cluster, "node4")) and v["this_node"] == "not a member",
                              30, "node4 to see its removal")
            assert "not a member of the configuration in force" in logs_tail(cluster, "node4", 400)
            assert node4 not in [p["peer_id"] for p in api(cluster, "node0", "/peers")]

            assert swarm(["members", "add", "--peer-id", node4, "--name", "node4", "--config", str(config1)]) == 0
            view = wait_until(lambda: (v := members_of(cluster, "node2")) and v["n"] == 5 and v, 60,
                              "the addition to commit")
            added_at = view["history"][-1]["round"]
            assert [h["op"] for h in view["history"]] == ["remove", "add"]
            # node4 catches up through the change and counts again: all five agree on a later round
            wait_equal_hashes(cluster, NAMES, added_at + 3, timeout=120)
            wait_until(lambda: any(p["name"] == "node4" and p["rounds_included"] >= 1
                                   for p in api(cluster, "node0", "/peers") or []), 90, "node4's updates to count again")
        except AssertionError:
            print(logs_tail(cluster, "node0", 60), logs_tail(cluster, "node4", 60), sep="\n----\n")
            raise
    # the stored chain of a member that saw both changes audits clean
    assert swarm(["verify", "--data-dir", str(cluster.spec("node0").data_dir)]) == 0

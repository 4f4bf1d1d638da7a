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


def applied_all_stored(cluster, name) -> bool:
    """The node's state is at the newest round its store holds (no stored row is waiting to be applied)."""
    status = api(cluster, name, "/status")
    return status is not None and api(cluster, name, f"/log?from={status['round'] + 1}&limit=1") == []


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


def test_the_swarm_grows_from_4_to_5_and_7_members_and_shrinks_back_to_4(tmp_path):
    """Joiners outside the genesis (swarm cluster join's recipe: their own keys, configs like node0's) are added
    one at a time while the swarm commits; each catches up from round 1; then the three leave.
    After each change every member agrees on the state hash of a later round; a removed member's connections are
    refused (counted as non_member); swarm verify passes on a member and on a joiner."""
    from cli.members import submit_change
    from swarm.ops.cluster import join_spec
    from tests.cluster_harness import metrics

    folder = tmp_path / "swarm"
    # 20 local steps a round: the swarm commits more slowly than a joiner replays, so joiners catch up by replay
    with running_cluster(folder, nodes=4, local_steps=20) as cluster:
        config0 = str(cluster.spec("node0").config_path)
        members = ["node0", "node1", "node2", "node3"]
        try:
            wait_equal_hashes(cluster, members, 2, timeout=240)

            def change(op, name, peer_id=None):
                submit_change(config0, op, peer_id or name, name)
                n = len(members) + (1 if op == "add" else -1)
                view = wait_until(lambda: (v := members_of(cluster, "node0")) and v["n"] == n and v, 90,
                                  f"{op} {name} to commit")
                if op == "add":
                    members.append(name)
                else:
                    members.remove(name)
                wait_equal_hashes(cluster, members, view["round"] + 2, timeout=150)
                return view

            joiners = []
            for _ in range(3):
                spec = join_spec(folder)
                cluster.specs.append(spec)
                cluster.start_node(spec)
                joiners.append(spec)
            view = change("add", joiners[0].name, joiners[0].peer_id)
            assert (view["n"], view["f"], view["quorum"]) == (5, 1, 4)
            change("add", joiners[1].name, joiners[1].peer_id)
            view = change("add", joiners[2].name, joiners[2].peer_id)
            assert (view["n"], view["f"], view["quorum"]) == (7, 2, 5)
            for spec in joiners:  # each joiner replays the chain from round 1 until it applies its own addition
                wait_until(lambda s=spec: (members_of(cluster, s.name) or {}).get("this_node") == "member", 240,
                           f"{spec.name} to catch up to its addition")
            for spec in joiners:  # and on to the head: once removed, its peers refuse it, payloads included
                wait_until(lambda s=spec: applied_all_stored(cluster, s.name), 240, f"{spec.name} to catch up")
            for spec in reversed(joiners):
                view = change("remove", spec.name)
            assert (view["n"], view["f"], view["quorum"]) == (4, 1, 3)
            assert [h["op"] for h in view["history"]] == ["add"] * 3 + ["remove"] * 3
            assert members_of(cluster, joiners[0].name)["this_node"] == "not a member"
            wait_until(lambda: any("non_member" in k for k, v in metrics(cluster, "node0").items() if v > 0), 60,
                       "a removed member's connection to be refused")
            # a removed joiner applies what its core stored before it left (rows run ahead of the applied state
            # while a node replays), so that its store can be audited whole
            wait_until(lambda: applied_all_stored(cluster, joiners[1].name), 120, f"{joiners[1].name} to apply its rows")
        except AssertionError:
            print(*(logs_tail(cluster, name, 40) for name in ("node0", "node4", "node6")), sep="\n----\n")
            raise
    assert swarm(["verify", "--data-dir", str(cluster.spec("node1").data_dir)]) == 0
    assert swarm(["verify", "--data-dir", str(joiners[1].data_dir)]) == 0

"""Gradient equivocation convicted end to end (issue 18), on real node processes: a 4-member swarm whose node3 runs
the "equivocate" attack profile (each round it signs two different gradients and pushes both to every member).
Every honest member catches the pair, a leader's entry carries the compact proof, and every honest node's committed
reputation holds node3's penalty, each offence committed once, the same entries on every node.

Two separate processes holding one key are not used here: the transport keys connections by peer id, so two
processes with one identity take each other's connections (heartbeats go to one, the other drops its peers as
silent) and whether both gradients of a round arrive in time is a race; the attack profile sends exactly what such
a pair would, two different gradients signed by node3 for one round."""
from __future__ import annotations

import pytest

from swarm.ledger.store import Store
from swarm.round.gradient import equivocation_from_plain
from tests.cluster_harness import api, logs_tail, running_cluster, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
HONEST = ["node0", "node1", "node2"]


def test_an_equivocating_member_is_convicted_in_the_committed_reputation_of_every_node(tmp_path):
    with running_cluster(tmp_path, max_rounds=12, attacks={"node3": "equivocate"}) as cluster:
        accused = cluster.spec("node3").peer_id

        def penalties(name: str) -> int:
            rows = api(cluster, name, "/peers") or []
            return next((row["penalties"] for row in rows if row["peer_id"] == accused), 0)

        try:
            wait_until(lambda: all(penalties(name) >= 1 for name in HONEST), 180, "node3 convicted on every node")
        except AssertionError:
            print(logs_tail(cluster, "node0", 40))
            raise
        for row in api(cluster, "node0", "/peers"):
            assert (row["penalties"] >= 1) == (row["peer_id"] == accused), row

    carried = {}
    for name in HONEST:
        store = Store(tmp_path / "data" / name)
        try:
            carried[name] = [(row.round, item) for row in store.rows()
                             for item in row.entry["params"].get("evidence", [])]
        finally:
            store.close()
    first = carried["node0"]
    print("gradient evidence committed in rounds", [round_ for round_, _item in first])
    assert first and all(item.get("kind") == "gradient" for _round, item in first)
    assert all(equivocation_from_plain(item).sender == accused for _round, item in first)
    for name in HONEST[1:]:  # the same entries on every honest node, as far as each got
        common = min(len(first), len(carried[name]))
        assert carried[name][:common] == first[:common]
    offences = [equivocation_from_plain(item).digest() for _round, item in first]
    assert len(offences) == len(set(offences))  # each (key, round) convicted once

"""Real 4-process swarms (issue 16): `swarm cluster up --task lm` commits 10 rounds with equal state hashes and a
falling validation loss, and a user's task loaded by import string from outside the package (examples/) commits
rounds with equal state hashes."""
from __future__ import annotations

import itertools

import pytest

from tests.cluster_harness import (
    api,
    logs_tail,
    running_cluster,
    wait_for_round,
    wait_until,
)

NAMES = [f"node{i}" for i in range(4)]


def _hashes_at(cluster, round_: int) -> set[str]:
    rows = {name: api(cluster, name, f"/log?from={round_}&limit=1") or [] for name in NAMES}
    return {row[0]["state_hash"] for row in rows.values() if row}


@pytest.mark.slow
def test_a_four_node_lm_swarm_commits_ten_rounds_with_falling_validation_loss(tmp_path):
    with running_cluster(tmp_path, nodes=4, task="lm", dataset="stdlib", lr=None, batch_size=16,
                         local_steps=10) as cluster:
        try:
            wait_for_round(cluster, NAMES, 10, timeout=240)
            assert len(_hashes_at(cluster, 10)) == 1
            losses = wait_until(lambda: _losses(cluster), 60, "round 10's evaluation")
        except AssertionError:
            print(logs_tail(cluster, "node0"))
            raise
    assert losses[-1] < losses[0] - 1.0, losses  # nats per byte, from about 4.6
    assert sum(b < a for a, b in itertools.pairwise(losses)) >= 7, losses


def _losses(cluster) -> list[float] | None:
    rows = api(cluster, "node0", "/log?from=1&limit=10") or []
    losses = [row["loss"] for row in rows]
    return losses if len(losses) == 10 and all(loss is not None for loss in losses) else None


@pytest.mark.slow
def test_a_user_task_by_import_string_runs_in_a_four_process_cluster(tmp_path):
    with running_cluster(tmp_path, nodes=4, task="examples.tiny_task:TinyRegression",
                         dataset="examples.tiny_task:own_data", lr=None, local_steps=10) as cluster:
        try:
            wait_for_round(cluster, NAMES, 5, timeout=180)
            assert len(_hashes_at(cluster, 5)) == 1
        except AssertionError:
            print(logs_tail(cluster, "node0"))
            raise
    genesis = (tmp_path / "genesis.yaml").read_text()
    assert "examples.tiny_task:TinyRegression" in genesis

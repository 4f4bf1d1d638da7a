"""A node that crashed after pushing its gradient pushes the same signed gradient again after the restart, never a
second one for the same round: two different signed gradients from one member for one round are now committed
as equivocation (issue 18), and an honest restart must not be convicted."""
from __future__ import annotations

import asyncio

import pytest


@pytest.fixture
def built(tmp_path):
    from crypto.keys import load_key
    from swarm.config import load_genesis, load_node_config
    from swarm.node.node import Node
    from swarm.ops.cluster import ClusterOptions, init_cluster

    specs = init_cluster(tmp_path, ClusterOptions(nodes=4))
    config = load_node_config(specs[0].config_path)

    def make():
        return Node(load_node_config(specs[0].config_path), load_genesis(config.genesis), load_key(config.identity))
    return make


async def _contribute(node) -> list[bytes]:
    pushed = []

    async def push(raw, to=None):
        pushed.append(raw)

    node.contributor._push = push
    await node.contributor.contribute(1, node.state, [], lambda: True, lambda: None)
    return pushed


def test_a_restarted_node_pushes_the_gradient_it_signed_before_not_a_new_one(built):
    first = built()
    first.trainer.local_update(first.state.params)  # its batches moved on (earlier rounds): a retrain would differ
    pushed_before = asyncio.run(_contribute(first))
    first.close()
    again = built()  # same data dir: a restart before round 1 committed
    pushed_after = asyncio.run(_contribute(again))
    assert len(pushed_before) == 1 and pushed_after == pushed_before
    assert [g.raw for g in again.pool.for_round(1, again.state.hash)] == pushed_before
    again.close()


def test_the_saved_gradient_is_not_reused_for_another_round_or_a_damaged_file(built):
    node = built()
    pushed = asyncio.run(_contribute(node))
    node.contributor.own.path.write_bytes(pushed[0][:-1] + bytes([pushed[0][-1] ^ 1]))  # damaged: train afresh
    assert node.contributor._signed_before(1, node.state) is None
    node.contributor.own.save(pushed[0])
    assert node.contributor._signed_before(2, node.state) is None  # another round
    assert node.contributor._signed_before(1, node.state) is not None
    node.close()

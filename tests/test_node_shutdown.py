"""A node's run() returns promptly after stop(), whatever its tasks were doing at that instant.

Runs a one-node swarm in this process (real libp2p host on 127.0.0.1, SQLite store) and stops it at the moment
its ticker is woken: on Python 3.11 ``asyncio.wait_for`` swallowed a cancellation that landed as the awaited
event was set, and the ticker then ran elections forever after shutdown (the node never exited on SIGTERM).
"""
from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.slow


async def _run_until_round(node, round_: int, timeout: float) -> asyncio.Task:
    task = asyncio.create_task(node.run(), name="node-run")
    deadline = asyncio.get_running_loop().time() + timeout
    while node.state.round < round_:
        assert not task.done(), task.exception()
        assert asyncio.get_running_loop().time() < deadline, f"round {round_} not reached"
        await asyncio.sleep(0.01)
    return task


def test_stop_while_the_ticker_is_woken_returns_promptly(tmp_path):
    from crypto.keys import load_key
    from swarm.config import load_genesis, load_node_config
    from swarm.node.node import Node
    from swarm.ops.cluster import ClusterOptions, init_cluster

    (spec,) = init_cluster(tmp_path, ClusterOptions(nodes=1))
    config = load_node_config(spec.config_path)

    async def scenario() -> list[int]:
        stopped_at = []
        for attempt in range(3):  # the race needs the wake and the cancellation in the same loop turns
            node = Node(config, load_genesis(config.genesis), load_key(config.identity))
            task = await _run_until_round(node, 2 + attempt, 60)
            for _ in range(attempt):
                await asyncio.sleep(0)
            node.wake()
            node.stop()
            await asyncio.wait_for(task, 15)  # raises TimeoutError when a task outlived the shutdown
            stopped_at.append(node.state.round)
        return stopped_at

    stopped_at = asyncio.run(scenario())
    assert len(stopped_at) == 3 and all(r >= 2 for r in stopped_at)

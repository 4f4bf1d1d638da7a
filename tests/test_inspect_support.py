"""Test support (no tests here): a stand-in for swarm.node.node.Node with just what the API and metrics read, and a
threaded server for an aiohttp app, for inspection tests that need no node processes."""
from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Iterator

import torch
from aiohttp import web

from crypto.keys import NodeKey
from swarm.config import Genesis, Member
from swarm.ledger.apply import RoundRules
from swarm.ledger.state import genesis_state
from swarm.node.records import Metrics
from swarm.node.peer_scores import PeerScores


def fake_node(names=("a", "b", "c", "d")) -> SimpleNamespace:
    keys = [NodeKey.generate() for _ in names]
    genesis = Genesis(swarm_id="test", members=[Member(n, k.peer_id) for n, k in zip(names, keys)])
    me = keys[0].peer_id
    state = genesis_state(torch.zeros(8), genesis.peer_ids, b"\0" * 32)
    transport = SimpleNamespace(peers=lambda: {}, listen_addrs=["/ip4/127.0.0.1/tcp/1"])
    core = SimpleNamespace(term=3, role="leader", leader=me)
    return SimpleNamespace(
        id=me, name=names[0], genesis=genesis, state=state, metrics=Metrics(), scores=PeerScores(),
        rules=RoundRules(f=genesis.f, rule="median"), core=core, transport=transport, history=deque(),
        last_eval=None, diverged=None, started=time.time(), store=SimpleNamespace(rows=lambda start, limit: iter(())))


@contextmanager
def serving(app) -> Iterator[str]:
    """Serve an aiohttp app on a free 127.0.0.1 port from a background thread; yields its base URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    ready = threading.Event()
    port = []

    async def start():
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port.append(site._server.sockets[0].getsockname()[1])
        ready.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True)
    thread.start()
    assert ready.wait(10), "test server did not start"
    try:
        yield f"http://127.0.0.1:{port[0]}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()

"""A test and diagnostic harness: one transport in one real process, driven over a tiny loopback HTTP API.

    python -m swarm.transport.harness.peer_process --key K --listen /ip4/127.0.0.1/tcp/0 \
        --bootstrap /ip4/127.0.0.1/tcp/9001/p2p/12D3... --members ID1,ID2,... --api-port 0 --swarm-id S

Prints one line `READY {json}` (peer id, listen addrs, api port) on stdout once listening. This is not the node:
it only moves bytes so multi-process tests and benchmarks can exercise the transport. SIGINT/SIGTERM exit 0.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import random
import signal
import sys
import time
from typing import Any

from aiohttp import web

from crypto.keys import load_key
from swarm.config import TransportConfig
from swarm.transport.base import Callbacks
from swarm.transport.libp2p_host import Libp2pTransport


def deterministic_payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


class Harness:
    """Records what arrives and exposes test hooks; holds pushed payloads so peers can fetch them."""

    def __init__(self, swarm_id: str) -> None:
        self.swarm_id = swarm_id
        self.started = time.monotonic()
        self.transport: Libp2pTransport | None = None
        self.store: dict[bytes, bytes] = {}
        self.seq: dict[str, int] = {}
        self.reset()

    def reset(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.control: dict[str, dict[str, Any]] = {}
        self.misbehaviour: list[dict[str, Any]] = []
        self.changes: list[dict[str, Any]] = []
        self.rtt_waiters: dict[int, asyncio.Future[float]] = {}

    # ---- transport callbacks ------------------------------------------------------------------------------
    async def on_payload(self, peer_id: str, digest: bytes, data: bytes) -> None:
        # The harness re-checks every digest itself, but when asked (/received), not here: this callback runs
        # before the push is acknowledged, and a second SHA-256 of the payload would be timed as transport work.
        self.store[digest] = data
        self.payloads.append({"from": peer_id, "digest": digest, "data": data, "at": time.time()})

    async def on_control(self, peer_id: str, data: bytes) -> None:
        if data.startswith(b"ping:"):
            assert self.transport is not None
            self.transport.send(peer_id, b"pong:" + data[5:])
            return
        if data.startswith(b"pong:"):
            waiter = self.rtt_waiters.pop(int(data[5:]), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(time.perf_counter())
            return
        entry = self.control.setdefault(peer_id, {"count": 0, "in_order": True, "first": None, "last": None})
        try:
            seq = int(data.split(b":", 1)[0])
        except ValueError:
            seq = -1
        if entry["last"] is not None and seq != entry["last"] + 1:
            entry["in_order"] = False
        if entry["first"] is None:
            entry["first"] = seq
        entry["last"] = seq
        entry["count"] += 1

    async def on_misbehaviour(self, peer_id: str, reason: str) -> None:
        self.misbehaviour.append({"peer": peer_id, "reason": reason, "at": time.time()})

    async def on_peer_change(self, peer_id: str, connected: bool) -> None:
        self.changes.append({"peer": peer_id, "connected": connected, "at": time.time()})

    def get_payload(self, digest: bytes) -> bytes | None:
        return self.store.get(digest)

    # ---- HTTP API -----------------------------------------------------------------------------------------
    async def status(self, request: web.Request) -> web.Response:
        t = self.transport
        assert t is not None
        now = time.monotonic()
        peers = {pid: {"connected": p.connected, "last_seen_ago_s": None if p.last_seen is None else now - p.last_seen,
                       "last_seen_wall": p.last_seen_wall, "addrs": list(p.addrs)} for pid, p in t.peers().items()}
        return web.json_response({"peer_id": t.peer_id, "listen_addrs": t.listen_addrs, "swarm_id": self.swarm_id,
                                  "uptime_s": now - self.started, "peers": peers, "stats": t.stats()})

    async def push(self, request: web.Request) -> web.Response:
        body = await request.json()
        data = deterministic_payload(int(body["size"]), int(body.get("seed", 0)))
        digest = hashlib.sha256(data).digest()
        self.store[digest] = data
        start = time.perf_counter()
        results = await self.transport.push(data, body.get("to"))  # type: ignore[union-attr]
        elapsed = time.perf_counter() - start
        return web.json_response({"digest": digest.hex(), "seconds": elapsed,
                                  "results": {pid: {"ok": r.ok, "error": r.error, "seconds": r.seconds}
                                              for pid, r in results.items()}})

    async def send(self, request: web.Request) -> web.Response:
        body = await request.json()
        peers = [body["peer"]] if body.get("peer") else list(self.transport.peers())  # type: ignore[union-attr]
        pad = b"x" * int(body.get("pad", 0))
        kept = True
        for _ in range(int(body.get("count", 1))):
            for pid in peers:
                n = self.seq.get(pid, 0)
                self.seq[pid] = n + 1
                kept &= self.transport.send(pid, b"%d:" % n + pad)  # type: ignore[union-attr]
        return web.json_response({"queued_without_drop": kept})

    async def ping(self, request: web.Request) -> web.Response:
        """Control round trips to one peer, one at a time: the latencies in ms."""
        body = await request.json()
        out = []
        for i in range(int(body.get("count", 100))):
            fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            self.rtt_waiters[i] = fut
            start = time.perf_counter()
            self.transport.send(body["peer"], b"ping:%d" % i)  # type: ignore[union-attr]
            end = await asyncio.wait_for(fut, 5)
            out.append((end - start) * 1000)
        return web.json_response({"rtt_ms": out})

    async def fetch(self, request: web.Request) -> web.Response:
        body = await request.json()
        data = await self.transport.fetch(body["peer"], bytes.fromhex(body["digest"]))  # type: ignore[union-attr]
        return web.json_response({"found": data is not None, "size": None if data is None else len(data)})

    async def received(self, request: web.Request) -> web.Response:
        payloads = [{"from": p["from"], "digest": p["digest"].hex(), "size": len(p["data"]),
                     "digest_ok": hashlib.sha256(p["data"]).digest() == p["digest"], "at": p["at"]}
                    for p in self.payloads]
        return web.json_response({"payloads": payloads, "control": self.control,
                                  "misbehaviour": self.misbehaviour, "peer_changes": self.changes})

    async def clear(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m swarm.transport.harness.peer_process", description=__doc__.split("\n")[0])
    parser.add_argument("--key", required=True)
    parser.add_argument("--listen", default="/ip4/127.0.0.1/tcp/0")
    parser.add_argument("--bootstrap", nargs="*", default=[])
    parser.add_argument("--members", required=True, help="comma-separated peer ids of the genesis")
    parser.add_argument("--api-port", type=int, default=0)
    parser.add_argument("--swarm-id", default="test")
    parser.add_argument("--peer-timeout", type=float, default=TransportConfig.peer_timeout_s)
    parser.add_argument("--max-payload", type=int, default=TransportConfig.max_payload_bytes)
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args(argv)


async def amain(args: argparse.Namespace) -> int:
    harness = Harness(args.swarm_id)
    config = TransportConfig(max_payload_bytes=args.max_payload, peer_timeout_s=args.peer_timeout)
    callbacks = Callbacks(on_payload=harness.on_payload, on_control=harness.on_control,
                          on_misbehaviour=harness.on_misbehaviour, on_peer_change=harness.on_peer_change,
                          get_payload=harness.get_payload)
    members = [m for m in args.members.split(",") if m]
    transport = Libp2pTransport(load_key(args.key), args.listen, args.bootstrap, members, config, callbacks)
    harness.transport = transport
    await transport.start()

    app = web.Application(client_max_size=1 << 20)
    app.add_routes([web.get("/status", harness.status), web.post("/push", harness.push),
                    web.post("/send", harness.send), web.post("/ping", harness.ping),
                    web.post("/fetch", harness.fetch), web.get("/received", harness.received),
                    web.post("/clear", harness.clear)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.api_port)
    await site.start()
    api_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print("READY " + json.dumps({"peer_id": transport.peer_id, "listen_addrs": transport.listen_addrs,
                                 "api_port": api_port}), flush=True)
    await stop.wait()
    await runner.cleanup()
    await transport.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("libp2p").propagate = True
    logging.getLogger("libp2p").setLevel(logging.DEBUG if args.log_level == "DEBUG" else logging.ERROR)
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())

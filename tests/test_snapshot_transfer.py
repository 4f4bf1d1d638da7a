"""Snapshot transfer in chunks over real libp2p hosts on 127.0.0.1 (swarm/node/snapshot_transfer.py over the
ranged fetch of swarm/transport/bulk.py): several servers at once, a server killed or stalled mid-way, a server
that sends wrong bytes, a fetcher stopped and restarted, malformed range requests.

Every transport runs in this process (each in its own trio thread); servers are stand-ins that serve ranges of
one blob and can be told to die, hang or lie. Chunks are 64 KiB, so a 1 MiB blob is 17 chunks.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Self

import pytest

from crypto.keys import NodeKey
from swarm.config import TransportConfig
from swarm.node.snapshot_transfer import SnapshotTransfer, TransferSettings
from swarm.transport import bulk
from swarm.transport.base import Callbacks
from swarm.transport.harness.cluster import free_port
from swarm.transport.libp2p_host import Libp2pTransport

pytestmark = pytest.mark.timeout(120)

CHUNK = 64 << 10
BLOB = random.Random(17).randbytes(16 * CHUNK + 4321)   # 17 chunks, the last one short
DIGEST = hashlib.sha256(BLOB).digest()
CHUNKS = -(-len(BLOB) // CHUNK)


class Server:
    """What one member serves: ranges of BLOB, honestly unless told otherwise."""

    def __init__(self) -> None:
        self.served: list[int] = []          # offsets asked for
        self.lie = False                     # flip a byte in every range it serves
        self.hang = False                    # never answer (a stalled sender)
        self.die_after: int | None = None    # after this many ranges, stop its transport mid-request
        self.transport: Libp2pTransport | None = None

    async def get_range(self, digest: bytes, offset: int, length: int) -> tuple[int, bytes] | None:
        if digest != DIGEST:
            return None
        self.served.append(offset)
        if self.die_after is not None and len(self.served) > self.die_after:
            assert self.transport is not None
            asyncio.get_running_loop().create_task(self.transport.stop())
            await asyncio.sleep(60)
        if self.hang:
            await asyncio.sleep(60)
        data = BLOB[offset:offset + length]
        if self.lie and data:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        return len(BLOB), data


class Swarm:
    """A fetcher and len(servers) serving members, all members of each other, meshed on 127.0.0.1."""

    def __init__(self, servers: list[Server], config: TransportConfig | None = None,
                 fetcher_config: TransportConfig | None = None) -> None:
        self.servers = servers
        self.config = config or TransportConfig()
        self.fetcher_config = fetcher_config or self.config
        self.misbehaviour: list[tuple[int, str, str]] = []   # (index of the reporting member, peer, reason)
        self.transports: list[Libp2pTransport] = []

    async def __aenter__(self) -> Self:
        keys = [NodeKey.generate() for _ in range(len(self.servers) + 1)]
        ports = [free_port() for _ in keys]
        members = [key.peer_id for key in keys]
        addrs = [f"/ip4/127.0.0.1/tcp/{port}/p2p/{key.peer_id}" for port, key in zip(ports, keys, strict=True)]
        for i, key in enumerate(keys):
            async def report(peer: str, reason: str, i: int = i) -> None:
                self.misbehaviour.append((i, peer, reason))
            callbacks = Callbacks(on_misbehaviour=report)
            if i:
                callbacks.get_range = self.servers[i - 1].get_range
            transport = Libp2pTransport(key, f"/ip4/127.0.0.1/tcp/{ports[i]}", addrs[:i], members,
                                        self.config if i else self.fetcher_config, callbacks)
            if i:
                self.servers[i - 1].transport = transport
            self.transports.append(transport)
            await transport.start()
        deadline = time.monotonic() + 20
        while not all(p.connected for p in self.fetcher.peers().values()):
            assert time.monotonic() < deadline, "the swarm did not mesh"
            await asyncio.sleep(0.05)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(t.stop() for t in self.transports), return_exceptions=True)

    @property
    def fetcher(self) -> Libp2pTransport:
        return self.transports[0]

    def peer(self, server: Server) -> str:
        return self.transports[self.servers.index(server) + 1].peer_id

    def transfer(self, folder: Path, **settings: float) -> tuple[SnapshotTransfer, list[tuple[str, str]]]:
        reports: list[tuple[str, str]] = []
        transfer = SnapshotTransfer(self.fetcher, DIGEST, 1 << 30, folder, "test snapshot",
                                    TransferSettings(chunk_bytes=CHUNK, **settings),
                                    on_bad_peer=lambda peer, what: reports.append((peer, what)))
        return transfer, reports


def test_a_multi_chunk_snapshot_comes_from_three_servers_at_once(tmp_path: Path) -> None:
    servers = [Server() for _ in range(3)]

    async def go() -> None:
        async with Swarm(servers) as swarm:
            transfer, reports = swarm.transfer(tmp_path)
            assert await transfer.run() == BLOB
            assert reports == []
            # every chunk arrived exactly once, and every server gave some
            assert sum(transfer.progress.by_peer.values()) == len(BLOB)
            assert set(transfer.progress.by_peer) == {swarm.peer(s) for s in servers}
            assert sum(len(s.served) for s in servers) == CHUNKS
            assert swarm.misbehaviour == []   # two chunks at a time per server stays within its fetch slots
            view = transfer.progress.view()
            assert (view["state"], view["total"], view["done_bytes"], view["chunks"]) == ("done", len(BLOB),
                                                                                           len(BLOB), CHUNKS)
        assert list(tmp_path.iterdir()) == []  # the part file and its record are gone once verified

    asyncio.run(go())


def test_a_server_killed_mid_transfer_costs_only_its_missing_chunks(tmp_path: Path) -> None:
    servers = [Server() for _ in range(3)]
    victim = servers[0]
    victim.die_after = 2

    async def go() -> None:
        async with Swarm(servers) as swarm:
            transfer, _reports = swarm.transfer(tmp_path, chunk_timeout_s=2.0)
            assert await transfer.run() == BLOB
            victim_bytes = transfer.progress.by_peer[swarm.peer(victim)]
            assert 0 < victim_bytes <= 2 * CHUNK           # it gave its first chunks, then died mid-request
            assert sum(transfer.progress.by_peer.values()) == len(BLOB)   # no chunk fetched twice: no restart
            deadline = time.monotonic() + 10                 # it is really gone (its stop takes a moment)
            while swarm.fetcher.peers()[swarm.peer(victim)].connected:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)

    asyncio.run(go())


def test_a_stalled_server_is_timed_out_and_its_chunks_come_from_the_others(tmp_path: Path) -> None:
    servers = [Server() for _ in range(3)]
    servers[1].hang = True

    async def go() -> None:
        async with Swarm(servers) as swarm:
            transfer, _reports = swarm.transfer(tmp_path, chunk_timeout_s=1.0)
            assert await transfer.run() == BLOB
            assert servers[1].served                                  # it was asked, and never answered
            assert swarm.peer(servers[1]) not in transfer.progress.by_peer
            assert sum(transfer.progress.by_peer.values()) == len(BLOB)

    asyncio.run(go())


@pytest.mark.parametrize("honest", [2, 1])
def test_a_server_sending_wrong_bytes_is_found_out_and_the_result_is_still_right(tmp_path: Path, honest: int) -> None:
    servers = [Server() for _ in range(honest + 1)]
    liar = servers[0]
    liar.lie = True

    async def go() -> None:
        async with Swarm(servers) as swarm:
            transfer, reports = swarm.transfer(tmp_path)
            assert await transfer.run() == BLOB
            assert liar.served                                          # its wrong chunks were taken at first
            assert [peer for peer, _what in reports] == [swarm.peer(liar)]
            assert transfer.progress.reported == [swarm.peer(liar)]
            assert "differs from the certified bytes" in reports[0][1]
            assert not [p for p in servers[1:] if swarm.peer(p) in transfer.progress.reported]

    asyncio.run(go())


def tear(path: Path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(b"\0" * 10)


def test_a_fetcher_stopped_mid_transfer_resumes_from_disk(tmp_path: Path) -> None:
    servers = [Server() for _ in range(3)]

    async def go() -> None:
        async with Swarm(servers) as swarm:
            first, _ = swarm.transfer(tmp_path, in_flight=2)
            task = asyncio.create_task(first.run())
            while first.progress.chunks_done < 6:
                assert not task.done()
                await asyncio.sleep(0.005)
            task.cancel()                                                # the node stops mid-transfer
            await asyncio.gather(task, return_exceptions=True)
            record = json.loads((tmp_path / f"{DIGEST.hex()}.json").read_text())
            done = {int(i) for i in record["done"]}
            assert 6 <= len(done) < CHUNKS
            # a chunk torn on disk by the stop is fetched again, not trusted
            torn = min(done)
            tear(tmp_path / f"{DIGEST.hex()}.part", torn * CHUNK)
            served_before = Counter(o // CHUNK for s in servers for o in s.served)

            second, _ = swarm.transfer(tmp_path)                         # a new process, the same data dir
            assert await second.run() == BLOB
            served_after = Counter(o // CHUNK for s in servers for o in s.served) - served_before
            missing = (set(range(CHUNKS)) - done) | {torn}
            assert set(second.requests) == missing and set(served_after) == missing   # no done chunk asked again
            assert sum(second.progress.by_peer.values()) == sum(min(CHUNK, len(BLOB) - i * CHUNK) for i in missing)
            assert second.progress.resumed_bytes == sum(min(CHUNK, len(BLOB) - i * CHUNK) for i in done - {torn})

    asyncio.run(go())


def test_malformed_range_requests_are_refused_with_a_reason_and_the_server_goes_on(tmp_path: Path) -> None:
    server = Server()

    async def go() -> None:
        async with Swarm([server], TransportConfig(fetch_burst=64)) as swarm:
            engine = swarm.fetcher._engine
            target = swarm.transports[1].peer_id

            async def raw_request(request: bytes) -> bytes:
                from libp2p.peer.id import ID

                stream = await engine.host.new_stream(ID.from_base58(target), [bulk.RANGE_PROTOCOL])
                await stream.write(request)
                got = b""
                with contextlib.suppress(Exception):  # the server resets a refused stream
                    while chunk := await stream.read(1 << 16):
                        got += chunk
                return got

            refused = bulk.RANGE_ANSWER.pack(bulk.RANGE_REFUSED, 0, 0)
            cases = {
                "bad magic": bulk.RANGE_REQUEST.pack(b"XXXX", DIGEST, 0, CHUNK),
                "zero length": bulk.RANGE_REQUEST.pack(bulk.RANGE_MAGIC, DIGEST, 0, 0),
                "too long": bulk.RANGE_REQUEST.pack(bulk.RANGE_MAGIC, DIGEST, 0, bulk.MAX_RANGE_BYTES + 1),
            }
            for name, request in cases.items():
                answer = await swarm.fetcher._thread.run(raw_request, request)
                assert answer == refused, name
            past_end = bulk.RANGE_REQUEST.pack(bulk.RANGE_MAGIC, DIGEST, len(BLOB), CHUNK)
            answer = await swarm.fetcher._thread.run(raw_request, past_end)
            assert answer == bulk.RANGE_ANSWER.pack(bulk.RANGE_REFUSED, len(BLOB), 0)
            deadline = time.monotonic() + 5
            while len([m for m in swarm.misbehaviour if m[0] == 1]) < 4 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert [reason for i, _p, reason in swarm.misbehaviour if i == 1] == ["malformed frame"] * 4
            assert server.served == [len(BLOB)]          # the malformed ones never reached the lookup
            # the requester's own checks refuse such ranges before anything is sent
            assert await swarm.fetcher.fetch_range(target, DIGEST, 0, 0) is None
            assert await swarm.fetcher.fetch_range(target, DIGEST, 0, bulk.MAX_RANGE_BYTES + 1) is None
            # and the server still answers a good one
            assert await swarm.fetcher.fetch_range(target, DIGEST, CHUNK, CHUNK) == (len(BLOB),
                                                                                     BLOB[CHUNK:2 * CHUNK])
            assert await swarm.fetcher.fetch_range(target, b"\1" * 32, 0, CHUNK) is None   # not held
        assert os.listdir(tmp_path) == []

    asyncio.run(go())


def test_a_server_announcing_an_object_over_the_fetchers_limit_is_refused_and_reported(tmp_path: Path) -> None:
    server = Server()

    async def go() -> None:
        limit = len(BLOB) - 1   # the fetcher's limit: one byte less than the object the server announces
        async with Swarm([server], fetcher_config=TransportConfig(max_payload_bytes=limit)) as swarm:
            target = swarm.transports[1].peer_id
            assert await swarm.fetcher.fetch_range(target, DIGEST, 0, CHUNK) is None
            deadline = time.monotonic() + 5
            while not swarm.misbehaviour and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert swarm.misbehaviour == [(0, target, "bad fetch answer")]
            transfer = SnapshotTransfer(swarm.fetcher, DIGEST, limit, tmp_path, "t",
                                        TransferSettings(chunk_bytes=CHUNK, stall_s=1.0))
            assert await transfer.run() is None and transfer.progress.state == "stalled"
            assert transfer.progress.done_bytes == 0 and not transfer.answered

    asyncio.run(go())

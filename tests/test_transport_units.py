"""Unit tests of the transport's pieces that need no network: framing, the control queue, the thread bridge."""
from __future__ import annotations

import asyncio
import hashlib

import pytest
import trio

from swarm.transport.bridge import TrioThread
from swarm.transport.control import OutboundQueue
from swarm.transport.framing import (BULK_HEADER, KIND_DATA, KIND_HEARTBEAT, ControlReader, FrameError, StreamClosed,
                                     bulk_header, encode_control, parse_bulk_header, read_body_checked, read_exact)

pytestmark = pytest.mark.timeout(30)


class FakeStream:
    """Returns the given chunks one read at a time, then EOF."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)

    async def read(self, n: int) -> bytes:
        if not self.chunks:
            return b""
        chunk = self.chunks.pop(0)
        if len(chunk) > n:
            self.chunks.insert(0, chunk[n:])
            chunk = chunk[:n]
        return chunk


def test_control_reader_batches_and_splits() -> None:
    blob = b"".join(encode_control(KIND_DATA, b"m%d" % i) for i in range(100)) + encode_control(KIND_HEARTBEAT)
    pieces = [blob[i:i + 7] for i in range(0, len(blob), 7)]

    async def go() -> list[tuple[int, bytes]]:
        reader, out = ControlReader(FakeStream(*pieces)), []
        with pytest.raises(StreamClosed):
            while True:
                out += await reader.next_batch()
        return out

    frames = trio.run(go)
    assert [b for k, b in frames if k == KIND_DATA] == [b"m%d" % i for i in range(100)]
    assert frames[-1] == (KIND_HEARTBEAT, b"")


@pytest.mark.parametrize("garbage", [b"\x00\x00\x00\x01\x09x", b"\xff\xff\xff\xff\x00", b"\x7f" * 50])
def test_control_reader_rejects_garbage(garbage: bytes) -> None:
    async def go() -> None:
        await ControlReader(FakeStream(garbage)).next_batch()

    with pytest.raises(FrameError):
        trio.run(go)


def test_bulk_header_checks_size_before_reading() -> None:
    digest = hashlib.sha256(b"abc").digest()
    assert parse_bulk_header(bulk_header(3, digest), 10) == (3, digest)
    with pytest.raises(FrameError):
        parse_bulk_header(bulk_header(11, digest), 10)
    with pytest.raises(FrameError):
        parse_bulk_header(b"XXXX" + bulk_header(3, digest)[4:], 10)
    assert len(bulk_header(3, digest)) == BULK_HEADER.size


def test_exact_reads_loop_and_digest_is_checked() -> None:
    data = bytes(range(256)) * 4096
    digest = hashlib.sha256(data).digest()
    pieces = [data[i:i + 70_000] for i in range(0, len(data), 70_000)]
    assert trio.run(read_exact, FakeStream(*pieces), len(data)) == data
    assert trio.run(read_body_checked, FakeStream(*pieces), len(data), digest) == data
    assert trio.run(read_body_checked, FakeStream(*pieces), len(data), b"\0" * 32) is None
    with pytest.raises(StreamClosed):
        trio.run(read_exact, FakeStream(data[:10]), 11)


def test_queue_drops_oldest_and_counts() -> None:
    q = OutboundQueue(max_messages=3, max_bytes=1000)
    assert all(q.put(b"%d" % i) for i in range(3))
    assert q.put(b"3") is False
    assert q.dropped == 1 and q.take_all() == [b"1", b"2", b"3"]
    assert q.put(b"x" * 600) and q.put(b"y" * 600) is False
    assert q.take_all() == [b"y" * 600] and q.dropped == 2


def test_bridge_round_trips_both_ways_and_stops() -> None:
    async def main() -> None:
        async def trio_main(nursery: trio.Nursery, ready) -> None:  # type: ignore[no-untyped-def]
            ready()
            await trio.sleep_forever()

        bridge = TrioThread(trio_main)
        await bridge.start()

        async def in_trio(x: int) -> int:
            await trio.sleep(0.01)

            async def in_asyncio() -> int:
                await asyncio.sleep(0.01)
                return x * 2

            return await bridge.await_asyncio(in_asyncio()) + 1

        assert await bridge.run(in_trio, 20) == 41

        async def failing() -> None:
            raise ValueError("boom")

        with pytest.raises(ValueError):
            await bridge.run(failing)
        slow = bridge.run(trio.sleep, 100)
        await asyncio.sleep(0.05)
        slow.cancel()
        await bridge.stop()
        assert not bridge.running

    asyncio.run(main())

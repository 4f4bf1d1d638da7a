"""Unit tests of the transport's pieces that need no network: framing, the control queue, the thread bridge."""
from __future__ import annotations

import asyncio
import hashlib
import time

import pytest
import trio
import trio.testing as trio_testing

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
    small = data[:5000]  # below PARALLEL_HASH_BYTES: hashed inline; the 1 MiB body above went to the hash thread
    assert trio.run(read_body_checked, FakeStream(small[:7], small[7:]), len(small), hashlib.sha256(small).digest()) == small
    assert trio.run(read_body_checked, FakeStream(small), len(small), digest) is None


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


# ---- fast path over py-libp2p's Noise session (swarm/transport/fastpath.py) ------------------------------------
class _Cipher:
    """A Noise transport cipher state stand-in: real ChaCha20-Poly1305, nonces counted per direction."""

    def __init__(self, key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
        self.aead, self.n_out, self.n_in = ChaCha20Poly1305(key), 0, 0

    def encrypt(self, data: bytes) -> bytes:
        assert isinstance(data, bytes) and len(data) <= 65519  # what noise's NoiseConnection insists on
        self.n_out += 1
        return self.aead.encrypt(self.n_out.to_bytes(12, "little"), data, None)

    def decrypt(self, data: bytes) -> bytes:
        assert isinstance(data, bytes) and len(data) <= 65535
        self.n_in += 1
        return self.aead.decrypt(self.n_in.to_bytes(12, "little"), data, None)


class _Pipe:
    """A raw connection: what is written is read back in chunks of pseudo-random sizes (down to 1 byte)."""

    def __init__(self, seed: int = 1) -> None:
        import random
        self.data, self.rng, self.closed, self.writes = bytearray(), random.Random(seed), False, 0

    async def write(self, data: bytes) -> None:
        self.writes += 1
        self.data += data

    async def read(self, n: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        if not self.data:
            return b""
        take = min(n or len(self.data), self.rng.choice([1, 2, 3, 17, 1000, 65537, 70000, 1 << 18]), len(self.data))
        out = bytes(self.data[:take])
        del self.data[:take]
        return out


def _sessions(pipe: _Pipe, fast_writer: bool, fast_reader: bool):  # type: ignore[no-untyped-def]
    from libp2p.security.noise.io import NoiseTransportReadWriter
    from libp2p.security.secure_session import SecureSession

    from swarm.transport import fastpath

    key = bytes(range(32))
    out = []
    for fast in (fast_writer, fast_reader):
        session = SecureSession(local_peer=None, local_private_key=None, remote_peer=None,  # type: ignore[arg-type]
                                remote_permanent_pubkey=None, is_initiator=True,  # type: ignore[arg-type]
                                conn=NoiseTransportReadWriter(pipe, _Cipher(key)))  # type: ignore[arg-type]
        if fast:
            assert fastpath.accelerate(session) is session and type(session) is fastpath.FastNoiseSession
        out.append(session)
    return out


@pytest.mark.skipif(not __import__("swarm.transport.fastpath").transport.fastpath.available(),
                    reason="fast path not available for this libp2p version")
@pytest.mark.parametrize("fast_writer,fast_reader", [(True, True), (True, False), (False, True)])
def test_fast_noise_session_is_wire_compatible_with_the_stock_one(fast_writer: bool, fast_reader: bool) -> None:
    """Same bytes on the wire both ways: any mix of stock and fast sessions, any read sizes, any chunking."""
    import random
    rng = random.Random(5)
    messages = [rng.randbytes(rng.choice([0, 1, 12, 65519, 65520, 200_000, 1 << 20])) for _ in range(40)]
    blob = b"".join(messages)

    async def go() -> bytes:
        pipe = _Pipe()
        writer, reader = _sessions(pipe, fast_writer, fast_reader)
        for m in messages:
            if m:
                await writer.write(m)
        got = bytearray()
        while len(got) < len(blob):
            n = rng.choice([1, 12, 7, 65507, 262144, 1 << 20])
            part = await reader.read(min(n, len(blob) - len(got)))
            assert 0 < len(part) <= n
            got += part
        return bytes(got)

    assert trio.run(go) == blob


@pytest.mark.skipif(not __import__("swarm.transport.fastpath").transport.fastpath.available(),
                    reason="fast path not available for this libp2p version")
def test_fast_noise_session_batches_sends_and_rejects_tampering() -> None:
    from libp2p.io.exceptions import ConnectionClosedError

    async def go() -> None:
        pipe = _Pipe()
        writer, reader = _sessions(pipe, True, True)
        await writer.write(bytes(300_000))  # 5 Noise messages, one send
        assert pipe.writes == 1
        assert len(pipe.data) == 300_000 + 5 * (2 + 16)
        pipe.data[100] ^= 1  # flip one ciphertext bit: the AEAD tag check fails, as in the stock session
        with pytest.raises(Exception) as info:
            await reader.read(10)
        assert not isinstance(info.value, AssertionError)
        # a clean EOF: nothing buffered raises, like libp2p's own session
        _, empty = _sessions(_Pipe(), True, True)
        with pytest.raises(ConnectionClosedError):
            await empty.read(5)

    trio.run(go)


def test_fast_path_guards() -> None:
    from swarm.transport import fastpath

    class NotASession:
        pass

    other = NotASession()
    assert fastpath.accelerate(other) is other and type(other) is NotASession
    if fastpath.available():
        import libp2p.stream_muxer.yamux.yamux as yamux
        assert fastpath.install() and fastpath.install()  # idempotent
        assert yamux.MAX_MESSAGE_SIZE == fastpath.YAMUX_FRAME_BYTES
        assert yamux.Yamux._read_data_body is fastpath._read_data_body
    else:  # another libp2p version: nothing is touched
        assert not fastpath.install()


def test_fast_path_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from swarm.transport import fastpath

    monkeypatch.setenv("SWARM_TRANSPORT_FASTPATH", "0")
    assert not fastpath.available() and not fastpath.install()
    if fastpath._AVAILABLE:
        writer, _ = _sessions(_Pipe(), False, False)
        assert fastpath.accelerate(writer) is writer and type(writer) is not fastpath.FastNoiseSession
        monkeypatch.delenv("SWARM_TRANSPORT_FASTPATH")
        monkeypatch.setattr(fastpath, "_AVAILABLE", False)  # what an unsupported libp2p version gives
        assert fastpath.accelerate(writer) is writer and type(writer) is not fastpath.FastNoiseSession


def test_push_retries_once_on_a_new_stream_when_a_reused_one_is_broken() -> None:
    from swarm.transport.control import OutboundQueue as Queue
    from swarm.transport.engine import Engine
    from swarm.transport.members import Member

    class Stream:
        def __init__(self, broken: bool) -> None:
            self.broken, self.written, self.was_reset = broken, b"", False

        async def write(self, data: bytes) -> None:
            if self.broken:
                raise RuntimeError("stream reset by peer")
            self.written += data

        async def read(self, n: int) -> bytes:
            return b"\x00"  # ACK_OK

        async def reset(self) -> None:
            self.was_reset = True

        async def close(self) -> None:
            pass

    class Host:
        def __init__(self) -> None:
            self.opened: list[Stream] = []

        async def new_stream(self, peer_id, protocols):  # type: ignore[no-untyped-def]
            self.opened.append(Stream(broken=False))
            return self.opened[-1]

    async def go() -> None:
        engine = Engine.__new__(Engine)
        engine.host, engine.push_streams_opened, engine.push_retries, engine._background = Host(), 0, 0, None
        member = Member("12D3KooWGzh6m7KqAuNFEnHjJ5BiVWyD2Hx7rVTJvsuU1pKMXsnq", Queue(), connected=True)
        stale = Stream(broken=True)
        member.idle_push.append((stale, time.monotonic()))
        assert await engine._push_to(member, b"H" * 44, b"body") is None
        assert stale.was_reset and engine.push_retries == 1 and engine.push_streams_opened == 1
        fresh = engine.host.opened[0]
        assert fresh.written == b"H" * 44 + b"body" and member.idle_push[0][0] is fresh
        # the next push reuses the fresh stream: nothing new is opened
        assert await engine._push_to(member, b"H" * 44, b"more") is None
        assert engine.push_streams_opened == 1 and fresh.written.endswith(b"more")

    trio.run(go)


def test_fetches_past_the_rate_or_the_slots_are_refused_and_only_too_many_at_once_is_flooding() -> None:
    from swarm.config import TransportConfig
    from swarm.transport.control import OutboundQueue as Queue
    from swarm.transport.engine import Engine
    from swarm.transport.members import FETCH_SLOTS_PER_PEER, Member

    class Stream:
        def __init__(self, digest: bytes) -> None:
            self.unread, self.written, self.was_reset = digest, b"", False

        async def read(self, n: int) -> bytes:
            chunk, self.unread = self.unread[:n], self.unread[n:]
            return chunk

        async def write(self, data: bytes) -> None:
            self.written += data

        async def reset(self) -> None:
            self.was_reset = True

        async def close(self) -> None:
            pass

    class Sink:
        def __init__(self) -> None:
            self.reports: list[tuple[str, str]] = []
            self.release = trio.Event()
            self.banned: set[str] = set()
            self.lookups = 0

        def may_fetch(self, peer_id: str) -> bool:
            return peer_id not in self.banned

        async def lookup(self, digest: bytes) -> bytes | None:
            self.lookups += 1
            await self.release.wait()  # held, so fetches stay in flight
            return b"payload"

        def misbehaviour(self, peer_id: str, reason: str) -> None:
            self.reports.append((peer_id, reason))

    async def go() -> None:
        engine = Engine.__new__(Engine)
        engine.config, engine.sink = TransportConfig(fetches_per_s=1.0, fetch_burst=4), Sink()
        member = Member("12D3KooWGzh6m7KqAuNFEnHjJ5BiVWyD2Hx7rVTJvsuU1pKMXsnq", Queue(), connected=True)
        streams = [Stream(bytes([i]) * 32) for i in range(6)]
        async with trio.open_nursery() as nursery:
            for stream in streams[:FETCH_SLOTS_PER_PEER + 1]:  # one more than the slots, all at once
                nursery.start_soon(engine._on_fetch_stream, member, stream)
            await trio_testing.wait_all_tasks_blocked()
            assert sorted(s.was_reset for s in streams[:3]) == [False, False, True]  # trio picks which one
            assert engine.sink.reports == [(member.peer_id, "flooding")]  # no honest node fetches 3 at once
            engine.sink.release.set()
        member.flooding_reported_at = float("-inf")  # so that any report below would show
        for stream in streams[3:]:  # one by one now: the burst of 4 is spent after the first of these
            await engine._on_fetch_stream(member, stream)
        assert [s.was_reset for s in streams[3:]] == [False, True, True]
        assert all(s.written.endswith(b"payload") for s in streams if not s.was_reset)
        assert member.fetches_refused == 3
        assert len(engine.sink.reports) == 1  # over the rate: refused, not reported (a catch-up only slows down)
        # A peer the node banned gets nothing, is not reported again, and spends none of its budget.
        banned = Member("12D3KooWBannedPeerBannedPeerBannedPeerBannedPeer", Queue(), connected=True)
        engine.sink.banned.add(banned.peer_id)
        lookups, stream = engine.sink.lookups, Stream(b"\x07" * 32)
        await engine._on_fetch_stream(banned, stream)
        assert stream.was_reset and stream.written == b"" and engine.sink.lookups == lookups
        assert len(engine.sink.reports) == 1 and banned.fetch_budget is None

    trio.run(go)

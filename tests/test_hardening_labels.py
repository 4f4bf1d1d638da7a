"""Issue 23, finding 4: rejection reasons and metric labels come from a fixed set, whatever a peer sends; a banned
peer's push streams are reset before a body byte is read."""
from __future__ import annotations

import asyncio
import time

import trio

from swarm.node.inbound import Inbound
from swarm.node.peer_scores import REASONS, PeerScores
from swarm.node.records import Metrics
from swarm.transport.framing import FrameError, bulk_header
from swarm.transport.rate_limit import PeerRateLimiter

MEMBER = "12D3KooWGzh6m7KqAuNFEnHjJ5BiVWyD2Hx7rVTJvsuU1pKMXsnq"


class _Store:
    def __init__(self) -> None:
        self.rows: dict[str, tuple] = {}

    def put_local_score(self, peer: str, score: float, rejected: int, last_reason: str) -> None:
        self.rows[peer] = (score, rejected, last_reason)


def _inbound() -> Inbound:
    def never(*_a, **_k):
        raise AssertionError("not expected")

    return Inbound("swarm", {MEMBER}, PeerScores(), PeerRateLimiter(100.0, 100), None, _Store(), Metrics(),
                   1 << 20, never, never, never, never, never)


def test_peer_shaped_reasons_never_become_new_counter_keys() -> None:
    inbound = _inbound()

    async def go() -> None:
        for i in range(3000):  # what the transport used to report: the frame error's text, numbers included
            await inbound.on_misbehaviour(MEMBER, f"malformed frame: bulk frame of {10**9 + i} bytes exceeds 4")
            inbound.scores.get(MEMBER).banned_until = 0.0  # keep it unbanned: every report is a rejection
            inbound.reject(MEMBER, f"weird_{i}", "a reason no decoder has")

    asyncio.run(go())
    keys = set(inbound.metrics.rejected)
    assert keys <= REASONS and len(keys) <= 3, keys
    assert set(inbound.scores.get(MEMBER).reasons) <= REASONS
    assert set(inbound.scores.rejections_by_reason) <= REASONS
    assert inbound.store.rows[MEMBER][2] in REASONS


def test_refused_non_members_do_not_grow_the_score_table() -> None:
    inbound = _inbound()

    async def go() -> None:
        for i in range(2000):
            await inbound.on_misbehaviour(f"12D3KooWStranger{i:08d}", "not a genesis member: connection refused")

    asyncio.run(go())
    assert inbound.metrics.rejected == {"non_member": 2000}
    assert len(inbound.scores._scores) == 0 and inbound.store.rows == {}


def test_a_banned_member_is_counted_not_penalised_again() -> None:
    inbound = _inbound()
    inbound.scores.get(MEMBER).banned_until = time.monotonic() + 30
    asyncio.run(inbound.on_misbehaviour(MEMBER, "banned"))
    entry = inbound.scores.get(MEMBER)
    assert inbound.metrics.rejected == {"banned": 1} and entry.rejected == 0 and entry.reasons["banned"] == 1


class _Stream:
    def __init__(self, data: bytes) -> None:
        self.unread, self.written, self.was_reset, self.read_bytes = data, b"", False, 0

    async def read(self, n: int) -> bytes:
        chunk, self.unread = self.unread[:n], self.unread[n:]
        self.read_bytes += len(chunk)
        return chunk

    async def write(self, data: bytes) -> None:
        self.written += data

    async def reset(self) -> None:
        self.was_reset = True

    async def close(self) -> None:
        pass


class _Sink:
    def __init__(self) -> None:
        self.reports: list[tuple[str, str]] = []
        self.banned: set[str] = set()
        self.payloads = 0

    def may_fetch(self, peer_id: str) -> bool:
        return peer_id not in self.banned

    def misbehaviour(self, peer_id: str, reason: str) -> None:
        self.reports.append((peer_id, reason))

    async def payload(self, peer_id: str, digest: bytes, data: bytes) -> None:
        self.payloads += 1


def _engine():
    from swarm.config import TransportConfig
    from swarm.transport.control import OutboundQueue
    from swarm.transport.engine import Engine
    from swarm.transport.members import Member

    engine = Engine.__new__(Engine)
    engine.config, engine.sink = TransportConfig(), _Sink()
    member = Member(MEMBER, OutboundQueue(), connected=True)
    engine.members = {MEMBER: member}
    return engine, member


class _Conn:
    class peer_id:  # noqa: N801 - the shape libp2p gives
        @staticmethod
        def to_base58() -> str:
            return MEMBER


def test_frame_errors_are_reported_under_one_fixed_reason() -> None:
    engine, _member = _engine()

    async def go() -> None:
        for i in range(50):
            async def handler(member, stream, i=i):
                raise FrameError(f"bulk frame of {i} bytes exceeds the {i + 1} byte limit")
            stream = _Stream(b"")
            stream.muxed_conn = _Conn()
            await engine._guard(handler)(stream)
            assert stream.was_reset

    trio.run(go)
    assert {reason for _, reason in engine.sink.reports} == {"malformed frame"}


def test_a_banned_members_pushes_are_reset_before_the_body_is_read() -> None:
    import hashlib

    engine, member = _engine()
    body = b"x" * 100_000
    push = bulk_header(len(body), hashlib.sha256(body).digest()) + body

    async def go() -> None:
        engine.sink.banned.add(MEMBER)
        stream = _Stream(push)
        await engine._on_push_stream(member, stream)
        assert stream.was_reset and stream.read_bytes == 0 and engine.sink.payloads == 0
        assert engine.sink.reports == [(MEMBER, "banned")]
        # not banned: the same push is read, delivered and acknowledged
        engine.sink.banned.clear()
        stream = _Stream(push)
        await engine._on_push_stream(member, stream)
        assert engine.sink.payloads == 1 and stream.written == b"\x00"

    trio.run(go)

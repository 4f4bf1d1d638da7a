"""The payload side of the transport engine: pushes of gradient envelopes on long-lived streams, fetches by
digest and by byte range, and the inbound handlers that serve them (rate-limited per member, banned peers reset
unread). A mixin of :class:`swarm.transport.engine.Engine`, which owns the host, the members and their supervisors;
everything here runs in the transport's trio thread and reports through the engine's ``Sink``.
"""
from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

import trio
from libp2p.peer.id import ID

from swarm.transport import bulk
from swarm.transport.base import PushResult
from swarm.transport.framing import FrameError, bulk_header
from swarm.transport.members import BULK_SLOTS_PER_PEER, Member
from swarm.transport.rate_limit import TokenBucket
from swarm.transport.reasons import BAD_FETCH_ANSWER, BANNED, FLOODING, MALFORMED_FRAME

log = logging.getLogger("swarm.transport.engine")

FLOODING_REPORT_S = 1.0      # refused fetches are reported as flooding at most this often per peer
PUSH_STREAM_IDLE_S = 120.0   # receiver: a push stream with no new push for this long is closed
PUSH_STREAM_REUSE_S = 60.0   # sender: an idle push stream older than this is closed rather than reused
HASH_IN_THREAD_BYTES = 1 << 20


class PayloadStreams:
    """Push, fetch and range-fetch, both directions (needs the engine's ``host``, ``config``, ``sink``,
    ``members`` and nursery)."""

    async def _refuse_banned(self, member: Member, stream: Any) -> bool:
        """A peer the node has banned (``may_fetch`` False): reset its stream before any body is read, and report
        the drop (a fixed reason, so the node counts it without a new penalty). True when refused."""
        if self.sink.may_fetch(member.peer_id):
            return False
        await bulk.reset(stream)
        self.sink.misbehaviour(member.peer_id, BANNED)
        return True

    async def _on_push_stream(self, member: Member, stream: Any) -> None:
        """Pushes on one long-lived stream, one after another, until the sender closes it (or goes idle). A banned
        peer's stream is reset unread, before its first header and again before each body."""
        if await self._refuse_banned(member, stream):
            return
        while True:
            raw = None
            with trio.move_on_after(PUSH_STREAM_IDLE_S):
                raw = await bulk.next_push_header(stream)
                if raw is None:  # the sender is done with this stream
                    break
            if raw is None:  # idle too long: the sender opens a new stream next time
                await bulk.reset(stream)
                return
            if await self._refuse_banned(member, stream):
                return
            async with member.bulk_slots:
                with trio.fail_after(10.0 + self.config.max_payload_bytes / (1 << 20)):  # no half-sent push held forever
                    digest, data = await bulk.receive_push(stream, self.config.max_payload_bytes, raw)
                member.touch()
                await self.sink.payload(member.peer_id, digest, data)
                await bulk.ack_push(stream)
        with trio.move_on_after(1):
            await stream.close()

    async def _on_fetch_stream(self, member: Member, stream: Any) -> None:
        """Serve one fetch. Answering can mean reading or serializing megabytes, so a member past its fetch rate
        (``transport.fetches_per_s`` after ``fetch_burst``) or with FETCH_SLOTS_PER_PEER fetches in flight is
        refused: the stream is reset. Only the second is reported as flooding (once a second at most): an honest
        node fetches one payload at a time, but one catching up on many rounds may well outrun the rate, and it
        should only slow down. A member the node has banned is refused without a report."""
        if not await self._admit_fetch(member, stream):
            return
        try:
            with trio.fail_after(10.0 + self.config.max_payload_bytes / (1 << 20)):
                await bulk.serve_fetch(stream, self.sink.lookup, self.config.max_payload_bytes)
        finally:
            member.fetch_slots.release()
        with trio.move_on_after(1):
            await stream.close()

    async def _on_range_stream(self, member: Member, stream: Any) -> None:
        """Serve one range of an object (a chunk of a snapshot), under the same rate and slots as a fetch: a
        range costs at most a file read of MAX_RANGE_BYTES. A malformed request or a range outside the object is
        refused with a status byte, logged with its reason and reported as a malformed frame."""
        if not await self._admit_fetch(member, stream):
            return
        try:
            with trio.fail_after(10.0 + bulk.MAX_RANGE_BYTES / (1 << 20)):
                refused = await bulk.serve_range(stream, self.sink.lookup_range, self.config.max_payload_bytes)
        finally:
            member.fetch_slots.release()
        if refused is not None:
            log.info("refused a range request from %s: %s", member.peer_id[:16], refused)
            self.sink.misbehaviour(member.peer_id, MALFORMED_FRAME)
        with trio.move_on_after(1):
            await stream.close()

    async def _admit_fetch(self, member: Member, stream: Any) -> bool:
        """A fetch or range request from ``member`` may be served now (one of its fetch slots is then taken, for
        the caller to release); otherwise its stream is reset, as ``_on_fetch_stream`` says."""
        if not self.sink.may_fetch(member.peer_id):
            await bulk.reset(stream)
            return False
        now = time.monotonic()
        if member.fetch_budget is None:
            member.fetch_budget = TokenBucket(self.config.fetches_per_s, self.config.fetch_burst, now)
        over_rate = not member.fetch_budget.take(now)
        if over_rate or not _try_acquire(member.fetch_slots):
            member.fetches_refused += 1
            await bulk.reset(stream)
            if not over_rate and now - member.flooding_reported_at >= FLOODING_REPORT_S:
                member.flooding_reported_at = now
                self.sink.misbehaviour(member.peer_id, FLOODING)
            return False
        return True

    # ---- outbound operations (called through the bridge) --------------------------------------------------
    async def push(self, payload: bytes, to: frozenset[str] | None = None) -> dict[str, PushResult]:
        if len(payload) >= HASH_IN_THREAD_BYTES:  # ~0.6 ms/MB: off the trio loop, so control traffic keeps flowing
            digest = await trio.to_thread.run_sync(_sha256, payload)
        else:
            digest = _sha256(payload)
        header = bulk_header(len(payload), digest)
        timeout = 10.0 + len(payload) / (1 << 20)  # generous: >= 1 MB/s
        results: dict[str, PushResult] = {}

        async def one(member: Member) -> None:
            start = time.perf_counter()
            error: str | None
            try:
                with trio.fail_after(timeout):
                    error = await self._push_to(member, header, payload)
            except trio.TooSlowError:
                error = f"timed out after {timeout:.0f}s"
            except Exception as exc:  # noqa: BLE001 - reported per peer
                error = f"{type(exc).__name__}: {exc}"
            results[member.peer_id] = PushResult(error is None, error, time.perf_counter() - start)

        async with trio.open_nursery() as nursery:
            for member in self.members.values():
                if member.connected and (to is None or member.peer_id in to):
                    nursery.start_soon(one, member)
        return results

    async def _push_to(self, member: Member, header: bytes, payload: bytes) -> str | None:
        """One push on a reused idle stream if there is one, else on a new stream. A reused stream that turns out
        broken (the peer closed it, or the connection behind it went away) is dropped and the push sent again on
        the next one, at worst on a new stream (at most BULK_SLOTS_PER_PEER retries). A push that reached the node
        but lost its acknowledgement with the stream can so arrive twice; payloads are content-addressed."""
        while True:
            stream, reused = self._take_idle_push_stream(member), True
            if stream is None:
                stream, reused = await self.host.new_stream(ID.from_base58(member.peer_id), [bulk.PUSH_PROTOCOL]), False
                self.push_streams_opened += 1
            try:
                error = await bulk.send_push(stream, header, payload)
            except bulk.PushStreamBroken as exc:
                if reused:
                    self.push_retries += 1
                    continue
                return str(exc)
            except BaseException:  # cancelled or timed out mid-push: the stream is in an unknown state
                with trio.CancelScope(shield=True):
                    await bulk.reset(stream)
                raise
            if error is None and member.connected and len(member.idle_push) < BULK_SLOTS_PER_PEER:
                member.idle_push.append((stream, time.monotonic()))
            elif error is None:
                await bulk.close(stream)
            else:  # the receiver refused this push and resets its side
                await bulk.reset(stream)
            return error

    def _take_idle_push_stream(self, member: Member) -> Any:
        now = time.monotonic()
        while member.idle_push:
            stream, since = member.idle_push.pop()
            if now - since < PUSH_STREAM_REUSE_S:
                return stream
            self._nursery_close(stream)
        return None

    def _nursery_close(self, stream: Any) -> None:
        if self._background is not None:
            self._background.start_soon(bulk.close, stream)

    async def fetch(self, peer_id: str, digest: bytes) -> bytes | None:
        member = self.members.get(peer_id)
        if member is None or len(digest) != 32:
            return None
        try:
            with trio.fail_after(10.0 + self.config.max_payload_bytes / (1 << 20)):
                stream = await self.host.new_stream(ID.from_base58(peer_id), [bulk.FETCH_PROTOCOL])
                try:
                    data = await bulk.request_fetch(stream, digest, self.config.max_payload_bytes)
                except FrameError as exc:
                    log.info("bad fetch answer from %s: %s", peer_id[:16], clip(exc))
                    self.sink.misbehaviour(peer_id, BAD_FETCH_ANSWER)
                    await bulk.reset(stream)
                    return None
                with trio.move_on_after(1):
                    await stream.close()
                return data
        except Exception as exc:  # noqa: BLE001 - a failed fetch is just None
            log.debug("fetch from %s failed: %r", peer_id[:16], exc)
            return None

    async def fetch_range(self, peer_id: str, digest: bytes, offset: int, length: int) -> tuple[int, bytes] | None:
        """One range of an object from one member (bulk.request_range); None when it has none, refused the
        request or failed. An answer that breaks the rules is logged with its reason and reported."""
        member = self.members.get(peer_id)
        if member is None or len(digest) != 32 or offset < 0 or not 0 < length <= bulk.MAX_RANGE_BYTES:
            return None
        try:
            with trio.fail_after(10.0 + length / (1 << 20)):
                stream = await self.host.new_stream(ID.from_base58(peer_id), [bulk.RANGE_PROTOCOL])
                try:
                    answer = await bulk.request_range(stream, digest, offset, length, self.config.max_payload_bytes)
                except FrameError as exc:
                    log.info("bad range answer from %s: %s", peer_id[:16], clip(exc))
                    self.sink.misbehaviour(peer_id, BAD_FETCH_ANSWER)
                    await bulk.reset(stream)
                    return None
                except bulk.RangeRefused as exc:
                    log.info("%s refused our range request: %s", peer_id[:16], exc)
                    await bulk.reset(stream)
                    return None
                except BaseException:
                    with trio.CancelScope(shield=True):
                        await bulk.reset(stream)
                    raise
                with trio.move_on_after(1):
                    await stream.close()
                return answer
        except Exception as exc:  # noqa: BLE001 - a failed range fetch is just None
            log.debug("range fetch from %s failed: %r", peer_id[:16], exc)
            return None


def clip(exc: BaseException, limit: int = 200) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "..."


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _try_acquire(semaphore: trio.Semaphore) -> bool:
    try:
        semaphore.acquire_nowait()
    except trio.WouldBlock:
        return False
    return True

"""The bulk channel on the wire (trio side): push with digest-checked acknowledgement, and fetch by digest.

A push is [header][body], answered by one status byte once the receiver has checked the SHA-256 and handed the
data to the node. A push stream is long-lived: after the status byte the sender may send the next push on the
same stream, and half-closes it when done (the receiver ends its side at that clean EOF). Reusing streams saves
a protocol negotiation (a round trip, several ms) per push and keeps yamux's grown receive window. A fetch is
one stream per request: [digest] answered by [status][header][body]. Bodies are written in one call (yamux and
noise split them) and read in big chunks in a loop.

A ranged fetch (RANGE_PROTOCOL, for snapshots of hundreds of megabytes, fetched in chunks from several members by
swarm/node/snapshot_transfer.py) is one stream per range: [RANGE_REQUEST: magic, digest, offset, length] answered
by [RANGE_ANSWER: status, total size, length][body]. Both sides check every number before a body byte moves: a
range is at most MAX_RANGE_BYTES, starts inside the object, and the answer holds exactly the bytes asked for (fewer
only at the end of the object) of an object no bigger than the requester's limit. The range's bytes cannot be
checked here (only the whole object has a known digest): the transfer manager does that.
"""
from __future__ import annotations

import struct
from typing import Any, Awaitable, Callable

import trio

from swarm.transport.framing import (ACK_BAD_DIGEST, ACK_OK, ACK_TEXT, ACK_TOO_BIG, BULK_HEADER, DIGEST_BYTES,
                                     NOT_FOUND, FrameError, StreamClosed, bulk_header, parse_bulk_header,
                                     read_body_checked, read_exact, read_exact_or_eof)

PUSH_PROTOCOL = "/swarm/push/1.0.0"
FETCH_PROTOCOL = "/swarm/fetch/1.0.0"
RANGE_PROTOCOL = "/swarm/fetch-range/1.0.0"

RANGE_MAGIC = b"SWR1"
RANGE_REQUEST = struct.Struct(">4s32sQI")  # magic, digest, offset, length
RANGE_ANSWER = struct.Struct(">BQI")       # status, total size of the object, length of the body that follows
MAX_RANGE_BYTES = 16 << 20
RANGE_OK, RANGE_NOT_FOUND, RANGE_REFUSED = ACK_OK, NOT_FOUND, 5


class PushStreamBroken(Exception):
    """The push stream failed (reset, closed, EOF, garbage) before an acknowledgement; it has been reset."""


async def _close(stream: Any) -> None:
    with trio.move_on_after(1):
        try:
            await stream.close()
        except Exception:  # noqa: BLE001 - best effort
            pass


async def reset(stream: Any) -> None:
    with trio.move_on_after(1):
        try:
            await stream.reset()
        except Exception:  # noqa: BLE001 - best effort
            pass


async def close(stream: Any) -> None:
    """Half-close a push stream we are done with (the receiver then ends its side)."""
    await _close(stream)


async def send_push(stream: Any, header: bytes, payload: bytes) -> str | None:
    """Write one push and wait for its acknowledgement: None when accepted, else the receiver's refusal text.

    Raises PushStreamBroken (after resetting the stream) when the stream fails before a status byte arrives.
    The stream stays open either way it returns; the caller reuses it only after an ok."""
    try:
        await stream.write(header + payload if len(payload) < (1 << 16) else header)
        if len(payload) >= (1 << 16):
            await stream.write(payload)
        ack = await read_exact(stream, 1)
    except (StreamClosed, FrameError) as exc:
        await reset(stream)
        raise PushStreamBroken(f"stream closed before acknowledgement: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - libp2p raises its own types for resets
        await reset(stream)
        raise PushStreamBroken(f"{type(exc).__name__}: {exc}") from None
    return None if ack[0] == ACK_OK else ACK_TEXT.get(ack[0], f"status {ack[0]}")


async def next_push_header(stream: Any) -> bytes | None:
    """Wait for the next push on a long-lived stream: its raw header, or None when the sender closed cleanly."""
    return await read_exact_or_eof(stream, BULK_HEADER.size)


async def receive_push(stream: Any, max_bytes: int, raw: bytes | None = None) -> tuple[bytes, bytes]:
    """Read and check one push (its header ``raw`` already read, or read here): (digest, data). Raises
    FrameError for a bad push. The caller acknowledges it (``ack_push``) once the node has taken it, so an ok
    from ``push`` means delivered, not just received."""
    if raw is None:
        raw = await read_exact(stream, BULK_HEADER.size)
    try:
        length, digest = parse_bulk_header(raw, max_bytes)
    except FrameError:
        if raw[:4] == b"SWB1":
            await _try_write(stream, bytes([ACK_TOO_BIG]))
        raise
    data = await read_body_checked(stream, length, digest)
    if data is None:
        await _try_write(stream, bytes([ACK_BAD_DIGEST]))
        raise FrameError("push body does not match its SHA-256 digest")
    return digest, data


async def ack_push(stream: Any) -> None:
    await stream.write(bytes([ACK_OK]))


async def _try_write(stream: Any, data: bytes) -> None:
    with trio.move_on_after(1):
        try:
            await stream.write(data)
        except Exception:  # noqa: BLE001 - the stream is being closed anyway
            pass


async def request_fetch(stream: Any, digest: bytes, max_bytes: int) -> bytes | None:
    """Ask for ``digest``; the data if the peer has it and it hashes right, else None. Raises FrameError on garbage."""
    await stream.write(digest)
    status = (await read_exact(stream, 1))[0]
    if status == NOT_FOUND:
        return None
    if status != ACK_OK:
        raise FrameError(f"bad fetch status {status}")
    length, got = parse_bulk_header(await read_exact(stream, BULK_HEADER.size), max_bytes)
    if got != digest:
        raise FrameError("fetch answered with another digest")
    data = await read_body_checked(stream, length, digest)
    if data is None:
        raise FrameError("fetched body does not match its SHA-256 digest")
    return data


async def serve_fetch(stream: Any, lookup: Callable[[bytes], Awaitable[bytes | None]], max_bytes: int) -> None:
    """Answer one fetch request using ``lookup`` (which runs the node's provider on the asyncio loop)."""
    digest = await read_exact(stream, DIGEST_BYTES)
    data = await lookup(digest)
    if data is None or len(data) > max_bytes:
        await stream.write(bytes([NOT_FOUND]))
        return
    await stream.write(bytes([ACK_OK]) + bulk_header(len(data), digest))
    await stream.write(data)


class RangeRefused(Exception):
    """The peer refused our range request as malformed (status RANGE_REFUSED)."""


def range_request(digest: bytes, offset: int, length: int) -> bytes:
    if len(digest) != DIGEST_BYTES or offset < 0 or not 0 < length <= MAX_RANGE_BYTES:
        raise ValueError(f"bad range request: offset {offset}, length {length}, digest of {len(digest)} bytes")
    return RANGE_REQUEST.pack(RANGE_MAGIC, digest, offset, length)


async def request_range(stream: Any, digest: bytes, offset: int, length: int,
                        max_total: int) -> tuple[int, bytes] | None:
    """Ask for ``length`` bytes of ``digest`` from ``offset``: (total size, bytes), or None if the peer has no
    such object. Raises RangeRefused when the peer refused the request, FrameError when its answer breaks the rules
    (an object over ``max_total``, a range it should not hold, a body longer or shorter than the range)."""
    await stream.write(range_request(digest, offset, length))
    status, total, got = RANGE_ANSWER.unpack(await read_exact(stream, RANGE_ANSWER.size))
    if status == RANGE_NOT_FOUND:
        return None
    if status == RANGE_REFUSED:
        raise RangeRefused(f"range {offset}+{length} refused")
    if status != RANGE_OK:
        raise FrameError(f"bad range status {status}")
    if total > max_total:
        raise FrameError(f"announced an object of {total} bytes, over the {max_total} byte limit")
    if offset >= total:
        raise FrameError(f"answered range {offset}+{length} of an object of only {total} bytes")
    if got != min(length, total - offset):
        raise FrameError(f"answered {got} bytes for range {offset}+{length} of a {total}-byte object")
    return total, await read_exact(stream, got)


def parse_range_request(raw: bytes) -> tuple[bytes, int, int]:
    """(digest, offset, length) of a range request; FrameError with the reason when it is malformed."""
    magic, digest, offset, length = RANGE_REQUEST.unpack(raw)
    if magic != RANGE_MAGIC:
        raise FrameError(f"bad range request magic {magic!r}")
    if not 0 < length <= MAX_RANGE_BYTES:
        raise FrameError(f"range request of {length} bytes (1 to {MAX_RANGE_BYTES} allowed)")
    return digest, offset, length


async def serve_range(stream: Any, lookup: Callable[[bytes, int, int], Awaitable[tuple[int, bytes] | None]],
                      max_total: int) -> str | None:
    """Answer one range request using ``lookup(digest, offset, length) -> (total, bytes) | None``. A malformed
    request, or one that starts past the end of the object, is answered RANGE_REFUSED and its reason returned (for
    the engine to log and report); the stream stays open so the refusal reaches the requester. A lookup that breaks
    the rules itself is answered not found."""
    try:
        digest, offset, length = parse_range_request(await read_exact(stream, RANGE_REQUEST.size))
    except FrameError as exc:
        await stream.write(RANGE_ANSWER.pack(RANGE_REFUSED, 0, 0))
        return str(exc)
    found = await lookup(digest, offset, length)
    if found is not None:
        total, data = found
        if 0 < total and offset >= total:
            await stream.write(RANGE_ANSWER.pack(RANGE_REFUSED, total, 0))
            return f"range request at offset {offset} past the end of a {total}-byte object"
        if total == 0 or total > max_total or len(data) != min(length, total - offset):
            found = None
    if found is None:
        await stream.write(RANGE_ANSWER.pack(RANGE_NOT_FOUND, 0, 0))
        return None
    header = RANGE_ANSWER.pack(RANGE_OK, total, len(data))
    if len(data) < (1 << 16):
        await stream.write(header + data)
    else:
        await stream.write(header)
        await stream.write(data)
    return None

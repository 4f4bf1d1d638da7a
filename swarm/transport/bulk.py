"""The bulk channel on the wire (trio side): push with digest-checked acknowledgement, and fetch by digest.

A push is [header][body], answered by one status byte once the receiver has checked the SHA-256 and handed the
data to the node. A push stream is long-lived: after the status byte the sender may send the next push on the
same stream, and half-closes it when done (the receiver ends its side at that clean EOF). Reusing streams saves
a protocol negotiation (a round trip, several ms) per push and keeps yamux's grown receive window. A fetch is
one stream per request: [digest] answered by [status][header][body]. Bodies are written in one call (yamux and
noise split them) and read in big chunks in a loop.
"""
from __future__ import annotations

from typing import Any, Awaitable, Callable

import trio

from swarm.transport.framing import (ACK_BAD_DIGEST, ACK_OK, ACK_TEXT, ACK_TOO_BIG, BULK_HEADER, DIGEST_BYTES,
                                     NOT_FOUND, FrameError, StreamClosed, bulk_header, parse_bulk_header,
                                     read_body_checked, read_exact, read_exact_or_eof)

PUSH_PROTOCOL = "/swarm/push/1.0.0"
FETCH_PROTOCOL = "/swarm/fetch/1.0.0"


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

"""Byte framing for the two channels, and loop-based exact reads (libp2p's read_exactly fails on large reads).

Every size is checked from the header before any body byte is read, so a peer can never make us allocate more
than the configured maximum. Bad input raises FrameError; the caller closes that stream and reports the peer.
"""
from __future__ import annotations

import hashlib
import struct
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from swarm.transport.bridge import wait_in_trio

# control channel: u32 body length, u8 kind, body
CONTROL_HEADER = struct.Struct(">IB")
KIND_DATA, KIND_HEARTBEAT, KIND_HELLO = 0, 1, 2
CONTROL_KINDS = (KIND_DATA, KIND_HEARTBEAT, KIND_HELLO)
MAX_CONTROL_BYTES = 1 << 20

# bulk channel: magic, u64 length, sha256 digest, then the body
BULK_MAGIC = b"SWB1"
BULK_HEADER = struct.Struct(">4sQ32s")
DIGEST_BYTES = 32

# push acknowledgement and fetch response status
ACK_OK, ACK_BAD_DIGEST, ACK_TOO_BIG, ACK_BUSY, NOT_FOUND = 0, 1, 2, 3, 4
ACK_TEXT = {ACK_OK: "ok", ACK_BAD_DIGEST: "digest mismatch", ACK_TOO_BIG: "too big", ACK_BUSY: "busy",
            NOT_FOUND: "not found"}

READ_CHUNK = 1 << 20
PARALLEL_HASH_BYTES = 1 << 20


class FrameError(Exception):
    """The peer sent bytes that break the framing rules; the stream must be closed."""


class StreamClosed(Exception):
    """The stream ended (EOF or reset) before the expected bytes arrived."""


def encode_control(kind: int, body: bytes = b"") -> bytes:
    if len(body) > MAX_CONTROL_BYTES:
        raise ValueError(f"control message of {len(body)} bytes exceeds {MAX_CONTROL_BYTES}")
    return CONTROL_HEADER.pack(len(body), kind) + body


def bulk_header(length: int, digest: bytes) -> bytes:
    return BULK_HEADER.pack(BULK_MAGIC, length, digest)


def parse_bulk_header(raw: bytes, max_bytes: int) -> tuple[int, bytes]:
    magic, length, digest = BULK_HEADER.unpack(raw)
    if magic != BULK_MAGIC:
        raise FrameError(f"bad bulk magic {magic!r}")
    if length > max_bytes:
        raise FrameError(f"bulk frame of {length} bytes exceeds the {max_bytes} byte limit")
    return length, digest


async def _read_some(stream: Any, n: int) -> bytes:
    try:
        data = await stream.read(n)
    except Exception as exc:  # noqa: BLE001 - libp2p raises many types for EOF/reset
        raise StreamClosed(f"{type(exc).__name__}: {exc}") from None
    if not data:
        raise StreamClosed("EOF")
    return data


async def read_exact(stream: Any, n: int) -> bytes:
    """Read exactly ``n`` bytes with big reads in a loop."""
    if n == 0:
        return b""
    parts: list[bytes] = []
    remaining = n
    while remaining:
        chunk = await _read_some(stream, min(remaining, READ_CHUNK))
        if len(chunk) > remaining:  # a stream never returns more than asked; guard anyway
            raise FrameError("stream returned more bytes than requested")
        parts.append(chunk)
        remaining -= len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


async def read_exact_or_eof(stream: Any, n: int) -> bytes | None:
    """Like ``read_exact``, but None when the stream ends cleanly before the first byte (a message boundary)."""
    try:
        first = await _read_some(stream, n)
    except StreamClosed:
        return None
    if len(first) > n:
        raise FrameError("stream returned more bytes than requested")
    if len(first) == n:
        return first
    return first + await read_exact(stream, n - len(first))


async def read_body_checked(stream: Any, length: int, digest: bytes) -> bytes | None:
    """Read a ``length``-byte body, hashing as it arrives; None when the SHA-256 does not match ``digest``.

    Bodies of PARALLEL_HASH_BYTES or more are hashed on one worker thread, chunk by chunk in arrival order, while
    the trio thread goes on reading (SHA-256 releases the GIL): on a big push the receiver's trio thread is the
    bottleneck and the hash was a third of its work."""
    hasher = hashlib.sha256()
    threaded = length >= PARALLEL_HASH_BYTES
    parts: list[bytes] = []
    remaining = length
    while remaining:
        chunk = await _read_some(stream, min(remaining, READ_CHUNK))
        if threaded:
            _hash_worker().submit(hasher.update, chunk)
        else:
            hasher.update(chunk)
        parts.append(chunk)
        remaining -= len(chunk)
    got = await wait_in_trio(_hash_worker().submit(hasher.digest)) if threaded else hasher.digest()
    if got != digest:
        return None
    return b"".join(parts)


_worker: ThreadPoolExecutor | None = None


def _hash_worker() -> ThreadPoolExecutor:
    """One thread for every body's hashing: a body's updates run in submission order (FIFO, one worker)."""
    global _worker
    if _worker is None:
        _worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="swarm-sha256")
    return _worker


class ControlReader:
    """Parses control frames out of a stream read in big chunks (many small frames per read)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._buf = bytearray()

    async def next_batch(self) -> list[tuple[int, bytes]]:
        """Every complete frame available after (at most) one read; raises StreamClosed at the end."""
        hsize = CONTROL_HEADER.size
        buf = self._buf
        while True:
            pos, out = 0, []
            while len(buf) - pos >= hsize:
                length, kind = CONTROL_HEADER.unpack_from(buf, pos)
                if kind not in CONTROL_KINDS:
                    raise FrameError(f"unknown control frame kind {kind}")
                if length > MAX_CONTROL_BYTES:
                    raise FrameError(f"control frame of {length} bytes exceeds {MAX_CONTROL_BYTES}")
                if len(buf) - pos < hsize + length:
                    break
                out.append((kind, bytes(buf[pos + hsize:pos + hsize + length])))
                pos += hsize + length
            if pos:
                del buf[:pos]
            if out:
                return out
            buf += await _read_some(self._stream, 1 << 16)

"""Canonical, bounded binary encoding of typed values.

Every signed structure in swarm is bytes produced here, so that two machines that hold the same value produce
the same bytes (and the same signature input). Decoding checks every length against what is left *before*
reading, bounds depth and counts, and raises only :class:`DecodeError`: a peer's bytes can never make the
decoder raise IndexError, struct.error, UnicodeDecodeError or allocate more than the input's size.

Value kinds (one tag byte each): None, False, True, int (signed 64-bit), float (finite float64), bytes,
str (UTF-8), list, dict (str keys, sorted by their UTF-8 bytes, no duplicates). No pickle, no eval.
"""
from __future__ import annotations

import math
import struct
from typing import Any

MAX_DEPTH = 16
MAX_ITEMS = 1 << 20

_NONE, _FALSE, _TRUE, _INT, _FLOAT, _BYTES, _STR, _LIST, _DICT = range(9)
_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class DecodeError(ValueError):
    """Bytes from the outside did not decode; ``reason`` says why (short, stable, usable as a metric label)."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


class Reader:
    """A cursor over bytes that checks every read against what is left."""

    __slots__ = ("_buf", "_pos")

    def __init__(self, data: bytes | memoryview):
        self._buf = memoryview(data)
        self._pos = 0

    @property
    def remaining(self) -> int:
        return len(self._buf) - self._pos

    def take(self, n: int) -> memoryview:
        if n < 0 or n > self.remaining:
            raise DecodeError("truncated", f"need {n} bytes, {self.remaining} left")
        view = self._buf[self._pos:self._pos + n]
        self._pos += n
        return view

    def u8(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        return _U32.unpack(self.take(4))[0]

    def u64(self) -> int:
        return _U64.unpack(self.take(8))[0]

    def i64(self) -> int:
        return _I64.unpack(self.take(8))[0]

    def f64(self) -> float:
        return _F64.unpack(self.take(8))[0]

    def blob(self, max_len: int) -> bytes:
        n = self.u32()
        if n > max_len:
            raise DecodeError("too_large", f"field of {n} bytes exceeds {max_len}")
        return bytes(self.take(n))

    def short_str(self, max_len: int = 255) -> str:
        n = self.u8()
        if n > max_len:
            raise DecodeError("too_large", f"string of {n} bytes exceeds {max_len}")
        return _utf8(self.take(n))

    def expect_end(self) -> None:
        if self.remaining:
            raise DecodeError("trailing_bytes", f"{self.remaining} bytes after the end")


def _utf8(raw: memoryview | bytes) -> str:
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError("bad_utf8", str(exc)) from None


def encode_value(value: Any, out: bytearray | None = None, _depth: int = 0) -> bytearray:
    """Append the canonical encoding of ``value`` to ``out`` (a new bytearray when None)."""
    if out is None:
        out = bytearray()
    if _depth > MAX_DEPTH:
        raise ValueError("value nested too deeply")
    if value is None:
        out.append(_NONE)
    elif value is False:
        out.append(_FALSE)
    elif value is True:
        out.append(_TRUE)
    elif isinstance(value, int):
        out.append(_INT)
        out += _I64.pack(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("non-finite float cannot be encoded")
        out.append(_FLOAT)
        out += _F64.pack(value)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        out.append(_BYTES)
        out += _U32.pack(len(value))
        out += value
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        out.append(_STR)
        out += _U32.pack(len(raw))
        out += raw
    elif isinstance(value, (list, tuple)):
        out.append(_LIST)
        out += _U32.pack(len(value))
        for item in value:
            encode_value(item, out, _depth + 1)
    elif isinstance(value, dict):
        items = sorted(((k.encode("utf-8"), v) for k, v in value.items()), key=lambda kv: kv[0])
        out.append(_DICT)
        out += _U32.pack(len(items))
        for key, item in items:
            if len(key) > 255:
                raise ValueError("dict key longer than 255 bytes")
            out.append(len(key))
            out += key
            encode_value(item, out, _depth + 1)
    else:
        raise TypeError(f"cannot encode {type(value).__name__}")
    return out


def decode_value(reader: Reader, _depth: int = 0) -> Any:
    """Read one canonical value; non-canonical input (unsorted or duplicate keys) is rejected."""
    if _depth > MAX_DEPTH:
        raise DecodeError("too_deep", f"nesting beyond {MAX_DEPTH}")
    tag = reader.u8()
    if tag == _NONE:
        return None
    if tag == _FALSE:
        return False
    if tag == _TRUE:
        return True
    if tag == _INT:
        return reader.i64()
    if tag == _FLOAT:
        value = reader.f64()
        if not math.isfinite(value):
            raise DecodeError("non_finite", "float is NaN or infinite")
        return value
    if tag == _BYTES:
        return bytes(reader.take(reader.u32()))
    if tag == _STR:
        n = reader.u32()
        return _utf8(reader.take(n))
    if tag == _LIST:
        n = _count(reader)
        return [decode_value(reader, _depth + 1) for _ in range(n)]
    if tag == _DICT:
        n = _count(reader)
        result: dict[str, Any] = {}
        previous: bytes | None = None
        for _ in range(n):
            key = bytes(reader.take(reader.u8()))
            if previous is not None and key <= previous:
                raise DecodeError("non_canonical", "dict keys not strictly sorted")
            previous = key
            result[_utf8(key)] = decode_value(reader, _depth + 1)
        return result
    raise DecodeError("bad_tag", f"unknown value tag {tag}")


def _count(reader: Reader) -> int:
    n = reader.u32()
    # Every item takes at least one byte, so a count larger than what is left is a lie: refuse before allocating.
    if n > MAX_ITEMS or n > reader.remaining:
        raise DecodeError("bad_count", f"{n} items cannot fit in {reader.remaining} bytes")
    return n


def dumps(value: Any) -> bytes:
    return bytes(encode_value(value))


def loads(data: bytes | memoryview) -> Any:
    reader = Reader(data)
    value = decode_value(reader)
    reader.expect_end()
    return value

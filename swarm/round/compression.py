"""Update compression: none, fp16, int8 (per-chunk scale), top-k and top-k + int8, with error feedback.

Payload layout (self-describing): magic b"SC", version (u8), scheme id (u8), dimension (u64), then per scheme:
    none      float32 values (dim,)
    fp16      float16 values (dim,)
    int8      chunk (u32), float32 scales (ceil(dim/chunk),), int8 codes (dim,)
    topk      count (u64), indices (count,), float32 values (count,)
    topk_int8 count (u64), chunk (u32), indices (count,), float32 scales, int8 codes (count,)
Indices are int32 when dim < 2^31 (int64 otherwise).
Tensors inside use :mod:`swarm.round.tensor_codec`. :func:`decode` checks everything (scheme, dimension equal to
the expected one, sizes, dtypes, shapes, indices strictly increasing and in range, codes in [-127, 127],
values and scales finite) and raises only :class:`crypto.wire.DecodeError`.

Error bounds: none is exact; fp16 is the nearest half (relative error <= 2^-11 for normal values); int8 is
within scale/2 = max|chunk| / 254 per element; top-k sends its coordinates exactly (float32) and zeros the rest.
Error feedback (:class:`Compressor`) keeps what was not sent and adds it to the next update, so over any
number of rounds sum(sent) + residual == sum(inputs) (up to float64 rounding).
"""
from __future__ import annotations

import math

import torch

from crypto.wire import DecodeError, Reader
from swarm.round.tensor_codec import all_finite, encode_tensor, read_tensor

MAGIC = b"SC"
VERSION = 1
SCHEMES = {"none": 0, "fp16": 1, "int8": 2, "topk": 3, "topk_int8": 4}
_SCHEME_NAMES = {v: k for k, v in SCHEMES.items()}
DEFAULT_CHUNK = 1024
MAX_CHUNK = 1 << 24
_FP16_MAX = 65504.0


def raw_bytes(dim: int) -> int:
    """Bytes of the uncompressed float32 vector."""
    return 4 * dim


def bytes_ratio(payload: bytes, dim: int) -> float:
    """Compressed bytes / raw float32 bytes."""
    return len(payload) / raw_bytes(dim)


def topk_count(dim: int, k: float) -> int:
    if not (0.0 < k <= 1.0):
        raise ValueError(f"top-k fraction must be in (0, 1], got {k!r}")
    return max(1, min(dim, math.ceil(k * dim)))


# ------------------------------------------------------------------ encoding

def _index_dtype(dim: int) -> torch.dtype:
    return torch.int32 if dim < 2 ** 31 else torch.int64


def _quantize(values: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-chunk symmetric int8: scale = max|x| / 127, code = round(x / scale)."""
    n = values.numel()
    padded = torch.nn.functional.pad(values, (0, (-n) % chunk)).reshape(-1, chunk)
    scales = padded.abs().amax(dim=1) / 127.0
    safe = torch.where(scales > 0, scales, torch.ones_like(scales))
    codes = torch.clamp(torch.round(padded / safe[:, None]), -127, 127).to(torch.int8)
    return scales.to(torch.float32), codes.reshape(-1)[:n]


def _dequantize(scales: torch.Tensor, codes: torch.Tensor, chunk: int) -> torch.Tensor:
    n = codes.numel()
    expanded = scales.repeat_interleave(chunk)[:n]
    return codes.to(torch.float32) * expanded


def encode(vector: torch.Tensor, scheme: str = "none", *, k: float = 0.01, chunk: int = DEFAULT_CHUNK) -> bytes:
    """Encode a 1-D float vector; ValueError on non-finite input, unknown scheme or bad parameters."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown compression scheme {scheme!r}; known: {sorted(SCHEMES)}")
    vector = vector.detach().to("cpu", torch.float32).reshape(-1)
    if not all_finite(vector):
        raise ValueError("cannot compress a vector holding NaN or Inf")
    if not 1 <= chunk <= MAX_CHUNK:
        raise ValueError(f"chunk must be in [1, {MAX_CHUNK}]")
    dim = vector.numel()
    out = bytearray(MAGIC)
    out += bytes((VERSION, SCHEMES[scheme]))
    out += dim.to_bytes(8, "little")
    if scheme == "none":
        encode_tensor(vector, out)
    elif scheme == "fp16":
        if dim and float(vector.abs().max()) > _FP16_MAX:
            raise ValueError("value too large for fp16")
        encode_tensor(vector.to(torch.float16), out)
    elif scheme == "int8":
        scales, codes = _quantize(vector, chunk)
        out += chunk.to_bytes(4, "little")
        encode_tensor(scales, out)
        encode_tensor(codes, out)
    else:
        count = topk_count(dim, k)
        indices = torch.sort(torch.topk(vector.abs(), count, sorted=False).indices).values
        values = vector[indices]
        indices = indices.to(_index_dtype(dim))
        out += count.to_bytes(8, "little")
        if scheme == "topk":
            encode_tensor(indices, out)
            encode_tensor(values, out)
        else:
            scales, codes = _quantize(values, chunk)
            out += chunk.to_bytes(4, "little")
            encode_tensor(indices, out)
            encode_tensor(scales, out)
            encode_tensor(codes, out)
    return bytes(out)


# ------------------------------------------------------------------ decoding

def _read_chunk(reader: Reader) -> int:
    chunk = reader.u32()
    if not 1 <= chunk <= MAX_CHUNK:
        raise DecodeError("bad_chunk", f"chunk {chunk}")
    return chunk


def _read_codes(reader: Reader, count: int, chunk: int, max_bytes: int) -> torch.Tensor:
    scales = read_tensor(reader, max_bytes, dtype=torch.float32, shape=(-(-count // chunk),))
    if bool((scales < 0).any()):
        raise DecodeError("bad_scale", "negative scale")
    codes = read_tensor(reader, max_bytes, dtype=torch.int8, shape=(count,))
    if bool((codes == -128).any()):
        raise DecodeError("bad_code", "int8 code -128 is never produced")
    values = _dequantize(scales, codes, chunk)
    if not all_finite(values):
        raise DecodeError("non_finite", "dequantised value overflows")
    return values


def _read_indices(reader: Reader, count: int, dim: int, max_bytes: int) -> torch.Tensor:
    indices = read_tensor(reader, max_bytes, dtype=_index_dtype(dim), shape=(count,)).to(torch.int64)
    if count and (int(indices[0]) < 0 or int(indices[-1]) >= dim):
        raise DecodeError("bad_index", "index out of range")
    if count > 1 and not bool((indices[1:] > indices[:-1]).all()):
        raise DecodeError("bad_index", "indices not strictly increasing (unsorted or duplicated)")
    return indices


def decode(data: bytes | memoryview, expected_dim: int, max_bytes: int) -> torch.Tensor:
    """Decode a payload into a float32 (expected_dim,) vector, or raise DecodeError."""
    if len(data) > max_bytes:
        raise DecodeError("too_large", f"payload of {len(data)} bytes exceeds {max_bytes}")
    reader = Reader(data)
    if bytes(reader.take(2)) != MAGIC:
        raise DecodeError("bad_magic", "not a compressed update")
    version, scheme = reader.u8(), reader.u8()
    if version != VERSION:
        raise DecodeError("bad_version", f"compression version {version}")
    if scheme not in _SCHEME_NAMES:
        raise DecodeError("bad_scheme", f"unknown scheme id {scheme}")
    dim = reader.u64()
    if dim != expected_dim:
        raise DecodeError("wrong_dim", f"payload dimension {dim}, expected {expected_dim}")
    name = _SCHEME_NAMES[scheme]
    if name == "none":
        vector = read_tensor(reader, max_bytes, dtype=torch.float32, shape=(dim,))
    elif name == "fp16":
        vector = read_tensor(reader, max_bytes, dtype=torch.float16, shape=(dim,)).to(torch.float32)
    elif name == "int8":
        chunk = _read_chunk(reader)
        vector = _read_codes(reader, dim, chunk, max_bytes)
    else:
        count = reader.u64()
        if count > dim:
            raise DecodeError("bad_count", f"{count} entries for dimension {dim}")
        if name == "topk":
            indices = _read_indices(reader, count, dim, max_bytes)
            values = read_tensor(reader, max_bytes, dtype=torch.float32, shape=(count,))
        else:
            chunk = _read_chunk(reader)
            indices = _read_indices(reader, count, dim, max_bytes)
            values = _read_codes(reader, count, chunk, max_bytes)
        vector = torch.zeros(dim, dtype=torch.float32)
        vector[indices] = values
    reader.expect_end()
    return vector


def scheme_of(data: bytes | memoryview) -> str:
    """Name of the scheme a payload declares (DecodeError if the header is malformed)."""
    reader = Reader(data)
    if bytes(reader.take(2)) != MAGIC or reader.u8() != VERSION:
        raise DecodeError("bad_magic", "not a compressed update")
    scheme = reader.u8()
    if scheme not in _SCHEME_NAMES:
        raise DecodeError("bad_scheme", f"unknown scheme id {scheme}")
    return _SCHEME_NAMES[scheme]


# ------------------------------------------------------------------ error feedback

class Compressor:
    """One node's compressor: encodes each update plus the residual of what previous payloads did not carry.

    Not thread-safe; one per node. ``residual`` is float64 so the bookkeeping itself loses nothing measurable.
    """

    def __init__(self, scheme: str = "none", *, k: float = 0.01, chunk: int = DEFAULT_CHUNK,
                 error_feedback: bool = True):
        if scheme not in SCHEMES:
            raise ValueError(f"unknown compression scheme {scheme!r}; known: {sorted(SCHEMES)}")
        if scheme in ("topk", "topk_int8"):
            topk_count(1, k)
        self.scheme, self.k, self.chunk, self.error_feedback = scheme, k, chunk, error_feedback
        self.residual: torch.Tensor | None = None
        self.last_ratio: float | None = None

    def compress(self, vector: torch.Tensor) -> bytes:
        target = vector.detach().to("cpu", torch.float64).reshape(-1)
        if self.error_feedback and self.residual is not None:
            if self.residual.numel() != target.numel():
                raise ValueError("update dimension changed; call reset()")
            target = target + self.residual
        payload = encode(target.to(torch.float32), self.scheme, k=self.k, chunk=self.chunk)
        if self.error_feedback:
            sent = decode(payload, target.numel(), len(payload))
            self.residual = target - sent.to(torch.float64)
        self.last_ratio = bytes_ratio(payload, target.numel())
        return payload

    def reset(self) -> None:
        self.residual = None

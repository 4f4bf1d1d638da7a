"""Compression: round trips within stated bounds, error feedback bookkeeping, strict decoding."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from crypto.wire import DecodeError
from swarm.round.compression import SCHEMES, Compressor, bytes_ratio, decode, encode, scheme_of, topk_count

DIM = 5000
MAX = 1 << 20


def vec(seed, dim=DIM):
    return torch.randn(dim, generator=torch.Generator().manual_seed(seed)) * 3


@pytest.mark.parametrize("seed", range(3))
def test_lossless_and_fp16(seed):
    v = vec(seed)
    assert torch.equal(decode(encode(v, "none"), DIM, MAX), v)
    back = decode(encode(v, "fp16"), DIM, MAX)
    assert torch.all((back - v).abs() <= v.abs() * 2.0 ** -11 + 2.0 ** -24)


@pytest.mark.parametrize("chunk", [1, 100, 1024, 7000])
def test_int8_within_half_scale(chunk):
    v = vec(chunk)
    back = decode(encode(v, "int8", chunk=chunk), DIM, MAX)
    for start in range(0, DIM, chunk):
        part = slice(start, start + chunk)
        bound = float(v[part].abs().max()) / 254 * (1 + 1e-5) + 1e-12
        assert float((back[part] - v[part]).abs().max()) <= bound


@pytest.mark.parametrize("k", [0.001, 0.01, 0.3, 1.0])
def test_topk_keeps_largest_exactly(k):
    v = vec(7)
    back = decode(encode(v, "topk", k=k), DIM, MAX)
    count = topk_count(DIM, k)
    kept = back != 0
    assert int(kept.sum()) == count
    assert torch.equal(back[kept], v[kept])
    assert float(v[~kept].abs().max() if count < DIM else 0) <= float(v[kept].abs().min())
    back8 = decode(encode(v, "topk_int8", k=k, chunk=64), DIM, MAX)
    assert torch.equal(back8 != 0, kept) or int((back8 != 0).sum()) <= count
    assert float((back8 - back).abs().max()) <= float(v.abs().max()) / 254 * 1.0001


def test_bytes_ratio_shrinks():
    v = vec(1, 100_000)
    ratios = {s: bytes_ratio(encode(v, s, k=0.01), 100_000) for s in SCHEMES}
    assert ratios["none"] == pytest.approx(1.0, abs=0.01)
    assert ratios["fp16"] == pytest.approx(0.5, abs=0.01)
    assert ratios["int8"] == pytest.approx(0.25, abs=0.01)
    assert ratios["topk"] == pytest.approx(0.02, abs=0.005)
    assert ratios["topk_int8"] < ratios["topk"]
    c = Compressor("int8")
    c.compress(v)
    assert c.last_ratio == ratios["int8"]


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_error_feedback_carries_residual(scheme):
    comp = Compressor(scheme, k=0.05, chunk=128)
    total_in = torch.zeros(DIM, dtype=torch.float64)
    total_sent = torch.zeros(DIM, dtype=torch.float64)
    for r in range(12):
        v = vec(100 + r)
        total_in += v.double()
        total_sent += decode(comp.compress(v), DIM, MAX).double()
        assert torch.allclose(total_sent + comp.residual, total_in, rtol=0, atol=1e-9)
    if scheme in ("topk", "topk_int8"):
        assert float(comp.residual.abs().max()) > 0  # something was really held back


def test_topk_error_feedback_eventually_sends_everything():
    comp = Compressor("topk", k=0.1)
    v = vec(3, 100)
    sent = decode(comp.compress(v), 100, MAX)
    for _ in range(30):
        sent += decode(comp.compress(torch.zeros(100)), 100, MAX)
    assert torch.allclose(sent, v, atol=1e-6)


def test_encode_rejects_bad_input():
    with pytest.raises(ValueError):
        encode(torch.tensor([1.0, float("inf")]))
    with pytest.raises(ValueError):
        encode(torch.tensor([1e6]), "fp16")
    with pytest.raises(ValueError):
        encode(torch.ones(3), "zip")
    with pytest.raises(ValueError):
        Compressor("topk", k=0.0)


def test_decode_rejects_specific_lies():
    v = vec(0, 50)
    good = encode(v, "topk", k=0.2)
    assert scheme_of(good) == "topk"
    with pytest.raises(DecodeError, match="wrong_dim"):
        decode(good, 51, MAX)
    with pytest.raises(DecodeError, match="too_large"):
        decode(good, 50, len(good) - 1)
    # duplicate index: copy the first index over the second
    header = 2 + 2 + 8 + 8 + 2 + 3 + 8  # payload header, count, tensor header
    data = bytearray(good)
    data[header + 4:header + 8] = data[header:header + 4]
    with pytest.raises(DecodeError, match="bad_index"):
        decode(bytes(data), 50, MAX)
    data = bytearray(good)
    data[header:header + 4] = (50).to_bytes(4, "little")
    with pytest.raises(DecodeError, match="bad_index"):
        decode(bytes(data), 50, MAX)
    nan = bytearray(encode(v, "none"))
    nan[-4:] = b"\x00\x00\xc0\x7f"
    with pytest.raises(DecodeError, match="non_finite"):
        decode(bytes(nan), 50, MAX)
    with pytest.raises(DecodeError, match="bad_count"):
        decode(b"SC\x01\x03" + (50).to_bytes(8, "little") + (51).to_bytes(8, "little"), 50, MAX)


ENCODINGS = [encode(vec(s, 40), scheme, k=0.2, chunk=16) for s, scheme in enumerate(sorted(SCHEMES))]


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=120))
def test_random_bytes_only_decode_error(data):
    try:
        out = decode(data, 40, 4096)
    except DecodeError:
        return
    assert out.shape == (40,) and bool(torch.isfinite(out).all())


@settings(max_examples=3000, deadline=None)
@given(st.sampled_from(ENCODINGS), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1,
                                              max_size=3), st.integers(-3, 3))
def test_mutations_only_decode_error(payload, edits, cut):
    data = bytearray(payload)
    for position, value in edits:
        data[position % len(data)] = value
    if cut < 0:
        data = data[:cut]
    elif cut > 0:
        data += bytes(cut)
    try:
        out = decode(bytes(data), 40, 4096)
    except DecodeError:
        return
    assert out.shape == (40,) and out.dtype == torch.float32 and bool(torch.isfinite(out).all())
    assert math.isfinite(float(out.abs().sum()))

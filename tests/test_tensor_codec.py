"""Tensor codec: exact round trips for every dtype, and only DecodeError on malformed bytes."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

from crypto.wire import DecodeError
from swarm.round.tensor_codec import DTYPES, decode_tensor, encode_tensor

MAX = 1 << 16


@pytest.mark.parametrize("dtype", [t for t, _ in DTYPES.values()])
@pytest.mark.parametrize("shape", [(), (0,), (7,), (3, 4), (2, 1, 5)])
def test_round_trip_exact(dtype, shape):
    gen = torch.Generator().manual_seed(1)
    if dtype.is_floating_point:
        t = (torch.randn(shape, generator=gen) * 100).to(dtype)
    else:
        t = torch.randint(-100 if dtype != torch.uint8 else 0, 100, shape, generator=gen).to(dtype)
    data = bytes(encode_tensor(t))
    back = decode_tensor(data, MAX)
    assert back.dtype == dtype and back.shape == t.shape and torch.equal(back, t)
    assert decode_tensor(data, MAX, dtype=dtype, shape=tuple(shape)).shape == t.shape


def test_little_endian_layout():
    data = bytes(encode_tensor(torch.tensor([1.0], dtype=torch.float32)))
    assert data[:2] == b"TN" and data[-4:] == b"\x00\x00\x80\x3f"


def test_rejections_carry_reasons():
    good = bytes(encode_tensor(torch.ones(4)))
    cases = {
        "bad_magic": b"XX" + good[2:],
        "bad_version": good[:2] + b"\x09" + good[3:],
        "bad_dtype": good[:3] + b"\x63" + good[4:],
        "truncated": good[:-1],
        "trailing_bytes": good + b"\x00",
        "non_finite": bytes(encode_tensor(torch.tensor([1.0, float("nan")]))),
    }
    for reason, data in cases.items():
        with pytest.raises(DecodeError) as err:
            decode_tensor(data, MAX)
        assert err.value.reason == reason
    with pytest.raises(DecodeError, match="too_large"):
        decode_tensor(good, 8)
    with pytest.raises(DecodeError, match="wrong_shape"):
        decode_tensor(good, MAX, shape=(5,))
    with pytest.raises(DecodeError, match="wrong_dtype"):
        decode_tensor(good, MAX, dtype=torch.float64)
    huge = good[:5] + (2 ** 62).to_bytes(8, "little")
    with pytest.raises(DecodeError, match="too_large"):
        decode_tensor(huge, 1 << 40)


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=80))
def test_random_bytes_only_decode_error(data):
    try:
        decode_tensor(data, 1024)
    except DecodeError:
        pass


@settings(max_examples=1500, deadline=None)
@given(st.integers(0, 200), st.integers(0, 255), st.sampled_from([t for t, _ in DTYPES.values()]))
def test_mutations_only_decode_error(position, value, dtype):
    data = bytearray(encode_tensor(torch.arange(6).reshape(2, 3).to(dtype)))
    data[position % len(data)] = value
    try:
        decode_tensor(bytes(data), 1024)
    except DecodeError:
        pass


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_all_finite_finds_every_nan_and_inf_and_accepts_extreme_finite_values(dtype):
    from swarm.round.tensor_codec import all_finite
    largest = torch.finfo(dtype).max
    extreme = torch.full((100_000,), largest, dtype=dtype)  # a naive same-type sum would overflow to inf
    assert all_finite(extreme) and all_finite(-extreme) and all_finite(torch.empty(0, dtype=dtype))
    for bad in (float("nan"), float("inf"), float("-inf")):
        for where in (0, 54_321, 99_999):
            poisoned = extreme.clone()
            poisoned[where] = bad
            assert not all_finite(poisoned), (bad, where)
    both = torch.zeros(10, dtype=dtype)
    both[2], both[7] = float("inf"), float("-inf")
    assert not all_finite(both)

"""The canonical value encoding: round trips, canonical form, and only DecodeError on bad input."""
import math

import pytest
from hypothesis import given, settings, strategies as st

from crypto.wire import DecodeError, dumps, loads

values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.binary(max_size=64) | st.text(max_size=32),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=20)


@settings(max_examples=1000, deadline=None)
@given(values)
def test_every_value_round_trips_and_encodes_one_way(value):
    data = dumps(value)
    assert loads(data) == value
    assert dumps(loads(data)) == data


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=256))
def test_random_bytes_only_ever_raise_decode_error(data):
    try:
        loads(data)
    except DecodeError:
        pass


def test_dict_order_does_not_change_bytes_and_unsorted_input_is_refused():
    assert dumps({"b": 1, "a": 2}) == dumps({"a": 2, "b": 1})
    good = dumps({"a": 1, "b": 2})
    swapped = good.replace(b"\x01a", b"\x01c")  # key 'c' before 'b': no longer sorted
    with pytest.raises(DecodeError, match="non_canonical"):
        loads(swapped)


def test_non_finite_floats_are_refused_both_ways():
    with pytest.raises(ValueError):
        dumps(math.nan)
    encoded = bytearray(dumps(1.0))
    encoded[1:] = bytes.fromhex("000000000000f87f")  # NaN
    with pytest.raises(DecodeError, match="non_finite"):
        loads(bytes(encoded))


def test_huge_declared_counts_are_refused_before_allocation():
    with pytest.raises(DecodeError, match="bad_count"):
        loads(bytes([7]) + (2**32 - 1).to_bytes(4, "little"))
    with pytest.raises(DecodeError, match="truncated"):
        loads(bytes([5]) + (2**31).to_bytes(4, "little") + b"abc")


def test_deep_nesting_is_refused():
    data = bytes([7, 1, 0, 0, 0]) * 40 + bytes([0])
    with pytest.raises(DecodeError, match="too_deep"):
        loads(data)

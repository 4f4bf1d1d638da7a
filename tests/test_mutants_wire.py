"""Tests written from mutation run 5 (TESTING.md, "Mutation testing"): each kills mutants of crypto/wire.py that the
rest of the fast suite let survive. The reason a DecodeError carries is a metric label the node counts a peer's
refusals under (swarm/node/peer_scores.py), so the reasons and limits are checked exactly."""
from __future__ import annotations

import struct

import pytest

from crypto.wire import MAX_DEPTH, MAX_ITEMS, DecodeError, Reader, dumps, loads


def _refusal(call) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        call()
    return caught.value


# ------------------------------------------------------------------------------------------ Reader

def test_a_blob_may_be_exactly_its_limit_and_not_one_byte_more():
    assert Reader(struct.pack("<I", 4) + b"abcd").blob(4) == b"abcd"
    error = _refusal(lambda: Reader(struct.pack("<I", 5) + b"abcde").blob(4))
    assert error.reason == "too_large" and str(error) == "too_large: field of 5 bytes exceeds 4"


def test_a_short_string_may_be_exactly_its_limit_and_not_one_byte_more():
    assert Reader(bytes([3]) + b"abc").short_str(3) == "abc"
    error = _refusal(lambda: Reader(bytes([4]) + b"abcd").short_str(3))
    assert error.reason == "too_large" and str(error) == "too_large: string of 4 bytes exceeds 3"
    assert Reader(bytes([255]) + b"x" * 255).short_str() == "x" * 255  # the default: any length a u8 can state


def test_a_decode_error_without_detail_is_its_reason_alone():
    assert str(DecodeError("truncated")) == "truncated" and DecodeError("truncated").reason == "truncated"
    assert str(DecodeError("truncated", "need 4 bytes, 1 left")) == "truncated: need 4 bytes, 1 left"


def test_bad_utf8_says_where():
    error = _refusal(lambda: Reader(bytes([2]) + b"\xc3\x28").short_str())
    assert error.reason == "bad_utf8" and str(error).startswith("bad_utf8: 'utf-8' codec can't decode byte 0xc3")


# ------------------------------------------------------------------------------------------ encode_value

def _nested(levels: int, wrap=lambda value: [value]):
    value = None
    for _ in range(levels):
        value = wrap(value)
    return value


def test_the_encoder_takes_exactly_the_nesting_the_decoder_takes():
    """MAX_DEPTH lists around a value encode and decode; one more is refused by both, with their own words."""
    deepest = _nested(MAX_DEPTH)
    assert loads(dumps(deepest)) == deepest
    with pytest.raises(ValueError, match="^value nested too deeply$"):
        dumps(_nested(MAX_DEPTH + 1))
    too_deep = (bytes([7]) + struct.pack("<I", 1)) * (MAX_DEPTH + 1) + bytes([0])  # lists of one, then None
    error = _refusal(lambda: loads(too_deep))
    assert error.reason == "too_deep" and str(error) == f"too_deep: nesting beyond {MAX_DEPTH}"


def test_nested_dicts_count_towards_the_depth_like_lists():
    deepest = _nested(MAX_DEPTH, lambda value: {"k": value})
    assert loads(dumps(deepest)) == deepest
    with pytest.raises(ValueError, match="^value nested too deeply$"):
        dumps(_nested(MAX_DEPTH + 1, lambda value: {"k": value}))
    too_deep = (bytes([8]) + struct.pack("<I", 1) + bytes([1]) + b"k") * (MAX_DEPTH + 1) + bytes([0])
    assert _refusal(lambda: loads(too_deep)).reason == "too_deep"


def test_booleans_keep_their_own_tags_and_come_back_as_booleans():
    """True == 1 in Python, so a round trip compared with == cannot tell True encoded as the int 1."""
    assert dumps(None) == b"\x00" and dumps(False) == b"\x01" and dumps(True) == b"\x02"
    assert loads(dumps(True)) is True and loads(dumps(False)) is False
    assert dumps([True, 1]) != dumps([1, 1])


def test_a_non_finite_float_is_refused_with_its_reason():
    for value in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(ValueError, match="^non-finite float cannot be encoded$"):
            dumps(value)


def test_a_dict_key_may_be_255_bytes_and_not_one_more():
    longest = {"k" * 255: 1}
    assert loads(dumps(longest)) == longest
    with pytest.raises(ValueError, match="^dict key longer than 255 bytes$"):
        dumps({"k" * 256: 1})
    with pytest.raises(ValueError, match="^dict key longer than 255 bytes$"):
        dumps({"é" * 128: 1})  # 256 bytes in UTF-8: bytes count, not characters


def test_a_value_of_another_type_is_refused_naming_its_type():
    for value, name in (({1, 2}, "set"), (object(), "object"), ([1, 2j], "complex")):
        with pytest.raises(TypeError, match=f"^cannot encode {name}$"):
            dumps(value)


# ------------------------------------------------------------------------------------------ counts

def test_a_count_is_refused_when_over_the_item_limit_even_if_the_bytes_are_there():
    """MAX_ITEMS + 1 one-byte items: every byte is present, and the count is still refused; each limit holds
    alone."""
    data = bytes([7]) + struct.pack("<I", MAX_ITEMS + 1) + bytes(MAX_ITEMS + 1)
    error = _refusal(lambda: loads(data))
    assert error.reason == "bad_count"
    assert loads(bytes([7]) + struct.pack("<I", 3) + bytes(3)) == [None] * 3
    assert len(loads(bytes([7]) + struct.pack("<I", MAX_ITEMS) + bytes(MAX_ITEMS))) == MAX_ITEMS  # the limit itself


def test_a_count_larger_than_the_bytes_left_is_refused_as_a_count():
    error = _refusal(lambda: loads(bytes([7]) + struct.pack("<I", 5) + bytes(4)))
    assert error.reason == "bad_count" and str(error) == "bad_count: 5 items cannot fit in 4 bytes"
    error = _refusal(lambda: loads(bytes([8]) + struct.pack("<I", 3) + bytes([1]) + b"a"))  # a dict: the same
    assert error.reason == "bad_count"


# ------------------------------------------------------------------------------------------ decode_value's refusals

@pytest.mark.parametrize("data, text", [
    (bytes([4]) + struct.pack("<d", float("nan")), "non_finite: float is NaN or infinite"),
    (bytes([4]) + struct.pack("<d", float("-inf")), "non_finite: float is NaN or infinite"),
    (bytes([9]), "bad_tag: unknown value tag 9"),
    (bytes([8]) + struct.pack("<I", 2) + bytes([1]) + b"b" + bytes([0]) + bytes([1]) + b"a" + bytes([0]),
     "non_canonical: dict keys not strictly sorted"),
    (bytes([8]) + struct.pack("<I", 2) + (bytes([1]) + b"a" + bytes([0])) * 2,
     "non_canonical: dict keys not strictly sorted"),
    (bytes([3]) + b"\0" * 3, "truncated: need 8 bytes, 3 left"),
    (bytes([0, 0]), "trailing_bytes: 1 bytes after the end"),
])
def test_each_refusal_has_its_reason_and_words(data, text):
    error = _refusal(lambda: loads(data))
    assert str(error) == text and error.reason == text.split(":")[0]

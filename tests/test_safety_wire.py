"""Safety: canonical encodings (issue 22, properties 2, 3 and 10).

- The state hash and snapshots cover the server optimizer's momentum buffer (swarm/ledger/state.py).
- crypto/wire.py refuses duplicate and unsorted mapping keys and every other non-canonical encoding.
- Random MUTATIONS of valid encodings (crypto/wire.py values, consensus messages, tensors) are either refused
  with DecodeError or decode to a value that re-encodes to exactly the mutated bytes: no two byte strings decode
  to the same value, so a signature or a digest over bytes is a signature or a digest over the value.
"""
from __future__ import annotations

import dataclasses
import struct

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus.messages import from_wire, to_wire
from crypto import wire
from crypto.wire import DecodeError
from swarm.ledger.restore import certified_snapshot
from swarm.ledger.server_optimizer import apply_update
from swarm.ledger.state import ReplicatedState, genesis_state
from swarm.round.tensor_codec import DTYPES, decode_tensor, encode_tensor
from tests.test_consensus_wire import _all_messages

MEMBERS = ["peerB", "peerA", "peerC"]
DIM = 40


# ------------------------------------------------------------------------------------------------ momentum (2)

def _state_with_momentum() -> ReplicatedState:
    g = torch.Generator().manual_seed(11)
    state = genesis_state(torch.randn(DIM, generator=g), MEMBERS, b"\x05" * 32)
    # Two server steps with momentum: the buffer is then nonzero and differs from the last update.
    params, momentum = apply_update(state.params, torch.randn(DIM, generator=g), 0.1, 0.9, state.momentum)
    params, momentum = apply_update(params, torch.randn(DIM, generator=g), 0.1, 0.9, momentum)
    return ReplicatedState(1, params, momentum, state.reputation, state.hash)


def test_safety_state_hash_covers_the_momentum_buffer():
    state = _state_with_momentum()
    assert torch.count_nonzero(state.momentum) == DIM
    state.hash  # noqa: B018 - hash the original first: its hashed body is then cached on it (and on copies)
    one_ulp = state.momentum.clone()
    one_ulp[DIM - 1] = torch.nextafter(one_ulp[DIM - 1], torch.tensor(float("inf")))
    variants = [
        ReplicatedState(1, state.params.clone(), one_ulp, state.reputation, state.parent_hash),
        ReplicatedState(1, state.params.clone(), torch.zeros(DIM), state.reputation, state.parent_hash),
        # a copy that keeps the parameters object but swaps the momentum must not reuse the hashed body
        dataclasses.replace(state, momentum=state.momentum * 2, _hash=None),
    ]
    assert len({state.hash} | {v.hash for v in variants}) == 4
    # Same params and momentum values in fresh tensors: the same hash (the test above is not vacuous).
    same = ReplicatedState(1, state.params.clone(), state.momentum.clone(), state.reputation, state.parent_hash)
    assert same.hash == state.hash


def test_safety_snapshot_round_trips_the_momentum_buffer_bit_exactly():
    state = _state_with_momentum()
    data = state.serialize()
    back = ReplicatedState.deserialize(data, DIM, MEMBERS)
    assert torch.equal(back.momentum, state.momentum) and torch.equal(back.params, state.params)
    assert back.momentum.dtype == torch.float32 and back.hash == state.hash
    assert certified_snapshot(data, state.hash, DIM, MEMBERS).momentum.equal(state.momentum)
    # A snapshot whose momentum bytes were changed is not the certified state.
    tampered = bytearray(data)
    tampered[4 * DIM] ^= 0x01  # the first momentum value's lowest mantissa bit
    assert not torch.equal(ReplicatedState.deserialize(bytes(tampered), DIM, MEMBERS).momentum, state.momentum)
    with pytest.raises(DecodeError, match="uncertified_state"):
        certified_snapshot(bytes(tampered), state.hash, DIM, MEMBERS)


# ------------------------------------------------------------------------------------------------ wire (3)

def _dict_bytes(*items: tuple[bytes, bytes]) -> bytes:
    """A dict encoded by hand, in the order given: tag 8, u32 count, then (u8 key length, key, value)."""
    out = bytearray([8]) + struct.pack("<I", len(items))
    for key, value in items:
        out += bytes([len(key)]) + key + value
    return bytes(out)


def test_safety_wire_refuses_duplicate_mapping_keys():
    one, two = wire.dumps(1), wire.dumps(2)
    assert wire.loads(_dict_bytes((b"a", one), (b"b", two))) == {"a": 1, "b": 2}  # the hand encoder is right
    assert _dict_bytes((b"a", one), (b"b", two)) == wire.dumps({"b": 2, "a": 1})
    for dup in (_dict_bytes((b"a", one), (b"a", two)), _dict_bytes((b"a", one), (b"a", one)),
                _dict_bytes((b"a", one), (b"b", one), (b"b", two))):
        with pytest.raises(DecodeError, match="non_canonical"):
            wire.loads(dup)
    with pytest.raises(DecodeError, match="non_canonical"):  # nested inside a list too
        wire.loads(bytes([7]) + struct.pack("<I", 1) + _dict_bytes((b"k", one), (b"k", one)))


def test_safety_wire_refuses_unsorted_keys_and_other_non_canonical_forms():
    one = wire.dumps(1)
    with pytest.raises(DecodeError, match="non_canonical"):
        wire.loads(_dict_bytes((b"b", one), (b"a", one)))
    # Keys sort by their UTF-8 bytes: "Z" (0x5a) before "a" (0x61) before "\u00e9" (0xc3 0xa9).
    assert wire.dumps({"a": 1, "\u00e9": 1, "Z": 1}) == _dict_bytes((b"Z", one), (b"a", one),
                                                                      ("\u00e9".encode(), one))
    with pytest.raises(DecodeError, match="non_canonical"):
        wire.loads(_dict_bytes((b"a", one), (b"Z", one)))
    # A prefix sorts first: "a" < "ab".
    with pytest.raises(DecodeError, match="non_canonical"):
        wire.loads(_dict_bytes((b"ab", one), (b"a", one)))
    # Bytes after the value, overlong/invalid UTF-8, a non-finite float: refused.
    with pytest.raises(DecodeError, match="trailing_bytes"):
        wire.loads(wire.dumps(1) + b"\x00")
    with pytest.raises(DecodeError, match="bad_utf8"):
        wire.loads(bytes([6]) + struct.pack("<I", 2) + b"\xc0\xaf")  # overlong "/"
    with pytest.raises(DecodeError, match="bad_utf8"):
        wire.loads(_dict_bytes((b"\xc0\xaf", one)))
    with pytest.raises(DecodeError, match="bad_tag"):
        wire.loads(bytes([9]))


# ------------------------------------------------------------------------------------------------ mutation fuzz (10)

@st.composite
def _mutated(draw, original: bytes) -> bytes:
    """``original`` with one to three random edits: flip a bit, set a byte, insert, delete, truncate, extend."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "extend"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and data:
            del data[pos:pos + draw(st.integers(1, 4))]
        elif op == "truncate":
            del data[pos:]
        elif op == "extend":
            data += draw(st.binary(min_size=1, max_size=4))
    return bytes(data)


_VALUES = [
    {"a": 1, "b": [True, None, 2.5, b"xy"], "c": {"d": "\u00e9t\u00e9", "e": -7}},
    [{"k": b""}, {"k": 0.0}, {"k": -0.0}, "", []],
    {"": {}, "aa": [1, 2, 3], "ab": "x" * 5, "b": {"c": {"d": False}}},
    {"a": 1, "c": 2, "e": {"a": None, "c": None}},  # keys one bit apart: a flip can make a duplicate
]


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_VALUES), st.data())
def test_safety_fuzz_wire_mutations_are_refused_or_canonical(value, data):
    mutated = data.draw(_mutated(wire.dumps(value)))
    try:
        decoded = wire.loads(mutated)
    except DecodeError:
        return
    assert wire.dumps(decoded) == mutated


def _consensus_decode(raw: bytes):
    return from_wire(wire.loads(raw))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_all_messages()), st.data())
def test_safety_fuzz_consensus_message_mutations_are_refused_or_canonical(msg, data):
    mutated = data.draw(_mutated(wire.dumps(to_wire(msg))))
    try:
        decoded = _consensus_decode(mutated)
    except DecodeError:
        return
    assert wire.dumps(to_wire(decoded)) == mutated


def _leaves(value, path=()):
    """Every (path, leaf) of a plain value (dict keys and list indices)."""
    if isinstance(value, dict):
        for k in sorted(value):
            yield from _leaves(value[k], path + (k,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _leaves(item, path + (i,))
    else:
        yield path, value


def _replaced(value, path, leaf):
    if not path:
        return leaf
    if isinstance(value, dict):
        return {**value, path[0]: _replaced(value[path[0]], path[1:], leaf)}
    out = list(value)
    out[path[0]] = _replaced(value[path[0]], path[1:], leaf)
    return out


def _confused(leaf):
    """Values of another wire type that a lax decoder could take for ``leaf``."""
    if isinstance(leaf, bytes):
        return [leaf.decode("latin-1"), list(leaf), None]
    if isinstance(leaf, bool):
        return [int(leaf), None]
    if isinstance(leaf, int):
        return [float(leaf), bool(leaf), str(leaf), None]
    if isinstance(leaf, str):
        return [leaf.encode("utf-8"), None]
    return [0, b"", ""]


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(_all_messages()), st.data())
def test_safety_fuzz_consensus_type_confusion_is_refused_or_canonical(msg, data):
    """The consensus layer's half of canonical form: a field of another wire type is refused, never coerced."""
    plain = to_wire(msg)
    path, leaf = data.draw(st.sampled_from(list(_leaves(plain))))
    mutated = _replaced(plain, path, data.draw(st.sampled_from(_confused(leaf))))
    try:
        decoded = from_wire(mutated)
    except DecodeError:
        return
    assert wire.dumps(to_wire(decoded)) == wire.dumps(mutated)


_TENSORS = [torch.arange(6).reshape(2, 3).to(t) for t, _ in DTYPES.values()] + [
    torch.tensor([0.5, -0.0, 1e-3], dtype=torch.float16), torch.tensor(3.0), torch.zeros(0, 4)]


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_TENSORS), st.data())
def test_safety_fuzz_tensor_mutations_are_refused_or_canonical(tensor, data):
    mutated = data.draw(_mutated(bytes(encode_tensor(tensor))))
    try:
        decoded = decode_tensor(mutated, 1024)
    except DecodeError:
        return
    assert bytes(encode_tensor(decoded)) == mutated


def test_safety_fuzz_targets_accept_their_own_encodings():
    """The control for the three fuzz tests: unmutated encodings decode and re-encode to themselves."""
    for value in _VALUES:
        assert wire.dumps(wire.loads(wire.dumps(value))) == wire.dumps(value)
    for msg in _all_messages():
        raw = wire.dumps(to_wire(msg))
        assert wire.dumps(to_wire(_consensus_decode(raw))) == raw
    for tensor in _TENSORS:
        raw = bytes(encode_tensor(tensor))
        assert bytes(encode_tensor(decode_tensor(raw, 1024))) == raw

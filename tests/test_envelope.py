"""The signed envelope: fuzzed decoding, bit flips, and no replay across swarm, type, term or round.

Together these run well over 10,000 generated cases per CI run.
"""
import dataclasses
import hashlib
import random

import pytest
from hypothesis import given, settings, strategies as st

from crypto.envelope import DOMAIN, MessageType, decode, open_envelope, peek, seal
from crypto.keys import NodeKey
from crypto.wire import DecodeError

KEY = NodeKey.from_seed(bytes(range(32)))
OTHER = NodeKey.from_seed(bytes(range(1, 33)))
SAMPLE = seal(KEY, MessageType.CONSENSUS, "swarm-a", 7, 42,
              {"kind": "prepare", "digest": b"\x01" * 32, "n": 3}, b"payload-bytes")
SAMPLE_BYTES = SAMPLE.encode()


def test_round_trip_keeps_every_field_and_verifies():
    opened = open_envelope(SAMPLE_BYTES, "swarm-a")
    assert opened == SAMPLE
    assert opened.sender == KEY.peer_id
    assert opened.fields["digest"] == b"\x01" * 32


@settings(max_examples=4000, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_only_raise_decode_error(data):
    with pytest.raises(DecodeError):
        open_envelope(data, "swarm-a")


@settings(max_examples=4000, deadline=None)
@given(st.data())
def test_mutated_valid_envelopes_never_verify_and_only_raise_decode_error(data):
    raw = bytearray(SAMPLE_BYTES)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        pos = data.draw(st.integers(0, len(raw) - 1)) if raw else 0
        if op == "flip" and raw:
            raw[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and raw:
            raw[pos] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del raw[pos:]
        elif op == "insert":
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and raw:
            del raw[pos:pos + data.draw(st.integers(1, 8))]
    if bytes(raw) == SAMPLE_BYTES:
        return
    with pytest.raises(DecodeError):
        open_envelope(bytes(raw), "swarm-a")


def test_no_single_bit_flip_of_a_signed_envelope_verifies():
    flips = 0
    for byte in range(len(SAMPLE_BYTES)):
        for bit in range(8):
            raw = bytearray(SAMPLE_BYTES)
            raw[byte] ^= 1 << bit
            with pytest.raises(DecodeError):
                open_envelope(bytes(raw), "swarm-a")
            flips += 1
    assert flips == 8 * len(SAMPLE_BYTES) > 1500


@pytest.mark.parametrize("change", [
    {"swarm_id": "swarm-b"}, {"type": MessageType.GRADIENT}, {"term": 8}, {"round": 41},
    {"fields": {"kind": "commit", "digest": b"\x01" * 32, "n": 3}}, {"payload": b"other"},
])
def test_signature_does_not_carry_over_to_another_swarm_type_term_round_or_content(change):
    forged = dataclasses.replace(SAMPLE, **change)
    assert not forged.verify()
    with pytest.raises(DecodeError):
        open_envelope(forged.encode(), forged.swarm_id)


def test_envelope_for_another_swarm_is_rejected_even_when_validly_signed():
    other_swarm = seal(KEY, MessageType.CONSENSUS, "swarm-b", 7, 42, {}, b"")
    with pytest.raises(DecodeError, match="wrong_swarm"):
        open_envelope(other_swarm.encode(), "swarm-a")


def test_sender_substitution_is_caught():
    stolen = dataclasses.replace(SAMPLE, sender_key=OTHER.public_bytes)
    with pytest.raises(DecodeError, match="bad_signature"):
        open_envelope(stolen.encode(), "swarm-a")


def test_signature_is_domain_separated():
    # A bare signature over the same bytes without the domain prefix must not verify as an envelope.
    bare = KEY.sign(SAMPLE.signed_message()[len(DOMAIN):])
    assert not dataclasses.replace(SAMPLE, signature=bare).verify()
    assert KEY.sign(SAMPLE.signed_message()) == SAMPLE.signature


def test_payload_is_signed_through_its_hash():
    # Every payload byte counts: one flipped bit in a large payload breaks the signature, and the signed message
    # stays small whatever the payload's size.
    big = seal(KEY, MessageType.GRADIENT, "swarm-a", 1, 2, {}, bytes(range(256)) * 4096)
    raw = bytearray(big.encode())
    assert open_envelope(bytes(raw), "swarm-a").payload == big.payload
    raw[len(big.header()) + 500_000] ^= 0x01
    with pytest.raises(DecodeError, match="bad_signature"):
        open_envelope(bytes(raw), "swarm-a")
    assert len(big.signed_message()) < 200
    assert big.signed_message().endswith(hashlib.sha256(big.payload).digest())


def test_size_limit_is_checked_before_parsing():
    big = seal(KEY, MessageType.GRADIENT, "swarm-a", 0, 0, {}, b"x" * 10_000).encode()
    with pytest.raises(DecodeError, match="too_large"):
        decode(big, max_size=5_000)


def test_unknown_type_and_version_are_named():
    raw = bytearray(SAMPLE_BYTES)
    raw[5] = 200
    with pytest.raises(DecodeError, match="bad_type"):
        decode(bytes(raw))
    raw = bytearray(SAMPLE_BYTES)
    raw[4] = 9
    with pytest.raises(DecodeError, match="bad_version"):
        decode(bytes(raw))


def test_many_random_envelopes_round_trip():
    rng = random.Random(5)
    for _ in range(300):
        env = seal(KEY, rng.choice(list(MessageType)), "s" * rng.randint(1, 64), rng.getrandbits(63),
                   rng.getrandbits(63), {"x": rng.getrandbits(32)}, rng.randbytes(rng.randint(0, 100)))
        assert open_envelope(env.encode(), env.swarm_id) == env


def test_peek_reads_type_term_and_round_of_every_envelope_without_decoding_the_rest():
    rng = random.Random(9)
    for _ in range(200):
        env = seal(KEY, rng.choice(list(MessageType)), "s" * rng.randint(1, 64), rng.getrandbits(63),
                   rng.getrandbits(63), {"x": rng.getrandbits(32)}, rng.randbytes(rng.randint(0, 100)))
        assert peek(env.encode()) == (env.type, env.term, env.round)
    # The head alone is enough (a body that would not decode is left to open_envelope), but a bad head is not.
    head_only = SAMPLE_BYTES[:4 + 2 + 1 + len("swarm-a") + 32 + 16]
    assert peek(head_only) == (MessageType.CONSENSUS, 7, 42)
    with pytest.raises(DecodeError, match="truncated"):
        peek(head_only[:-1])
    with pytest.raises(DecodeError, match="bad_magic"):
        peek(b"XXXX" + SAMPLE_BYTES[4:])
    with pytest.raises(DecodeError, match="too_large"):
        peek(SAMPLE_BYTES, max_size=10)

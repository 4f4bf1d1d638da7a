"""A receiver's checks of a gradient envelope, and the digest a caller may hand over instead of hashing again."""
import hashlib
import struct

import pytest
import torch

from crypto.keys import NodeKey
from crypto.wire import DecodeError
from swarm.round import compression
from swarm.round.gradient import make_gradient, verify_gradient

KEY = NodeKey.from_seed(bytes(range(32)))
STRANGER = NodeKey.from_seed(bytes(range(2, 34)))
PARENT = b"\x07" * 32
DIM = 64


def _check(raw: bytes, **overrides):
    kwargs = dict(swarm_id="s", members={KEY.peer_id}, max_size=1 << 20, round=3, parent=PARENT,
                  decode_payload=lambda payload: compression.decode(payload, DIM, 1 << 20))
    kwargs.update(overrides)
    return verify_gradient(raw, **kwargs)


def _raw(vector: torch.Tensor, key: NodeKey = KEY, round_: int = 3) -> bytes:
    return make_gradient(key, "s", round_, PARENT, compression.encode(vector, "none"))


def _raw_with_nan() -> bytes:
    """A signed envelope whose last coordinate is NaN (the encoder refuses to make one)."""
    payload = compression.encode(torch.ones(DIM), "none")
    return make_gradient(KEY, "s", 3, PARENT, payload[:-4] + struct.pack("<f", float("nan")))


def test_a_valid_gradient_is_kept_with_its_sha256_as_digest():
    vector = torch.arange(DIM, dtype=torch.float32)
    raw = _raw(vector)
    gradient = _check(raw)
    assert (gradient.sender, gradient.round, gradient.parent) == (KEY.peer_id, 3, PARENT)
    assert gradient.digest == hashlib.sha256(raw).digest()
    assert torch.equal(gradient.vector, vector)


def test_a_verified_gradient_holds_its_envelope_and_no_dense_copy():
    """Issue 17: a pool holds two rounds of every member's gradient; each keeps its envelope only (fp16: 2 bytes a
    parameter) and decodes on each read, instead of holding a float32 copy beside it (6 bytes a parameter)."""
    vector = torch.randn(DIM, generator=torch.Generator().manual_seed(1))
    raw = make_gradient(KEY, "s", 3, PARENT, compression.encode(vector, "fp16"))
    gradient = _check(raw)
    assert gradient.dim == DIM
    assert not any(isinstance(getattr(gradient, slot), torch.Tensor) for slot in type(gradient).__slots__)
    first, second = gradient.vector, gradient.vector
    assert first is not second and torch.equal(first, second)  # decoded again, the same values each time
    assert torch.equal(first, vector.half().float())


def test_a_digest_the_caller_checked_is_kept_as_given():
    raw = _raw(torch.ones(DIM))
    digest = hashlib.sha256(raw).digest()
    assert _check(raw, digest=digest).digest == digest


@pytest.mark.parametrize("raw, overrides, reason", [
    (_raw(torch.ones(DIM), round_=4), {}, "wrong_round"),
    (_raw(torch.ones(DIM)), {"parent": b"\x08" * 32}, "wrong_parent"),
    (_raw(torch.ones(DIM), key=STRANGER), {}, "unknown_peer"),
    (_raw_with_nan(), {}, "non_finite"),
    (_raw(torch.ones(DIM + 1)), {}, None),
])
def test_each_failed_check_raises_a_named_decode_error(raw, overrides, reason):
    with pytest.raises(DecodeError) as caught:
        _check(raw, **overrides)
    if reason is not None:
        assert caught.value.reason == reason

"""The replicated state: canonical bytes, hash sensitivity, and strict snapshot decoding."""
import dataclasses

import pytest
import torch

from crypto.wire import DecodeError
from swarm.ledger.state import PeerReputation, ReplicatedState, genesis_state

MEMBERS = ["peerB", "peerA", "peerC"]


def make_state(seed=0, dim=50):
    g = torch.Generator().manual_seed(seed)
    return genesis_state(torch.randn(dim, generator=g), MEMBERS, b"\x07" * 32)


def test_genesis_state_sorts_members_and_starts_at_round_zero():
    state = make_state()
    assert state.round == 0
    assert [peer for peer, _ in state.reputation] == ["peerA", "peerB", "peerC"]
    assert torch.equal(state.momentum, torch.zeros(50))


def test_serialization_round_trips_to_the_same_hash():
    state = make_state()
    again = ReplicatedState.deserialize(state.serialize(), 50, MEMBERS)
    assert again.hash == state.hash
    assert torch.equal(again.params, state.params)


def test_hash_changes_with_any_component():
    state = make_state()
    params = state.params.clone()
    params[3] = torch.nextafter(params[3], torch.tensor(float("inf")))
    variants = [
        dataclasses.replace(state, round=1, _hash=None),
        dataclasses.replace(state, params=params, _hash=None),
        dataclasses.replace(state, parent_hash=b"\x08" * 32, _hash=None),
        dataclasses.replace(state, reputation=(("peerA", PeerReputation(quality=0.9)),) + state.reputation[1:],
                            _hash=None),
    ]
    hashes = {state.hash} | {v.hash for v in variants}
    assert len(hashes) == 5


def test_snapshot_with_wrong_shape_members_or_nan_is_refused():
    state = make_state()
    data = state.serialize()
    with pytest.raises(DecodeError, match="wrong_shape"):
        ReplicatedState.deserialize(data, 49, MEMBERS)
    with pytest.raises(DecodeError, match="members"):
        ReplicatedState.deserialize(data, 50, ["peerA", "peerB"])
    bad = dataclasses.replace(state, params=torch.full((50,), float("nan")), _hash=None)
    with pytest.raises(DecodeError, match="non_finite"):
        ReplicatedState.deserialize(bad.serialize(), 50, MEMBERS)
    with pytest.raises(DecodeError):
        ReplicatedState.deserialize(data[:-1], 50, MEMBERS)
    with pytest.raises(DecodeError):
        ReplicatedState.deserialize(data + b"\0", 50, MEMBERS)


def test_hash_is_the_sha256_of_the_snapshot_bytes_even_from_a_prehashed_body():
    """Snapshots stay content-addressed: a peer fetching one by state hash checks it with a plain SHA-256."""
    import hashlib

    from swarm.ledger.state import StateBody
    state = make_state(seed=3)
    params = state.params * 0.5
    momentum = torch.ones_like(params)
    body = StateBody(params, momentum)  # what aggregation computes ahead of the proposal
    fast = ReplicatedState(1, params, momentum, state.reputation, state.hash, _body=body)
    slow = ReplicatedState(1, params.clone(), momentum.clone(), state.reputation, state.hash)
    assert fast.hash == slow.hash == hashlib.sha256(fast.serialize()).digest()
    assert ReplicatedState.deserialize(fast.serialize(), 50, MEMBERS).hash == fast.hash
    # A copy with other parameters never reuses the body hashed for the old ones.
    moved = dataclasses.replace(fast, params=params + 1.0, _hash=None)
    assert moved.hash != fast.hash
    assert moved.hash == hashlib.sha256(moved.serialize()).digest()

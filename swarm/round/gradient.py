"""Gradient messages: a node's signed update for one round, and the checks a receiver makes before keeping one.

A Gradient is an envelope of type GRADIENT with round r, the parent state hash in its fields and the compressed
update as payload. Its digest (SHA-256 of the envelope bytes) is what a committed entry names, so the entry binds
exact signed bytes; replicas that lack one fetch it by digest from any peer.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

import torch

from crypto.envelope import Envelope, MessageType, open_envelope, seal
from crypto.keys import NodeKey
from crypto.wire import DecodeError
from swarm.round.tensor_codec import all_finite


@dataclass(frozen=True)
class Gradient:
    """A verified gradient: who sent it, for which round and parent, its digest, raw bytes and decoded vector."""

    sender: str
    round: int
    parent: bytes
    digest: bytes
    raw: bytes
    vector: torch.Tensor


def digest_of(raw: bytes) -> bytes:
    return hashlib.sha256(raw).digest()


def make_gradient(key: NodeKey, swarm_id: str, round: int, parent: bytes, payload: bytes) -> bytes:
    """The envelope bytes of this node's gradient for ``round`` built on state ``parent``."""
    return seal(key, MessageType.GRADIENT, swarm_id, 0, round, {"parent": parent}, payload).encode()


def verify_gradient(raw: bytes, *, swarm_id: str, members: set[str], max_size: int,
                    decode_payload: Callable[[bytes], torch.Tensor],
                    round: int | None = None, parent: bytes | None = None,
                    digest: bytes | None = None) -> Gradient:
    """Check signature, membership, round, parent, size, decodability and finiteness; raise DecodeError if any fails.

    ``round`` / ``parent`` = None skips that check (a payload fetched for a proposal is checked against the
    proposal's round and parent by the caller instead). ``digest``: the SHA-256 of ``raw`` when the caller has
    already checked it (the transport checks every push against the digest in its header), saving a second pass
    over megabytes; None computes it.
    """
    envelope: Envelope = open_envelope(raw, swarm_id, max_size)
    if envelope.type != MessageType.GRADIENT:
        raise DecodeError("wrong_type", f"expected a gradient, got {envelope.type.name}")
    sender = envelope.sender
    if sender not in members:
        raise DecodeError("unknown_peer", f"{sender} is not a member of the swarm")
    if round is not None and envelope.round != round:
        raise DecodeError("wrong_round", f"gradient for round {envelope.round}, expected {round}")
    claimed_parent = envelope.fields.get("parent")
    if set(envelope.fields) != {"parent"} or not isinstance(claimed_parent, bytes) or len(claimed_parent) != 32:
        raise DecodeError("bad_fields", "gradient fields must be exactly a 32-byte parent hash")
    if parent is not None and claimed_parent != parent:
        raise DecodeError("wrong_parent", "gradient built on another state")
    vector = decode_payload(envelope.payload)
    if not all_finite(vector):
        raise DecodeError("non_finite", "gradient holds NaN or infinite values")
    return Gradient(sender, envelope.round, claimed_parent, digest if digest is not None else digest_of(raw),
                    bytes(raw), vector)

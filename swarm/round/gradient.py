"""Gradient messages: a node's signed update for one round, and the checks a receiver makes before keeping one.

A Gradient is an envelope of type GRADIENT with round r, the parent state hash in its fields and the compressed
update as payload. Its digest (SHA-256 of the envelope bytes) is what a committed entry names, so the entry binds
exact signed bytes; replicas that lack one fetch it by digest from any peer.

Two different gradients signed by one member for one round are equivocation, and since envelopes are signed
hash-then-sign, the two signed heads (header, payload SHA-256, signature; crypto.envelope.SignedHead) prove it to
anyone holding the genesis, without the payloads: :class:`GradientEquivocation`, a few hundred bytes.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

import torch

from crypto.envelope import (SIGNATURE_SIZE, Envelope, MessageType, OpenedHead, SignedHead, decode, open_envelope,
                             open_signed_head, parse_header, seal)
from crypto.keys import NodeKey
from crypto.peer_id import peer_id_from_public_key
from crypto.wire import DecodeError
from swarm.round.tensor_codec import all_finite


class Gradient:
    """A verified gradient: who sent it, for which round and parent, its digest, raw bytes and decoded vector.

    A received gradient keeps only its envelope: ``vector`` decodes the payload again on each read (one pass over
    2 bytes a parameter in fp16) instead of holding a float32 copy beside it, so a pool of two rounds of n members
    holds n envelopes a round, not n envelopes plus n dense vectors (issue 17: 6 bytes a parameter and member
    became 2). A vector given to the constructor (our own update, tests) is kept as it is."""

    __slots__ = ("sender", "round", "parent", "digest", "raw", "dim", "_vector", "_decode")

    def __init__(self, sender: str, round: int, parent: bytes, digest: bytes, raw: bytes,
                 vector: torch.Tensor | None = None, *, decode: Callable[[], torch.Tensor] | None = None,
                 dim: int | None = None):
        if (vector is None) == (decode is None):
            raise ValueError("a gradient needs either its vector or a way to decode it")
        self.sender, self.round, self.parent, self.digest, self.raw = sender, round, parent, digest, raw
        self._vector, self._decode = vector, decode
        self.dim = int(vector.numel()) if vector is not None else int(dim)

    @property
    def vector(self) -> torch.Tensor:
        return self._vector if self._vector is not None else self._decode()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Gradient):
            return NotImplemented
        return (self.sender, self.round, self.parent, self.digest) == (other.sender, other.round, other.parent,
                                                                       other.digest)

    def __hash__(self) -> int:
        return hash((self.sender, self.round, self.digest))

    def __repr__(self) -> str:
        return f"Gradient(sender={self.sender[:12]}, round={self.round}, digest={self.digest.hex()[:12]})"


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
    claimed_parent = _parent_field(envelope.fields)
    if parent is not None and claimed_parent != parent:
        raise DecodeError("wrong_parent", "gradient built on another state")
    vector = decode_payload(envelope.payload)
    if not all_finite(vector):
        raise DecodeError("non_finite", "gradient holds NaN or infinite values")
    raw = bytes(raw)
    start = len(raw) - SIGNATURE_SIZE - len(envelope.payload)  # the payload sits right before the signature
    payload = memoryview(raw)[start:start + len(envelope.payload)]
    return Gradient(sender, envelope.round, claimed_parent, digest if digest is not None else digest_of(raw), raw,
                    decode=lambda: decode_payload(payload), dim=vector.numel())


def _parent_field(fields: dict) -> bytes:
    claimed_parent = fields.get("parent")
    if set(fields) != {"parent"} or not isinstance(claimed_parent, bytes) or len(claimed_parent) != 32:
        raise DecodeError("bad_fields", "gradient fields must be exactly a 32-byte parent hash")
    return claimed_parent


# ------------------------------------------------------------------------------------ equivocation as evidence

GRADIENT_EVIDENCE = "gradient"  # the kind tag of this evidence in an entry's params["evidence"]
_EVIDENCE_DOMAIN = b"swarm/evidence/gradient-equivocation/v1\0"
_SIDE_FIELDS = 3  # [header, payload SHA-256, signature]


@dataclass(frozen=True)
class GradientEquivocation:
    """Two signed gradient heads from one key for one round that differ: proof that the key equivocated.

    Canonical: ``first`` < ``second`` as (header, payload hash), so one pair of signed messages has one form. The
    plain form an entry carries is ``{"kind": "gradient", "a": [header, payload_hash, sig], "b": [...]}``. Its
    :meth:`digest` names the offence, (sender, round), not the pair: a member that signs three gradients for one
    round (or re-signs one) gives several pairs but is convicted once for that round."""

    first: SignedHead
    second: SignedHead

    def _opened(self) -> OpenedHead:
        return parse_header(self.first.header)

    @property
    def sender(self) -> str:
        return self._opened().sender

    @property
    def round(self) -> int:
        return self._opened().round

    def digest(self) -> bytes:
        opened = self._opened()
        return equivocation_digest(opened.sender_key, opened.round)

    def to_plain(self) -> dict:
        return {"kind": GRADIENT_EVIDENCE, "a": _side_plain(self.first), "b": _side_plain(self.second)}


def equivocation_digest(sender_key: bytes, round_: int) -> bytes:
    """The digest of gradient-equivocation evidence: one per (sender key, round)."""
    return hashlib.sha256(_EVIDENCE_DOMAIN + sender_key + round_.to_bytes(8, "little")).digest()


def _side_plain(head: SignedHead) -> list:
    return [head.header, head.payload_hash, head.signature]


def equivocation_from_raw(first_raw: bytes, second_raw: bytes) -> GradientEquivocation | None:
    """The evidence two gradient envelopes from one sender for one round make, or None when they prove nothing
    (the same signed message, undecodable bytes). Hashes both payloads: call it once per offence."""
    try:
        heads = sorted((decode(raw, len(raw)).signed_head() for raw in (first_raw, second_raw)),
                       key=lambda h: (h.header, h.payload_hash))
    except (DecodeError, ValueError):
        return None
    if (heads[0].header, heads[0].payload_hash) == (heads[1].header, heads[1].payload_hash):
        return None
    return GradientEquivocation(heads[0], heads[1])


def equivocation_from_plain(d) -> GradientEquivocation:
    """The evidence in an entry's plain form; DecodeError when it is malformed or not in canonical order (nothing
    is verified here: :func:`check_equivocation` does that)."""
    if type(d) is not dict or set(d) != {"kind", "a", "b"} or d["kind"] != GRADIENT_EVIDENCE:
        raise DecodeError("bad_evidence", "gradient evidence is {kind, a, b}")
    sides = []
    for name in ("a", "b"):
        side = d[name]
        if (type(side) is not list or len(side) != _SIDE_FIELDS
                or not all(type(part) is bytes for part in side)):
            raise DecodeError("bad_evidence", f"side {name} must be [header, payload_hash, signature] bytes")
        sides.append(SignedHead(side[0], side[1], side[2]))
    if not (sides[0].header, sides[0].payload_hash) < (sides[1].header, sides[1].payload_hash):
        raise DecodeError("bad_evidence", "the two sides must differ and be in canonical order")
    return GradientEquivocation(sides[0], sides[1])


def check_equivocation(evidence: GradientEquivocation, swarm_id: str, members: set[str]) -> str:
    """The member the evidence convicts: both heads verify in this swarm, are GRADIENT messages with a gradient's
    fields, from the same member and for the same round, and differ (canonical order makes them). DecodeError
    otherwise."""
    first = open_signed_head(evidence.first, swarm_id)
    second = open_signed_head(evidence.second, swarm_id)
    for head in (first, second):
        if head.type != MessageType.GRADIENT:
            raise DecodeError("wrong_type", f"evidence holds a {head.type.name}, not a gradient")
        _parent_field(head.fields)
    if first.sender_key != second.sender_key:
        raise DecodeError("bad_evidence", "the two gradients have different signers")
    if first.round != second.round:
        raise DecodeError("bad_evidence", "the two gradients are for different rounds")
    if (evidence.first.header, evidence.first.payload_hash) == (evidence.second.header, evidence.second.payload_hash):
        raise DecodeError("bad_evidence", "the two gradients are the same signed message")
    sender = peer_id_from_public_key(first.sender_key)
    if sender not in members:
        raise DecodeError("unknown_peer", f"{sender} is not a member of the swarm")
    return sender

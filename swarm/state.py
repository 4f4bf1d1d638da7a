"""The replicated state of DESIGN.md section 1 and its canonical, versioned serialization.

    state_r = (round r, model parameters, server-optimizer state, committed reputation table, hash of state_{r-1})
    state_hash_r = SHA-256(serialize(state_r))

Every honest node holds the same bytes after committing round r, so the hash is what commit certificates sign and
what a late joiner checks a snapshot against. The layout is a u32-prefixed header in :mod:`crypto.wire` followed by
the raw little-endian float32 parameters and momentum.
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

import numpy as np
import torch

from crypto import wire
from crypto.wire import DecodeError, Reader

STATE_VERSION = 1
MAX_HEADER = 16 << 20
_U32 = struct.Struct("<I")


@dataclass(frozen=True)
class PeerReputation:
    """A member's committed reputation: three moving averages and counters, all derived from committed entries."""

    quality: float = 1.0        # selected by the rule and close to the aggregate
    participation: float = 1.0  # included in committed rounds
    consensus: float = 1.0      # signed the commit certificates
    rounds_included: int = 0
    penalties: int = 0          # committed evidence of misbehaviour (e.g. equivocation)

    def to_plain(self) -> list:
        return [float(self.quality), float(self.participation), float(self.consensus), self.rounds_included,
                self.penalties]

    @classmethod
    def from_plain(cls, value) -> "PeerReputation":
        if (not isinstance(value, list) or len(value) != 5 or not all(isinstance(v, float) for v in value[:3])
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value[3:])):
            raise DecodeError("bad_state", "malformed reputation record")
        return cls(*value)


@dataclass(frozen=True)
class ReplicatedState:
    round: int
    params: torch.Tensor               # flat float32 on the CPU
    momentum: torch.Tensor             # flat float32 on the CPU, same size (zeros when momentum is off)
    reputation: tuple[tuple[str, PeerReputation], ...]  # sorted by peer id
    parent_hash: bytes                 # state_hash of round - 1 (round 0: hash of the genesis)
    _hash: bytes | None = field(default=None, compare=False, repr=False)

    def reputation_of(self, peer_id: str) -> PeerReputation:
        return dict(self.reputation)[peer_id]

    def serialize(self) -> bytes:
        header = wire.dumps({
            "version": STATE_VERSION, "round": self.round, "parent": self.parent_hash,
            "dim": int(self.params.numel()),
            "reputation": [[peer, rep.to_plain()] for peer, rep in self.reputation],
        })
        return b"".join([_U32.pack(len(header)), header, _le_bytes(self.params), _le_bytes(self.momentum)])

    @property
    def hash(self) -> bytes:
        if self._hash is None:
            object.__setattr__(self, "_hash", hashlib.sha256(self.serialize()).digest())
        return self._hash

    @classmethod
    def deserialize(cls, data: bytes, expected_dim: int, members: list[str]) -> "ReplicatedState":
        """Rebuild a state from a snapshot; a peer's bytes, so everything is checked (then compare the hash)."""
        reader = Reader(data)
        header = wire.loads(reader.blob(MAX_HEADER))
        if not isinstance(header, dict) or set(header) != {"version", "round", "parent", "dim", "reputation"}:
            raise DecodeError("bad_state", "unexpected snapshot header")
        if header["version"] != STATE_VERSION:
            raise DecodeError("bad_version", f"state version {header['version']}")
        if header["dim"] != expected_dim:
            raise DecodeError("wrong_shape", f"snapshot has {header['dim']} parameters, model has {expected_dim}")
        if not isinstance(header["round"], int) or header["round"] < 0 or not isinstance(header["parent"], bytes):
            raise DecodeError("bad_state", "bad round or parent hash")
        table = header["reputation"]
        if not isinstance(table, list) or [row[0] if isinstance(row, list) and row else None
                                           for row in table] != sorted(members):
            raise DecodeError("bad_state", "reputation table does not list exactly the members")
        reputation = tuple((row[0], PeerReputation.from_plain(row[1])) for row in table)
        params = _from_le(reader.take(4 * expected_dim), expected_dim)
        momentum = _from_le(reader.take(4 * expected_dim), expected_dim)
        reader.expect_end()
        return cls(header["round"], params, momentum, reputation, header["parent"])


def genesis_state(params: torch.Tensor, members: list[str], genesis_hash: bytes) -> ReplicatedState:
    params = params.detach().to("cpu", torch.float32).contiguous().clone()
    return ReplicatedState(0, params, torch.zeros_like(params),
                           tuple((peer, PeerReputation()) for peer in sorted(members)), genesis_hash)


def _le_bytes(tensor: torch.Tensor) -> bytes:
    return tensor.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4", copy=False).tobytes()


def _from_le(raw, dim: int) -> torch.Tensor:
    array = np.frombuffer(bytes(raw), dtype="<f4", count=dim).astype(np.float32)
    if not np.isfinite(array).all():
        raise DecodeError("non_finite", "snapshot holds NaN or infinite parameters")
    return torch.from_numpy(array)

"""The replicated state of DESIGN.md section 1 and its canonical, versioned serialization.

    state_r = (round r, model parameters, server-optimizer state, committed reputation table, hash of state_{r-1})
    state_hash_r = SHA-256(serialize(state_r))

Every honest node holds the same bytes after committing round r, so the hash is what commit certificates sign and
what a late joiner checks a snapshot against.

Layout: the raw little-endian float32 parameters and momentum (the body), then the header in :mod:`crypto.wire`
(version, round, parent, dim, reputation), then the header's length as a u32. The body comes first on purpose:
it depends only on the aggregate, which a node computes before any proposal names it, so the SHA-256 of those
megabytes can be absorbed ahead of time (:class:`StateBody`) and a proposal's hash then costs only its small header.

With late updates kept (genesis ``staleness.bound`` > 0, swarm/ledger/staleness.py) the header also holds
``stale``: the hashes of the last ``bound`` states before this one and, per member, the newest round of a gradient
of it that an entry counted (:class:`Recent`). A late update is checked against these alone, so a node that took
this state from a snapshot checks the next entry as well as one that applied every round. Without it the key is
absent and the bytes are those of earlier versions (same hashes).
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

import numpy as np
import torch

from crypto import wire
from crypto.wire import DecodeError

STATE_VERSION = 2
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
class Recent:
    """What the replicated state remembers for checking late updates (swarm/ledger/staleness.py)."""

    ancestors: tuple[bytes, ...]          # hashes of states round - len .. round - 1, oldest first
    counted: tuple[tuple[str, int], ...]  # member -> newest round of a gradient of it an entry counted, by peer id

    def to_plain(self) -> dict:
        return {"ancestors": list(self.ancestors), "counted": [[peer, r] for peer, r in self.counted]}

    @classmethod
    def from_plain(cls, value, members: list[str]) -> "Recent":
        if not isinstance(value, dict) or set(value) != {"ancestors", "counted"}:
            raise DecodeError("bad_state", "malformed late-update record")
        ancestors, counted = value["ancestors"], value["counted"]
        if (not isinstance(ancestors, list) or len(ancestors) > MAX_ANCESTORS
                or not all(isinstance(h, bytes) and len(h) == 32 for h in ancestors)):
            raise DecodeError("bad_state", "malformed ancestor hashes")
        if (not isinstance(counted, list) or [row[0] if isinstance(row, list) and len(row) == 2 else None
                                              for row in counted] != sorted(members)
                or not all(type(row[1]) is int and row[1] >= 0 for row in counted)):
            raise DecodeError("bad_state", "late-update record does not list exactly the members")
        return cls(tuple(ancestors), tuple((peer, r) for peer, r in counted))


MAX_ANCESTORS = 64  # more than any staleness bound the genesis allows


@dataclass(frozen=True)
class Roster:
    """The configuration in force after a committed membership change: since which round, and every member's
    (peer id, name), sorted by peer id. A change request names ``since`` (its epoch), so none outlives a change."""

    since: int
    names: tuple[tuple[str, str], ...]

    def to_plain(self) -> list:
        return [self.since, [[peer, name] for peer, name in self.names]]

    @classmethod
    def from_plain(cls, value, members: list[str]) -> "Roster":
        if (not isinstance(value, list) or len(value) != 2 or type(value[0]) is not int or value[0] < 2
                or not isinstance(value[1], list)
                or not all(isinstance(row, list) and len(row) == 2 for row in value[1])
                or [row[0] for row in value[1]] != sorted(members)
                or not all(isinstance(row[1], str) and 0 < len(row[1]) <= 64 for row in value[1])):
            raise DecodeError("bad_state", "the roster does not name exactly the members")
        return cls(value[0], tuple((peer, name) for peer, name in value[1]))


class StateBody:
    """The parameter and momentum bytes of a state, with a SHA-256 that has already absorbed them. It remembers
    which tensors it was made from, so a state copied with other tensors (dataclasses.replace) never reuses it."""

    __slots__ = ("params", "momentum", "data", "hasher")

    def __init__(self, params: torch.Tensor, momentum: torch.Tensor):
        self.params, self.momentum = params, momentum
        dim = params.numel()
        data = bytearray(8 * dim)  # filled in place: one copy of each tensor, none for the hash
        target = np.frombuffer(data, dtype="<f4")
        target[:dim] = params.detach().to("cpu", torch.float32).reshape(-1).numpy()
        target[dim:] = momentum.detach().to("cpu", torch.float32).reshape(-1).numpy()
        self.data = data
        self.hasher = hashlib.sha256(data)

    def made_from(self, params: torch.Tensor, momentum: torch.Tensor) -> bool:
        return self.params is params and self.momentum is momentum


@dataclass(frozen=True)
class ReplicatedState:
    round: int
    params: torch.Tensor               # flat float32 on the CPU
    momentum: torch.Tensor             # flat float32 on the CPU, same size (zeros when momentum is off)
    reputation: tuple[tuple[str, PeerReputation], ...]  # sorted by peer id
    parent_hash: bytes                 # state_hash of round - 1 (round 0: hash of the genesis)
    recent: Recent | None = None       # late updates kept (genesis staleness.bound > 0); None: off
    # The members in force once the membership has changed (swarm/ledger/membership.py); None while it is the
    # genesis one, whose names the genesis gives (and the bytes, and hashes, stay those of before).
    roster: "Roster | None" = None
    _hash: bytes | None = field(default=None, compare=False, repr=False)
    _body: StateBody | None = field(default=None, compare=False, repr=False)  # precomputed by aggregation

    def reputation_of(self, peer_id: str) -> PeerReputation:
        return dict(self.reputation)[peer_id]

    @property
    def members(self) -> tuple[str, ...]:
        """The members in force for the next round: the reputation table lists exactly them."""
        return tuple(peer for peer, _ in self.reputation)

    def _trailer(self) -> bytes:
        fields = {
            "version": STATE_VERSION, "round": self.round, "parent": self.parent_hash,
            "dim": int(self.params.numel()),
            "reputation": [[peer, rep.to_plain()] for peer, rep in self.reputation],
        }
        if self.recent is not None:
            fields["stale"] = self.recent.to_plain()
        if self.roster is not None:
            fields["roster"] = self.roster.to_plain()
        header = wire.dumps(fields)
        return header + _U32.pack(len(header))

    def body(self) -> StateBody:
        if self._body is None or not self._body.made_from(self.params, self.momentum):
            object.__setattr__(self, "_body", StateBody(self.params, self.momentum))
        return self._body

    def serialize(self) -> bytes:
        return b"".join((self.body().data, self._trailer()))

    @property
    def hash(self) -> bytes:
        if self._hash is None:
            hasher = self.body().hasher.copy()
            hasher.update(self._trailer())
            object.__setattr__(self, "_hash", hasher.digest())
        return self._hash

    @classmethod
    def deserialize(cls, data: bytes, expected_dim: int, members: list[str] | None = None) -> "ReplicatedState":
        """Rebuild a state from a snapshot; a peer's bytes, so everything is checked (then compare the hash).
        ``members``: the members its table must list; None takes the snapshot's own (distinct, sorted), which its
        certified hash vouches for once the membership may have changed since the genesis."""
        view = memoryview(data)
        if len(view) < _U32.size:
            raise DecodeError("truncated", "snapshot shorter than its length field")
        (header_len,) = _U32.unpack(view[-_U32.size:])
        body_len = len(view) - _U32.size - header_len
        if header_len > MAX_HEADER or body_len < 0:
            raise DecodeError("bad_state", f"snapshot header of {header_len} bytes does not fit")
        header = wire.loads(bytes(view[body_len:len(view) - _U32.size]))
        if not isinstance(header, dict) or set(header) - {"stale", "roster"} != {"version", "round", "parent", "dim",
                                                                                  "reputation"}:
            raise DecodeError("bad_state", "unexpected snapshot header")
        if header["version"] != STATE_VERSION:
            raise DecodeError("bad_version", f"state version {header['version']}")
        if header["dim"] != expected_dim:
            raise DecodeError("wrong_shape", f"snapshot has {header['dim']} parameters, model has {expected_dim}")
        if not isinstance(header["round"], int) or header["round"] < 0 or not isinstance(header["parent"], bytes):
            raise DecodeError("bad_state", "bad round or parent hash")
        table = header["reputation"]
        listed = [row[0] if isinstance(row, list) and row else None for row in table] if isinstance(table, list) \
            else None
        if members is None and listed and all(isinstance(peer, str) for peer in listed) \
                and listed == sorted(set(listed)):
            members = listed
        if listed is None or members is None or listed != sorted(members):
            raise DecodeError("bad_state", "reputation table does not list exactly the members")
        roster = Roster.from_plain(header["roster"], members) if "roster" in header else None
        reputation = tuple((row[0], PeerReputation.from_plain(row[1])) for row in table)
        if body_len != 8 * expected_dim:
            raise DecodeError("bad_state", f"snapshot body of {body_len} bytes, expected {8 * expected_dim}")
        params = _from_le(view[:4 * expected_dim], expected_dim)
        momentum = _from_le(view[4 * expected_dim:body_len], expected_dim)
        recent = Recent.from_plain(header["stale"], members) if "stale" in header else None
        return cls(header["round"], params, momentum, reputation, header["parent"], recent, roster)


def genesis_state(params: torch.Tensor, members: list[str], genesis_hash: bytes) -> ReplicatedState:
    params = params.detach().to("cpu", torch.float32).contiguous().clone()
    return ReplicatedState(0, params, torch.zeros_like(params),
                           tuple((peer, PeerReputation()) for peer in sorted(members)), genesis_hash)


def _from_le(raw, dim: int) -> torch.Tensor:
    array = np.frombuffer(bytes(raw), dtype="<f4", count=dim).astype(np.float32)
    if not np.isfinite(array).all():
        raise DecodeError("non_finite", "snapshot holds NaN or infinite parameters")
    return torch.from_numpy(array)

"""Replaying committed rows: the one loop that turns a state and the stored rows after it into later states.

A node restarting and the offline auditor (`swarm verify`) both replay a store, and they must agree on every state
hash, so both go through :class:`Replayer`: each row's envelopes are read by digest, checked as a receiver checks
them, and applied with the extras (certificate signers, convictions) that the entry's params prove against the
previous row's digest. Replay stops at the first row it cannot reproduce and says why; what to do then (fetch from
peers, resume from a snapshot, report a divergence) is the caller's business.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, Iterable, Iterator

from crypto.wire import DecodeError
from swarm.config import Genesis
from swarm.ledger.apply import InvalidEntry, RoundRules, apply
from swarm.ledger.entry_rules import entry_extras, entry_membership, open_gradient, rules_of, stale_named
from swarm.ledger.staleness import parent_of_round
from swarm.ledger.state import ReplicatedState
from swarm.ledger.store import ChainRow


class StopReason(Enum):
    MISSING_PAYLOAD = "missing_payload"        # an envelope the entry names is not stored
    DAMAGED_PAYLOAD = "damaged_payload"        # the stored bytes do not hash to their digest
    INVALID_PAYLOAD = "invalid_payload"        # intact bytes that fail a receiver's checks
    INVALID_ENTRY = "invalid_entry"            # the entry cannot be applied (InvalidEntry)
    STATE_HASH_DIFFERS = "state_hash_differs"  # applied, but not to the certified state hash

    @property
    def payload_unusable(self) -> bool:
        """The store lacks a good copy of a payload: peers' copies may still reproduce the round."""
        return self in (StopReason.MISSING_PAYLOAD, StopReason.DAMAGED_PAYLOAD, StopReason.INVALID_PAYLOAD)


@dataclass(frozen=True)
class Stop:
    round: int
    reason: StopReason
    detail: str

    def __str__(self) -> str:
        return f"round {self.round}: {self.detail}"


@dataclass(frozen=True)
class Step:
    """One row replayed: the state after it, or why it could not be (then the replay ends)."""
    row: ChainRow
    state: ReplicatedState | None
    stop: Stop | None = None


class ReplayStopped(Exception):
    def __init__(self, stop: Stop):
        super().__init__(str(stop))
        self.stop = stop


@dataclass(frozen=True)
class Replayer:
    """What replaying needs besides the rows: the genesis (members, rules), the model's size, the payload limit,
    and ``envelope``, which gives the stored envelope bytes with a digest or None."""
    genesis: Genesis
    dim: int
    max_size: int
    envelope: Callable[[bytes], bytes | None]
    rules: RoundRules = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "rules", rules_of(self.genesis))

    def replay(self, start: ReplicatedState, rows: Iterable[ChainRow],
               previous_digest: bytes | None) -> Iterator[Step]:
        """A Step per row of ``rows`` (those from ``start.round + 1`` on, in order), ending after the first that
        stops. ``previous_digest``: the stored digest of round ``start.round`` (None at the genesis)."""
        state = start
        for row in rows:
            try:
                state = self.apply_row(state, row, previous_digest)
            except ReplayStopped as stopped:
                yield Step(row, None, stopped.stop)
                return
            yield Step(row, state)
            previous_digest = row.digest

    def apply_row(self, state: ReplicatedState, row: ChainRow, previous_digest: bytes | None) -> ReplicatedState:
        """The state after ``row``; ReplayStopped when the store cannot reproduce its certified state hash."""
        r = row.round
        if r != state.round + 1:
            raise ValueError(f"round {r} does not follow the replayed state's round {state.round}")
        members = state.members  # the configuration in force at round r
        gradients = [self._stored_gradient(digest, r, state.hash, members) for digest in row.entry["gradients"]]
        try:
            params = dict(row.entry["params"])
            extras = entry_extras(self.genesis, params, r, previous_digest, members)
            stale = [self._stale_gradient(digest, r - s, state) for digest, s in stale_named(self.genesis, params)]
            change = entry_membership(self.genesis, state, params, row.entry.get("members"))
            applied = apply(state, gradients, self.rules, *extras, stale=stale, members=change)
        except InvalidEntry as exc:
            raise ReplayStopped(Stop(r, StopReason.INVALID_ENTRY, f"the entry cannot be applied: {exc}")) from None
        if applied.state.hash != row.state_hash:
            raise ReplayStopped(Stop(r, StopReason.STATE_HASH_DIFFERS,
                                     "replaying the entry gives another state hash than the certified one"))
        return applied.state

    def _stale_gradient(self, digest: bytes, round_: int, state: ReplicatedState):
        """A late gradient the entry names (swarm/ledger/staleness.py), checked against the state its round was
        built on as the replicated state remembers it; a state it cannot vouch for makes the entry invalid."""
        parent = parent_of_round(state, round_)
        if parent is None:
            raise InvalidEntry(f"a late gradient for round {round_}, a state this chain does not remember")
        return self._stored_gradient(digest, round_, parent, state.members)

    def _stored_gradient(self, digest: bytes, round_: int, parent: bytes, members=None):
        short = digest.hex()[:12]
        raw = self.envelope(digest)
        if raw is None:
            raise ReplayStopped(Stop(round_, StopReason.MISSING_PAYLOAD, f"gradient {short} is not in the store"))
        if hashlib.sha256(raw).digest() != digest:
            raise ReplayStopped(Stop(round_, StopReason.DAMAGED_PAYLOAD,
                                     f"stored gradient {short} does not match its digest"))
        try:
            return open_gradient(raw, self.genesis, self.dim, self.max_size, round_, parent, members=members)
        except DecodeError as exc:
            raise ReplayStopped(Stop(round_, StopReason.INVALID_PAYLOAD,
                                     f"gradient {short} fails verification: {exc}")) from None

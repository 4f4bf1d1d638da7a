"""What the node feeds the core. Each event is a plain value; time comes in as ``now`` alongside."""
from __future__ import annotations

from dataclasses import dataclass

from .messages import CommittedEntry, Entry, Message


@dataclass(frozen=True)
class Received:
    """A consensus message from the network (already decoded with ``from_wire``; the core checks its signature)."""
    message: Message


@dataclass(frozen=True)
class Tick:
    """Time passed; the core fires whatever timers are due at ``now``."""


@dataclass(frozen=True)
class PayloadsReady:
    """This node holds enough verified gradients for ``round`` to build (leader) or expect (follower) a proposal."""
    round: int


@dataclass(frozen=True)
class ProposalBuilt:
    """The node's answer to ``BuildProposal``: the entry it built (state hash computed by applying)."""
    entry: Entry


@dataclass(frozen=True)
class ValidationResult:
    """The node's answer to ``ValidateProposal``: does applying the entry to our state give its state hash?"""
    term: int
    round: int
    digest: bytes
    ok: bool


@dataclass(frozen=True)
class EntriesLoaded:
    """The node's answer to ``LoadEntries``: the stored committed entries from ``from_round`` on, in order."""
    peer: str
    from_round: int
    entries: tuple[CommittedEntry, ...]


Event = Received | Tick | PayloadsReady | ProposalBuilt | ValidationResult | EntriesLoaded

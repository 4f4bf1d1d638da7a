"""What the core asks the node to do. Execute a step's actions IN ORDER: a Persist* action must be durable (fsync)
before any later Send/Broadcast of the same batch leaves, because those messages depend on it."""
from __future__ import annotations

from dataclasses import dataclass

from .messages import CommittedEntry, Entry, Evidence, Message
from .state import HardState


@dataclass(frozen=True)
class Send:
    to: str
    message: Message


@dataclass(frozen=True)
class Broadcast:
    """Send to every other member."""
    message: Message


@dataclass(frozen=True)
class PersistHardState:
    """Durably replace term / vote / last prepare / lock with ``state`` (never older than what is stored)."""
    state: HardState


@dataclass(frozen=True)
class PersistEntry:
    """Append a committed entry with its commit certificate (round = stored chain length + 1); durable (fsync)
    before any later Send/Broadcast leaves (the package docstring says why the fsync may wait until then)."""
    committed: CommittedEntry


@dataclass(frozen=True)
class Apply:
    """Apply the committed entry to the replicated state (after PersistEntry). The resulting state hash must equal
    ``committed.entry.state_hash``; if not, this node diverged and must stop and resync from a snapshot."""
    committed: CommittedEntry


@dataclass(frozen=True)
class BuildProposal:
    """Leader: build the entry for ``round`` on top of ``parent_state_hash`` and answer with ``ProposalBuilt``."""
    round: int
    parent_state_hash: bytes


@dataclass(frozen=True)
class ValidateProposal:
    """Check the entry (fetch payloads by digest, verify them, apply, compare state hash) and answer with
    ``ValidationResult``. Until then the core does not Prepare it."""
    term: int
    round: int
    entry: Entry


@dataclass(frozen=True)
class LoadEntries:
    """Read committed rounds ``from_round ..`` (at most ``limit``, with certificates) from the store and answer with
    ``EntriesLoaded``: a peer asked to catch up from rounds older than the window the core keeps in memory."""
    peer: str
    from_round: int
    limit: int


@dataclass(frozen=True)
class ReportEvidence:
    """Signed proof of misbehaviour: store it, feed it to reputation, include it in a later entry."""
    evidence: Evidence


@dataclass(frozen=True)
class RejectMessage:
    """The message being handled is one no honest member sends (a signature or certificate that does not verify):
    the node scores the peer that delivered it (``reason`` is from a fixed set, never from the message)."""
    reason: str


@dataclass(frozen=True)
class WakeAt:
    """Feed a ``Tick`` at or after ``time`` (the latest WakeAt replaces earlier ones)."""
    time: float


Action = Send | Broadcast | PersistHardState | PersistEntry | Apply | BuildProposal | ValidateProposal | \
    LoadEntries | ReportEvidence | RejectMessage | WakeAt

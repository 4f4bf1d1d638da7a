"""What a node persists, and what it restarts from. Nothing here ever goes backwards."""
from __future__ import annotations

from dataclasses import dataclass, field

from .messages import CommittedEntry, PreparedCertificate


@dataclass(frozen=True)
class HardState:
    """term: highest term entered; voted_term/voted_for: the one vote cast (per term, the latest);
    prepared_*: the last Prepare sent (so a restart never prepares a second digest for one term and round);
    lock: the highest prepared certificate, by (round, term)."""
    term: int = 0
    voted_term: int = 0
    voted_for: str | None = None
    prepared_term: int = 0
    prepared_round: int = 0
    prepared_digest: bytes = b""
    lock: PreparedCertificate | None = None

    def lock_rank(self) -> tuple[int, int]:
        return (0, 0) if self.lock is None else self.lock.rank()

    def not_older_than(self, old: "HardState") -> bool:
        """The monotonicity rule every write must pass."""
        return (self.term >= old.term and self.voted_term >= old.voted_term
                and (self.prepared_term, self.prepared_round) >= (old.prepared_term, old.prepared_round)
                and self.lock_rank() >= old.lock_rank())


@dataclass
class PersistedState:
    """Everything the constructor needs after a crash: the hard state and the tail of the committed chain.

    ``chain`` holds rounds ``base_round + 1 .. k``; the node may pass only its newest entries (the core keeps a
    bounded window in memory and asks the node's store for older ones). With ``base_round > 0`` the tail must not
    be empty: its last entry gives the head state hash."""
    hard: HardState = field(default_factory=HardState)
    chain: list[CommittedEntry] = field(default_factory=list)
    base_round: int = 0
    # Membership changes committed before the tail (from round, members); those inside the tail are read from it.
    configs: tuple[tuple[int, tuple[str, ...]], ...] = ()

    def __post_init__(self) -> None:
        if self.base_round < 0 or (self.base_round > 0 and not self.chain):
            raise ValueError("a chain tail after round 0 needs at least its newest entry")
        for offset, committed in enumerate(self.chain):
            if committed.entry.round != self.base_round + 1 + offset:
                raise ValueError(f"chain tail is not contiguous from round {self.base_round + 1}")

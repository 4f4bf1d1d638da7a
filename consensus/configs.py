"""Which members count at which round: the configuration history of a swarm that changes its membership.

The genesis configuration is in force from round 1. An entry of round r that names ``members`` (a committed
reconfiguration) puts that set in force from round r + 1. Every certificate about round r (Prepares, Commits, the
commit certificate a catch-up carries, the term certificate of a leader proposing r) is counted against the
configuration in force at r and no other: since the chain below r is agreed, so is that configuration, and the
usual quorum intersection holds inside it. A term certificate is tied to one configuration (``NewTerm.epoch``, the
round it took effect), and its leader proposes only rounds of that configuration; a committed change therefore ends
the term, and the next leader is elected by the new members.
"""
from __future__ import annotations

from bisect import bisect_right
from typing import Iterable

from .messages import CommittedEntry
from .quorum import Membership


class ConfigHistory:
    """Configurations by the round they took effect from (1 for the genesis). Grows by one per committed change;
    never forgets one, since a lock or a certificate of any past round may still have to be checked."""

    def __init__(self, genesis: Iterable[str], quorum_override: int | None = None,
                 changes: Iterable[tuple[int, Iterable[str]]] = ()):
        self._override = quorum_override
        self._starts: list[int] = [1]
        self._configs: list[Membership] = [Membership(genesis, quorum_override)]
        for start, members in sorted(changes, key=lambda change: change[0]):
            self.add(start, members)

    def add(self, start: int, members: Iterable[str]) -> Membership:
        """Put ``members`` in force from round ``start`` (later than every earlier change; a change already held is
        a no-op, so replaying a chain over a history that holds it is harmless)."""
        config = Membership(members, self._override)
        if start in self._starts:
            known = self._configs[self._starts.index(start)]
            if known.members != config.members:
                raise ValueError(f"two different configurations from round {start}")
            return known
        if start <= self._starts[-1]:
            raise ValueError(f"a configuration change from round {start} comes after one from {self._starts[-1]}")
        self._starts.append(start)
        self._configs.append(config)
        return config

    def learn(self, committed: CommittedEntry) -> Membership | None:
        """Record the change ``committed`` makes, if any; returns the new configuration."""
        members = committed.entry.members
        if members is None:
            return None
        return self.add(committed.entry.round + 1, members)

    def at(self, round_: int) -> Membership:
        """The configuration in force at ``round_`` (as far as this history knows: the newest one for any round past
        the last change it holds)."""
        return self._configs[max(0, bisect_right(self._starts, round_) - 1)]

    def epoch_of(self, round_: int) -> int:
        """The round from which the configuration in force at ``round_`` took effect."""
        return self._starts[max(0, bisect_right(self._starts, round_) - 1)]

    def changes(self) -> list[tuple[int, tuple[str, ...]]]:
        """Every change after the genesis, (from round, members): what a snapshot or a restart carries."""
        return [(start, config.members) for start, config in zip(self._starts[1:], self._configs[1:])]

    def ever_member(self, node_id: str) -> bool:
        return any(node_id in config for config in self._configs)

    def __len__(self) -> int:
        return len(self._starts)

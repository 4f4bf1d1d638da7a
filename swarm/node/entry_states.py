"""Re-deriving the state an entry claims (DESIGN.md section 2): every replica applies a proposed or committed entry
itself, from the gradients it names, and compares state hashes; nothing is taken on the leader's word.

The tensor work of one (parent state, gradient set) runs once, in the node's single state thread, whichever asks
first: the leader building its proposal, a speculation started as soon as a quorum of gradients is in, a
follower's validation, or the final apply. The finished result of an entry is kept by its digest, and the
gradients fetched for it by theirs, until the node adopts the round (``round_done``).
"""
from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Awaitable, Callable

from consensus.messages import Entry
from swarm.config import Genesis
from swarm.ledger.apply import Aggregated, Applied, InvalidEntry, aggregate_round, finish
from consensus.quorum import Membership
from swarm.ledger.entry_rules import entry_extras, entry_membership, stale_named
from swarm.ledger.staleness import parent_of_round
from swarm.ledger.state import ReplicatedState
from swarm.ledger.store import Store
from swarm.round.gradient import Gradient, digest_of
from swarm.round.pool import GradientPool


def finish_and_hash(state: ReplicatedState, aggregated: Aggregated, signers, convicted, members=None) -> Applied:
    """The entry-dependent rest of apply: cheap, because aggregation already hashed the new parameter bytes."""
    applied = finish(state, aggregated, signers, convicted, members)
    applied.state.hash  # only the small header is left to hash
    return applied


class EntryStates:
    def __init__(self, genesis: Genesis, rules, store: Store, pool: GradientPool, state_pool: Executor,
                 verify: Callable[[bytes, int, bytes], Gradient], fetch: Callable[[bytes], Awaitable[bytes | None]]):
        self.genesis, self.rules, self.store, self.pool = genesis, rules, store, pool
        self._state_pool = state_pool
        self._verify, self._fetch = verify, fetch  # a received envelope's checks; a payload from any peer
        self.applied: dict[bytes, Applied] = {}  # entry digest -> its result, ours or checked
        self.fetched: dict[bytes, Gradient] = {}  # payloads fetched by digest for the pending round
        self._aggregates: dict[tuple[bytes, tuple[bytes, ...]], asyncio.Future] = {}

    def round_done(self) -> None:
        """The pending round was adopted (or replaced by a snapshot): nothing cached applies to the next one."""
        self.applied.clear()
        self._aggregates.clear()
        self.fetched.clear()

    def extras(self, params: dict, round_: int, members) -> tuple[frozenset[str] | None, frozenset[str]]:
        """(certificate signers, convicted members) an entry's params prove, counted in ``members`` (those in force
        at ``round_``); raises InvalidEntry when forged."""
        previous = self.store.row(round_ - 1)
        return entry_extras(self.genesis, params, round_, previous.digest if previous else None, members)

    def aggregate(self, state: ReplicatedState, gradients: list[Gradient],
                  stale: list[Gradient] = ()) -> asyncio.Future:
        """The round's aggregation for this exact set of gradients (and late ones), computed once in the state
        thread."""
        key = (state.hash, tuple(sorted(g.digest for g in gradients)), tuple(sorted(g.digest for g in stale)))
        future = self._aggregates.get(key)
        if future is None:
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(self._state_pool, aggregate_round, state, gradients, self.rules,
                                          list(stale))
            self._aggregates[key] = future
        return asyncio.shield(future)

    async def apply_gradients(self, state: ReplicatedState, gradients: list[Gradient], params: dict,
                              stale: list[Gradient] = (), named: tuple[str, ...] | None = None) -> Applied:
        """``named``: the member ids the entry puts in force (a membership change), checked against its request."""
        signers, convicted = self.extras(params, state.round + 1, state.members)
        change = entry_membership(self.genesis, state, params, named)
        aggregated = await self.aggregate(state, gradients, stale)
        return finish_and_hash(state, aggregated, signers, convicted, change)  # no thread hop: well under 1 ms

    async def derive(self, state: ReplicatedState, entry: Entry) -> Applied:
        """The result of applying ``entry`` to ``state`` (the node's current one); InvalidEntry when it cannot
        follow from it: wrong parent or rule, digests not sorted or too few, a payload nobody can give."""
        cached = self.applied.get(entry.digest())
        if cached is not None:
            return cached
        if entry.round != state.round + 1 or entry.parent_state_hash != state.hash:
            raise InvalidEntry(f"entry for round {entry.round} does not extend our state (round {state.round})")
        if entry.rule != self.rules.rule:
            raise InvalidEntry(f"entry uses rule {entry.rule}, the genesis says {self.rules.rule}")
        digests = list(entry.gradient_digests)
        if digests != sorted(set(digests)) or len(digests) < Membership(state.members).quorum:
            raise InvalidEntry("gradient digests must be sorted, distinct and at least a quorum")
        gradients = [await self._gradient_by_digest(d, entry.round, entry.parent_state_hash) for d in digests]
        params = dict(entry.params)
        stale = []
        for digest, staleness in stale_named(self.genesis, params):  # late updates: staleness.py
            parent = parent_of_round(state, entry.round - staleness)
            if parent is None:
                raise InvalidEntry(f"late gradient {digest.hex()[:12]} is for round {entry.round - staleness}, "
                                   f"a state this node never had")
            stale.append(await self._gradient_by_digest(digest, entry.round - staleness, parent))
        return await self.apply_gradients(state, gradients, params, stale, entry.members)

    async def _gradient_by_digest(self, digest: bytes, round_: int, parent: bytes) -> Gradient:
        known = self.pool.by_digest(digest)
        if known is not None and known.round == round_ and known.parent == parent:
            return known
        stored = self.store.gradient_envelope(digest)
        raw = stored if stored is not None and digest_of(stored) == digest else await self._fetch(digest)
        if raw is None:
            raise InvalidEntry(f"payload {digest.hex()[:12]} is not available from any peer")
        gradient = self._verify(raw, round_, parent)
        self.fetched[digest] = gradient  # kept so that adopting the entry stores it
        return gradient

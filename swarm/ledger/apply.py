"""`apply(state_{r-1}, entry, gradients) -> state_r`: the deterministic transition of the replicated state.

Runs on the CPU in a fixed order (senders sorted by peer id), accumulating in float64, so the same inputs give
the same bytes on every machine and thread count. Local training never touches it. Quarantined members' gradients
are scored but not aggregated. When the configured rule's precondition does not hold for the number of usable
gradients (Krum needs n >= 2f+3, for instance), the coordinate-wise median is used instead: a deterministic choice
every node makes the same way, recorded in the result. Late updates (genesis ``staleness.bound`` > 0) enter
scaled by their weight after the checks of swarm/ledger/staleness.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from swarm.aggregation import aggregate
from swarm.aggregation.median import coordinate_median
from swarm.ledger import reputation, staleness
from swarm.ledger.server_optimizer import apply_update
from swarm.ledger.state import PeerReputation, Recent, ReplicatedState, Roster, StateBody
from swarm.round.gradient import Gradient

FALLBACK_RULE = "median"


class InvalidEntry(ValueError):
    """An entry cannot be applied to this state (wrong round or parent, duplicate senders, ...)."""


@dataclass(frozen=True)
class RoundRules:
    """The rules of a round that the genesis fixes for every node (rule, f, reputation floor, server optimizer)."""

    f: int
    rule: str
    options: dict[str, Any] = field(default_factory=dict)
    nnm: bool = False
    reputation_weighted: bool = False
    reputation_floor: float = 0.6
    server_lr: float = 1.0
    momentum: float = 0.0
    nesterov: bool = False
    staleness_bound: int = 0      # late updates kept up to this many rounds late (0: off)
    staleness_decay: float = 0.5  # a late update's weight is decay ** staleness
    # f follows the members in force ((n-1)//3 of the state's table) rather than ``f``: a swarm whose membership
    # changes (swarm/ledger/membership.py) tolerates what its current size allows. Equal to ``f`` at the genesis.
    follow_members: bool = False


@dataclass(frozen=True)
class Applied:
    state: ReplicatedState
    rule_used: str
    aggregated: tuple[str, ...]   # senders whose gradients entered the aggregate
    quarantined: tuple[str, ...]  # senders left out for low reputation
    stale: tuple[str, ...] = ()   # senders whose late gradient (an earlier round's) was counted


@dataclass(frozen=True)
class Aggregated:
    """The costly, entry-independent part of a round: a function of the parent state and the gradients only, so a
    node can compute it as soon as it holds the gradients, before any proposal names them."""
    parent_hash: bytes
    params: torch.Tensor
    momentum: torch.Tensor
    rule_used: str
    included: tuple[str, ...]
    aggregated: tuple[str, ...]
    quarantined: tuple[str, ...]
    geometry: dict[str, tuple[float, float, float]]  # sender -> (distance, cosine) to the round's reference, norm
    body: StateBody | None = None              # the new state's parameter bytes, already hashed
    stale: tuple[str, ...] = ()                # senders of the late gradients among ``included``
    recent: Recent | None = None               # the new state's late-update record (staleness on)


def apply(state: ReplicatedState, gradients: list[Gradient], rules: RoundRules,
          certificate_signers: frozenset[str] | None = None, convicted: frozenset[str] = frozenset(),
          stale: list[Gradient] = (), members: tuple[tuple[str, str], ...] | None = None) -> Applied:
    """The whole transition: ``finish(state, aggregate_round(state, gradients, rules, stale), ...)``."""
    return finish(state, aggregate_round(state, gradients, rules, stale), certificate_signers, convicted, members)


def aggregate_round(state: ReplicatedState, gradients: list[Gradient], rules: RoundRules,
                    stale: list[Gradient] = ()) -> Aggregated:
    """``gradients``: the round's own; ``stale``: late gradients of earlier rounds the entry names."""
    round_ = state.round + 1
    fresh = sorted(gradients, key=lambda g: g.sender)
    _check(state, fresh, round_)
    late = sorted(stale, key=lambda g: g.sender)
    try:
        staleness.check(state, rules.staleness_bound, fresh, late)
    except staleness.StaleRefused as exc:
        raise InvalidEntry(str(exc)) from None
    for g in late:
        _check_size(state, g)
    ordered = sorted(fresh + late, key=lambda g: g.sender) if late else fresh
    late_senders = frozenset(g.sender for g in late)
    table = dict(state.reputation)
    quarantined = [g for g in ordered if reputation.is_quarantined(table[g.sender], rules.reputation_floor)]
    active = [g for g in ordered if g not in quarantined] or ordered  # all quarantined: nothing else to go on
    if active is ordered:
        quarantined = []

    every = torch.empty((len(ordered), state.params.numel()), dtype=torch.float32)
    for i, g in enumerate(ordered):  # decoded straight into its row: no second dense copy of every gradient
        every[i] = g.vector
    rows = every  # what the rule sees: late rows scaled by their weight (staleness.py); scored unscaled
    if late:
        rows = every.clone()
        for i, g in enumerate(ordered):
            if g.sender in late_senders:
                rows[i] *= staleness.weight(round_ - g.round, rules.staleness_decay)
    # Rows of the quarantined left out; with none to leave out, the stack itself (indexing would copy all n x d).
    stack = rows if not quarantined else rows[[i for i, g in enumerate(ordered) if g not in quarantined]]
    weights = torch.tensor([reputation.score(table[g.sender]) for g in active], dtype=torch.float64)
    f = (len(table) - 1) // 3 if rules.follow_members else rules.f
    rule, result = _aggregate(rules, stack, weights, f)
    scored_against = _median_already_computed(rule, result, rules, stack is every)
    if scored_against is None:
        scored_against = reference(every)
    params, momentum = apply_update(state.params, result.vector, rules.server_lr, rules.momentum,
                                    state.momentum, rules.nesterov)
    # Scored unscaled, late ones included in the reference like any other: as if they had come on time.
    return Aggregated(state.hash, params, momentum, rule, tuple(g.sender for g in ordered),
                      tuple(active[i].sender for i in result.selected), tuple(g.sender for g in quarantined),
                      dict(zip((g.sender for g in ordered), _distances_and_cosines(every, scored_against))),
                      StateBody(params, momentum), tuple(g.sender for g in late),
                      staleness.next_recent(state, rules.staleness_bound, fresh, late))


def finish(state: ReplicatedState, aggregated: Aggregated, certificate_signers: frozenset[str] | None = None,
           convicted: frozenset[str] = frozenset(), members: tuple[tuple[str, str], ...] | None = None) -> Applied:
    """The cheap, entry-dependent part: reputation from the round's geometry, the certificate signers and the
    evidence the entry carries, then the new state. ``members``: the (peer id, name) pairs an entry that changes
    the membership puts in force from the next round (an added member starts at a neutral score, a removed one's
    row leaves the table)."""
    if aggregated.parent_hash != state.hash:
        raise InvalidEntry("aggregate computed on another state")
    observation = reputation.RoundObservation(
        included=frozenset(aggregated.included),
        aggregated=frozenset(aggregated.aggregated),
        distances={sender: geo[0] for sender, geo in aggregated.geometry.items()},
        cosines={sender: geo[1] for sender, geo in aggregated.geometry.items()},
        norms={sender: geo[2] for sender, geo in aggregated.geometry.items()},
        quarantined=frozenset(aggregated.quarantined),
        certificate_signers=certificate_signers,
        convicted=convicted,
    )
    table, recent, roster = reputation.update(state.reputation, observation), aggregated.recent, state.roster
    if members is not None:
        table, recent, roster = _change_members(table, recent, members, state.round + 2)
    new_state = ReplicatedState(state.round + 1, aggregated.params, aggregated.momentum, table, state.hash,
                                recent, roster, _body=aggregated.body)
    return Applied(new_state, aggregated.rule_used, aggregated.aggregated, aggregated.quarantined,
                   aggregated.stale)


def _change_members(table, recent: Recent | None, members: tuple[tuple[str, str], ...], since: int):
    """(table, late-update record, roster) for the members put in force from round ``since``."""
    old = dict(table)
    peers = sorted(peer for peer, _name in members)
    table = tuple((peer, old.get(peer, PeerReputation())) for peer in peers)
    if recent is not None:
        counted = dict(recent.counted)
        recent = Recent(recent.ancestors, tuple((peer, counted.get(peer, 0)) for peer in peers))
    return table, recent, Roster(since, tuple(sorted(members)))


def _check(state: ReplicatedState, ordered: list[Gradient], round_: int) -> None:
    if not ordered:
        raise InvalidEntry("an entry needs at least one gradient")
    senders = [g.sender for g in ordered]
    if len(set(senders)) != len(senders):
        raise InvalidEntry("two gradients from one sender")
    members = {peer for peer, _ in state.reputation}
    for g in ordered:
        if g.sender not in members:
            raise InvalidEntry(f"{g.sender} is not a member")
        if g.round != round_ or g.parent != state.hash:
            raise InvalidEntry(f"gradient of {g.sender} is for round {g.round} on another parent")
        _check_size(state, g)


def _check_size(state: ReplicatedState, g: Gradient) -> None:
    if g.sender not in dict(state.reputation):
        raise InvalidEntry(f"{g.sender} is not a member")
    if g.dim != state.params.numel():
        raise InvalidEntry(f"gradient of {g.sender} has {g.dim} values, model has "
                           f"{state.params.numel()}")


def _aggregate(rules: RoundRules, stack: torch.Tensor, weights: torch.Tensor, f: int):
    rule = rules.rule
    weights = weights if rules.reputation_weighted else None
    try:
        return rule, aggregate(rule, stack, f, weights=weights, nnm=rules.nnm, **rules.options)
    except ValueError:
        # The rule's precondition fails for this many gradients (Krum with n < 2f+3, say): every node falls back
        # the same way, since the inputs are the same committed ones.
        f = min(f, (stack.shape[0] - 1) // 2)
        return FALLBACK_RULE, aggregate(FALLBACK_RULE, stack, f, weights=weights)


def _median_already_computed(rule: str, result, rules: RoundRules, whole_stack: bool) -> torch.Tensor | None:
    """The reference (the unweighted coordinate median of every row) when the rule has just computed exactly it,
    so the n x d stack is not selected over twice: the median rule's aggregate, or centered clipping's starting
    center. Only when the rule saw every row unchanged (nobody quarantined or late, no mixing, no weights)."""
    if not whole_stack or rules.nnm or rules.reputation_weighted:
        return None
    if rule == "median" and not rules.options:
        return result.vector
    if rule == "centered_clipping":
        return result.info.get("median")  # absent when the genesis gives another center
    return None


def reference(every: torch.Tensor) -> torch.Tensor:
    """What each gradient is scored against: the unweighted coordinate-wise median of every gradient in the entry
    (quarantined and late ones included, late ones unscaled), as float32. Not the round's aggregate: that one leaves quarantined members out,
    so a member scored against it is judged against an aggregate it is not part of while the others are judged
    against one they are in, and the bias feeds itself. The median is symmetric in the members, robust while fewer
    than half the rows are Byzantine, and one O(n d) pass."""
    return coordinate_median(every).to(torch.float32)


GEOMETRY_CHUNK = 1 << 17  # columns per step: few steps (each numpy call retakes the GIL), still cache-sized


def _distances_and_cosines(vectors, target_vector: torch.Tensor) -> list[tuple[float, float, float]]:
    """Per row of ``vectors`` (a list of (d,) tensors or an (n, d) stack): Euclidean distance and cosine to the
    target (the round's reference), and the row's own norm, in float64. Each chunk's sums are numpy's pairwise
    sums along a contiguous row (single-threaded, fixed order) and chunks are added in order: the same bits on
    every machine, computed in one cache-resident pass instead of several passes over megabytes."""
    stack = (vectors if isinstance(vectors, torch.Tensor) else torch.stack(vectors)).to(torch.float32).numpy()
    target = target_vector.to(torch.float32).numpy()
    n, d = stack.shape
    sums = np.zeros((3, n))  # ||a||^2 and a.b per row, ||b||^2 (row 2, column 0)
    for start in range(0, d, GEOMETRY_CHUNK):
        a = stack[:, start:start + GEOMETRY_CHUNK].astype(np.float64)
        b = target[start:start + GEOMETRY_CHUNK].astype(np.float64)
        sums[0] += np.sum(a * a, axis=1)  # float32 products are exact in float64
        sums[1] += np.sum(a * b, axis=1)
        sums[2, 0] += np.sum(b * b)
    b_squared = float(sums[2, 0])
    b_norm = float(np.sqrt(b_squared))
    out = []
    for i in range(n):
        a_squared, dot = float(sums[0, i]), float(sums[1, i])
        # ||a - b||^2 from the three sums: float64 cancellation only matters for rows within ~1e-8 of the
        # reference, which are at distance ~0 either way (and every node computes the same bits).
        distance = float(np.sqrt(max(0.0, a_squared - 2.0 * dot + b_squared)))
        a_norm = float(np.sqrt(a_squared))
        norms = a_norm * b_norm
        out.append((distance, dot / norms if norms > 0.0 else 0.0, a_norm))
    return out

"""Committed reputation: updated inside `apply` from the committed entry alone, so every honest node agrees.

Per member and round, three observations in [0, 1] feed exponential moving averages (rate ``RATE``):

- quality, for every gradient in the entry (aggregated or not, so a quarantined member can earn its way back;
  unchanged for a member whose gradient is not in the entry, which participation already counts): the smaller of
  ``min(1, (1.5 m / d_i)^2)``, where d_i is its distance to the aggregate and m the median distance of the
  aggregated gradients (a scaled or noisy update sits far out), and ``min(1, max(0, c_i) / (0.5 mc))``, where c_i
  is its cosine with the aggregate and mc the aggregated gradients' median cosine (a sign-flipped or
  inner-product attack points the other way);
- participation: 1 when its gradient is in the entry, else 0;
- consensus: 1 when it signed the previous round's commit certificate (carried in the entry with every Commit the
  leader saw, late ones included), else 0.

score = clamp(0.5*quality + 0.3*participation + 0.2*consensus - 0.25*penalties, 0.1, 1.0). A member whose score
is under the genesis' ``reputation_floor`` is quarantined: its gradient is still scored but not aggregated, so it
can earn its way back. All arithmetic is Python floats in a fixed order: bit-identical everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from swarm.ledger.state import PeerReputation

RATE = 0.3
PENALTY_WEIGHT = 0.25
DISTANCE_SLACK = 1.5
COSINE_SLACK = 0.5


@dataclass(frozen=True)
class RoundObservation:
    """What one committed round says about the members."""

    included: frozenset[str]            # senders whose gradients are in the entry
    aggregated: frozenset[str]          # of those, the ones the rule selected (not quarantined, not filtered)
    distances: dict[str, float]         # distance of each included gradient to the aggregate
    cosines: dict[str, float]           # cosine of each included gradient with the aggregate
    certificate_signers: frozenset[str] | None  # signers of the previous commit certificate (None: unknown)
    convicted: frozenset[str] = frozenset()     # members with committed evidence against them this round


def score(rep: PeerReputation) -> float:
    raw = 0.5 * rep.quality + 0.3 * rep.participation + 0.2 * rep.consensus - PENALTY_WEIGHT * rep.penalties
    return min(1.0, max(0.1, raw))


def is_quarantined(rep: PeerReputation, floor: float) -> bool:
    return score(rep) < floor


def update(table: tuple[tuple[str, PeerReputation], ...], obs: RoundObservation
           ) -> tuple[tuple[str, PeerReputation], ...]:
    aggregated = sorted(p for p in obs.aggregated if p in obs.distances)
    median_distance = _median([obs.distances[p] for p in aggregated])
    median_cosine = _median([obs.cosines[p] for p in aggregated])
    updated = []
    for peer, rep in table:
        quality = rep.quality
        if peer in obs.included:
            quality = _ema(rep.quality, min(_closeness(obs.distances[peer], median_distance),
                                            _alignment(obs.cosines[peer], median_cosine)))
        participation = 1.0 if peer in obs.included else 0.0
        consensus = rep.consensus if obs.certificate_signers is None else (
            1.0 if peer in obs.certificate_signers else 0.0)
        updated.append((peer, replace(
            rep,
            quality=quality,
            participation=_ema(rep.participation, participation),
            consensus=_ema(rep.consensus, consensus),
            rounds_included=rep.rounds_included + (peer in obs.included),
            penalties=rep.penalties + (peer in obs.convicted),
        )))
    return tuple(updated)


def _closeness(distance: float, median: float) -> float:
    """1 within DISTANCE_SLACK times the median distance, then falling with the square of the excess."""
    allowed = DISTANCE_SLACK * median
    return 1.0 if distance <= allowed else (allowed / distance) ** 2


def _alignment(cosine: float, median: float) -> float:
    """1 down to COSINE_SLACK times the median cosine, then falling linearly to 0 at cosine 0."""
    allowed = COSINE_SLACK * median
    if allowed <= 0.0:
        return 1.0 if cosine >= median else 0.0
    return min(1.0, max(0.0, cosine) / allowed)


def _ema(old: float, observed: float) -> float:
    return (1.0 - RATE) * old + RATE * observed


def _median(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])

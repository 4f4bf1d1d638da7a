"""Committed reputation: updated inside `apply` from the committed entry alone, so every honest node agrees.

Per member and round, three observations in [0, 1] feed exponential moving averages (rate ``RATE``):

- quality, for every gradient in the entry (aggregated or not, so a quarantined member can earn its way back;
  unchanged for a member whose gradient is not in the entry, which participation already counts). Every gradient
  is measured against the same reference, the unweighted coordinate-wise median of all the entry's gradients
  (swarm/ledger/apply.py ``reference``: not the aggregate, which leaves quarantined members out), and against the
  medians m (distance), mc (cosine) and mn (norm) over all the entry's gradients. So every member is scored on
  equal footing: the observation does not depend on whether the member was quarantined. The observation is the
  smallest of

    closeness  = 1 if d_i <= S_d * m, else (S_d * m / d_i)^3                     (S_d = DISTANCE_SLACK = 4)
    alignment  = 1 if c_i >= 0, else max(0, 1 + c_i / max(S_c * mc, W_MIN))      (S_c = COSINE_SLACK = 0.5,
                                                                                   W_MIN = COSINE_WIDTH_MIN = 0.1)
    substance  = 1 if n_i >= S_n * mn, else n_i / (S_n * mn)                      (S_n = NORM_SLACK = 0.25)

  where d_i is its distance to the reference, c_i its cosine with it and n_i its norm. A scaled or noisy update
  sits far out; a sign-flipped or inner-product attack points the other way (early in training); a free rider's
  zero update has no norm. The slack is what long real runs show (bench/reputation_drift.py): late in training an
  honest member often sends updates 2-5 times the median distance (up to ~12 times in single rounds), honest
  updates are often orthogonal to the others' (c_i near 0, sometimes slightly negative), and the smallest honest
  norm seen was 0.37 of the median; none of that costs anything.

  Hysteresis: a member that is quarantined this round (``RoundObservation.quarantined``, which apply derives from
  the parent state's scores) moves its quality up at ``RECOVERY_RATE`` instead of ``RATE`` (down at ``RATE`` as
  always). A member pushed to quality 0 then needs about 45 good rounds to climb back over the floor (one just
  under it, a few). Late in training honest updates are pairwise slightly anti-correlated (each points at its
  own shard's optimum and they sum to about zero at the shared model), so a sign-flipped update there points
  along the others' and looks honest: an attacker caught early would walk straight back in without this;

- participation: 1 when its gradient is in the entry, else 0. A late gradient of an earlier round that the entry
  counts (swarm/ledger/staleness.py) is in the entry like any other: it is part of the reference, scored on its own
  unscaled vector (its weight is the rule's business) and counts as participation, so lateness itself costs
  nothing: the member is scored exactly as if the same update had arrived on time;
- consensus: 1 when it signed the previous round's commit certificate (carried in the entry with every Commit the
  leader saw, late ones included), else 0.

score = clamp(0.5*quality + 0.3*participation + 0.2*consensus - 0.25*penalties, 0.1, 1.0). A member whose score
is under the genesis' ``reputation_floor`` is quarantined: its gradient is still scored (on the same footing as
everyone's) but not aggregated. Reputation decides who is aggregated, not how much: by default the rows over the
floor are aggregated unweighted (a reputation-weighted median of four rows drops the lightest row's values as soon
as its weight dips below the others', and that member's model then fits its shard less and it sinks further).
All arithmetic is Python floats in a fixed order: bit-identical everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from swarm.ledger.state import PeerReputation

RATE = 0.3
RECOVERY_RATE = 0.005      # a quarantined member's quality climbs back this slowly (hysteresis)
PENALTY_WEIGHT = 0.25
DISTANCE_SLACK = 4.0
COSINE_SLACK = 0.5
COSINE_WIDTH_MIN = 0.1
NORM_SLACK = 0.25


@dataclass(frozen=True)
class RoundObservation:
    """What one committed round says about the members."""

    included: frozenset[str]            # senders whose gradients are in the entry
    aggregated: frozenset[str]          # of those, the ones the rule selected (informational: scoring ignores it)
    distances: dict[str, float]         # distance of each included gradient to the round's reference
    cosines: dict[str, float]           # cosine of each included gradient with the round's reference
    certificate_signers: frozenset[str] | None  # signers of the previous commit certificate (None: unknown)
    convicted: frozenset[str] = frozenset()     # members with committed evidence against them this round
    norms: dict[str, float] | None = None       # norm of each included gradient (None: not measured)
    quarantined: frozenset[str] = frozenset()   # members left out of this round's aggregate for low reputation


def score(rep: PeerReputation) -> float:
    raw = 0.5 * rep.quality + 0.3 * rep.participation + 0.2 * rep.consensus - PENALTY_WEIGHT * rep.penalties
    return min(1.0, max(0.1, raw))


def is_quarantined(rep: PeerReputation, floor: float) -> bool:
    return score(rep) < floor


def observed_quality(peer: str, obs: RoundObservation, median_distance: float, median_cosine: float,
                     median_norm: float) -> float:
    """This round's quality observation for an included member, in [0, 1]."""
    quality = min(_closeness(obs.distances[peer], median_distance), _alignment(obs.cosines[peer], median_cosine))
    if obs.norms is not None:
        quality = min(quality, _substance(obs.norms[peer], median_norm))
    return quality


def update(table: tuple[tuple[str, PeerReputation], ...], obs: RoundObservation
           ) -> tuple[tuple[str, PeerReputation], ...]:
    scored = sorted(p for p in obs.included if p in obs.distances)  # every member's gradient: equal footing
    median_distance = _median([obs.distances[p] for p in scored])
    median_cosine = _median([obs.cosines[p] for p in scored])
    median_norm = _median([obs.norms[p] for p in scored]) if obs.norms is not None else 0.0
    updated = []
    for peer, rep in table:
        quality = rep.quality
        if peer in obs.included:
            observed = observed_quality(peer, obs, median_distance, median_cosine, median_norm)
            rate = RECOVERY_RATE if peer in obs.quarantined and observed > rep.quality else RATE
            quality = (1.0 - rate) * rep.quality + rate * observed
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
    """1 within DISTANCE_SLACK times the median distance, then falling with the cube of the excess (a wide slack
    for honest spread, a steep fall beyond it: 10 times the median distance scores 0.064)."""
    allowed = DISTANCE_SLACK * median
    if distance <= allowed:
        return 1.0
    ratio = allowed / distance
    return ratio * ratio * ratio


def _alignment(cosine: float, median: float) -> float:
    """1 for any cosine >= 0 (an update orthogonal to the others' is not an attack), then falling linearly to 0 at
    -max(COSINE_SLACK * median, COSINE_WIDTH_MIN): pointing away as much as honest updates point along."""
    if cosine >= 0.0:
        return 1.0
    width = max(COSINE_SLACK * median, COSINE_WIDTH_MIN)
    return max(0.0, 1.0 + cosine / width)


def _substance(norm: float, median: float) -> float:
    """1 from NORM_SLACK times the median norm up, then falling linearly to 0 at norm 0: an update far smaller than
    the others' (a free rider's zero update) carries no work."""
    allowed = NORM_SLACK * median
    if norm >= allowed or allowed <= 0.0:
        return 1.0
    return norm / allowed


def _ema(old: float, observed: float) -> float:
    return (1.0 - RATE) * old + RATE * observed


def _median(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])

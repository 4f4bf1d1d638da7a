"""Robust aggregation of a stack of flattened updates, deterministic to the bit (part of the replicated state).

Entry point: ``aggregate(rule, vectors, f, weights=None, **options) -> AggregationResult``; the aggregate is
``result.vector`` (float32, shape (d,), computed in float64 on the CPU). Rules (one module each):

    mean, krum, multikrum (m), median, trimmed_mean, bulyan, centered_clipping (tau, iterations, center)

Prefix a rule with ``nnm+`` (or pass ``nnm=True``) to apply nearest-neighbour mixing first.
``weights`` (reputation, one per row) are honoured by mean, krum/multikrum (selection unweighted, average
weighted), median (weighted median) and trimmed_mean (weighted trimmed mean). ``weight_floor``: rows whose
weight is below it, or zero, are excluded before the rule runs (indices in the result stay the original ones).
Rows must be finite; preconditions (n >= 2f+3 for Krum, n >= 4f+3 for Bulyan...) raise ValueError.
Distance-based selections (Krum, Multi-Krum, Bulyan, NNM) come from a certified float32 pass when its error
bounds prove them equal to the exact path's, else from the exact path (certified.py); ``info["distance_path"]``
(``info["nnm_distance_path"]`` for NNM) says which. The vector and the selection are the same either way.
"""
from __future__ import annotations

import torch

from ._common import AggregationResult, check_f, check_stack, check_weights, require_finite
from .bulyan import aggregate_bulyan
from .centered_clipping import aggregate_centered_clipping
from .krum import aggregate_krum, aggregate_multikrum
from .mean import aggregate_mean
from .median import aggregate_median
from .nnm import nearest_neighbour_mixing
from .trimmed_mean import aggregate_trimmed_mean

RULES = {
    "mean": aggregate_mean,
    "krum": aggregate_krum,
    "multikrum": aggregate_multikrum,
    "median": aggregate_median,
    "trimmed_mean": aggregate_trimmed_mean,
    "bulyan": aggregate_bulyan,
    "centered_clipping": aggregate_centered_clipping,
}

#: Rules that check finiteness themselves during their first pass over the data (krum.py), sparing a pass.
SELF_CHECKING = frozenset({"krum", "multikrum"})

__all__ = ["AggregationResult", "RULES", "aggregate", "parse_rule"]


def parse_rule(rule: str, nnm: bool = False) -> tuple[str, bool]:
    """Split ``"nnm+krum"`` into ("krum", True); unknown names raise ValueError."""
    if not isinstance(rule, str):
        raise ValueError(f"rule must be a string, got {rule!r}")
    name = rule.strip().lower()
    if name.startswith("nnm+"):
        name, nnm = name[4:], True
    if name not in RULES:
        raise ValueError(f"unknown aggregation rule {rule!r}; known: {sorted(RULES)} (optionally prefixed 'nnm+')")
    return name, nnm


def aggregate(rule: str, vectors: torch.Tensor, f: int, weights=None, *, nnm: bool = False,
              weight_floor: float = 0.0, **options) -> AggregationResult:
    """Aggregate an (n, d) stack with ``rule`` tolerating ``f`` Byzantine rows; see the module docstring."""
    name, nnm = parse_rule(rule, nnm)
    deferred = name in SELF_CHECKING and not nnm  # the rule's own first pass proves the rows finite
    vectors = check_stack(vectors, finite=not deferred)
    f = check_f(f)
    n = vectors.shape[0]
    w = check_weights(weights, n)
    kept = list(range(n))
    if w is not None:
        kept = [i for i in kept if float(w[i]) > 0.0 and float(w[i]) >= weight_floor]
        if not kept:
            raise ValueError(f"every row's weight is zero or below the floor {weight_floor}")
        if len(kept) < n:
            if deferred:
                require_finite(vectors)
            vectors = vectors[kept]
            w = w[kept]
    info = {}
    if nnm:
        vectors, neighbours, path = nearest_neighbour_mixing(vectors, f)
        info["nnm_neighbours"] = [[kept[j] for j in row] for row in neighbours]
        info["nnm_distance_path"] = path
    result = RULES[name](vectors, f, w, **options)
    scores = None
    if result.scores is not None:
        scores = [None] * n
        for k, i in enumerate(kept):
            scores[i] = result.scores[k]
    info.update(result.info)
    info["rule"] = name
    info["kept"] = kept
    return AggregationResult(result.vector, [kept[k] for k in result.selected], scores, info)

"""The reputation-weighted median for swarms of more than 16 members (issue 17: a 17-member swarm stalled, the
rule refusing more than 16 rows and apply's median fallback raising again): checked against a float64 reference
of the same rule, with equal weights against the plain median, and through apply with 17 and 64 members."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from swarm.aggregation.median import coordinate_median
from swarm.aggregation.weighted import weighted_median


def reference(vectors: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per column: order by (value, row); the first value whose cumulative weight reaches half the total, or its
    mean with the next one when it reaches exactly half."""
    total = 0.0
    for w in weights:
        total += float(w)
    out = np.empty(vectors.shape[1])
    for c in range(vectors.shape[1]):
        order = sorted(range(vectors.shape[0]), key=lambda i: (vectors[i, c], i))
        cumulative = 0.0
        for position, i in enumerate(order):
            cumulative += float(weights[i])
            if 2.0 * cumulative >= total:
                value = float(vectors[i, c])
                if 2.0 * cumulative == total:
                    value = (value + float(vectors[order[position + 1], c])) * 0.5
                out[c] = value
                break
    return out


@pytest.mark.parametrize("n", [17, 33, 64])
def test_tall_stacks_give_the_reference_weighted_median(n):
    generator = torch.Generator().manual_seed(n)
    vectors = torch.randn(n, 700, generator=generator)
    vectors[:, :100] = torch.round(vectors[:, :100])  # many ties: the row order must break them
    weights = torch.rand(n, generator=generator, dtype=torch.float64) + 0.1
    got = weighted_median(vectors, weights).numpy()
    assert np.array_equal(got, reference(vectors.double().numpy(), weights.numpy()))


@pytest.mark.parametrize("n", [17, 18, 64])
def test_equal_weights_give_the_plain_median(n):
    vectors = torch.randn(n, 500, generator=torch.Generator().manual_seed(7))
    got = weighted_median(vectors, torch.ones(n, dtype=torch.float64))
    assert torch.equal(got.to(torch.float32), coordinate_median(vectors).to(torch.float32))


def test_apply_aggregates_a_swarm_of_64_with_one_member_below_full_reputation():
    from dataclasses import replace

    from swarm.ledger.apply import RoundRules, apply
    from swarm.ledger.state import genesis_state
    from swarm.round.gradient import Gradient

    members = [f"m{i:02d}" for i in range(64)]
    state = genesis_state(torch.zeros(32), members, b"\0" * 32)
    table = dict(state.reputation)
    table["m05"] = replace(table["m05"], quality=0.9)  # reputation-weighted from here on
    state = replace(state, reputation=tuple(sorted(table.items())), _hash=None)
    generator = torch.Generator().manual_seed(3)
    gradients = [Gradient(m, 1, state.hash, bytes([i]) * 32, b"", torch.randn(32, generator=generator))
                 for i, m in enumerate(members)]
    applied = apply(state, gradients, RoundRules(f=21, rule="median"))
    assert applied.rule_used == "median" and len(applied.aggregated) == 64
    assert torch.isfinite(applied.state.params).all()

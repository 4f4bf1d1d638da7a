"""The lookup form of the weighted median (n <= 5) gives the same bytes as the general rank form."""
from __future__ import annotations

import pytest
import torch

from swarm.aggregation import weighted, weighted_small


def _general(vectors, weights):
    """The rank form alone (the public function now dispatches small n to the lookup form)."""
    saved = weighted_small.MAX_ROWS
    weighted_small.MAX_ROWS = 0
    try:
        return weighted.weighted_median(vectors, weights)
    finally:
        weighted_small.MAX_ROWS = saved


@pytest.mark.parametrize("n", [2, 3, 4, 5])
@pytest.mark.parametrize("kind", ["gaussian", "ties", "exact_half"])
def test_lookup_form_equals_rank_form_bit_for_bit(n, kind):
    gen = torch.Generator().manual_seed(n * 10 + len(kind))
    if kind == "gaussian":
        vectors = torch.randn(n, 40_000, generator=gen)
        weights = torch.rand(n, generator=gen, dtype=torch.float64) + 0.1
    elif kind == "ties":  # few distinct values: many tied rows per column
        vectors = torch.randint(-2, 3, (n, 40_000), generator=gen).float()
        weights = torch.rand(n, generator=gen, dtype=torch.float64) + 0.1
    else:  # integer weights whose running sums hit exactly half: mean with the next value up
        vectors = torch.randn(n, 40_000, generator=gen)
        weights = torch.tensor([1.0, 1.0, 2.0, 2.0, 2.0][:n], dtype=torch.float64)
    fast = weighted_small.weighted_median_small(vectors, weights)
    assert fast is not None
    assert torch.equal(fast, _general(vectors, weights))
    assert torch.equal(weighted.weighted_median(vectors, weights), fast)


def test_exact_half_case_really_averages():
    vectors = torch.tensor([[1.0], [3.0], [10.0], [20.0]])
    weights = torch.tensor([1.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    assert weighted_small.weighted_median_small(vectors, weights).item() == 6.5  # (3 + 10) / 2

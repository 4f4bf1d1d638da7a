"""Centered clipping's squared distances (swarm/aggregation/row_norms.py): the same bits whatever the thread
count, the slicing or the memory layout, and accurate to a few ulps."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from swarm.aggregation.row_norms import SUB, add_squared_distances, squared_distances_to, workspace


def _stack(n=5, d=3 * SUB + 123, seed=0):
    generator = torch.Generator().manual_seed(seed)
    vectors = torch.randn(n, d, generator=generator) * torch.logspace(-6, 3, d).to(torch.float32)
    center = torch.randn(d, generator=generator, dtype=torch.float64)
    return vectors, center


def test_the_result_does_not_depend_on_the_thread_count():
    vectors, center = _stack(d=40 * SUB + 7)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = squared_distances_to(vectors, center)
        torch.set_num_threads(max(2, before))
        many = squared_distances_to(vectors, center)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, many)


@pytest.mark.parametrize("width", [SUB, 3 * SUB, 16 * SUB])
def test_slices_at_multiples_of_sub_give_the_same_bits(width):
    vectors, center = _stack()
    total, scratch = np.zeros(vectors.shape[0]), workspace(vectors.shape[0])
    for start in range(0, vectors.shape[1], width):
        add_squared_distances(total, vectors[:, start:start + width].numpy(), center[start:start + width].numpy(),
                              scratch)
    assert torch.equal(torch.from_numpy(total), squared_distances_to(vectors, center))


def test_a_non_contiguous_stack_gives_the_same_bits():
    vectors, center = _stack()
    strided = torch.empty(vectors.shape[1], vectors.shape[0]).t()  # column-major copy of the same values
    strided.copy_(vectors)
    assert not strided.is_contiguous()
    assert torch.equal(squared_distances_to(strided, center), squared_distances_to(vectors, center))


def test_the_sums_are_accurate_to_a_few_ulps():
    vectors, center = _stack(n=4, d=5 * SUB + 1)
    exact = [math.fsum(float(v) ** 2 for v in (vectors[i].double() - center).tolist()) for i in range(4)]
    got = squared_distances_to(vectors, center).tolist()
    for value, reference in zip(got, exact):
        assert abs(value - reference) <= 1e-13 * reference


def test_an_empty_row_set_and_a_zero_distance():
    vectors, center = _stack(n=3, d=10)
    vectors[1] = center.to(torch.float32)
    center32 = vectors[1].double()
    got = squared_distances_to(vectors, center32)
    assert got[1].item() == 0.0 and got[0].item() > 0.0
    assert squared_distances_to(torch.empty(0, 10), center32).shape == (0,)

"""Pairwise inner products of centred rows, computed so the result does not depend on thread count or BLAS.

Distance-based rules (Krum, Multi-Krum, Bulyan, NNM, centered clipping) need ||x_i - x_j||^2 for all pairs.
The fast way is a Gram matrix (one GEMM), but a float64 GEMM reduces over d in an order chosen by the BLAS
and its thread count, so two honest nodes could disagree in the last bit and pick different rows at a
near-tie. Here every GEMM is made *exact*: each block of SUB columns of the centred rows is split into two
slices of B-bit integers times a power of two (an error-free split; Ozaki-style). Products of B-bit integers
summed over SUB columns stay below 2^53, so every BLAS, in any order, returns the exact value. Blocks are
then added in a fixed order. The result is within about 2^-40 of the true Gram (relative to the row norms)
and identical on every machine.

Centring (subtracting the float64 mean row first) keeps the distances accurate when all rows share a large
offset: with offset 1e3 and spread 1e-3, ||x_i||^2 would otherwise swamp ||x_i - x_j||^2.
"""
from __future__ import annotations

import torch

SUB = 4096  # columns per exact GEMM: SUB * 2^(2B) must stay <= 2^53
BITS = 20
_TWO_B = float(2 ** BITS)
_BLOCKS_PER_STEP = 8


def mean_row(vectors: torch.Tensor) -> torch.Tensor:
    """Float64 mean of all rows, summed row by row in order (elementwise, thread-independent)."""
    acc = torch.zeros(vectors.shape[1], dtype=torch.float64)
    for i in range(vectors.shape[0]):
        acc += vectors[i]
    return acc / vectors.shape[0]


def centred_gram(vectors: torch.Tensor, center: torch.Tensor | None = None) -> torch.Tensor:
    """(n, n) float64 Gram matrix of ``vectors - center`` (center defaults to the mean row)."""
    n, d = vectors.shape
    if center is None:
        center = mean_row(vectors)
    gram = torch.zeros(n, n, dtype=torch.float64)
    step = SUB * _BLOCKS_PER_STEP
    for start in range(0, d, step):
        block = torch.sub(vectors[:, start:start + step], center[start:start + step], alpha=1).to(torch.float64)
        parts = _exact_block_grams(block)
        for k in range(parts.shape[0]):  # fixed order across blocks
            gram += parts[k]
    return gram


def _exact_block_grams(block: torch.Tensor) -> torch.Tensor:
    """(blocks, n, n) exact Gram matrices of consecutive SUB-column blocks of ``block`` (float64, (n, w))."""
    n, width = block.shape
    pad = (-width) % SUB
    if pad:
        block = torch.nn.functional.pad(block, (0, pad))
    block = block.reshape(n, -1, SUB)
    peak = block.abs().amax(dim=2, keepdim=True)
    exponent = torch.frexp(peak).exponent  # peak < 2^exponent
    scale = torch.ldexp(torch.ones_like(peak), BITS - exponent)  # power of two: scaling is exact
    scaled = block * scale
    high = torch.round(scaled)  # |high| <= 2^BITS, integer
    low = scaled.sub_(high).mul_(_TWO_B).round_()  # next BITS bits, integer
    high = high.transpose(0, 1)
    low = low.transpose(0, 1)
    g_hh = torch.bmm(high, high.transpose(1, 2))
    g_hl = torch.bmm(high, low.transpose(1, 2))
    inverse = (1.0 / scale).transpose(0, 1)
    outer = inverse * inverse.transpose(1, 2)
    return (g_hh + (g_hl + g_hl.transpose(1, 2)) / _TWO_B) * outer


def squared_distances(vectors: torch.Tensor) -> torch.Tensor:
    """(n, n) float64 squared Euclidean distances; exact zeros on the diagonal, symmetric, non-negative."""
    gram = centred_gram(vectors)
    diag = torch.diagonal(gram)
    dist = diag.unsqueeze(0) + diag.unsqueeze(1) - 2.0 * gram
    dist = torch.clamp_min(dist, 0.0)
    dist = torch.minimum(dist, dist.t())  # exact symmetry
    dist.fill_diagonal_(0.0)
    return dist


def squared_norms_from(vectors: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """(n,) float64 ||x_i - center||^2, computed with the same exact scheme."""
    return torch.diagonal(centred_gram(vectors, center)).clone()

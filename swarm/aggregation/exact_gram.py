"""Pairwise inner products of centred rows, computed so the result does not depend on thread count or BLAS.

Distance-based rules (Krum, Multi-Krum, Bulyan, NNM, centered clipping) need ||x_i - x_j||^2 for all pairs.
The fast way is a Gram matrix (one GEMM), but a float64 GEMM reduces over d in an order chosen by the BLAS
and its thread count, so two honest nodes could disagree in the last bit and pick different rows at a
near-tie. Here every GEMM is made *exact*: each block of SUB columns of the centred rows is split into two
slices of B-bit integers times a power of two (an error-free split; Ozaki-style). Products of B-bit integers
summed over SUB columns stay below 2^53, so every BLAS, in any order, returns the exact value. Blocks are
then added in a fixed order. The result is identical on every machine; ``error_bound`` below says how far it
can be from the true distances (certified.py needs that to prove a fast decision equal to this path's).

Centring (subtracting the float64 mean row first) keeps the distances accurate when all rows share a large
offset: with offset 1e3 and spread 1e-3, ||x_i||^2 would otherwise swamp ||x_i - x_j||^2.
"""
from __future__ import annotations

import math

import torch

SUB = 4096  # columns per exact GEMM: SUB * 2^(2B) must stay <= 2^53
BITS = 20
_TWO_B = float(2 ** BITS)
_BLOCKS_PER_STEP = 2  # n * 2 * SUB float64 values per step stay in a 1 MiB cache; the result does not depend on it
_MEAN_COLUMNS = 1 << 14  # below torch's parallel grain: one thread per step


def mean_row(vectors: torch.Tensor) -> torch.Tensor:
    """Float64 mean of all rows, summed row by row in order (elementwise, thread-independent), one column block
    at a time so the accumulator stays in cache (each element sees the same operations as without blocks)."""
    n, d = vectors.shape
    out = torch.empty(d, dtype=torch.float64)
    for start in range(0, d, _MEAN_COLUMNS):
        acc = out[start:start + _MEAN_COLUMNS]
        acc.zero_()
        for i in range(n):
            acc += vectors[i, start:start + _MEAN_COLUMNS]
    return out.div_(n)


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
    low_end, high_end = torch.aminmax(block, dim=2, keepdim=True)
    peak = torch.maximum(high_end, -low_end)  # max |value|, without an |block| temporary
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


def error_bound(n: int, d: int) -> float:
    """eps such that |squared_distances(x)[i][j] - ||x_i - x_j||^2| <= eps * (||c_i|| + ||c_j||)^2, c = x - z,
    z = the float64 centre ``mean_row`` computes (real arithmetic on the given rows on the right).

    Derivation, u = 2^-53, per row and SUB-column block with peak p < 2^e, scale s = 2^(BITS - e):
    - centring b = fl(x - z) = c (1 + delta), |delta| <= u (float64 subtraction, float32 or float64 rows);
    - split b s = h + l 2^-B + rho with |rho| <= 2^-B-1, so the part left out is at most p 2^-2B per element
      and sqrt(SUB) p 2^-2B <= 2^-34 ||b_block|| in norm: cross terms <= (2^-33 + 2^-68) ||b_i|| ||b_j||;
    - the low x low product is not computed: |l 2^-B / s| <= p 2^-B per element, so |low_i . low_j| <=
      SUB p_i p_j 2^-2B <= 2^-28 ||b_i|| ||b_j|| (per block);
    - the integer GEMMs are exact; hh + (hl + lh) 2^-B rounds once: <= u (1 + 2^-13)^2 ||b_i|| ||b_j||;
    - blocks summed in a fixed order: gamma_blocks times the sum of |block entries|, and by Cauchy-Schwarz the
      sum over blocks of ||b_i,blk|| ||b_j,blk|| is at most ||b_i|| ||b_j||;
    - D = G_ii + G_jj - 2 G_ij in float64: 2u (G_ii + G_jj + 2|G_ij|); clamping at 0 and the symmetric
      minimum only move a value within an interval that holds the true one;
    - || ||b_i - b_j||^2 - ||c_i - c_j||^2 || <= (2u + u^2) (||c_i|| + ||c_j||)^2 and ||b|| <= (1 + u) ||c||.
    Altogether eps = block + gamma_blocks (1 + block) + 2^-50 with block = 2^-28 + 2^-33 + 2^-51: about 2^-28.
    The float64 centre is within gamma_n max_j ||x_j|| of the true mean (sequential sum, one division).
    """
    u = 2.0 ** -53
    blocks = max(1, math.ceil(d / SUB))
    block = 2.0 ** -28 + 2.0 ** -33 + 2.0 ** -51
    return block + blocks * u / (1.0 - blocks * u) * (1.0 + block) + 2.0 ** -50

"""Squared distances of rows to a center, the same bits on every machine, thread count and SIMD width.

Centered clipping needs ||x_i - v||^2 for every row, three or four times a round, and its clipping factors enter
the replicated state, so the sums must not depend on the order a BLAS or a vectorised reduction picks. The exact
Gram scheme (exact_gram.py) gives that but costs about a dozen passes over the data for what is a diagonal. Here
only IEEE operations that are exact per element are used: the difference and its square element by element, then
a fixed pairwise tree of elementwise additions within each SUB-column block (halving its width until one column
is left; zero padding adds nothing), and the blocks' sums added to the total one by one in column order. Every
step is correctly rounded on its own, so every machine gets the same result; the error of the sum is that of
pairwise summation, O(log2 SUB) ulps of the block sums, far below anything the clipping decides on.

NumPy, not torch, runs these small elementwise steps: one thread, no parallel region per call. Torch splits every
op over its thread pool, and on a machine whose other cores are busy each of those thousands of regions waited
about a millisecond for a descheduled worker (centered clipping of 32 x 10M rows: 4 s on one thread, 30 s on two).
"""
from __future__ import annotations

import numpy as np
import torch

SUB = 4096  # columns per block summed by one tree; slices a caller passes must start at multiples of it
CACHE_VALUES = 1 << 17  # float64 squares held at a time (1 MiB), whatever the number of rows


def squared_distances_to(vectors: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """(n,) float64 ||x_i - center||^2 of an (n, d) CPU stack and a (d,) float64 center."""
    total = np.zeros(vectors.shape[0])
    add_squared_distances(total, vectors.numpy(), center.numpy(), workspace(vectors.shape[0]))
    return torch.from_numpy(total)


def workspace(n: int) -> np.ndarray:
    """Scratch for ``add_squared_distances`` with n rows: allocated once by a caller that walks many slices (a
    fresh 1 MiB temporary per slice is returned to the system and faulted in again every time)."""
    return np.empty(n * _columns_per_pass(n))


def _columns_per_pass(n: int) -> int:
    return max(1, CACHE_VALUES // (max(1, n) * SUB)) * SUB  # a multiple of SUB: the blocks do not move


def add_squared_distances(total: np.ndarray, columns: np.ndarray, center: np.ndarray, scratch: np.ndarray) -> None:
    """Add these columns' share of ||x_i - center||^2 to ``total`` ((n,) float64), using ``scratch`` (from
    ``workspace(n)``). Walking the columns in order in slices that start at multiples of SUB gives
    ``squared_distances_to``'s bits whatever the slice widths."""
    n, width = columns.shape
    if n == 0 or width == 0:
        return
    step = _columns_per_pass(n)
    for start in range(0, width, step):
        _add_blocks(total, columns[:, start:start + step], center[start:start + step], scratch)


def _add_blocks(total: np.ndarray, columns: np.ndarray, center: np.ndarray, scratch: np.ndarray) -> None:
    n, width = columns.shape
    padded = width + (-width) % SUB
    squares = scratch[:n * padded].reshape(n, padded)
    np.subtract(columns, center, out=squares[:, :width])  # in float64 (the center is), as a fresh array would be
    squares[:, width:] = 0.0
    np.multiply(squares, squares, out=squares)
    blocks = squares.reshape(n, -1, SUB)
    span = SUB
    while span > 1:  # the pairwise tree, in place: the first half of each span plus its second half
        half = span // 2
        np.add(blocks[..., :half], blocks[..., half:span], out=blocks[..., :half])
        span = half
    sums = blocks[..., 0]
    for k in range(sums.shape[1]):  # blocks in column order
        total += sums[:, k]

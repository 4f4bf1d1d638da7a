"""Pairwise squared distances from a float32 Gram matrix, with a rigorous interval around each one.

Why: the exact Gram (exact_gram.py) is identical on every machine but slow. A float32 GEMM is fast but its
rounding depends on the BLAS, the CPU and the thread count, so it cannot decide anything by itself. It can
decide whenever its *error bound* leaves no doubt: certified.py accepts a selection from these intervals only
if it is the one the exact path would make, whatever the rounding.

Scheme. Column steps of the rows are viewed as (width / K) chunks of K columns; one torch.bmm gives each
chunk's (n, n) Gram in float32, and the chunks are summed in float64.
Each float32 entry is a dot product of only K terms, so whatever order or FMA use the BLAS picks,

    |fl(a . b) - a . b| <= gamma_K * sum_k |a_k b_k| <= gamma_K * ||a|| ||b||,   gamma_K = K u / (1 - K u), u = 2^-24

(Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., section 3.1; the bound holds for any
summation order, with or without FMA). Summing the M chunk Grams in float64, in any order, adds gamma_M with
u = 2^-53. Underflow, also under flush-to-zero / denormals-are-zero modes, costs at most 2^-126 per operand
and per operation, covered by an absolute term. Overflow shows up as a non-finite entry and is reported.

Centring. With a large common offset (1e3 +- 1e-3) the norms swamp the distances and the bound is useless;
the caller can then ask for a pass on x - z with z the float32 column mean of each step. Distances do not
depend on z, so z need not be exact or reproducible; the float32 subtraction adds a relative error u per
element, bounded in the square-root domain: | ||a_i - a_j|| - ||c_i - c_j|| | <= u (||c_i|| + ||c_j||) + tiny.

The bound is only claimed for IEEE float32 GEMMs: with torch's reduced-precision float32 matmul settings
(bf16 / tf32) ``fast_path_allowed()`` is false and callers use the exact path.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

K = 32          # terms per float32 dot product: the error bound grows linearly with K (callers may pick 128)
WIDTH = 1 << 20          # columns per bmm when uncentred: few, large calls (threads wake up rarely; on a busy
                         # CPU many small multithreaded calls were 5x slower), read straight from the rows
CENTRED_WIDTH = 1 << 14  # columns per step when centred: the centred copy stays in cache
PARTS_BYTES = 8 << 20    # cap on the float32 chunk Grams of one step
U32 = 2.0 ** -24
U64 = 2.0 ** -53
TINY = 2.0 ** -124  # generous absolute slack per term or per element for underflow, FTZ and DAZ
SLACK = 2.0 ** -44  # relative cover for the rounding of the bound arithmetic itself (a few float64 ops)


def gamma(k: int | float, u: float) -> float:
    return k * u / (1.0 - k * u)


def fast_path_allowed(vectors: torch.Tensor) -> bool:
    """Float32 input and IEEE float32 GEMMs (no bf16/tf32 shortcuts), so the bound above holds."""
    if vectors.dtype != torch.float32 or torch.get_float32_matmul_precision() != "highest":
        return False
    for backend in (torch.backends, getattr(torch.backends, "mkldnn", None)):
        for obj in (backend, getattr(backend, "matmul", None)):
            setting = getattr(obj, "fp32_precision", "none")
            if isinstance(setting, str) and setting not in ("none", "ieee"):
                return False
    return True


def accumulated_steps(k: int, centre: bool) -> int:
    """Column steps whose chunk Grams are added up in float32 before the float64 sum: each adds one rounding to
    a k-term dot product (so the bound uses k + this), and saves a float64 pass over all the chunk Grams."""
    return 1 if centre else max(1, k // 8)


def chunked_gram(vectors: torch.Tensor, centre: bool, k: int = K) -> torch.Tensor:
    """(n, n) float64 sum over k-column chunks of float32 chunk Grams of the (optionally centred) rows.

    Uncentred, the chunk Grams of ``accumulated_steps`` consecutive steps are accumulated in place in float32
    (baddbmm) before one float64 sum: the error bound then counts dot products of k + that many terms."""
    n, d = vectors.shape
    width = CENTRED_WIDTH if centre else WIDTH
    width = max(k, min(width, PARTS_BYTES // (4 * n * n) * k) // k * k)
    gram = torch.zeros(n, n, dtype=torch.float64)
    step_sum = torch.empty(n, n, dtype=torch.float64)
    parts = torch.zeros(width // k, n, n, dtype=torch.float32)  # reused: no allocation per step
    per_flush = accumulated_steps(k, centre)
    pending = 0
    for start in range(0, d, width):
        block = vectors[:, start:start + width]
        if centre:
            block = block - block.mean(0)
        cols = block.shape[1]
        if cols % k:  # the last step: zero columns add nothing
            padded = torch.zeros(n, cols + (-cols) % k, dtype=torch.float32)
            padded[:, :cols] = block
            block, cols = padded, padded.shape[1]
        chunks = block.reshape(n, cols // k, k).transpose(0, 1)
        out = parts[:cols // k]
        if pending:
            out.baddbmm_(chunks, chunks.transpose(1, 2))
        else:
            torch.bmm(chunks, chunks.transpose(1, 2), out=out)
            parts[cols // k:].zero_()  # a short last step leaves the rest of the buffer out of this sum
        pending += 1
        if pending == per_flush or start + width >= d:
            torch.sum(parts, 0, dtype=torch.float64, out=step_sum)
            gram += step_sum
            pending = 0
    return gram


@dataclass(frozen=True)
class DistanceBounds:
    """Estimated squared distances and rigorous bounds [lo, hi] on the true ones (real arithmetic on the
    float32 inputs), as (n, n) float64 tensors; ``norms`` bounds each ||x_i - z|| for the pass's centre z."""

    estimate: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    norms: torch.Tensor
    centred: bool


def distance_bounds(vectors: torch.Tensor, centre: bool = False, k: int = K) -> DistanceBounds | None:
    """One fast pass with k-term float32 dot products; None when an entry is not finite (a non-finite input
    or a float32 overflow)."""
    n, d = vectors.shape
    gram = chunked_gram(vectors, centre, k)
    if not bool(torch.isfinite(gram).all()):
        return None
    chunks = math.ceil(d / k) + math.ceil(d / k) + 1  # partials per entry, plus one addition per step (<= d/k steps)
    k_terms = k + accumulated_steps(k, centre)  # float32 roundings one product can go through
    g = gamma(k_terms, U32) + gamma(chunks, U64) * (1.0 + gamma(k_terms, U32))  # relative error of one entry
    root_d = math.sqrt(d)
    diag = torch.diagonal(gram).clamp_min(0.0)
    # ||a_i||^2 <= (G_ii + TINY d + 2 TINY sqrt(d) ||a_i||) / (1 - g): t^2 <= alpha t + beta gives t <= alpha + sqrt(beta)
    alpha = 2.0 * TINY * root_d / (1.0 - g)
    norm = (alpha + torch.sqrt((diag + TINY * d) / (1.0 - g))) * (1.0 + SLACK)
    entry_error = g * norm[:, None] * norm[None, :] + TINY * (d + root_d * (norm[:, None] + norm[None, :]))
    err_diag = torch.diagonal(entry_error)
    estimate = diag[:, None] + diag[None, :] - 2.0 * gram
    magnitude = diag[:, None] + diag[None, :] + 2.0 * gram.abs()
    error = (err_diag[:, None] + err_diag[None, :] + 2.0 * entry_error + 2.0 * U64 * magnitude) * (1.0 + SLACK)
    low_a = (estimate - error - SLACK * (estimate.abs() + error)).clamp_min(0.0)
    high_a = (estimate + error) * (1.0 + SLACK)
    if centre:  # a = fl(x - z): widen in the square-root domain by eta = u (||c_i|| + ||c_j||) + tiny
        c_norm = (norm + TINY * root_d) / (1.0 - U32) * (1.0 + SLACK)
        eta = (U32 * (c_norm[:, None] + c_norm[None, :]) + 2.0 * TINY * root_d) * (1.0 + SLACK)
        low = ((torch.sqrt(low_a) * (1.0 - SLACK) - eta).clamp_min(0.0) ** 2) * (1.0 - SLACK)
        high = ((torch.sqrt(high_a) + eta) ** 2) * (1.0 + SLACK)
        norm = c_norm
    else:
        low, high = low_a, high_a
    low.fill_diagonal_(0.0)
    high.fill_diagonal_(0.0)
    estimate = estimate.clamp_min(0.0)
    estimate.fill_diagonal_(0.0)
    return DistanceBounds(estimate, low, high, norm, centre)

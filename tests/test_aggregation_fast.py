"""The certified fast path for distance-based selections: same decision as the exact path, bounds that hold."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from swarm.aggregation import aggregate, certified
from swarm.aggregation.exact_gram import error_bound, squared_distances
from swarm.aggregation.fast_gram import distance_bounds


def exact_only(monkeypatch):
    monkeypatch.setattr(certified, "fast_path_allowed", lambda vectors: False)


def stack(seed, n, d, kind):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    if kind == "dups":
        x[1] = x[0]
        x[n - 1] = x[2]
    elif kind == "ties":
        x = rng.integers(-3, 4, size=(n, d)).astype(np.float64)
    elif kind == "offset":
        x = 1e3 + 1e-3 * x
    elif kind == "outliers":
        x[: max(1, n // 5)] *= 30.0
    elif kind == "scaled":
        x *= np.exp(rng.normal(size=(n, 1)))
    return torch.tensor(x, dtype=torch.float32)


KINDS = ["gauss", "dups", "ties", "offset", "outliers", "scaled"]
SHAPES = [(7, 1000), (11, 4099), (16, 20_000), (23, 16_500), (32, 3000)]


def decisions(x, f):
    out = []
    for rule, options in (("krum", {}), ("multikrum", {}), ("multikrum", {"m": 2}), ("bulyan", {}), ("nnm+mean", {})):
        if rule == "bulyan" and x.shape[0] < 4 * f + 3:
            continue
        res = aggregate(rule, x, f, **options)
        out.append((rule, res.selected, res.info.get("nnm_neighbours"), res.vector.numpy().tobytes()))
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_fast_decisions_equal_exact_ones(kind, monkeypatch):
    fast_paths = 0
    for seed, (n, d) in enumerate(SHAPES):
        x = stack(seed, n, d, kind)
        f = (n - 3) // 4
        before = sum(v for key, v in certified.PATHS.items() if key != "exact")
        fast = decisions(x, f)
        fast_paths += sum(v for key, v in certified.PATHS.items() if key != "exact") - before
        with monkeypatch.context() as patch:
            exact_only(patch)
            assert decisions(x, f) == fast, (kind, n, d)
    if kind != "ties":  # integer rows tie exactly, and exact ties are for the exact path
        assert fast_paths > 0, "the fast path never decided: this test would prove nothing"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("centre", [False, True])
def test_bounds_hold(kind, centre):
    x = stack(3, 12, 40_000, kind)
    truth = np.asarray(squared_distances(x.double()))  # float64 rows: within ~1e-8 relative of exact
    ref = x.double().numpy()
    direct = ((ref[:, None, :] - ref[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(truth, direct, rtol=1e-9, atol=1e-9 * direct.max())
    for k in (32, 128):
        b = distance_bounds(x, centre=centre, k=k)
        lo, hi = b.lo.numpy(), b.hi.numpy()
        slack = 1e-12 * direct
        assert (lo <= direct + slack).all() and (direct - slack <= hi).all()
        width = (hi - lo)[direct > 0] / direct[direct > 0]
        if centre or kind != "offset":
            assert width.max() < 4e-3 * k / 32, (kind, k, width.max())
    widened = certified._widen(distance_bounds(x, centre=centre), float(x.double().norm(dim=1).max()) * 1.01,
                               12, 40_000, "test")
    exact = np.asarray(squared_distances(x))  # the exact path's own values for the float32 rows
    assert (np.asarray(widened.lo) <= exact).all() and (exact <= np.asarray(widened.hi)).all()


def test_exact_bound_constant():
    assert 2.0 ** -28 < error_bound(16, 10 ** 7) < 2.0 ** -27
    assert error_bound(16, 10 ** 12) > error_bound(16, 10 ** 7)


def test_exact_tie_goes_to_the_exact_path():
    x = torch.tensor(stack(0, 9, 5000, "gauss").numpy(), dtype=torch.float32)
    x[1] = x[0]  # duplicated rows: identical scores
    x[0] *= 0.01
    x[1] = x[0]
    res = aggregate("krum", x, 2)
    assert res.info["distance_path"] == "exact"
    assert res.selected == [0]  # tie to the lowest index


def test_near_tie_falls_back_and_matches(monkeypatch):
    x = torch.tensor(stack(2, 10, 30_000, "gauss").numpy(), dtype=torch.float32)
    x[3] = x[5] * 0.01
    x[5] = x[3]
    x[5, 17] = torch.nextafter(x[5, 17], torch.tensor(1e9))  # one ulp apart: scores differ by ~1e-12 relative
    before = certified.PATHS["exact"]
    res = aggregate("krum", x, 2)
    assert res.info["distance_path"] == "exact" and certified.PATHS["exact"] == before + 1
    with monkeypatch.context() as patch:
        exact_only(patch)
        assert aggregate("krum", x, 2).selected == res.selected


def test_offset_uses_the_centred_pass():
    x = stack(4, 10, 50_000, "offset")
    res = aggregate("multikrum", x, 2)
    assert res.info["distance_path"] == "fast-centred"


def test_reduced_precision_matmul_is_not_trusted():
    x = stack(5, 9, 2000, "gauss")
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        assert aggregate("krum", x, 2).info["distance_path"] == "exact"
    finally:
        torch.set_float32_matmul_precision(before)
    assert aggregate("krum", x, 2).info["distance_path"] != "exact"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_rows_are_reported_by_the_fused_check(bad):
    x = stack(6, 9, 3000, "gauss")
    x[4, 2999] = bad
    with pytest.raises(ValueError, match=r"rows \[4\]"):
        aggregate("krum", x, 2)
    w = [1.0] * 9
    w[4] = 0.0  # excluded by its weight, still checked as before
    with pytest.raises(ValueError, match=r"rows \[4\]"):
        aggregate("multikrum", x, 2, weights=w)


def test_float32_overflow_falls_back(monkeypatch):
    x = stack(7, 9, 3000, "gauss") * 1e30  # squares overflow float32
    res = aggregate("krum", x, 2)
    assert res.info["distance_path"] == "exact"
    with monkeypatch.context() as patch:
        exact_only(patch)
        assert aggregate("krum", x, 2).selected == res.selected


@pytest.mark.parametrize("rule", ["krum", "multikrum", "bulyan", "nnm+krum"])
def test_fast_path_same_bytes_with_one_and_two_threads(rule):
    x = stack(11, 15, 200_003, "gauss")
    before = torch.get_num_threads()
    outputs = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            res = aggregate(rule, x, 3)
            path = res.info["nnm_distance_path" if rule.startswith("nnm+") else "distance_path"]
            outputs.append((res.vector.numpy().tobytes(), res.selected, path))
    finally:
        torch.set_num_threads(before)
    assert outputs[0] == outputs[1]
    assert outputs[0][2].startswith("fast"), outputs[0][2]


@pytest.mark.parametrize("n,f", [(8, 1), (11, 2)])
def test_bulyan_tail_ties_are_certified(n, f, monkeypatch):
    """With one neighbour left (r <= f + 3 rows), mutual nearest rows tie exactly; the fast path proves it."""
    x = stack(15, n, 20_000, "gauss")
    res = aggregate("bulyan", x, f)
    assert res.info["distance_path"].startswith("fast")
    with monkeypatch.context() as patch:
        exact_only(patch)
        assert aggregate("bulyan", x, f).selected == res.selected


@pytest.mark.parametrize("width", [256, 4096])
def test_many_steps_and_a_ragged_tail(width, monkeypatch):
    from swarm.aggregation import fast_gram
    monkeypatch.setattr(fast_gram, "WIDTH", width)
    monkeypatch.setattr(fast_gram, "CENTRED_WIDTH", width)
    x = stack(16, 9, 3 * width + 77, "scaled")
    ref = x.double() @ x.double().T
    for centre in (False, True):
        got = fast_gram.chunked_gram(x, centre, 32)
        if not centre:
            np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
        b = fast_gram.distance_bounds(x, centre=centre, k=32)
        truth = np.asarray(squared_distances(x.double()))
        assert (b.lo.numpy() <= truth * (1 + 1e-12)).all() and (truth * (1 - 1e-12) <= b.hi.numpy()).all()

"""Every aggregation rule against an independent float64 reference written with plain numpy loops."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from swarm.aggregation import RULES, aggregate
from swarm.aggregation.order_stats import network_for, sorted_positions


# ---------------------------------------------------------------- references (numpy, float64, loops)

def ref_dist(x):
    n = len(x)
    return np.array([[float(np.sum((x[i] - x[j]) ** 2)) for j in range(n)] for i in range(n)])


def ref_krum_scores(x, f, rows=None, k=None):
    dist = ref_dist(x)
    rows = list(range(len(x))) if rows is None else rows
    k = len(rows) - f - 2 if k is None else k
    return {i: sum(sorted(dist[i, j] for j in rows if j != i)[:k]) for i in rows}


def ref_multikrum(x, f, m, w=None):
    scores = ref_krum_scores(x, f)
    chosen = sorted(sorted(scores, key=lambda i: (scores[i], i))[:m])
    if w is None:
        return np.mean(x[chosen], axis=0), chosen
    return sum(w[i] * x[i] for i in chosen) / sum(w[i] for i in chosen), chosen


def ref_median(x):
    n, d = x.shape
    out = np.empty(d)
    for c in range(d):
        col = sorted(x[:, c])
        out[c] = col[n // 2] if n % 2 else (col[n // 2 - 1] + col[n // 2]) / 2
    return out


def ref_trimmed(x, f):
    n, d = x.shape
    return np.array([np.mean(sorted(x[:, c])[f:n - f]) for c in range(d)])


def ref_weighted_median(x, w):
    n, d = x.shape
    out = np.empty(d)
    total = sum(w)
    for c in range(d):
        pairs = sorted(zip(x[:, c], range(n)))
        cum = 0.0
        for pos, (value, i) in enumerate(pairs):
            cum += w[i]
            if 2 * cum >= total:
                out[c] = (value + pairs[pos + 1][0]) / 2 if 2 * cum == total else value
                break
    return out


def ref_weighted_trimmed(x, w, f):
    n, d = x.shape
    out = np.empty(d)
    for c in range(d):
        pairs = sorted(zip(x[:, c], range(n)))[f:n - f]
        out[c] = sum(w[i] * v for v, i in pairs) / sum(w[i] for v, i in pairs)
    return out


def ref_bulyan(x, f):
    n, d = x.shape
    remaining, chosen = list(range(n)), []
    while len(chosen) < n - 2 * f:
        scores = ref_krum_scores(x, f, remaining, max(len(remaining) - f - 2, 1))
        best = min(remaining, key=lambda i: (scores[i], i))
        chosen.append(best)
        remaining.remove(best)
    chosen.sort()
    theta, beta = n - 2 * f, n - 4 * f
    out = np.empty(d)
    for c in range(d):
        col = sorted(x[chosen, c])
        med = col[theta // 2] if theta % 2 else (col[theta // 2 - 1] + col[theta // 2]) / 2
        keep = sorted(range(theta), key=lambda k: (abs(col[k] - med), k))[:beta]
        out[c] = np.mean([col[k] for k in keep])
    return out, chosen


def ref_cc(x, tau, iterations, v):
    for _ in range(iterations):
        step = np.zeros_like(v)
        for row in x:
            norm = np.sqrt(np.sum((row - v) ** 2))
            step += (row - v) * min(1.0, tau / norm if norm > 0 else 1.0)
        v = v + step / len(x)
    return v


def ref_nnm(x, f):
    n = len(x)
    dist = ref_dist(x)
    return np.array([np.mean(x[sorted(sorted(range(n), key=lambda j: (dist[i, j], j != i, j))[:n - f])], axis=0)
                     for i in range(n)])


# ---------------------------------------------------------------- stacks with duplicates and ties

def make_stack(seed, n, d, kind):
    rng = np.random.default_rng(seed)
    if kind == "gauss":
        x = rng.normal(size=(n, d))
    elif kind == "ties":  # small integers: many equal coordinates and exact distance ties
        x = rng.integers(-3, 4, size=(n, d)).astype(np.float64)
    else:  # duplicated rows plus an outlier
        x = rng.normal(size=(n, d))
        x[1] = x[0]
        x[n - 1] = x[2]
        x[3] = 50.0
    return x.astype(np.float32).astype(np.float64)


CASES = [(seed, n, kind) for seed, (n, kind) in enumerate(
    [(7, "gauss"), (8, "ties"), (11, "dups"), (12, "gauss"), (15, "ties"), (16, "dups"), (9, "ties")])]


def close(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(1.0, float(np.max(np.abs(b))))
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * scale)


def run(rule, x, f, **kw):
    return aggregate(rule, torch.tensor(x, dtype=torch.float32), f, **kw)


@pytest.mark.parametrize("seed,n,kind", CASES)
def test_mean_krum_multikrum(seed, n, kind):
    x = make_stack(seed, n, 40, kind)
    f = (n - 3) // 2
    close(run("mean", x, f).vector, x.mean(axis=0))
    ref, chosen = ref_multikrum(x, f, 1)
    res = run("krum", x, f)
    close(res.vector, ref)
    scores = ref_krum_scores(x, f)
    close([res.scores[i] for i in range(n)], [scores[i] for i in range(n)])
    for m in (None, 2, n):
        ref, chosen = ref_multikrum(x, f, n - f if m is None else m)
        res = run("multikrum", x, f, **({} if m is None else {"m": m}))
        close(res.vector, ref)
        assert res.selected == chosen


@pytest.mark.parametrize("seed,n,kind", CASES)
def test_median_trimmed(seed, n, kind):
    x = make_stack(seed, n, 60, kind)
    f = (n - 1) // 3
    close(run("median", x, f).vector, ref_median(x))
    close(run("trimmed_mean", x, f).vector, ref_trimmed(x, f))
    close(run("trimmed_mean", x, 0).vector, x.mean(axis=0))


@pytest.mark.parametrize("seed,n,kind", CASES)
def test_weighted_rules(seed, n, kind):
    x = make_stack(seed, n, 30, kind)
    rng = np.random.default_rng(seed + 100)
    w = rng.choice([0.5, 1.0, 2.0, 3.0], size=n)
    f = (n - 3) // 2
    close(run("median", x, f, weights=w).vector, ref_weighted_median(x, w))
    close(run("trimmed_mean", x, f, weights=w).vector, ref_weighted_trimmed(x, w, f))
    close(run("mean", x, f, weights=w).vector, (w[:, None] * x).sum(0) / w.sum())
    ref, chosen = ref_multikrum(x, f, n - f, w)
    res = run("multikrum", x, f, weights=w)
    close(res.vector, ref)
    # equal weights reduce to the unweighted rules
    close(run("median", x, f, weights=np.ones(n)).vector, ref_median(x))


def test_weight_floor_excludes_rows_and_keeps_indices():
    x = make_stack(3, 9, 20, "gauss")
    w = np.array([1.0, 0.1, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    res = run("median", x, 1, weights=w, weight_floor=0.5)
    kept = [0, 2, 3, 5, 6, 7, 8]
    assert res.selected == kept
    close(res.vector, ref_median(x[kept]))
    res = run("krum", x, 1, weights=w, weight_floor=0.5)
    assert res.scores[1] is None and res.scores[4] is None
    assert res.selected[0] in kept


@pytest.mark.parametrize("seed,n,kind", [(0, 7, "gauss"), (1, 11, "ties"), (2, 12, "dups"), (3, 16, "ties")])
def test_bulyan(seed, n, kind):
    x = make_stack(seed, n, 50, kind)
    f = (n - 3) // 4
    ref, chosen = ref_bulyan(x, f)
    res = run("bulyan", x, f)
    assert res.selected == chosen
    close(res.vector, ref)


@pytest.mark.parametrize("seed,n,kind", CASES[:4])
def test_centered_clipping(seed, n, kind):
    x = make_stack(seed, n, 40, kind)
    close(run("centered_clipping", x, 1, tau=0.5, iterations=3).vector, ref_cc(x, 0.5, 3, ref_median(x)))
    start = np.full(40, 0.25)
    got = run("centered_clipping", x, 1, tau=2.0, iterations=1, center=torch.tensor(start))
    close(got.vector, ref_cc(x, 2.0, 1, start))


@pytest.mark.parametrize("seed,n,kind", CASES[:4])
def test_centered_clipping_with_tau_from_the_round_matches_the_reference(seed, n, kind):
    """tau="auto": the median of the rows' distances to the coordinate median, then the plain iteration."""
    x = make_stack(seed, n, 40, kind)
    start = ref_median(x)
    tau = float(np.median(np.sqrt(((x - start) ** 2).sum(axis=1))))
    got = run("centered_clipping", x, 1, tau="auto", iterations=3)
    assert got.info["tau"] == pytest.approx(tau, rel=1e-12)
    close(got.vector, ref_cc(x, tau, 3, start))


def test_centered_clipping_with_tau_from_the_round_is_the_same_at_any_scale():
    """A fixed tau means something else for updates a thousand times smaller; "auto" scales with them, so one far
    row moves the result by about as much as a typical member, relative to the update size, at any scale."""
    rng = np.random.default_rng(7)
    honest = rng.normal(1.0, 0.3, size=(6, 50))
    far = np.full((1, 50), 1e4)
    x = np.vstack([honest, far])
    for scale in (1e-3, 1.0, 1e3):
        got = run("centered_clipping", x * scale, 2, tau="auto").vector.numpy()
        assert np.allclose(got / scale, run("centered_clipping", x, 2, tau="auto").vector.numpy(), rtol=1e-5)
        assert np.linalg.norm(got / scale - honest.mean(axis=0)) < np.linalg.norm(honest[0] - honest.mean(axis=0))
    fixed = run("centered_clipping", x * 1e-3, 2, tau=1.0).vector.numpy() / 1e-3  # tau far above the spread
    assert np.linalg.norm(fixed - honest.mean(axis=0)) > 50  # the far row dragged it out


def test_centered_clipping_with_most_rows_on_the_center_returns_it():
    x = np.zeros((5, 8))
    x[4] = 100.0
    got = run("centered_clipping", x, 1, tau="auto")
    assert np.array_equal(got.vector.numpy(), np.zeros(8)) and got.info["tau"] == 0.0


@pytest.mark.parametrize("seed,n,kind", CASES[:5])
def test_nnm_composes(seed, n, kind):
    x = make_stack(seed, n, 30, kind)
    f = (n - 3) // 4
    mixed = ref_nnm(x, f)
    close(run("nnm+mean", x, f).vector, mixed.mean(axis=0))
    close(run("median", x, f, nnm=True).vector, ref_median(mixed))
    close(run("nnm+krum", x, f).vector, ref_multikrum(mixed, f, 1)[0])


def test_large_offset_small_spread():
    rng = np.random.default_rng(5)
    x = 1e3 + 1e-3 * rng.normal(size=(10, 2000))
    f = 2
    t = torch.tensor(x, dtype=torch.float64)
    res = aggregate("krum", t, f)
    scores = ref_krum_scores(x, f)
    np.testing.assert_allclose([res.scores[i] for i in range(10)], [scores[i] for i in range(10)], rtol=1e-6)
    ref, chosen = ref_multikrum(x, f, 1)
    assert res.selected == chosen
    res = aggregate("multikrum", t, f)
    assert res.selected == ref_multikrum(x, f, 8)[1]
    np.testing.assert_allclose(aggregate("nnm+mean", t, f).vector.double().numpy(),
                               ref_nnm(x, f).mean(axis=0).astype(np.float32), rtol=1e-7)


@pytest.mark.parametrize("rule", sorted(RULES) + ["nnm+multikrum"])
def test_same_bytes_with_one_and_two_threads(rule):
    rng = np.random.default_rng(11)
    x = torch.tensor(rng.normal(size=(11, 150_001)), dtype=torch.float32)
    x[4] = x[2]
    before = torch.get_num_threads()
    try:
        outputs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            res = aggregate(rule, x, 2)
            outputs.append((res.vector.numpy().tobytes(), res.selected, res.scores))
    finally:
        torch.set_num_threads(before)
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize("n", list(range(1, 34)))
def test_sorting_network_sorts(n):
    x = torch.randint(-5, 6, (n, 257)).float()
    got = torch.stack(sorted_positions(x, tuple(range(n))))
    assert torch.equal(got, torch.sort(x, dim=0).values)
    mid = (n // 2,)
    assert len(network_for(n, mid)) <= len(network_for(n, tuple(range(n))))
    assert torch.equal(sorted_positions(x, mid)[0], torch.sort(x, dim=0).values[n // 2])


@pytest.mark.parametrize("rule,n,f", [("krum", 6, 2), ("multikrum", 4, 1), ("bulyan", 10, 2),
                                      ("median", 4, 2), ("trimmed_mean", 2, 1)])
def test_preconditions(rule, n, f):
    with pytest.raises(ValueError, match="needs n >="):
        aggregate(rule, torch.zeros(n, 5), f)


def test_rejects_bad_input():
    good = torch.zeros(5, 3)
    bad = good.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="rows \\[2\\]"):
        aggregate("mean", bad, 0)
    bad[2, 1] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        aggregate("median", bad, 0)
    for call in (lambda: aggregate("nope", good, 0), lambda: aggregate("mean", good, -1),
                 lambda: aggregate("mean", torch.zeros(5), 0), lambda: aggregate("mean", good, 0, weights=[1, 2]),
                 lambda: aggregate("mean", good, 0, weights=[0] * 5), lambda: aggregate("bulyan", good, 0, weights=[1] * 5),
                 lambda: aggregate("multikrum", torch.zeros(7, 3), 1, m=0),
                 lambda: aggregate("centered_clipping", good, 0, tau=-1.0),
                 lambda: aggregate("centered_clipping", good, 0, tau="automatic"),
                 lambda: aggregate("centered_clipping", good, 0, tau=True),
                 lambda: aggregate("mean", good.to(torch.int64), 0)):
        with pytest.raises(ValueError):
            call()


def test_krum_rejects_far_outliers():
    rng = np.random.default_rng(9)
    honest = rng.normal(size=(8, 100))
    attack = np.full((3, 100), 100.0)
    x = np.concatenate([honest, attack])
    for rule in ("krum", "multikrum", "bulyan", "median", "trimmed_mean", "nnm+trimmed_mean", "centered_clipping"):
        f = 2 if rule == "bulyan" else 3
        out = run(rule, x, f).vector.numpy()
        assert np.abs(out).max() < 5.0, rule
    assert set(run("multikrum", x, 3).selected) <= set(range(8))

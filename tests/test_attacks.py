"""Attack profiles: parsing, what each one sends, and that robust rules resist them where expected."""
from __future__ import annotations

import pytest
import torch

from crypto.wire import DecodeError
from swarm.aggregation import aggregate
from swarm.faults.attacks import ATTACKS, equivocation_pair, garbage_payload, parse_attack, stale_round
from swarm.round.compression import decode


def honest(n=6, d=50, seed=0):
    return [torch.randn(d, generator=torch.Generator().manual_seed(seed + i)) + 1.0 for i in range(n)]


def test_parse():
    assert parse_attack("scale:10").param == 10.0
    assert parse_attack("gaussian").param == 1.0
    assert parse_attack(" alie:1.5 ").name == "alie"
    assert parse_attack("label_flip").flag == "label_flip"
    for bad in ("nope", "scale:x", "sign_flip:2", "scale:inf"):
        with pytest.raises(ValueError):
            parse_attack(bad)
    assert set(ATTACKS) >= {"sign_flip", "scale", "gaussian", "zero", "alie", "ipm", "label_flip", "garbage",
                            "stale", "equivocate"}


def test_update_attacks():
    obs = honest()
    u = obs[0]
    assert torch.equal(parse_attack("sign_flip").apply(u), -u)
    assert torch.allclose(parse_attack("scale:-3").apply(u), -3 * u)
    assert torch.equal(parse_attack("zero").apply(u), torch.zeros_like(u))
    g1, g2 = parse_attack("gaussian:2", seed=1).apply(u), parse_attack("gaussian:2", seed=1).apply(u)
    assert torch.equal(g1, g2) and not torch.equal(g1, u)
    assert float((g1 - u).std()) == pytest.approx(2.0, rel=0.4)
    stack = torch.stack(obs).double()
    expected = stack.mean(0) + 1.5 * stack.std(0)
    assert torch.allclose(parse_attack("alie:1.5").apply(u, obs).double(), expected, atol=1e-6)
    assert torch.allclose(parse_attack("ipm:0.5").apply(u, obs).double(), -0.5 * stack.mean(0), atol=1e-6)
    with pytest.raises(ValueError):
        parse_attack("alie").apply(u)
    for flag in ("label_flip", "garbage", "stale", "equivocate"):
        assert torch.equal(parse_attack(flag).apply(u), u)


def test_behaviour_helpers():
    junk = garbage_payload(64, seed=3)
    assert len(junk) == 64 and junk == garbage_payload(64, seed=3) and junk != garbage_payload(64, seed=4)
    with pytest.raises(DecodeError):
        decode(junk, 50, 1 << 20)
    assert stale_round(5) == 4 and stale_round(0) == 0
    a, b = equivocation_pair(torch.ones(5))
    assert torch.equal(a, torch.ones(5)) and not torch.equal(a, b)


def test_robust_rules_resist_scaled_attackers():
    obs = honest(n=8)
    attackers = [parse_attack("scale:-100").apply(obs[0]) for _ in range(2)]
    stack = torch.stack(obs + attackers)
    honest_mean = torch.stack(obs).mean(0)
    mean_error = float((aggregate("mean", stack, 2).vector - honest_mean).norm())
    for rule in ("krum", "multikrum", "median", "trimmed_mean", "nnm+multikrum"):
        error = float((aggregate(rule, stack, 2).vector - honest_mean).norm())
        assert error < mean_error / 10, rule

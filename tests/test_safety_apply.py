"""Safety of the state transition and the gradient pool (issue 22, properties 4, 6, 7 and 9).

- A quarantined member is never aggregated: the aggregate with it equals the aggregate without it, bit for bit,
  and ``aggregated`` leaves it out (swarm/ledger/apply.py aggregate_round).
- Two different gradients from one member for one round are reported as equivocation (swarm/round/pool.py).
- ``apply`` refuses two gradients from one sender (swarm/ledger/apply.py).
- The fallback rule is the coordinate median, exactly, and ``rule_used`` says so.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from swarm.ledger.apply import (
    FALLBACK_RULE,
    InvalidEntry,
    RoundRules,
    aggregate_round,
    apply,
)
from swarm.ledger.state import PeerReputation, ReplicatedState, genesis_state
from swarm.round.gradient import Gradient
from swarm.round.pool import Equivocation, GradientPool

MEMBERS = ["m0", "m1", "m2", "m3", "m4"]
DIM = 64


def _state(quarantined: tuple[str, ...] = ()) -> ReplicatedState:
    g = torch.Generator().manual_seed(1)
    state = genesis_state(torch.randn(DIM, generator=g), MEMBERS, b"\x03" * 32)
    low = PeerReputation(quality=0.0, participation=0.0, consensus=0.0)  # score 0.1, below any floor used here
    table = tuple((peer, low if peer in quarantined else rep) for peer, rep in state.reputation)
    return ReplicatedState(0, state.params, state.momentum, table, state.parent_hash)


def _gradient(state: ReplicatedState, sender: str, vector: torch.Tensor, tag: bytes = b"") -> Gradient:
    raw = sender.encode() + tag + vector.numpy().tobytes()
    return Gradient(sender, state.round + 1, state.hash, hashlib.sha256(raw).digest(), raw, vector)


def _vectors(n: int, seed: int = 2) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(DIM, generator=g) for _ in range(n)]


# ------------------------------------------------------------------------------------------------ quarantine (4)

@pytest.mark.parametrize("rule,weighted", [("mean", True), ("mean", False), ("median", True), ("trimmed_mean", False)])
def test_safety_a_quarantined_member_is_never_aggregated(rule, weighted):
    state = _state(quarantined=("m2",))
    rules = RoundRules(f=1, rule=rule, reputation_weighted=weighted, reputation_floor=0.6)
    honest = {peer: v for peer, v in zip(("m0", "m1", "m3", "m4"), _vectors(4))}
    outlandish = torch.full((DIM,), 1e6)
    everyone = [_gradient(state, p, v) for p, v in honest.items()] + [_gradient(state, "m2", outlandish)]
    others = [g for g in everyone if g.sender != "m2"]

    with_it = aggregate_round(state, everyone, rules)
    without_it = aggregate_round(state, others, rules)
    assert with_it.quarantined == ("m2",)
    assert "m2" not in with_it.aggregated and "m2" in with_it.included
    assert torch.equal(with_it.params, without_it.params)  # bit-exact
    assert torch.equal(with_it.momentum, without_it.momentum)
    full = apply(state, everyone, rules)
    assert full.quarantined == ("m2",) and "m2" not in full.aggregated
    assert torch.equal(full.state.params, without_it.params)
    # The control: the same member at full reputation does move the aggregate.
    fresh = _state()
    trusted = aggregate_round(fresh, [_gradient(fresh, g.sender, g.vector) for g in everyone], rules)
    assert trusted.quarantined == () and "m2" in trusted.aggregated
    assert rule != "mean" or not torch.equal(trusted.params, without_it.params)


def test_safety_when_everyone_is_quarantined_all_are_aggregated_and_none_is_reported_quarantined():
    state = _state(quarantined=tuple(MEMBERS))
    rules = RoundRules(f=1, rule="mean", reputation_weighted=False)
    grads = [_gradient(state, p, v) for p, v in zip(MEMBERS, _vectors(5))]
    result = aggregate_round(state, grads, rules)
    assert result.quarantined == () and result.aggregated == tuple(MEMBERS)


# ------------------------------------------------------------------------------------------------ duplicates (7)

def test_safety_apply_refuses_two_gradients_from_one_sender():
    state = _state()
    rules = RoundRules(f=1, rule="mean", reputation_weighted=False)
    a, b, c = _vectors(3)
    twice = [_gradient(state, "m0", a), _gradient(state, "m0", b, tag=b"2"), _gradient(state, "m1", c)]
    with pytest.raises(InvalidEntry, match="two gradients from one sender"):
        apply(state, twice, rules)
    same_bytes = [_gradient(state, "m0", a), _gradient(state, "m0", a), _gradient(state, "m1", c)]
    with pytest.raises(InvalidEntry, match="two gradients from one sender"):
        aggregate_round(state, same_bytes, rules)
    apply(state, [twice[0], twice[2]], rules)  # the control


# ------------------------------------------------------------------------------------------------ fallback (9)

@pytest.mark.parametrize("n", [3, 4])
def test_safety_the_fallback_rule_is_the_exact_coordinate_median(n):
    """Krum needs n >= 2f+3 = 5 with f = 1: with 3 or 4 gradients every node uses the coordinate median."""
    state = _state()
    rules = RoundRules(f=1, rule="krum", reputation_weighted=False, server_lr=1.0)
    vectors = _vectors(n, seed=7)
    vectors[0] = vectors[0] * 100  # an outlier, so the mean, a trimmed mean or one row all differ from the median
    grads = [_gradient(state, p, v) for p, v in zip(MEMBERS, vectors)]
    result = apply(state, grads, rules)
    assert FALLBACK_RULE == "median" and result.rule_used == "median"
    median = np.median(torch.stack(vectors).numpy().astype(np.float64), axis=0).astype(np.float32)
    expected = (state.params.to(torch.float64) - torch.from_numpy(median).to(torch.float64)).to(torch.float32)
    assert torch.equal(result.state.params, expected)
    mean = torch.stack(vectors).to(torch.float64).mean(0).to(torch.float32)
    assert not torch.equal(result.state.params, (state.params.double() - mean.double()).float())
    # The control: with enough gradients Krum itself runs and says so.
    five = [_gradient(state, p, v) for p, v in zip(MEMBERS, _vectors(5, seed=8))]
    assert apply(state, five, rules).rule_used == "krum"


# ------------------------------------------------------------------------------------------------ equivocation (6)

def test_safety_two_different_gradients_from_one_member_for_one_round_are_equivocation():
    state = _state()
    pool = GradientPool()
    a, b, c = _vectors(3)
    first, second = _gradient(state, "m1", a), _gradient(state, "m1", b)
    other = _gradient(state, "m2", c)
    assert pool.add(first) is None
    assert pool.add(first) is None  # the same bytes again: not equivocation
    assert pool.add(other) is None
    evidence = pool.add(second)
    assert evidence == Equivocation("m1", 1, first.raw, second.raw)
    assert pool.for_round(1) == [first, other]  # the first one stays, the second is not kept
    assert pool.by_digest(second.digest) is None and pool.by_digest(first.digest) is first
    # The same sender in the next round is a new slot, not equivocation.
    nxt = Gradient("m1", 2, state.hash, b"\x09" * 32, b"next", b.clone())
    assert pool.add(nxt) is None

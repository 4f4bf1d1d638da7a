"""Every selectable rule at every swarm size the genesis allows (issue 17): through ``apply`` at n = 17, 33 and 64,
plain, reputation-weighted and with nearest-neighbour mixing, with f = (n-1)//3 members sending a far-off
update. No rule may stall the swarm by raising (a rule whose precondition fails falls back to the median, which
itself never raises, down to one gradient), and every robust rule keeps the update inside the honest members'
spread in every coordinate, where the plain mean is dragged out of it."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from swarm.aggregation import RULES
from swarm.aggregation.median import coordinate_median
from swarm.ledger.apply import FALLBACK_RULE, RoundRules, apply
from swarm.ledger.state import genesis_state
from swarm.round.gradient import Gradient

DIM = 64
ATTACK = 50.0  # every coordinate of an attacker's update; the honest ones are 1 +- 0.1 noise
ROBUST = sorted(set(RULES) - {"mean"})


def _round(n: int, attackers: int, below_full: int = 0, seed: int = 0):
    """A genesis state of ``n`` members (the first ``below_full`` a little under full reputation, so weights are
    not all equal) and the round's gradients: the last ``attackers`` members send ATTACK everywhere."""
    members = [f"m{i:02d}" for i in range(n)]
    state = genesis_state(torch.zeros(DIM), members, b"\0" * 32)
    if below_full:
        table = dict(state.reputation)
        for m in members[:below_full]:
            table[m] = replace(table[m], quality=0.9)
        state = replace(state, reputation=tuple(sorted(table.items())), _hash=None)
    generator = torch.Generator().manual_seed(seed)
    honest = 1.0 + 0.1 * torch.randn(n - attackers, DIM, generator=generator)
    rows = torch.cat([honest, torch.full((attackers, DIM), ATTACK)])
    gradients = [Gradient(m, 1, state.hash, bytes([i]) * 32, b"", rows[i].clone()) for i, m in enumerate(members)]
    return state, gradients, honest


def _update(state, applied) -> torch.Tensor:
    """The aggregate the rule produced, read back from the new parameters (server lr 1, no momentum)."""
    return (state.params - applied.state.params).abs()


@pytest.mark.parametrize("n", [17, 33, 64])
@pytest.mark.parametrize("rule", ROBUST)
@pytest.mark.parametrize("variant", ["plain", "weighted", "nnm"])
def test_every_robust_rule_keeps_the_update_inside_the_honest_spread(n, rule, variant):
    f = (n - 1) // 3
    state, gradients, honest = _round(n, f, below_full=3 if variant == "weighted" else 0, seed=n)
    rules = RoundRules(f=f, rule=rule, reputation_weighted=variant == "weighted", nnm=variant == "nnm")
    applied = apply(state, gradients, rules)
    assert applied.rule_used in (rule, FALLBACK_RULE)
    update = _update(state, applied)
    assert torch.isfinite(update).all()
    low, high = honest.min(dim=0).values, honest.max(dim=0).values
    assert (update >= low - 1e-5).all() and (update <= high + 1e-5).all(), (
        f"{applied.rule_used} left the honest spread: max {update.max():.3f} against {high.max():.3f}")


@pytest.mark.parametrize("n", [17, 33, 64])
def test_the_plain_mean_is_dragged_out_of_the_honest_spread(n):
    """The control: the attack above does move an unprotected average, so the robust rules' test means something."""
    f = (n - 1) // 3
    state, gradients, honest = _round(n, f, seed=n)
    update = _update(state, apply(state, gradients, RoundRules(f=f, rule="mean")))
    assert (update > honest.max(dim=0).values + 1.0).all()


@pytest.mark.parametrize("n", [1, 2, 17, 64])
@pytest.mark.parametrize("weighted", [False, True])
def test_a_rule_whose_precondition_fails_falls_back_to_the_median_without_raising(n, weighted):
    """Bulyan needs n >= 4f+3 and takes no weights, so with f = (n-1)//3 it never runs at these sizes: the median
    stands in, at any n down to a lone gradient, weighted or not."""
    f = (n - 1) // 3
    state, gradients, _honest = _round(n, 0, below_full=min(n, 2) if weighted else 0, seed=n)
    applied = apply(state, gradients, RoundRules(f=f, rule="bulyan", reputation_weighted=weighted))
    assert applied.rule_used == FALLBACK_RULE
    assert torch.isfinite(applied.state.params).all()
    if not weighted:
        stack = torch.stack([g.vector for g in gradients])
        assert torch.equal(state.params - applied.state.params, coordinate_median(stack).to(torch.float32))

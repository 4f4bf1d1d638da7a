"""apply() scores every row against the coordinate median of every row; when the rule has just computed exactly
that median (the median rule, centered clipping's starting center) it is reused, and nothing changes but the
work: the scores and the state are the same as with the median computed again."""
from __future__ import annotations

import pytest
import torch

from swarm.ledger import apply as apply_module
from swarm.ledger.apply import RoundRules, _distances_and_cosines, aggregate_round, reference
from swarm.ledger.state import PeerReputation, genesis_state
from swarm.round.gradient import Gradient

MEMBERS = ["m0", "m1", "m2", "m3", "m4"]
DIM = 257


def _gradients(state, scale=(1.0, 1.0, 1.0, 1.0, 6.0)):
    generator = torch.Generator().manual_seed(11)
    return [Gradient(m, 1, state.hash, b"", b"", torch.randn(DIM, generator=generator) * s)
            for m, s in zip(MEMBERS, scale)]


def _expected_geometry(gradients):
    every = torch.stack([g.vector for g in sorted(gradients, key=lambda g: g.sender)])
    return dict(zip(sorted(MEMBERS), _distances_and_cosines(every, reference(every))))


@pytest.mark.parametrize("rule,options", [("centered_clipping", {"tau": "auto"}), ("centered_clipping", {}),
                                          ("median", {})])
def test_the_reused_median_scores_exactly_as_the_recomputed_one_and_is_not_computed_twice(rule, options,
                                                                                          monkeypatch):
    state = genesis_state(torch.zeros(DIM), MEMBERS, b"\0" * 32)
    gradients = _gradients(state)
    expected = _expected_geometry(gradients)
    calls = []
    monkeypatch.setattr(apply_module, "reference", lambda every: calls.append(1) or reference(every))
    aggregated = aggregate_round(state, gradients, RoundRules(f=1, rule=rule, options=options))
    assert aggregated.geometry == expected
    assert calls == []  # the rule's own median was used


def test_with_a_quarantined_member_the_median_of_every_row_is_computed_again(monkeypatch):
    state = genesis_state(torch.zeros(DIM), MEMBERS, b"\0" * 32)
    table = tuple((p, PeerReputation(quality=0.0, participation=0.0, consensus=0.0) if p == "m4" else rep)
                  for p, rep in state.reputation)
    state = type(state)(state.round, state.params, state.momentum, table, state.parent_hash)
    gradients = _gradients(state)
    expected = _expected_geometry(gradients)
    calls = []
    monkeypatch.setattr(apply_module, "reference", lambda every: calls.append(1) or reference(every))
    aggregated = aggregate_round(state, gradients, RoundRules(f=1, rule="centered_clipping",
                                                              options={"tau": "auto"}))
    assert aggregated.quarantined == ("m4",)
    assert aggregated.geometry == expected  # m4 is scored against the median of all five rows, itself included
    assert calls == [1]  # the rule saw four rows: its median is not the reference


def test_centered_clipping_reports_the_median_it_started_from():
    from swarm.aggregation import aggregate
    from swarm.aggregation.median import coordinate_median
    stack = torch.randn(6, 33, generator=torch.Generator().manual_seed(2))
    result = aggregate("centered_clipping", stack, 1, tau="auto")
    assert torch.equal(result.info["median"], coordinate_median(stack).to(torch.float32))
    given = aggregate("centered_clipping", stack, 1, center=torch.zeros(33))
    assert "median" not in given.info  # another center: nothing to reuse

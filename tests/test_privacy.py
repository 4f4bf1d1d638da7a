"""Local differential privacy at the update (swarm/training/privacy.py): clipping, the noise's scale, the epsilon
against Opacus' own accountant, the budget stop on a built node's contributor, the accountant across a restart
(store meta), and the genesis / node override checks."""
from __future__ import annotations

import asyncio
import logging
import math
from pathlib import Path

import pytest
import torch

from swarm.config import (
    ConfigError,
    Genesis,
    NodeConfig,
    PrivacyOverride,
    PrivacySpec,
    genesis_to_dict,
)
from swarm.training import privacy as dp

SETTINGS = dp.PrivacySettings(clip_norm=0.5, noise_multiplier=1.2, delta=1e-5, epsilon_budget=8.0)


def _genesis(**privacy) -> Genesis:
    return Genesis(swarm_id="t", members=[], privacy=PrivacySpec(**privacy))


def _config(**override) -> NodeConfig:
    return NodeConfig(identity="k", genesis="g", privacy=PrivacyOverride(**override))


# ------------------------------------------------------------------------------------------------ clip and noise
@pytest.mark.parametrize("scale", [1e-3, 0.3, 1.0, 7.0, 1e4])
def test_clipping_bounds_the_norm_and_keeps_the_direction(scale):
    g = torch.Generator().manual_seed(1)
    update = torch.randn(10_000, generator=g) * scale
    clipped = dp.clip(update, 2.0)
    norm = float(torch.linalg.vector_norm(clipped))
    assert norm <= 2.0
    before = float(torch.linalg.vector_norm(update))
    if before <= 2.0:
        assert torch.equal(clipped, update)
    else:
        assert norm == pytest.approx(2.0, rel=1e-5)
        assert float(torch.nn.functional.cosine_similarity(clipped, update, dim=0)) == pytest.approx(1.0, abs=1e-6)


def test_clipping_refuses_a_non_finite_update():
    with pytest.raises(ValueError):
        dp.clip(torch.tensor([1.0, math.inf]), 1.0)


def test_noise_has_the_configured_scale_and_is_unpredictable():
    d, std = 200_000, SETTINGS.noise_std
    a = dp.add_noise(torch.zeros(d), std, dp.new_generator())
    b = dp.add_noise(torch.zeros(d), std, dp.new_generator())
    # sample std of 200k Gaussians is within ~0.5% of the true one; allow 3%
    assert float(a.std()) == pytest.approx(std, rel=0.03)
    assert abs(float(a.mean())) < 5 * std / math.sqrt(d)
    # ||noise||^2 / std^2 is chi-square with d degrees of freedom: mean d, sd sqrt(2d)
    chi2 = float((a.double() ** 2).sum()) / std ** 2
    assert abs(chi2 - d) < 6 * math.sqrt(2 * d)
    # the fourth moment of a Gaussian: kurtosis 3
    kurtosis = float(((a.double() / a.double().std()) ** 4).mean())
    assert kurtosis == pytest.approx(3.0, abs=0.1)
    # two generators seeded from the OS's entropy: independent draws (correlation ~ N(0, 1/d))
    assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 6 / math.sqrt(d)


def test_privatize_clips_then_adds_noise_of_std_sigma_c():
    guard = dp.PrivacyGuard(SETTINGS, rate=0.01)
    update = torch.full((100_000,), 3.0)  # norm ~949: clipped to 0.5
    released = guard.privatize(update)
    noise = released - dp.clip(update, SETTINGS.clip_norm)
    assert float(noise.std()) == pytest.approx(SETTINGS.noise_std, rel=0.03)
    # the clipped signal survives in the mean: every coordinate carries 0.5 / sqrt(d)
    assert float(released.mean()) == pytest.approx(0.5 / math.sqrt(100_000), abs=6 * SETTINGS.noise_std / math.sqrt(1e5))


# ------------------------------------------------------------------------------------------------ accounting
def test_sample_rate():
    assert dp.sample_rate(64, 10, 1, 1250) == pytest.approx(1 - (1 - 64 / 1250) ** 10)
    assert dp.sample_rate(32, 1, 2, 1000) == pytest.approx(1 - (1 - 0.032) ** 2)
    assert dp.sample_rate(5000, 1, 1, 100) == 1.0
    with pytest.raises(ValueError):
        dp.sample_rate(64, 0, 1, 100)


def test_epsilon_equals_opacus_rdp_accountant_for_the_same_steps():
    from opacus.accountants import RDPAccountant

    rate = dp.sample_rate(64, 10, 1, 1250)  # 0.41: a round touches many records; epsilon climbs fast
    saved = []
    settings = dp.PrivacySettings(clip_norm=0.5, noise_multiplier=1.2, delta=1e-5, epsilon_budget=1000.0)
    guard = dp.PrivacyGuard(settings, rate, persist=saved.append)
    reference = RDPAccountant()
    for step in range(1, 11):
        guard.privatize(torch.randn(100))
        # record-level sensitivity of a clipped update is 2C: the library is fed sigma / 2 (module docstring)
        reference.step(noise_multiplier=SETTINGS.noise_multiplier / 2, sample_rate=rate)
        assert guard.epsilon == pytest.approx(reference.get_epsilon(SETTINGS.delta), rel=1e-12)
        assert guard.rounds == step
    assert saved[-1] == [[SETTINGS.noise_multiplier / 2, rate, 10]]
    # a guard restored from the saved history reports the same
    assert dp.PrivacyGuard(settings, rate, saved[-1]).epsilon == pytest.approx(guard.epsilon, rel=1e-12)


def test_the_budget_is_checked_before_a_round_would_exceed_it(caplog):
    settings = dp.PrivacySettings(clip_norm=1.0, noise_multiplier=2.0, delta=1e-5, epsilon_budget=2.0)
    guard = dp.PrivacyGuard(settings, rate=0.05)
    released = 0
    with caplog.at_level(logging.WARNING, logger="swarm.privacy"):
        for _ in range(1000):
            if not guard.may_contribute():
                continue
            guard.privatize(torch.zeros(10))
            released += 1
    assert 0 < released < 1000
    assert guard.exhausted and guard.epsilon <= settings.epsilon_budget < guard.epsilon_after_next()
    assert len([r for r in caplog.records if "privacy budget reached" in r.message]) == 1
    with pytest.raises(dp.PrivacyBudgetExhausted):
        guard.privatize(torch.zeros(10))


# ------------------------------------------------------------------------------------------------ config
def test_privacy_is_off_by_default_and_left_out_of_the_hashed_genesis():
    assert "privacy" not in genesis_to_dict(Genesis(swarm_id="t", members=[]))
    assert "privacy" in genesis_to_dict(_genesis(enabled=True))
    assert dp.settings_of(Genesis(swarm_id="t", members=[]), _config()) is None


def test_stricter_node_override_is_taken():
    s = dp.settings_of(_genesis(enabled=True, clip_norm=1.0, noise_multiplier=1.0, delta=1e-5, epsilon_budget=8),
                       _config(clip_norm=0.5, noise_multiplier=2.0, delta=1e-6, epsilon_budget=4))
    assert s == dp.PrivacySettings(clip_norm=0.5, noise_multiplier=2.0, delta=1e-6, epsilon_budget=4)


@pytest.mark.parametrize("key,value", [("clip_norm", 2.0), ("noise_multiplier", 0.5), ("delta", 1e-4),
                                       ("epsilon_budget", 9.0)])
def test_a_looser_node_override_is_refused_naming_the_key(key, value):
    with pytest.raises(ConfigError) as caught:
        dp.settings_of(_genesis(enabled=True), _config(**{key: value}))
    assert caught.value.key == f"privacy.{key}" and "looser" in str(caught.value)


def test_an_override_without_privacy_in_the_genesis_is_refused():
    with pytest.raises(ConfigError) as caught:
        dp.settings_of(_genesis(), _config(noise_multiplier=3.0))
    assert caught.value.key == "privacy.noise_multiplier"


@pytest.mark.parametrize("key,value", [("noise_multiplier", 0.01), ("noise_multiplier", -1), ("clip_norm", 0.0),
                                       ("delta", 0.5), ("epsilon_budget", 0.0), ("delta", 0.0)])
def test_out_of_range_genesis_values_are_refused(key, value):
    from swarm.config_schema import build
    with pytest.raises(ConfigError) as caught:
        build(Genesis, {"swarm_id": "t", "members": [], "privacy": {"enabled": True, key: value}}, "genesis.yaml")
    assert caught.value.key == f"privacy.{key}"


def test_delta_must_be_below_one_over_the_records():
    with pytest.raises(ConfigError) as caught:
        dp.check_delta(dp.PrivacySettings(1.0, 1.0, 1e-3, 8.0), records=2000)
    assert caught.value.key == "privacy.delta"
    dp.check_delta(dp.PrivacySettings(1.0, 1.0, 1e-4, 8.0), records=2000)


# ------------------------------------------------------------------------------------------------ a built node
def _node(folder, privacy: dict, override: dict | None = None, build_twice_from: object = None):
    import yaml

    from crypto.keys import load_key
    from swarm.config import load_genesis, load_node_config
    from swarm.node.node import Node
    from swarm.ops.cluster import ClusterOptions, init_cluster

    if build_twice_from is None:
        (spec,) = init_cluster(folder, ClusterOptions(nodes=1, dataset="digits", local_steps=2, batch_size=16))
        path = spec.config_path
        config = load_node_config(path)
        genesis_path = Path(config.genesis)
        genesis = yaml.safe_load(genesis_path.read_text())
        genesis["privacy"] = privacy
        genesis_path.write_text(yaml.safe_dump(genesis))
        if override:
            node_yaml = yaml.safe_load(path.read_text())
            node_yaml["privacy"] = override
            path.write_text(yaml.safe_dump(node_yaml))
    else:
        path = build_twice_from
    config = load_node_config(path)
    return Node(config, load_genesis(config.genesis), load_key(config.identity)), path


def _contribute(node, rounds, kept=None) -> int:
    """Drive the node's contributor for ``rounds`` on its (genesis) state; count the updates it pushed (and collect
    the gradients it kept in ``kept``)."""
    pushed = []

    async def push(raw, to=None):
        pushed.append(raw)

    node.contributor._push = push

    async def drive():
        for r in rounds:
            node.pool.advance(r)
            await node.contributor.contribute(r, node.state, [], lambda: True, lambda: None)
            if kept is not None:
                kept.extend(node.pool.for_round(r))
    asyncio.run(drive())
    return len(pushed)


def test_a_node_stops_contributing_at_its_budget_and_says_so(tmp_path, caplog):
    from swarm.ops.api import privacy_view
    from swarm.ops.metrics import render_node_metrics

    # digits: ~1437 training records for one node; batch 16 x 2 steps: q ~ 0.022; sigma 2, budget 1.25: 2 rounds
    node, _ = _node(tmp_path, {"enabled": True, "clip_norm": 0.1, "noise_multiplier": 2.0, "delta": 1e-5,
                               "epsilon_budget": 1.25})
    try:
        guard = node.contributor.privacy
        limit = 0
        trial = dp.accountant()
        while limit < 10:  # rounds that fit the budget, by Opacus itself
            trial.step(noise_multiplier=1.0, sample_rate=guard.rate)
            if trial.get_epsilon(1e-5) > 1.25:
                break
            limit += 1
        assert 1 <= limit < 10, limit
        with caplog.at_level(logging.WARNING, logger="swarm.privacy"):
            kept = []
            pushed = _contribute(node, range(1, limit + 4), kept)
        assert pushed == limit
        assert sum("privacy budget reached" in r.message for r in caplog.records) == 1
        view = privacy_view(node)
        assert view["exhausted"] and view["rounds"] == limit and view["withheld_rounds"] == 3
        assert view["epsilon"] <= view["budget"] == 1.25 and view["delta"] == 1e-5
        text = render_node_metrics(node)
        assert f"swarm_privacy_epsilon {view['epsilon']!r}" in text
        assert "swarm_privacy_budget_exhausted 1" in text
        # what was pushed is the noisy update: far from the clipped norm (0.1), about sigma*C*sqrt(d)
        assert len(kept) == limit
        for gradient in kept:
            assert float(torch.linalg.vector_norm(gradient.vector.float())) > 10 * 0.1
    finally:
        node.close()


def test_the_accountant_survives_a_restart(tmp_path):
    node, path = _node(tmp_path, {"enabled": True, "noise_multiplier": 1.5, "epsilon_budget": 50.0})
    try:
        assert _contribute(node, [1, 2, 3]) == 3
        spent = node.contributor.privacy.epsilon
        assert spent > 0
    finally:
        node.close()
    again, _ = _node(tmp_path, {}, build_twice_from=path)
    try:
        guard = again.contributor.privacy
        assert guard.rounds == 3 and guard.epsilon == pytest.approx(spent, rel=1e-12)
        assert again.metrics.privacy.epsilon == pytest.approx(spent, rel=1e-12)
        assert _contribute(again, [4]) == 1 and guard.rounds == 4 and guard.epsilon > spent
    finally:
        again.close()


def test_a_node_with_a_looser_override_is_refused_at_start(tmp_path):
    with pytest.raises(ConfigError) as caught:
        _node(tmp_path, {"enabled": True, "noise_multiplier": 1.0}, override={"noise_multiplier": 0.8})
    assert caught.value.key == "privacy.noise_multiplier"


def test_swarm_status_shows_the_privacy_spent():
    from rich.console import Console

    from cli.status import render_status

    status = {"name": "node00", "peer_id": "x" * 20, "swarm_id": "t", "round": 5, "term": 1, "role": "leader",
              "leader_name": "node00", "n": 4, "f": 1, "quorum": 3, "rule": "median", "loss": None, "accuracy": None,
              "state_hash": "ab" * 32, "uptime_s": 3.0, "peers": [],
              "privacy": {"epsilon": 1.234, "delta": 1e-5, "budget": 8.0, "rounds": 12, "exhausted": False}}
    console = Console(record=True, width=200)
    console.print(render_status(status))
    assert "epsilon 1.234 of 8 at delta 1e-05, 12 rounds" in console.export_text()
    status["privacy"]["exhausted"] = True
    console.print(render_status(status))
    assert "budget reached, not contributing" in console.export_text()

"""Committed reputation: honest members stay trusted, an outlier sinks under the floor, absentees lose participation,
every member's quality is scored on equal footing whether or not it was aggregated, reputation decides who is
aggregated but not how much, a quarantined member climbs back slowly, and a free rider's empty update costs quality."""
from swarm.ledger import reputation
from swarm.ledger.reputation import RoundObservation, is_quarantined, score
from swarm.ledger.state import PeerReputation

PEERS = ("a", "b", "c", "d")


def start():
    return tuple((p, PeerReputation()) for p in PEERS)


def test_outlier_is_quarantined_within_a_few_rounds_and_honest_peers_are_not():
    table = start()
    rounds_to_quarantine = None
    for r in range(1, 20):
        aggregated = {"a", "b", "c"} if rounds_to_quarantine is None else {"a", "b", "c"}
        obs = RoundObservation(included=frozenset(PEERS), aggregated=frozenset(aggregated),
                               distances={"a": 1.0, "b": 1.1, "c": 0.9, "d": 30.0},
                               cosines={"a": 0.8, "b": 0.7, "c": 0.9, "d": 0.1},
                               certificate_signers=frozenset(PEERS))
        table = reputation.update(table, obs)
        if rounds_to_quarantine is None and is_quarantined(dict(table)["d"], 0.6):
            rounds_to_quarantine = r
    assert rounds_to_quarantine is not None and rounds_to_quarantine <= 6
    for peer in "abc":
        assert score(dict(table)[peer]) > 0.95
    assert 0.1 <= score(dict(table)["d"]) < 0.6


def test_far_but_selected_gradient_gets_lower_quality_than_close_ones():
    obs = RoundObservation(included=frozenset(PEERS), aggregated=frozenset(PEERS),
                           distances={"a": 1.0, "b": 1.0, "c": 1.0, "d": 8.0},
                           cosines={p: 0.9 for p in PEERS}, certificate_signers=None)
    table = dict(reputation.update(start(), obs))
    assert table["d"].quality < table["a"].quality == 1.0


def test_gradient_pointing_away_from_the_aggregate_gets_zero_quality_even_when_near():
    obs = RoundObservation(included=frozenset(PEERS), aggregated=frozenset(PEERS),
                           distances={p: 1.0 for p in PEERS}, cosines={"a": 0.6, "b": 0.5, "c": 0.7, "d": -0.9},
                           certificate_signers=None)
    table = dict(reputation.update(start(), obs))
    assert table["d"].quality == 0.7  # one EMA step from 1.0 towards 0
    assert table["a"].quality == table["b"].quality == 1.0  # honest spread within the slack costs nothing


def test_absent_member_loses_participation_and_consensus():
    obs = RoundObservation(included=frozenset("abc"), aggregated=frozenset("abc"),
                           distances={"a": 1.0, "b": 1.0, "c": 1.0}, cosines={p: 0.5 for p in "abc"},
                           certificate_signers=frozenset("abc"))
    table = dict(reputation.update(start(), obs))
    assert table["d"].participation < 1.0 and table["d"].consensus < 1.0
    assert table["d"].quality == 1.0  # absence is not a bad gradient: quality is left as it was
    assert table["d"].rounds_included == 0 and table["a"].rounds_included == 1


def test_quarantined_member_is_still_scored_and_can_recover():
    table = (("a", PeerReputation()), ("b", PeerReputation()), ("c", PeerReputation()),
             ("d", PeerReputation(quality=0.0)))
    obs = RoundObservation(included=frozenset(PEERS), aggregated=frozenset("abc"),
                           distances={p: 1.0 for p in PEERS}, cosines={p: 0.8 for p in PEERS}, certificate_signers=None)
    for _ in range(10):
        table = reputation.update(table, obs)
    assert dict(table)["d"].quality > 0.95


def test_convicted_member_is_penalised_and_score_is_clamped():
    obs = RoundObservation(included=frozenset(PEERS), aggregated=frozenset(PEERS),
                           distances={p: 1.0 for p in PEERS}, cosines={p: 0.5 for p in PEERS},
                           certificate_signers=None, convicted=frozenset("d"))
    table = start()
    for _ in range(5):
        table = reputation.update(table, obs)
    assert dict(table)["d"].penalties == 5
    assert score(dict(table)["d"]) == 0.1
    assert score(PeerReputation()) == 1.0


def test_round_geometry_matches_a_float64_reference():
    """Distance and cosine of each row to a target (the round's reference) and the row's norm, the quality inputs,
    computed in chunks."""
    import torch

    from swarm.ledger.apply import GEOMETRY_CHUNK, _distances_and_cosines
    gen = torch.Generator().manual_seed(5)
    d = 3 * GEOMETRY_CHUNK + 17  # a ragged last chunk
    rows = [torch.randn(d, generator=gen) for _ in range(3)] + [torch.zeros(d)]
    target = torch.randn(d, generator=gen)
    got = _distances_and_cosines(rows, target)
    for row, (distance, cosine, norm) in zip(rows, got):
        a, b = row.double(), target.double()
        assert abs(norm - float(a.norm())) <= 1e-12 * max(1.0, float(a.norm()))
        assert abs(distance - float((a - b).norm())) <= 1e-12 * float((a - b).norm())
        expected = float(a @ b / (a.norm() * b.norm())) if float(a.norm()) > 0 else 0.0
        assert abs(cosine - expected) <= 1e-12
    assert got[3][1] == 0.0  # a zero row has no direction


def test_quarantined_member_is_scored_like_the_aggregated_ones():
    """The same geometry gives the same quality whether a member was aggregated or not: quality does not look at
    who the rule selected."""
    table = (("a", PeerReputation()), ("b", PeerReputation()), ("c", PeerReputation()),
             ("d", PeerReputation(quality=0.1)))
    geometry = {"distances": {"a": 1.0, "b": 1.2, "c": 0.8, "d": 1.9},
                "cosines": {"a": 0.4, "b": 0.3, "c": 0.5, "d": 0.05}}
    out = {}
    for aggregated in (frozenset("abc"), frozenset(PEERS)):
        obs = RoundObservation(included=frozenset(PEERS), aggregated=aggregated, certificate_signers=None, **geometry)
        out[aggregated] = dict(reputation.update(table, obs))["d"].quality
    assert out[frozenset("abc")] == out[frozenset(PEERS)] == 0.7 * 0.1 + 0.3


def _noise_round(gen, d, shared_scale, noise):
    import torch
    shared = torch.randn(d, generator=gen) * shared_scale
    return [shared + torch.randn(d, generator=gen) * sigma for sigma in noise]


def _gradients(state, round_, rows):
    from swarm.round.gradient import Gradient
    return [Gradient(p, round_, state.hash, b"", b"", v) for p, v in zip(PEERS, rows)]


def test_noise_dominated_honest_rounds_quarantine_nobody_through_apply():
    """Late in training the shared gradient is small next to each member's own noise. Through the real apply(),
    with quarantine on, 300 such rounds (noise levels 1, 1, 1.5, 2.5) leave every member over the floor. Scored
    against the aggregate (which leaves quarantined members out), the noisiest member fell under it and stayed."""
    import torch

    from swarm.ledger.apply import RoundRules, apply
    from swarm.ledger.state import genesis_state
    gen = torch.Generator().manual_seed(7)
    d = 2000
    state = genesis_state(torch.zeros(d), list(PEERS), b"\0" * 32)
    rules = RoundRules(f=1, rule="median")
    lowest = 1.0
    for r in range(1, 301):
        rows = _noise_round(gen, d, 0.05, (1.0, 1.0, 1.5, 2.5))
        applied = apply(state, _gradients(state, r, rows), rules, certificate_signers=frozenset(PEERS))
        state = applied.state
        assert not applied.quarantined, (r, applied.quarantined)
        lowest = min(lowest, min(score(rep) for _, rep in state.reputation))
    assert lowest > 0.7


def test_attackers_are_still_quarantined_within_six_rounds_and_stay_out_through_apply():
    """Early in training (the shared gradient dominates): sign flip, scale 10, IPM, big Gaussian noise and a zero
    (free-rider) update from one of four members are quarantined within six rounds and stay out; the honest
    members never are."""
    import torch

    from swarm.faults.attacks import parse_attack
    from swarm.ledger.apply import RoundRules, apply
    from swarm.ledger.state import genesis_state
    d = 2000
    for name in ("sign_flip", "scale:10", "ipm:0.5", "gaussian:5", "zero"):
        gen = torch.Generator().manual_seed(3)
        attack = parse_attack(name, seed=1)
        rng = torch.Generator().manual_seed(11)
        state = genesis_state(torch.zeros(d), list(PEERS), b"\0" * 32)
        rules = RoundRules(f=1, rule="median")
        caught = None
        for r in range(1, 31):
            rows = _noise_round(gen, d, 1.0, (0.5, 0.5, 0.5, 0.5))
            rows[3] = attack.apply(rows[3], observed=rows[:3], rng=rng)
            applied = apply(state, _gradients(state, r, rows), rules, certificate_signers=frozenset(PEERS))
            state = applied.state
            assert set(applied.quarantined) <= {"d"}, (name, r, applied.quarantined)
            if caught is None and "d" in applied.quarantined:
                caught = r
            if caught is not None:
                assert "d" in applied.quarantined, (name, r)  # once out, out for good
        assert caught is not None and caught <= 7, (name, caught)  # under the floor after round 6: out in round 7


def test_a_slightly_lower_reputation_does_not_drop_a_member_from_the_aggregate():
    """Reputation decides who is aggregated, not how much: a member over the floor counts fully. A reputation-
    weighted median of four rows never takes the lightest row's values, so a member whose score dipped to 0.95
    was left out of the model as if quarantined; its model then fitted its shard less, its updates grew, and it
    sank further."""
    import dataclasses

    import torch

    from swarm.aggregation.median import coordinate_median
    from swarm.ledger.apply import RoundRules, aggregate_round
    from swarm.ledger.state import genesis_state
    gen = torch.Generator().manual_seed(5)
    d = 500
    state = genesis_state(torch.zeros(d), list(PEERS), b"\0" * 32)
    table = tuple((p, rep if p != "d" else PeerReputation(quality=0.9)) for p, rep in state.reputation)
    state = dataclasses.replace(state, reputation=table)
    rows = _noise_round(gen, d, 0.1, (1.0, 1.0, 1.0, 1.0))
    got = aggregate_round(state, _gradients(state, 1, rows), RoundRules(f=1, rule="median"))
    assert not got.quarantined and set(got.aggregated) == set(PEERS)
    expected = -coordinate_median(torch.stack(rows)).to(torch.float32)  # server lr 1: params = 0 - aggregate
    assert torch.equal(got.params, expected)


def test_a_quarantined_member_climbs_back_slower_than_it_fell():
    """Hysteresis: while a member is quarantined, good observations raise its quality at RECOVERY_RATE instead of
    RATE (bad ones still count at RATE). An attacker that alternates (or whose updates look fine once the model
    stops following it) then cannot walk straight back in; an honest member still returns."""
    table = (("a", PeerReputation()), ("b", PeerReputation()), ("c", PeerReputation()),
             ("d", PeerReputation(quality=0.1)))
    good = dict(included=frozenset(PEERS), aggregated=frozenset("abc"), distances={p: 1.0 for p in PEERS},
                cosines={p: 0.5 for p in PEERS}, certificate_signers=frozenset(PEERS))
    out = dict(reputation.update(table, RoundObservation(**good, quarantined=frozenset("d"))))["d"]
    assert out.quality == (1.0 - reputation.RECOVERY_RATE) * 0.1 + reputation.RECOVERY_RATE
    free = dict(reputation.update(table, RoundObservation(**good)))["d"]
    assert free.quality == 0.7 * 0.1 + 0.3 > out.quality
    bad = dict(good, cosines={"a": 0.5, "b": 0.5, "c": 0.5, "d": -0.9})
    worse = dict(reputation.update(table, RoundObservation(**bad, quarantined=frozenset("d"))))["d"]
    assert worse.quality == 0.7 * 0.1  # falling is never slowed


def test_an_empty_update_costs_quality():
    """A free rider that sends zeros (or a tiny update) is near the reference when the shared signal is small and
    has no direction, so closeness and alignment miss it: its norm far below the median norm costs quality."""
    obs = RoundObservation(included=frozenset(PEERS), aggregated=frozenset(PEERS),
                           distances={"a": 1.0, "b": 1.1, "c": 0.9, "d": 0.5},
                           cosines={"a": 0.5, "b": 0.4, "c": 0.6, "d": 0.0},
                           norms={"a": 1.2, "b": 1.3, "c": 1.1, "d": 0.0}, certificate_signers=None)
    table = dict(reputation.update(start(), obs))
    assert table["d"].quality == 0.7 and table["a"].quality == table["b"].quality == table["c"].quality == 1.0

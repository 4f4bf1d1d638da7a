"""Committed reputation: honest members stay trusted, an outlier sinks under the floor, absentees lose participation."""
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
                           distances={"a": 1.0, "b": 1.0, "c": 1.0, "d": 4.0},
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
    """Distance and cosine of each row to the aggregate (the reputation's quality inputs), computed in chunks."""
    import torch

    from swarm.ledger.apply import GEOMETRY_CHUNK, _distances_and_cosines
    gen = torch.Generator().manual_seed(5)
    d = 3 * GEOMETRY_CHUNK + 17  # a ragged last chunk
    rows = [torch.randn(d, generator=gen) for _ in range(3)] + [torch.zeros(d)]
    target = torch.randn(d, generator=gen)
    got = _distances_and_cosines(rows, target)
    for row, (distance, cosine) in zip(rows, got):
        a, b = row.double(), target.double()
        assert abs(distance - float((a - b).norm())) <= 1e-12 * float((a - b).norm())
        expected = float(a @ b / (a.norm() * b.norm())) if float(a.norm()) > 0 else 0.0
        assert abs(cosine - expected) <= 1e-12
    assert got[3][1] == 0.0  # a zero row has no direction

"""Every attack profile of swarm/faults/attacks.py against real node processes on 127.0.0.1 (issue 22; sign_flip has
its own live test in test_node_cluster.py, equivocation's conviction in test_gradient_equivocation_cluster.py).

Two swarms run one after the other (side by side, 15 processes starved each other's heartbeats on 2 loaded
cores), four honest members each, so that the honest gradients
stay a majority of every entry and the entries still reach a quorum of distinct gradients while the attackers that
send none (garbage, stale) are absent from every entry:

- swarm A, n = 7 (f = 2, quorum 5): alie, ipm, garbage;
- swarm B, n = 8 (f = 2, quorum 6): gaussian, label_flip, stale, equivocate.

What each attacker ends as, read from the honest nodes' `/peers` (and `/log`, `/metrics`). Measured in one run on 2
shared cores under a load of about 25 (node0's view at round 16; reputation floor 0.6):

    A alie       rep=0.950 quality=1.000 participation=0.886 penalties=0 included=6  quarantined=False
    A ipm        rep=0.502 quality=0.003 participation=1.000 penalties=0 included=16 quarantined=True (round 6)
    A garbage    rep=0.698 quality=1.000 participation=0.003 penalties=0 included=0  rejected={'bad_magic': 13}
    B gaussian   rep=0.502 quality=0.003 participation=1.000 penalties=0 included=16 quarantined=True (round 6)
    B label_flip rep=0.603 quality=0.207 participation=1.000 penalties=0 included=16 quarantined=False
    B stale      rep=0.701 quality=1.000 participation=0.003 penalties=0 included=0
    B equivocate rep=0.253 quality=1.000 participation=0.007 penalties=1 included=2  quarantined=True
    accuracy at round 16: A 0.882, B 0.886 (the clean 4-node run of test_node_cluster.py: > 0.85 at round 20)

A second run: alie quality 1.000 (not quarantined), ipm quarantined in round 5, gaussian in round 6, label_flip
quality 0.210 and quarantined in round 16 (score 0.563), equivocate 3 penalties and locally banned on node0
(rejected {'equivocation': 4, 'banned': 60}), garbage 15 pushes refused (bad_magic), accuracy A 0.891, B 0.885.

- ipm, gaussian: quarantined by the committed reputation (``why`` names the floor), on every honest node;
- equivocate: the offence committed as evidence, so every honest node's committed reputation holds its
  ``penalties`` and it is quarantined (a penalty costs 0.25, and its gradients of the rounds it equivocated in are
  left out, so participation falls too);
- garbage: every push refused as an undecodable envelope, counted under its reason in ``rejected_by_reason``;
  never in an entry (``rounds_included`` 0). Not quarantined: its quality is never observed (no gradient in any
  entry) and participation alone cannot take the score under the floor (0.5 * quality + 0.2 * consensus = 0.7);
- stale: its update, signed for the round before the pending one, is dropped by every honest node (the staleness
  bound is 0 by default): never in an entry, ``participation`` falls towards 0. The drop is counted in
  ``swarm_messages_rejected_total{reason="stale_or_future_round"}`` but not per peer in ``/peers``
  (``rejected_by_reason`` stays empty): a late honest member is dropped the same way and must not lose its local
  score for being slow. Its score cannot fall under the floor (as for garbage): asserted as never aggregated;
- alie: not detectable by design here. ALIE sends the observed mean plus 1.5 standard deviations per coordinate, so
  it sits inside the honest spread (quality 1.000: its distance to the median is within DISTANCE_SLACK times the
  median distance, and it points the same way). In an earlier run with gaussian in the same swarm it was
  quarantined by round 6, but only because the gaussian attacker's noise inflated the deviation it measured;
- label_flip: detected slowly. Its update is an honestly computed gradient of a model trained on wrong labels;
  its committed quality fell to 0.207 and 0.210 in 16 rounds (the honest members' stays near 1), so its score
  reaches the floor at about round 16 (0.603 in one run, 0.563 in the other): whether it is quarantined by then is
  a coin toss;
- alie and label_flip are therefore asserted by their bounded effect: each swarm's accuracy at round 16 stays over
  ACCURACY_FLOOR (the median of the aggregated rows, honest ones the majority), and label_flip's quality falls
  under half while every honest member's stays over it.

Honest members must never be quarantined or penalised, and each swarm's honest nodes end on one state hash.
"""
from __future__ import annotations

import pytest

from tests.cluster_harness import api, logs_tail, metrics, running_cluster, wait_for_round

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

ROUNDS = 16
HONEST = ["node0", "node1", "node2", "node3"]
SWARMS = {
    "A": (7, {"node4": "alie", "node5": "ipm", "node6": "garbage"}),
    "B": (8, {"node4": "gaussian", "node5": "label_flip", "node6": "stale", "node7": "equivocate"}),
}
QUARANTINED = {"ipm", "gaussian"}
ACCURACY_FLOOR = 0.8
# Per swarm, start-up plus 16 rounds (about 2 s each on 2 shared cores): the rest is room for a loaded machine (on 2
# cores under a load of 30, 7 processes took 3 minutes to import and load their data and rounds took 10-20 s).
WAIT_S = 600
# The reasons an undecodable envelope is refused under (crypto/envelope.py, crypto/wire.py).
DECODE_REASONS = {"bad_magic", "bad_version", "bad_type", "too_large", "truncated", "bad_fields", "bad_head",
                  "non_canonical", "trailing_bytes", "bad_utf8", "too_deep", "non_finite", "bad_signature"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both swarms run to ROUNDS, one after the other; per swarm: each honest node's /peers and /status, node0's
    /log and the honest nodes' counts of dropped stale-or-future gradients."""
    results = {}
    for name, (n, attacks) in SWARMS.items():
        folder = tmp_path_factory.mktemp(f"swarm{name}")
        with running_cluster(folder, nodes=n, max_rounds=ROUNDS, attacks=attacks) as cluster:
            try:
                statuses = wait_for_round(cluster, HONEST, ROUNDS, timeout=WAIT_S)
            except AssertionError:
                print(logs_tail(cluster, "node0"))
                raise
            results[name] = {
                "statuses": statuses,
                "peers": {node: api(cluster, node, "/peers") for node in HONEST},
                "log": api(cluster, "node0", f"/log?from=1&limit={ROUNDS}"),
                "stale_drops": {node: metrics(cluster, node).get(
                    'swarm_messages_rejected_total{"reason": "stale_or_future_round"}', 0.0) for node in HONEST},
            }
    return results


def row_of(peers: list[dict], name: str) -> dict:
    return next(row for row in peers if row["name"] == name)


def first_quarantined(log: list[dict], name: str) -> int | None:
    return next((row["round"] for row in log if name in row["quarantined"]), None)


def summary(runs) -> str:
    lines = []
    for swarm, (_n, attacks) in SWARMS.items():
        log = runs[swarm]["log"]
        for node, profile in attacks.items():
            row = row_of(runs[swarm]["peers"]["node0"], node)
            lines.append(f"{swarm} {profile:10s} rep={row['reputation']:.3f} quality={row['quality']:.3f} "
                         f"participation={row['participation']:.3f} penalties={row['penalties']} "
                         f"included={row['rounds_included']} quarantined={row['quarantined']} "
                         f"(first in round {first_quarantined(log, node)}) rejected={row['rejected_by_reason']}")
        lines.append(f"{swarm} accuracy={runs[swarm]['statuses']['node0']['accuracy']:.3f}")
    return "\n".join(lines)


def test_every_swarm_stays_consistent_and_honest_members_are_never_punished(runs):
    print(summary(runs))
    for swarm, (_n, attacks) in SWARMS.items():
        statuses, peers = runs[swarm]["statuses"], runs[swarm]["peers"]
        assert len({s["state_hash"] for s in statuses.values()}) == 1, (swarm, statuses)
        for node in HONEST:
            for row in peers[node]:
                if row["name"] in HONEST:
                    assert not row["quarantined"] and row["penalties"] == 0, (swarm, node, row)
        # The committed reputation is replicated: every honest node sees the same quarantine and penalties.
        for attacker in attacks:
            seen = {(row_of(peers[node], attacker)["quarantined"], row_of(peers[node], attacker)["penalties"])
                    for node in HONEST}
            assert len(seen) == 1, (swarm, attacker, seen)


@pytest.mark.parametrize("profile", sorted(QUARANTINED))
def test_vector_attackers_are_quarantined_by_the_committed_reputation(runs, profile):
    swarm, node = next((s, n) for s, (_, attacks) in SWARMS.items() for n, p in attacks.items() if p == profile)
    for honest in HONEST:
        row = row_of(runs[swarm]["peers"][honest], node)
        assert row["quarantined"], (profile, honest, summary(runs))
        assert "under the floor" in row["why"], row
    # From the round it is first quarantined on, it is never aggregated (it may also miss entries: ipm's gradient
    # comes late when it waits for the honest ones it inverts).
    log = runs[swarm]["log"]
    first = first_quarantined(log, node)
    assert first is not None, (profile, summary(runs))
    assert all(node not in row["aggregated"] for row in log if row["round"] >= first), (profile, log)


def test_garbage_is_refused_with_its_reason_and_never_enters_an_entry(runs):
    node = "node6"
    for honest in HONEST:
        row = row_of(runs["A"]["peers"][honest], node)
        reasons = row["rejected_by_reason"]
        assert reasons and set(reasons) <= DECODE_REASONS | {"banned"}, (honest, row)
        assert sum(reasons.values()) >= ROUNDS // 2, (honest, row)  # about one refused push per round
        assert row["rounds_included"] == 0, (honest, row)
    assert all(node not in entry["included"] for entry in runs["A"]["log"])


def test_an_equivocator_is_penalised_in_the_committed_reputation(runs):
    node = "node7"
    for honest in HONEST:
        row = row_of(runs["B"]["peers"][honest], node)
        assert row["penalties"] >= 1 and row["quarantined"], (honest, row)


def test_a_stale_attacker_is_never_aggregated_and_its_drops_are_counted(runs):
    node = "node6"
    for honest in HONEST:
        row = row_of(runs["B"]["peers"][honest], node)
        assert row["rounds_included"] == 0 and row["participation"] < 0.1, (honest, row)
    assert all(node not in entry["included"] for entry in runs["B"]["log"])
    assert all(count >= ROUNDS // 2 for count in runs["B"]["stale_drops"].values()), runs["B"]["stale_drops"]


def test_alie_and_label_flip_effects_are_bounded(runs):
    for swarm in SWARMS:
        accuracy = runs[swarm]["statuses"]["node0"]["accuracy"]
        assert accuracy >= ACCURACY_FLOOR, (swarm, accuracy, summary(runs))
    for honest in HONEST:
        peers = runs["B"]["peers"][honest]
        flipped = row_of(peers, "node5")["quality"]
        assert flipped < 0.5, (honest, summary(runs))
        assert all(row_of(peers, name)["quality"] > flipped for name in HONEST), (honest, summary(runs))

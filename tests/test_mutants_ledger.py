"""Tests written from mutation testing (TESTING.md, "Mutation testing"): each kills mutants of the ledger (apply.py,
entry_rules.py, audit.py, store.py) that the rest of the fast suite let survive. In process, synthetic states and
gradients where the property does not need real signatures."""
from __future__ import annotations

import hashlib

import pytest
import torch

from crypto.wire import DecodeError
from swarm.ledger.apply import RoundRules, apply
from swarm.ledger.entry_rules import _VerifyOnly, evidence_piece
from swarm.ledger.state import PeerReputation, ReplicatedState, Roster, genesis_state
from swarm.round.gradient import Gradient

MEMBERS = ["m0", "m1", "m2", "m3"]
DIM = 16


def _state(members=MEMBERS) -> ReplicatedState:
    g = torch.Generator().manual_seed(7)
    return genesis_state(torch.randn(DIM, generator=g), list(members), b"\x05" * 32)


def _gradient(state: ReplicatedState, sender: str, seed: int) -> Gradient:
    vector = torch.randn(DIM, generator=torch.Generator().manual_seed(seed))
    raw = sender.encode() + vector.numpy().tobytes()
    return Gradient(sender, state.round + 1, state.hash, hashlib.sha256(raw).digest(), raw, vector)


def _round(state: ReplicatedState, rules: RoundRules, senders, members=None):
    grads = [_gradient(state, s, 10 * state.round + i) for i, s in enumerate(senders)]
    return apply(state, grads, rules, members=members)


# ------------------------------------------------------------------------------------------ apply._change_members

def test_a_membership_change_keeps_the_staying_members_rows_and_late_update_record():
    """An entry that changes the members (m3 out, m4 in) leaves the staying members' reputation and late-update
    record exactly as the same entry without the change makes them; the newcomer starts neutral, never counted."""
    rules = RoundRules(f=1, rule="mean", staleness_bound=2)
    one = _round(_state(), rules, MEMBERS).state
    assert one.recent is not None and dict(one.recent.counted) == {m: 1 for m in MEMBERS}
    members = (("m0", "n0"), ("m1", "n1"), ("m2", "n2"), ("m4", "n4"))
    same = _round(one, rules, MEMBERS).state
    changed = _round(one, rules, MEMBERS, members=members).state

    assert changed.members == ("m0", "m1", "m2", "m4")
    for peer in ("m0", "m1", "m2"):
        assert changed.reputation_of(peer) == same.reputation_of(peer)
        assert changed.reputation_of(peer).rounds_included == 2  # not reset to a neutral row
    assert changed.reputation_of("m4") == PeerReputation()
    assert changed.recent.ancestors == same.recent.ancestors == (one.parent_hash, one.hash)
    assert changed.recent.counted == (("m0", 2), ("m1", 2), ("m2", 2), ("m4", 0))
    assert changed.roster == Roster(3, members)
    # and what it records round-trips through the snapshot form the next node restores from
    restored = ReplicatedState.deserialize(changed.serialize(), DIM, list(changed.members))
    assert restored.hash == changed.hash and restored.recent == changed.recent


# ------------------------------------------------------------------------------------------ entry_rules

def test_an_unknown_evidence_kind_is_refused_as_bad_evidence_naming_the_kind_cut_to_32_characters():
    with pytest.raises(DecodeError) as caught:
        evidence_piece({"kind": "k" * 40, "a": [], "b": []})
    assert caught.value.reason == "bad_evidence"
    assert str(caught.value) == f"bad_evidence: unknown evidence kind {'k' * 32!r}"


def test_the_ledger_verifier_refuses_to_sign():
    with pytest.raises(TypeError, match="^the ledger.s checks never sign$"):
        _VerifyOnly().sign(b"payload")


# ------------------------------------------------------------------- evidence counted in the members in force


def _leader_evidence(genesis, key, term=1, round_=3) -> dict:
    from consensus.messages import Evidence, evidence_to_plain, signing_bytes

    a, b = b"\x01" * 32, b"\x02" * 32
    sig = {d: key.sign(signing_bytes(genesis.swarm_id, "preprepare", term, round_, d, key.peer_id)) for d in (a, b)}
    return evidence_to_plain(Evidence(key.peer_id, term, round_, a, sig[a], b, sig[b]))


def _gradient_evidence(genesis, key, round_=3) -> dict:
    from swarm.round.gradient import equivocation_from_raw, make_gradient

    first = make_gradient(key, genesis.swarm_id, round_, b"\x07" * 32, b"one")
    second = make_gradient(key, genesis.swarm_id, round_, b"\x07" * 32, b"two")
    return equivocation_from_raw(first, second).to_plain()


def test_leader_evidence_is_checked_against_the_members_in_force_not_the_genesis(five):
    from swarm.ledger.apply import InvalidEntry
    from swarm.ledger.entry_rules import convicted_leader, convicted_member

    genesis, keys = five
    grown = [k.peer_id for k in keys]          # node4 added
    shrunk = [k.peer_id for k in keys[:3]]     # node3 removed
    newcomer, leaver = _leader_evidence(genesis, keys[4]), _leader_evidence(genesis, keys[3])
    assert convicted_leader(genesis, newcomer, grown) == keys[4].peer_id
    assert convicted_member(genesis, newcomer, 3, grown) == keys[4].peer_id
    assert convicted_leader(genesis, leaver) == keys[3].peer_id  # default: the genesis members
    for check in (lambda: convicted_leader(genesis, leaver, shrunk), lambda: convicted_leader(genesis, newcomer),
                  lambda: convicted_member(genesis, leaver, 3, shrunk)):
        with pytest.raises(InvalidEntry) as caught:
            check()
        assert str(caught.value) == "evidence does not prove equivocation"
    with pytest.raises(InvalidEntry) as caught:
        convicted_leader(genesis, {"leader": "x"})
    assert str(caught.value).startswith("malformed evidence: ") and "bad_fields" in str(caught.value)


def test_gradient_evidence_is_checked_against_the_members_in_force_not_the_genesis(five):
    from swarm.ledger.apply import InvalidEntry
    from swarm.ledger.entry_rules import convicted_member

    genesis, keys = five
    grown = [k.peer_id for k in keys]
    shrunk = [k.peer_id for k in keys[:3]]
    assert convicted_member(genesis, _gradient_evidence(genesis, keys[4]), 3, grown) == keys[4].peer_id
    assert convicted_member(genesis, _gradient_evidence(genesis, keys[3]), 3) == keys[3].peer_id
    for item, members in ((_gradient_evidence(genesis, keys[3]), shrunk), (_gradient_evidence(genesis, keys[4]), None)):
        with pytest.raises(InvalidEntry) as caught:
            convicted_member(genesis, item, 3, members)
        assert str(caught.value).startswith("gradient evidence proves nothing: unknown_peer: ")


# ------------------------------------------------------------- previous_certificate_signers, valid_commit_signers

def _cert(genesis, signers, round_, digest, term=1, kind="commit") -> dict:
    from consensus.messages import signing_bytes
    return {"round": round_, "digest": digest, "term": term,
            "sigs": [[k.peer_id, k.sign(signing_bytes(genesis.swarm_id, kind, term, round_, digest, k.peer_id))]
                     for k in signers]}


def test_the_previous_certificate_must_name_the_previous_round_and_digest_and_be_a_quorum_of_those_in_force(five):
    from swarm.ledger.apply import InvalidEntry
    from swarm.ledger.entry_rules import previous_certificate_signers as signers_of

    genesis, keys = five
    digest = b"\x04" * 32
    cert = _cert(genesis, keys[:3], 4, digest)
    assert signers_of(genesis, cert, 4, digest) == frozenset(k.peer_id for k in keys[:3])  # 3 of 4: the quorum

    def refused(message, *args):
        with pytest.raises(InvalidEntry) as caught:
            signers_of(genesis, *args)
        assert str(caught.value) == message

    not_previous = "prev_cert does not certify the previous round"
    refused(not_previous, cert, 5, digest)                        # another round, the right digest
    refused(not_previous, cert, 4, b"\x05" * 32)                  # the right round, another digest
    refused(not_previous, cert, 4, None)                          # no previous row to certify
    refused(not_previous, [cert], 4, digest)                      # not a certificate at all
    refused("prev_cert is not a quorum", _cert(genesis, keys[:2], 4, digest), 4, digest)
    forged = _cert(genesis, keys[:3], 4, digest)
    forged["sigs"][1][1] = bytes(64)
    refused(f"prev_cert carries an invalid signature (signature of {genesis.name_of(keys[1].peer_id)} does not "
            f"verify)", forged, 4, digest)

    # counted in the members in force: three of them (quorum 2) after node3 left, five (quorum 4) after node4 came
    shrunk = [k.peer_id for k in keys[:3]]
    two = _cert(genesis, keys[:2], 4, digest)
    assert signers_of(genesis, two, 4, digest, shrunk) == frozenset(shrunk[:2])
    grown = [k.peer_id for k in keys]
    with pytest.raises(InvalidEntry, match="not a quorum"):
        signers_of(genesis, _cert(genesis, keys[1:4], 4, digest), 4, digest, grown)
    assert signers_of(genesis, _cert(genesis, keys[1:], 4, digest), 4, digest, grown) == frozenset(grown[1:])


def test_commit_signers_are_counted_once_among_the_members_in_force_with_each_rejection_named(five):
    from swarm.ledger.entry_rules import valid_commit_signers

    genesis, keys = five
    digest = b"\x04" * 32
    assert valid_commit_signers(genesis, [1, 2], 4, digest) == (set(), ["certificate is malformed"])
    assert valid_commit_signers(genesis, "cert", 4, digest) == (set(), ["certificate is malformed"])
    cert = _cert(genesis, [keys[0], keys[1], keys[1], keys[4]], 4, digest)
    cert["sigs"].append(["x"])
    valid, problems = valid_commit_signers(genesis, cert, 4, digest)
    assert valid == {keys[0].peer_id, keys[1].peer_id}
    assert problems == ["certificate holds a malformed signature", "node1 signed more than once",
                        f"signer {keys[4].peer_id[:16]} is not a member"]
    valid, problems = valid_commit_signers(genesis, cert, 4, digest, [k.peer_id for k in keys])
    assert valid == {keys[0].peer_id, keys[1].peer_id, keys[4].peer_id}
    assert problems == ["certificate holds a malformed signature", "node1 signed more than once"]


def test_an_entry_that_names_members_without_a_request_is_refused_in_those_words(five):
    from swarm.ledger.apply import InvalidEntry
    from swarm.ledger.entry_rules import entry_membership

    genesis, keys = five
    state = type("S", (), {"roster": None})()
    with pytest.raises(InvalidEntry) as caught:
        entry_membership(genesis, state, {}, tuple(k.peer_id for k in keys))
    assert str(caught.value) == "the entry changes the members without a signed request"
    from swarm.ledger.entry_rules import MEMBERSHIP_PARAM
    from swarm.ledger.membership import ADD, sign_change

    request = sign_change(keys[1], genesis.swarm_id, ADD, keys[4].peer_id, "node4", 1)
    with pytest.raises(InvalidEntry) as caught:
        entry_membership(genesis, state, {MEMBERSHIP_PARAM: request.to_plain()}, tuple(genesis.peer_ids))
    assert str(caught.value) == "the entry's members are not those its request makes"


# ------------------------------------------------------------------------------------------------ apply.finish

def test_a_quarantined_member_earns_its_way_back_only_at_the_recovery_rate():
    from swarm.ledger.reputation import RATE, RECOVERY_RATE

    base = _state(("m0", "m1", "m2", "m3", "m4"))
    low = PeerReputation(quality=0.0, participation=0.0, consensus=0.0)
    table = tuple((peer, low if peer == "m4" else rep) for peer, rep in base.reputation)
    state = ReplicatedState(0, base.params, base.momentum, table, base.parent_hash)
    same = torch.randn(DIM, generator=torch.Generator().manual_seed(3))
    grads = []
    for sender in ("m0", "m1", "m2", "m3", "m4"):  # everyone sends the same update: m4's observation is perfect
        raw = sender.encode() + same.numpy().tobytes()
        grads.append(Gradient(sender, 1, state.hash, hashlib.sha256(raw).digest(), raw, same.clone()))
    applied = apply(state, grads, RoundRules(f=1, rule="mean", reputation_floor=0.6))
    assert applied.quarantined == ("m4",)
    assert applied.state.reputation_of("m4").quality == pytest.approx(RECOVERY_RATE)  # not RATE
    assert RECOVERY_RATE < RATE
    assert applied.state.reputation_of("m0").quality == pytest.approx(1.0)


def test_an_aggregate_of_another_state_is_refused_in_those_words():
    from swarm.ledger.apply import InvalidEntry, aggregate_round, finish

    state = _state()
    aggregated = aggregate_round(state, [_gradient(state, s, i) for i, s in enumerate(MEMBERS)],
                                 RoundRules(f=1, rule="mean"))
    other = _round(state, RoundRules(f=1, rule="mean"), MEMBERS).state
    with pytest.raises(InvalidEntry) as caught:
        finish(other, aggregated)
    assert str(caught.value) == "aggregate computed on another state"


# ------------------------------------------------------------------------------ apply._aggregate: the genesis' rule

def _scored_state(qualities: dict[str, float]) -> ReplicatedState:
    base = _state(tuple(qualities))
    table = tuple((peer, PeerReputation(quality=qualities[peer])) for peer, _ in base.reputation)
    return ReplicatedState(0, base.params, base.momentum, table, base.parent_hash)


def _direct(rule, grads, state, f, **kwargs):
    """What the rule itself makes of these rows (swarm/aggregation), applied by the server step (lr 1)."""
    from swarm.aggregation import aggregate
    rows = torch.stack([g.vector for g in sorted(grads, key=lambda g: g.sender)])
    return aggregate(rule, rows, f, **kwargs).vector


def _moved(applied, state):
    return state.params - applied.state.params  # lr 1, no momentum: the aggregate itself


def test_the_rule_gets_the_reputation_weights_nnm_and_options_the_genesis_fixes():
    from swarm.ledger.reputation import score

    state = _scored_state({"m0": 1.0, "m1": 0.9, "m2": 0.7, "m3": 0.65, "m4": 1.0})
    grads = [_gradient(state, s, 40 + i) for i, s in enumerate(state.members)]
    weights = torch.tensor([score(rep) for _peer, rep in state.reputation], dtype=torch.float64)
    assert len(set(weights.tolist())) > 1

    def moved(**rules):
        return _moved(apply(state, grads, RoundRules(f=1, **rules)), state)

    weighted = moved(rule="mean", reputation_weighted=True)
    assert torch.allclose(weighted, _direct("mean", grads, state, 1, weights=weights).to(torch.float32), atol=1e-6)
    assert not torch.allclose(weighted, moved(rule="mean"), atol=1e-6)
    mixed = moved(rule="mean", nnm=True)
    assert torch.allclose(mixed, _direct("mean", grads, state, 1, nnm=True).to(torch.float32), atol=1e-6)
    assert not torch.allclose(mixed, moved(rule="mean"), atol=1e-6)
    clipped = moved(rule="centered_clipping", options={"tau": 0.05})
    assert torch.allclose(clipped, _direct("centered_clipping", grads, state, 1, tau=0.05).to(torch.float32),
                          atol=1e-6)
    assert not torch.allclose(clipped, moved(rule="centered_clipping", options={"tau": 100.0}), atol=1e-6)


def test_the_fallback_median_keeps_the_reputation_weights_and_clamps_f_to_the_rows_left():
    from swarm.ledger.reputation import score

    state = _scored_state({"m0": 1.0, "m1": 0.62, "m2": 0.61, "m3": 1.0})
    grads = [_gradient(state, s, 60 + i) for i, s in enumerate(state.members)]
    weights = torch.tensor([score(rep) for _peer, rep in state.reputation], dtype=torch.float64)
    applied = apply(state, grads, RoundRules(f=1, rule="krum", reputation_weighted=True))  # krum needs n >= 5
    assert applied.rule_used == "median"
    expected = _direct("median", grads, state, 1, weights=weights).to(torch.float32)
    assert torch.allclose(_moved(applied, state), expected, atol=1e-6)
    assert not torch.allclose(expected, _direct("median", grads, state, 1).to(torch.float32), atol=1e-6)

    # two rows left once a member is quarantined: the median of two runs with f = 0, not f = 1
    low = PeerReputation(quality=0.0, participation=0.0, consensus=0.0)
    table = tuple((peer, low if peer == "m2" else PeerReputation()) for peer in ("m0", "m1", "m2", "m3"))
    quarantined = ReplicatedState(0, state.params, state.momentum, table, state.parent_hash)
    three = [_gradient(quarantined, s, 80 + i) for i, s in enumerate(("m0", "m1", "m2"))]
    applied = apply(quarantined, three, RoundRules(f=1, rule="krum"))
    assert applied.rule_used == "median" and applied.quarantined == ("m2",)
    assert torch.allclose(_moved(applied, quarantined), (three[0].vector + three[1].vector) / 2, atol=1e-6)


def test_an_entry_without_gradients_is_refused_in_those_words():
    from swarm.ledger.apply import InvalidEntry

    with pytest.raises(InvalidEntry) as caught:
        apply(_state(), [], RoundRules(f=1, rule="mean"))
    assert str(caught.value) == "an entry needs at least one gradient"


def test_the_round_rules_carry_every_replicated_setting_of_the_genesis_as_written(five):
    import dataclasses

    from swarm.config import AggregationSpec, ServerOptimizerSpec, StalenessSpec
    from swarm.ledger.apply import RoundRules
    from swarm.ledger.entry_rules import rules_of

    genesis, _keys = five
    written = dataclasses.replace(
        genesis, aggregation=AggregationSpec(rule="trimmed_mean", reputation_weighted=True, nnm=True,
                                             reputation_floor=0.4, options={"beta": 0.2}),
        server_optimizer=ServerOptimizerSpec(lr=0.7, momentum=0.9, nesterov=True),
        staleness=StalenessSpec(bound=3, decay=0.25))
    rules = rules_of(written)
    assert rules == RoundRules(f=written.f, rule="trimmed_mean", options={"beta": 0.2}, nnm=True,
                               reputation_weighted=True, reputation_floor=0.4, server_lr=0.7, momentum=0.9,
                               nesterov=True, staleness_bound=3, staleness_decay=0.25, follow_members=True)
    assert rules.follow_members is True  # f follows the members in force, not the genesis' f


def test_entry_evidence_is_at_most_four_pieces_each_counted_in_the_members_in_force(five):
    from swarm.ledger.apply import InvalidEntry
    from swarm.ledger.entry_rules import MAX_ENTRY_EVIDENCE, entry_extras

    genesis, keys = five
    grown = [k.peer_id for k in keys]
    pieces = [_leader_evidence(genesis, keys[i], term=1, round_=3) for i in (1, 2, 3, 4)]
    assert MAX_ENTRY_EVIDENCE == 4
    signers, convicted = entry_extras(genesis, {"evidence": pieces}, 3, None, grown)
    assert signers is None and convicted == frozenset(grown[1:])
    with pytest.raises(InvalidEntry, match="at most 4 pieces"):
        entry_extras(genesis, {"evidence": pieces + [_leader_evidence(genesis, keys[0])]}, 3, None, grown)
    with pytest.raises(InvalidEntry, match="does not prove equivocation"):  # node4 is no genesis member
        entry_extras(genesis, {"evidence": pieces}, 3, None)


def test_apply_refuses_a_gradient_for_another_round_or_another_parent_each_alone():
    from swarm.ledger.apply import InvalidEntry

    state = _state()
    good = [_gradient(state, s, i) for i, s in enumerate(MEMBERS)]
    g = good[1]
    other_parent = Gradient(g.sender, g.round, b"\x00" * 32, g.digest, g.raw, g.vector)
    other_round = Gradient(g.sender, g.round + 1, g.parent, g.digest, g.raw, g.vector)
    for bad in (other_parent, other_round):
        with pytest.raises(InvalidEntry) as caught:
            apply(state, [good[0], bad, *good[2:]], RoundRules(f=1, rule="mean"))
        assert str(caught.value) == f"gradient of m1 is for round {bad.round} on another parent"
    stranger = Gradient("m9", g.round, g.parent, g.digest, g.raw, g.vector)
    with pytest.raises(InvalidEntry) as caught:
        apply(state, [good[0], stranger], RoundRules(f=1, rule="mean"))
    assert str(caught.value) == "m9 is not a member"
    with pytest.raises(InvalidEntry) as caught:
        apply(state, [good[0], good[0]], RoundRules(f=1, rule="mean"))
    assert str(caught.value) == "two gradients from one sender"

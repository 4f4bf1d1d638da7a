"""The round's timing decisions (swarm/round/readiness.py), driven with counts and times: no sockets, no loop."""
from __future__ import annotations

from swarm.round.readiness import LeaderView, RoundReadiness


def tracker(**kwargs) -> RoundReadiness:
    readiness = RoundReadiness("me", n=4, quorum=3, grace_s=0.25, handover_delay_s=1.0, **kwargs)
    readiness.begin(1, now=10.0)
    return readiness


def test_all_n_gradients_make_the_round_ready_at_once_and_only_once():
    readiness = tracker()
    assert not readiness.observe(1, 2, 10.0) and readiness.next_deadline() is None
    assert readiness.observe(1, 4, 10.1)
    assert not readiness.observe(1, 4, 10.2)  # signalled once
    assert readiness.next_deadline() is None


def test_a_quorum_waits_for_the_grace_period_then_is_ready():
    readiness = tracker()
    assert not readiness.observe(1, 3, 10.0)
    assert readiness.next_deadline() == 10.25
    assert not readiness.observe(1, 3, 10.2)
    assert readiness.next_deadline() == 10.25  # a later gradient does not push the deadline back
    assert readiness.observe(1, 3, 10.25)
    assert readiness.next_deadline() is None


def test_a_late_member_within_the_grace_period_ends_it_early():
    readiness = tracker()
    readiness.observe(1, 3, 10.0)
    assert readiness.observe(1, 4, 10.1)


def test_another_round_is_not_observed_and_a_new_round_starts_afresh():
    readiness = tracker()
    assert not readiness.observe(2, 4, 10.0)  # the next round's gradients are pooled, not counted
    assert readiness.observe(1, 4, 10.0)
    readiness.begin(2, now=11.0)
    assert readiness.started_at == 11.0 and not readiness.observe(2, 3, 11.0)
    assert readiness.next_deadline() == 11.25


def follower_view(**changes) -> LeaderView:
    fields = dict(term=3, leader="leader", we_follow=True, proposal_seen=False)
    fields.update(changes)
    return LeaderView(**fields)


def test_a_silent_leader_gets_the_payloads_once_per_term_and_round():
    readiness = tracker()
    assert readiness.should_hand_over(1, 3, follower_view())
    assert not readiness.should_hand_over(1, 3, follower_view())
    assert readiness.should_hand_over(1, 3, follower_view(term=4))  # a new leader may need them as well


def test_no_handover_when_it_cannot_help():
    readiness = tracker()
    assert not readiness.should_hand_over(1, 2, follower_view())  # below a quorum: the leader could not propose
    assert not readiness.should_hand_over(1, 3, follower_view(proposal_seen=True))
    assert not readiness.should_hand_over(1, 3, follower_view(leader=None))
    assert not readiness.should_hand_over(1, 3, follower_view(leader="me"))
    assert not readiness.should_hand_over(1, 3, follower_view(we_follow=False))
    assert not readiness.should_hand_over(2, 3, follower_view())  # not the pending round
    assert readiness.should_hand_over(1, 3, follower_view())


def test_training_starts_once_per_round_and_stops_at_max_rounds():
    readiness = tracker()
    assert readiness.start_training(1, max_rounds=2)
    assert not readiness.start_training(1, max_rounds=2)
    assert readiness.start_training(2, max_rounds=2)
    assert not readiness.start_training(3, max_rounds=2)


def test_train_ahead_only_for_the_next_round_once_and_never_after_it_started():
    readiness = tracker()
    assert not readiness.may_train_ahead(3, None)  # two rounds ahead
    assert readiness.may_train_ahead(2, None)
    assert not readiness.may_train_ahead(2, None)  # once
    fresh = tracker()
    fresh.start_training(2, None)
    assert not fresh.may_train_ahead(2, None)  # already training it for real
    assert not tracker().may_train_ahead(2, max_rounds=1)

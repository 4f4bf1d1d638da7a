"""One test per protocol rule (DESIGN.md section 3) for quorums, signatures and elections, each named after the rule,
driving one replica by hand (the commit path, catch-up and timing: tests/test_consensus_commit_rules.py)."""
from __future__ import annotations

from dataclasses import replace

import pytest

from consensus.actions import (BuildProposal, PersistHardState, ValidateProposal)
from consensus.events import PayloadsReady, Tick, ValidationResult
from consensus.messages import (CatchUpRequest, Commit, CommitCertificate, CommittedEntry, Heartbeat, NewTerm, PrePrepare, Prepare, PreparedCertificate, RequestVote, Timeout, Vote,
                                signing_bytes)
from consensus.quorum import BAD_SIGNATURE, DUPLICATE_SIGNER, NOT_MEMBER, Membership, Verifier, signature_work
from consensus.replica import CANDIDATE, ELECTING, FOLLOWER, LEADER
from consensus.state import HardState, PersistedState

from tests.test_consensus_harness import (LATER, MEMBERS, RING, SWARM, TIMING, commit,
                                          entry, follower_of, index_of, is_persist, new_term, prepare, prepared_cert,
                                          preprepare, recv, replica, sent, sign, vote)


# ------------------------------------------------------------------------------------------------ quorums

@pytest.mark.parametrize("n,f,q", [(4, 1, 3), (7, 2, 5), (10, 3, 7), (13, 4, 9)])
def test_quorum_is_2f_plus_1_when_n_is_3f_plus_1(n, f, q):
    m = Membership([f"n{i}" for i in range(n)])
    assert (m.f, m.quorum, m.weak_quorum) == (f, q, f + 1)


@pytest.mark.parametrize("n,q", [(1, 1), (2, 2), (3, 2), (5, 4), (6, 4)])
def test_any_two_quorums_intersect_in_an_honest_member(n, q):
    m = Membership([f"n{i}" for i in range(n)])
    assert m.quorum == q
    assert 2 * m.quorum - n >= m.f + 1  # overlap of two quorums exceeds the number of faulty members


# ------------------------------------------------------------------------------------------------ signatures

def test_signature_binds_version_swarm_type_term_round_digest_and_sender():
    verifier = Verifier(SWARM, Membership(MEMBERS), RING.signer("a"))
    p = prepare(1, entry(), "b")
    assert verifier.message(p)
    assert not verifier.message(Commit(p.term, p.round, p.digest, p.sender, p.sig))  # other phase
    assert not verifier.message(replace(p, term=2))  # other term
    assert not verifier.message(replace(p, round=2))  # other round
    assert not verifier.message(replace(p, digest=bytes(32)))  # other entry
    assert not verifier.message(replace(p, sender="c"))  # other sender
    other_swarm = Verifier("another-swarm", Membership(MEMBERS), RING.signer("a"))
    assert not other_swarm.message(p)
    assert signing_bytes(SWARM, "prepare", 1, 1, p.digest, "b") != signing_bytes(SWARM, "commit", 1, 1, p.digest, "b")


def test_a_certificates_signers_are_its_distinct_members_with_valid_signatures_and_the_rest_are_named():
    verifier = Verifier(SWARM, Membership(MEMBERS), RING.signer("a"))
    e = entry()
    good = [(c.sender, c.sig) for c in (commit(1, e, "a"), commit(1, e, "b"))]
    forged = ("c", commit(1, e, "d").sig)
    sigs = good + [good[0], forged, ("mallory", good[1][1])]
    valid, rejected = verifier.signers("commit", 1, e.round, e.digest(), sigs)
    assert valid == {"a", "b"}
    assert rejected == [("a", DUPLICATE_SIGNER), ("c", BAD_SIGNATURE), ("mallory", NOT_MEMBER)]
    assert not verifier.quorum_of("commit", 1, e.round, e.digest(), sigs)  # two distinct signers, Q = 3
    third = [(c.sender, c.sig) for c in [commit(1, e, "d")]]
    assert verifier.quorum_of("commit", 1, e.round, e.digest(), good + third)
    # A quorum of valid signatures does not make junk beside them acceptable: a certificate is exactly its signers.
    assert not verifier.quorum_of("commit", 1, e.round, e.digest(), sigs + third)


class Counting:
    """A Crypto that counts the signature checks it is asked for."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def verify(self, sender_id, payload, sig):
        self.calls += 1
        return self.inner.verify(sender_id, payload, sig)


def test_a_certificate_costs_no_signature_check_until_its_shape_is_right_and_stops_at_the_first_bad_one():
    """Work-based admission: a member can make us verify at most n signatures per certificate, and a certificate
    with a duplicate, a non-member or more entries than members costs nothing at all."""
    e = entry()
    good = [(c.sender, c.sig) for c in (commit(1, e, m) for m in ("a", "b", "c"))]
    for junk in (good + [good[0]], good[:2] + [good[0]], good + [("mallory", good[0][1])], good * 300):
        crypto = Counting(RING.signer("a"))
        assert not Verifier(SWARM, Membership(MEMBERS), crypto).quorum_of("commit", 1, e.round, e.digest(), junk)
        assert crypto.calls == 0
    crypto = Counting(RING.signer("a"))
    forged_first = [("a", good[1][1])] + good[1:]
    assert not Verifier(SWARM, Membership(MEMBERS), crypto).quorum_of("commit", 1, e.round, e.digest(), forged_first)
    assert crypto.calls == 1


def test_the_work_a_message_can_cost_counts_every_signature_it_carries():
    e = entry()
    lock = PreparedCertificate(1, e.round, e, tuple((m, b"s") for m in ("a", "b", "c")))
    vote = Vote(2, 0, "b", lock, "a")
    assert signature_work(vote) == 4 and signature_work(Vote(2, 0, "b", None, "a")) == 1
    assert signature_work(NewTerm(2, (vote, vote, Vote(2, 0, "b", None, "c")), "b")) == 1 + 4 + 4 + 1


def test_each_signature_is_verified_once_however_often_certificates_repeat_it():
    crypto = Counting(RING.signer("a"))
    verifier = Verifier(SWARM, Membership(MEMBERS), crypto)
    e = entry()
    sigs = [(c.sender, c.sig) for c in (commit(1, e, "a"), commit(1, e, "b"), commit(1, e, "c"))]
    for _ in range(3):
        assert verifier.quorum_of("commit", 1, e.round, e.digest(), sigs)
    assert crypto.calls == verifier.verifications == 3


def test_messages_with_forged_or_foreign_signatures_are_ignored():
    rep = follower_of("b")
    e = entry()
    forged = PrePrepare(1, 1, e, "b", RING.signer("c").sign(b"whatever"))
    assert recv(rep, forged) == recv(rep, forged)  # no effect either time
    assert not [a for a in recv(rep, forged) if isinstance(a, ValidateProposal)]
    outsider = replace(preprepare(1, e), sender="mallory")
    assert not [a for a in recv(rep, outsider) if isinstance(a, ValidateProposal)]


# ------------------------------------------------------------------------------------------------ elections

def _electing(node="a", now=LATER):
    rep = replica(node, now=0.0)
    assert rep.role == ELECTING and rep.term == 1
    return rep


def test_node_votes_at_most_once_per_term():
    rep = _electing()
    first = recv(rep, sign(RequestVote(1, 0, "b")))
    second = recv(rep, sign(RequestVote(1, 0, "c")))
    assert [v.candidate for v in sent(first, Vote)] == ["b"]
    assert sent(second, Vote) == []
    again = recv(rep, sign(RequestVote(1, 0, "b")))  # a retransmitted request gets the same vote again
    assert [v.candidate for v in sent(again, Vote)] == ["b"]


def test_vote_is_persisted_before_it_is_sent():
    actions = recv(_electing(), sign(RequestVote(1, 0, "b")))
    i_persist = index_of(actions, lambda a: isinstance(a, PersistHardState) and a.state.voted_for == "b")
    i_send = index_of(actions, lambda a: getattr(a, "message", None) is not None and isinstance(a.message, Vote))
    assert 0 <= i_persist < i_send


def test_restarted_node_does_not_vote_again_in_the_same_term():
    rep = _electing()
    hard = [a.state for a in recv(rep, sign(RequestVote(1, 0, "b"))) if isinstance(a, PersistHardState)][-1]
    restarted = replica("a", PersistedState(hard, []))
    assert sent(recv(restarted, sign(RequestVote(1, 0, "c"))), Vote) == []


def test_vote_refused_to_candidate_whose_chain_is_behind_ours():
    rep = _electing()
    rep.chain.append(CommittedEntry(entry(), CommitCertificate(1, 1, entry().digest(), ())))  # committed round 1
    assert sent(recv(rep, sign(RequestVote(1, 0, "b"))), Vote) == []
    assert sent(recv(rep, sign(RequestVote(1, 1, "c"))), Vote) != []


def test_vote_refused_to_candidate_standing_before_its_slot():
    from consensus import election
    rep = _electing()
    late = max(MEMBERS, key=lambda m: election.candidate_rank(1, m, MEMBERS))
    if late == "a":
        late = sorted((m for m in MEMBERS if m != "a"), key=lambda m: election.candidate_rank(1, m, MEMBERS))[-1]
    assert election.candidate_rank(1, late, MEMBERS) >= 2
    assert sent(rep.step(0.01, __import__("consensus.events").events.Received(sign(RequestVote(1, 0, late)))),
                Vote) == []
    assert sent(recv(rep, sign(RequestVote(1, 0, late))), Vote) != []  # once the slot is open it is granted


def test_vote_carries_the_voters_highest_prepared_certificate():
    lock = prepared_cert(1, entry())
    rep = replica("a", PersistedState(HardState(term=2, voted_term=1, lock=lock), []))
    (v,) = sent(recv(rep, sign(RequestVote(2, 0, "b"))), Vote)
    assert v.lock == lock


def test_term_certificate_needs_2f_plus_1_distinct_voters():
    rep = replica("a")
    dup = vote(1, "c", "b")
    short = sign(NewTerm(1, (vote(1, "b", "b"), dup, dup), "b"))
    recv(rep, short)
    assert rep.leader is None
    recv(rep, new_term(1, "b"))
    assert rep.leader == "b" and rep.role == FOLLOWER


def test_term_certificate_with_a_forged_vote_is_rejected():
    rep = replica("a")
    forged = replace(vote(2, "d", "b"), sig=RING.signer("b").sign(b"x"))
    bad = sign(NewTerm(2, (vote(2, "b", "b"), vote(2, "c", "b"), forged), "b"))
    recv(rep, bad)
    assert rep.term == 1 and rep.leader is None


def test_candidate_with_2f_plus_1_votes_becomes_leader_and_announces_term_certificate():
    rep = _electing("a")
    actions = rep.step(rep.candidacy_at, Tick())
    assert rep.role == CANDIDATE and sent(actions, RequestVote)
    recv(rep, vote(1, "b", "a"))
    assert rep.role == CANDIDATE
    actions = recv(rep, vote(1, "c", "a"))
    assert rep.role == LEADER
    (announce,) = sent(actions, NewTerm)
    assert sorted(v.sender for v in announce.votes) == ["a", "b", "c"]


def test_higher_term_is_not_adopted_from_f_timeouts():
    rep = follower_of("b")
    recv(rep, sign(Timeout(50, 0, "c")))
    assert rep.term == 1 and rep.leader == "b"


def test_higher_term_is_adopted_with_f_plus_1_timeouts_at_the_lower_claim():
    rep = follower_of("b")
    recv(rep, sign(Timeout(50, 0, "c")))  # an inflated claim
    actions = recv(rep, sign(Timeout(2, 0, "d")))
    assert rep.term == 2 and rep.role == ELECTING
    assert sent(actions, Timeout)[0].term == 2  # it joins the view change
    assert index_of(actions, is_persist) < index_of(actions, lambda a: hasattr(a, "message"))


def test_higher_term_is_adopted_with_a_term_certificate():
    rep = follower_of("b")
    recv(rep, new_term(7, "c", voters=("b", "c", "d")))
    assert (rep.term, rep.leader) == (7, "c")


def test_new_leader_reproposes_the_highest_prepared_certificate():
    old, newer = entry(variant=0), entry(variant=1)
    rep = _electing("a")
    rep.step(rep.candidacy_at, Tick())
    recv(rep, vote(1, "b", "a", lock=None))
    recv(rep, replace(vote(1, "c", "a", lock=prepared_cert(1, newer)), sig=b""))  # unsigned: ignored
    actions = recv(rep, vote(1, "c", "a", lock=prepared_cert(1, newer)))
    assert rep.role == LEADER
    (pp,) = sent(actions, PrePrepare)
    assert pp.entry == newer and not [a for a in actions if isinstance(a, BuildProposal)]
    assert old != newer


def test_replica_refuses_a_proposal_that_breaks_the_view_change_rule():
    locked = entry(variant=1)
    rep = replica("a")
    recv(rep, new_term(2, "b", voters=("b", "c", "d"), locks={"c": prepared_cert(1, locked)}))
    actions = recv(rep, preprepare(2, entry(variant=0)))
    assert not [a for a in actions if isinstance(a, ValidateProposal)]
    assert rep.term == 3  # the leader is replaced
    rep2 = replica("a")
    recv(rep2, new_term(2, "b", voters=("b", "c", "d"), locks={"c": prepared_cert(1, locked)}))
    assert [a for a in recv(rep2, preprepare(2, locked)) if isinstance(a, ValidateProposal)]


def test_leader_sends_heartbeats():
    rep = _electing("a")
    rep.step(rep.candidacy_at, Tick())
    recv(rep, vote(1, "b", "a"))
    recv(rep, vote(1, "c", "a"))
    actions = rep.step(LATER + 0.6, Tick())
    assert [h.term for h in sent(actions, Heartbeat)] == [1]


def test_follower_without_heartbeat_starts_an_election():
    rep = follower_of("b")
    deadline = rep.heartbeat_deadline
    actions = rep.step(deadline + 0.01, Tick())
    assert rep.term == 2 and rep.role == ELECTING and sent(actions, Timeout)


def test_heartbeat_postpones_the_election():
    rep = follower_of("b")
    deadline = rep.heartbeat_deadline
    recv(rep, sign(Heartbeat(1, 0, "b")), now=deadline - 0.1)
    rep.step(deadline + 0.01, Tick())
    assert rep.term == 1 and rep.leader == "b"


def test_follower_with_payloads_waiting_and_no_proposal_starts_an_election():
    rep = follower_of("b")
    rep.step(LATER, PayloadsReady(1))
    deadline = rep.round_deadline
    assert deadline is not None
    recv(rep, sign(Heartbeat(1, 0, "b")), now=deadline - 0.1)  # a live but silent leader
    rep.step(deadline + 0.01, Tick())
    assert rep.term == 2


def test_leader_replaced_after_proposing_an_invalid_entry():
    rep = follower_of("b")
    e = entry()
    (v,) = [a for a in recv(rep, preprepare(1, e)) if isinstance(a, ValidateProposal)]
    actions = rep.step(LATER, ValidationResult(1, 1, e.digest(), ok=False))
    assert not sent(actions, Prepare) and rep.term == 2


def test_failed_leader_is_not_voted_straight_back_in():
    rep = follower_of("b")
    rep.step(rep.heartbeat_deadline + 0.01, Tick())  # gives up on b
    assert rep.term == 2
    assert sent(recv(rep, sign(RequestVote(2, 0, "b")), now=LATER * 2), Vote) == []
    assert sent(recv(rep, sign(RequestVote(2, 0, "c")), now=LATER * 2), Vote) != []


def test_node_alone_in_a_term_does_not_stand_until_2f_plus_1_entered_it():
    rep = follower_of("b")
    rep.step(rep.heartbeat_deadline + 0.01, Tick())  # cut off: gives up on b alone
    assert rep.term == 2 and rep.role == ELECTING
    rep.step(LATER * 2, Tick())  # every slot open, election deadline passed: still no candidacy, no term 3
    assert rep.role == ELECTING and rep.term == 2 and rep.hard.voted_term < 2
    recv(rep, sign(Timeout(2, 0, "c")), now=LATER * 2)
    recv(rep, sign(Timeout(2, 0, "d")), now=LATER * 2)  # now 2f+1 are in term 2
    actions = rep.step(LATER * 2, Tick())
    assert rep.role == CANDIDATE and sent(actions, RequestVote)


def test_an_electing_node_repeats_its_timeout_so_a_lost_one_does_not_stall_the_term():
    rep = follower_of("b")
    gave_up = rep.heartbeat_deadline + 0.01
    first = rep.step(gave_up, Tick())
    assert [t.term for t in sent(first, Timeout)] == [2]
    quiet = rep.step(gave_up + 0.2, Tick())
    assert sent(quiet) == [] and quiet[-1].time <= gave_up + 2 * TIMING.heartbeat_interval  # woken for the repeat
    again = rep.step(gave_up + 2 * TIMING.heartbeat_interval, Tick())
    assert [(t.term, t.sender) for t in sent(again, Timeout)] == [(2, "a")]
    assert rep.term == 2 and rep.role == ELECTING  # the same claim again, never a higher term on its own
    recv(rep, sign(Timeout(2, 0, "c")), now=gave_up + 1.5)
    recv(rep, sign(Timeout(2, 0, "d")), now=gave_up + 1.5)  # the repeats reached the others; theirs reach us
    assert rep.term_is_live(2)


def test_node_alone_in_a_higher_term_steps_back_to_the_leader_the_others_kept():
    rep = follower_of("b")
    rep.step(rep.heartbeat_deadline + 0.01, Tick())  # cut off, then healed: b still leads term 1
    assert rep.term == 2 and rep.hard.term == 2
    asks = recv(rep, sign(Heartbeat(1, 0, "b")))
    assert sent(asks, CatchUpRequest)  # the NewTerm comes back with catch-up
    actions = recv(rep, new_term(1, "b", voters=("b", "c", "d")))
    assert (rep.term, rep.leader, rep.role) == (1, "b", FOLLOWER)
    assert rep.hard.term == 2 and not [a for a in actions if isinstance(a, PersistHardState)]  # never goes down
    e = entry()
    recv(rep, preprepare(1, e))
    actions = rep.step(LATER, ValidationResult(1, 1, e.digest(), ok=True))
    assert sent(actions, Prepare)  # it works in term 1 again
    rep.step(rep.heartbeat_deadline + 0.01, Tick())  # b fails later: back to term 2, not 3
    assert rep.term == 2 and rep.role == ELECTING


def test_no_step_back_after_voting_in_the_higher_term():
    rep = follower_of("b")
    rep.step(rep.heartbeat_deadline + 0.01, Tick())
    assert sent(recv(rep, sign(RequestVote(2, 0, "c")), now=LATER * 2), Vote)
    recv(rep, new_term(1, "b", voters=("b", "c", "d")), now=LATER * 2)
    assert (rep.term, rep.leader) == (2, None)


def test_no_step_back_once_2f_plus_1_entered_the_higher_term():
    rep = follower_of("b")
    rep.step(rep.heartbeat_deadline + 0.01, Tick())
    recv(rep, sign(Timeout(2, 0, "c")))
    recv(rep, sign(Timeout(2, 0, "d")))
    rep.candidacy_at = None  # (not standing yet)
    recv(rep, new_term(1, "b", voters=("b", "c", "d")))
    assert (rep.term, rep.leader) == (2, None)

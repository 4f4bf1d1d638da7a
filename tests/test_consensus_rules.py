"""One test per protocol rule (DESIGN.md section 3), each named after the rule, driving one replica by hand."""
from __future__ import annotations

from dataclasses import replace

import pytest

from consensus.actions import (Apply, BuildProposal, LoadEntries, PersistEntry, PersistHardState, ReportEvidence,
                               ValidateProposal)
from consensus.events import EntriesLoaded, PayloadsReady, ProposalBuilt, Tick, ValidationResult
from consensus.messages import (CatchUpRequest, CatchUpResponse, Commit, CommitCertificate, CommittedEntry, EvidenceMessage,
                                Heartbeat, NewTerm, PrePrepare, Prepare, PreparedCertificate, RequestVote, Timeout, Vote,
                                signing_bytes)
from consensus.quorum import BAD_SIGNATURE, DUPLICATE_SIGNER, NOT_MEMBER, Membership, Verifier, signature_work
from consensus.replica import CANDIDATE, ELECTING, FOLLOWER, LEADER
from consensus.state import HardState, PersistedState
from consensus.timing import AdaptiveTimeouts, TimingConfig

from tests.test_consensus_harness import (GENESIS as GENESIS_HASH, LATER, MEMBERS, RING, SWARM, TIMING, commit,
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


def test_a_certificate_costs_no_signature_check_until_its_shape_is_right_and_stops_at_the_first_bad_one():
    """Work-based admission: a member can make us verify at most n signatures per certificate, and a certificate
    with a duplicate, a non-member or more entries than members costs nothing at all."""
    class Counting:
        def __init__(self, inner):
            self.inner, self.calls = inner, 0

        def verify(self, sender_id, payload, sig):
            self.calls += 1
            return self.inner.verify(sender_id, payload, sig)

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
    class Counting:
        def __init__(self, inner):
            self.inner, self.calls = inner, 0

        def verify(self, sender_id, payload, sig):
            self.calls += 1
            return self.inner.verify(sender_id, payload, sig)

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


# ------------------------------------------------------------------------------------------------ commit path

def test_leader_asks_the_node_to_build_a_proposal_once_payloads_are_ready():
    rep = _electing("a")
    rep.step(rep.candidacy_at, Tick())
    recv(rep, vote(1, "b", "a"))
    recv(rep, vote(1, "c", "a"))
    (build,) = [a for a in rep.step(LATER, PayloadsReady(1)) if isinstance(a, BuildProposal)]
    actions = rep.step(LATER, ProposalBuilt(entry()))
    (pp,) = sent(actions, PrePrepare)
    assert pp.entry == entry() and build.round == 1
    assert index_of(actions, is_persist) < index_of(actions, lambda a: hasattr(a, "message"))


def test_replica_prepares_only_after_the_node_validates_the_proposal():
    rep = follower_of("b")
    e = entry()
    actions = recv(rep, preprepare(1, e))
    assert [a.entry for a in actions if isinstance(a, ValidateProposal)] == [e]
    assert not sent(actions, Prepare)
    actions = rep.step(LATER, ValidationResult(1, 1, e.digest(), ok=True))
    assert [p.digest for p in sent(actions, Prepare)] == [e.digest()]


def test_prepare_is_persisted_before_it_is_sent():
    rep = follower_of("b")
    e = entry()
    recv(rep, preprepare(1, e))
    actions = rep.step(LATER, ValidationResult(1, 1, e.digest(), ok=True))
    i = index_of(actions, lambda a: isinstance(a, PersistHardState) and a.state.prepared_digest == e.digest())
    assert 0 <= i < index_of(actions, lambda a: hasattr(a, "message"))


def test_proposal_from_a_non_leader_is_ignored():
    rep = follower_of("b")
    assert not [a for a in recv(rep, preprepare(1, entry(), leader="c")) if isinstance(a, ValidateProposal)]


def test_proposal_on_the_wrong_parent_replaces_the_leader():
    rep = follower_of("b")
    recv(rep, preprepare(1, entry(parent=bytes(32))))
    assert rep.term == 2


def _prepared_follower():
    rep = follower_of("b")
    e = entry()
    recv(rep, preprepare(1, e))
    rep.step(LATER, ValidationResult(1, 1, e.digest(), ok=True))
    return rep, e


def test_2f_plus_1_prepares_lock_the_certificate_before_commit_is_sent():
    rep, e = _prepared_follower()
    assert not sent(recv(rep, prepare(1, e, "b")), Commit)  # 2 of 3
    actions = recv(rep, prepare(1, e, "c"))
    i_lock = index_of(actions, lambda a: isinstance(a, PersistHardState) and a.state.lock is not None)
    i_commit = index_of(actions, lambda a: isinstance(getattr(a, "message", None), Commit))
    assert 0 <= i_lock < i_commit
    assert rep.hard.lock.digest == e.digest() and len(rep.hard.lock.signatures) == 3


def test_prepares_from_one_member_twice_do_not_make_a_quorum():
    rep, e = _prepared_follower()
    recv(rep, prepare(1, e, "b"))
    assert not sent(recv(rep, prepare(1, e, "b")), Commit)
    assert rep.hard.lock is None


def test_replica_never_prepares_two_digests_for_one_term_and_round():
    rep, e = _prepared_follower()
    other = entry(variant=1)
    actions = recv(rep, preprepare(1, other))  # the same leader, a second proposal: equivocation
    assert not [a for a in actions if isinstance(a, ValidateProposal)]
    assert not [p for p in sent(actions, Prepare) if p.digest == other.digest()]


def test_restarted_replica_never_prepares_a_second_digest():
    rep, e = _prepared_follower()
    restarted = replica("a", PersistedState(rep.hard, []))
    recv(restarted, new_term(1, "b", voters=("b", "c", "d")))
    actions = recv(restarted, preprepare(1, entry(variant=1)))
    assert not [a for a in actions if isinstance(a, ValidateProposal)]


def test_two_different_proposals_for_one_term_and_round_produce_signed_evidence():
    rep, e = _prepared_follower()
    actions = recv(rep, preprepare(1, entry(variant=1)))
    (report,) = [a for a in actions if isinstance(a, ReportEvidence)]
    ev = report.evidence
    assert ev.leader == "b" and {ev.digest_a, ev.digest_b} == {e.digest(), entry(variant=1).digest()}
    assert Verifier(SWARM, Membership(MEMBERS), RING.signer("d")).evidence(ev)
    assert sent(actions, EvidenceMessage) and rep.term == 2  # shared, and the leader is replaced


def test_2f_plus_1_commits_make_the_entry_final_persist_then_apply():
    rep, e = _prepared_follower()
    recv(rep, prepare(1, e, "b"))
    recv(rep, prepare(1, e, "c"))
    recv(rep, commit(1, e, "b"))
    actions = recv(rep, commit(1, e, "c"))
    i_persist = index_of(actions, lambda a: isinstance(a, PersistEntry))
    i_apply = index_of(actions, lambda a: isinstance(a, Apply))
    assert 0 <= i_persist < i_apply
    ce = actions[i_persist].committed
    assert ce.entry == e and ce.cert.digest == e.digest() and len(ce.cert.signatures) == 3
    assert rep.committed_round == 1 and rep.head_state_hash == e.state_hash


def test_commits_arriving_after_the_certificate_still_count_for_the_next_leader():
    # The certificate forms with the first 2f+1 Commits; the fourth, arriving later, joins the certificate the
    # next leader carries, so a member that is merely last is not docked consensus participation.
    rep, e = _prepared_follower()
    recv(rep, prepare(1, e, "b"))
    recv(rep, prepare(1, e, "c"))
    recv(rep, commit(1, e, "b"))
    recv(rep, commit(1, e, "c"))
    assert rep.committed_round == 1
    assert {s for s, _ in rep.certificate_with_late_commits(1).signatures} == {"a", "b", "c"}
    forged = replace(commit(1, e, "d"), sig=commit(1, e, "c").sig)
    recv(rep, forged)  # a bad signature is dropped before any handler
    recv(rep, commit(2, e, "d"))  # another term's Commit is not this certificate's
    assert {s for s, _ in rep.certificate_with_late_commits(1).signatures} == {"a", "b", "c"}
    recv(rep, commit(1, e, "d"))
    cert = rep.certificate_with_late_commits(1)
    assert {s for s, _ in cert.signatures} == {"a", "b", "c", "d"} and cert.digest == e.digest() and cert.term == 1
    assert rep.certificate_with_late_commits(0) is None and rep.certificate_with_late_commits(2) is None


def test_f_plus_1_commits_do_not_commit():
    rep, e = _prepared_follower()
    recv(rep, commit(1, e, "b"))
    actions = recv(rep, commit(1, e, "c"))
    assert not [a for a in actions if isinstance(a, (PersistEntry, Apply))] and rep.committed_round == 0


def test_planted_f_plus_1_quorum_commits_too_early():
    """The hook the simulator test uses: with a wrong quorum the same messages DO commit."""
    rep = replica("a", quorum_override=2)
    recv(rep, new_term(1, "b", voters=("b", "c")))
    e = entry()
    recv(rep, preprepare(1, e))
    rep.step(LATER, ValidationResult(1, 1, e.digest(), ok=True))
    recv(rep, prepare(1, e, "b"))
    recv(rep, commit(1, e, "b"))
    assert rep.committed_round == 1


# ------------------------------------------------------------------------------------------------ catch-up, durability

def _certified(e, term=1, signers=("b", "c", "d")):
    sigs = tuple((s, commit(term, e, s).sig) for s in signers)
    return CommittedEntry(e, CommitCertificate(term, e.round, e.digest(), sigs))


def test_catch_up_applies_only_entries_with_valid_commit_certificates():
    rep = replica("a")
    e1 = entry(1)
    e2 = entry(2, parent=e1.state_hash)
    bad = CommittedEntry(e1, replace(_certified(e1).cert, signatures=_certified(e1).cert.signatures[:2]))
    recv(rep, sign(CatchUpResponse(1, (bad,), "b")))
    assert rep.committed_round == 0
    actions = recv(rep, sign(CatchUpResponse(1, (_certified(e1), _certified(e2)), "b")))
    assert [a.committed.entry.round for a in actions if isinstance(a, PersistEntry)] == [1, 2]


def _certified_chain(rounds: int) -> list:
    chain, parent = [], GENESIS_HASH
    for r in range(1, rounds + 1):
        e = entry(r, parent=parent)
        chain.append(_certified(e))
        parent = e.state_hash
    return chain


def _windowed(node="a", memory_rounds=4, rounds=20):
    """A replica keeping ``memory_rounds`` entries in memory that caught up ``rounds`` certified rounds."""
    rep = replica(node)
    rep.cfg.memory_rounds = memory_rounds
    chain = _certified_chain(rounds)
    for start in range(0, rounds, 8):
        recv(rep, sign(CatchUpResponse(start + 1, tuple(chain[start:start + 8]), "b")))
    assert rep.committed_round == rounds
    return rep, chain


def test_memory_holds_a_bounded_window_of_the_committed_chain():
    rep, chain = _windowed(memory_rounds=4, rounds=40)
    assert len(rep.chain) <= 8 and rep.chain_base + len(rep.chain) == 40
    assert rep.head_state_hash == chain[-1].entry.state_hash
    recent = sent(recv(rep, sign(CatchUpRequest(39, "c"))), CatchUpResponse)
    assert [ce.entry.round for ce in recent[0].entries] == [39, 40]  # served from memory, no store read


def test_catch_up_from_before_the_window_is_read_from_the_store_and_signed_by_the_core():
    rep, chain = _windowed(memory_rounds=4, rounds=40)
    actions = recv(rep, sign(CatchUpRequest(3, "c")))
    assert sent(actions, CatchUpResponse) == []
    [load] = [a for a in actions if isinstance(a, LoadEntries)]
    assert (load.peer, load.from_round) == ("c", 3)
    answer = sent(rep.step(LATER, EntriesLoaded("c", 3, tuple(chain[2:10]))), CatchUpResponse)
    assert [ce.entry.round for ce in answer[0].entries] == list(range(3, 11))
    assert Verifier(SWARM, Membership(MEMBERS), RING.signer("c")).message(answer[0])
    # A laggard that receives it commits the rounds (the certificates are the originals).
    laggard = replica("d")
    recv(laggard, sign(CatchUpResponse(1, tuple(chain[:2]), "b")))
    persisted = [a for a in recv(laggard, answer[0]) if isinstance(a, PersistEntry)]
    assert [a.committed.entry.round for a in persisted] == list(range(3, 11))


def test_store_reads_for_old_rounds_are_rate_limited_per_peer_and_bad_loads_are_dropped():
    rep, chain = _windowed(memory_rounds=4, rounds=40)
    assert [a for a in recv(rep, sign(CatchUpRequest(1, "c"))) if isinstance(a, LoadEntries)]
    assert not [a for a in recv(rep, sign(CatchUpRequest(1, "c"))) if isinstance(a, LoadEntries)]  # same instant
    assert [a for a in recv(rep, sign(CatchUpRequest(1, "d"))) if isinstance(a, LoadEntries)]  # another peer
    later = LATER + TIMING.heartbeat_interval
    assert [a for a in recv(rep, sign(CatchUpRequest(1, "c")), now=later) if isinstance(a, LoadEntries)]
    gap = (chain[0], chain[2])  # not contiguous
    assert sent(rep.step(later, EntriesLoaded("c", 1, gap)), CatchUpResponse) == []
    assert sent(rep.step(later, EntriesLoaded("c", 2, tuple(chain[:3]))), CatchUpResponse) == []  # wrong start
    assert sent(rep.step(later, EntriesLoaded("mallory", 1, tuple(chain[:3]))), CatchUpResponse) == []


def test_restart_from_a_chain_tail_resumes_at_the_right_round():
    chain = _certified_chain(12)
    rep = replica("a", PersistedState(HardState(term=1), chain[-3:], base_round=9))
    assert rep.committed_round == 12 and rep.head_state_hash == chain[-1].entry.state_hash
    with pytest.raises(ValueError):
        PersistedState(HardState(), [], base_round=5)  # no head entry
    with pytest.raises(ValueError):
        PersistedState(HardState(), chain[-3:], base_round=8)  # rounds do not follow the base


def test_nothing_committed_is_ever_overwritten():
    rep = replica("a")
    e1 = entry(1)
    recv(rep, sign(CatchUpResponse(1, (_certified(e1),), "b")))
    conflicting = entry(1, variant=1)
    actions = recv(rep, sign(CatchUpResponse(1, (_certified(conflicting),), "c")))
    assert not [a for a in actions if isinstance(a, PersistEntry)] and rep.chain[0].entry == e1


def test_restart_resumes_from_persisted_state_only():
    rep, e = _prepared_follower()
    for m in ("b", "c"):
        recv(rep, prepare(1, e, m))
    recv(rep, commit(1, e, "b"))
    actions = recv(rep, commit(1, e, "c"))
    chain = [a.committed for a in actions if isinstance(a, PersistEntry)]
    restarted = replica("a", PersistedState(rep.hard, chain))
    assert restarted.committed_round == 1 and restarted.term == 1 and restarted.hard.lock == rep.hard.lock
    assert restarted.head_state_hash == e.state_hash


def test_persisted_state_never_goes_backwards():
    base = HardState(term=3, voted_term=3, voted_for="b", prepared_term=3, prepared_round=2)
    assert HardState(term=4, voted_term=3, prepared_term=3, prepared_round=2).not_older_than(base)
    assert not replace(base, term=2).not_older_than(base)
    assert not replace(base, voted_term=2).not_older_than(base)
    assert not replace(base, prepared_round=1).not_older_than(base)
    lock = prepared_cert(2, entry())
    assert not replace(base, lock=None).not_older_than(replace(base, lock=lock))


# ------------------------------------------------------------------------------------------------ timing

def test_timeouts_adapt_to_measured_round_times():
    t = AdaptiveTimeouts(TimingConfig(min_round_timeout=1.0, margin=3.0, max_timeout=1000.0))
    for _ in range(50):
        t.observe_round(10.0)
    assert 29.0 < t.round_timeout() < 31.0  # margin x estimate, not a constant
    for _ in range(50):
        t.observe_round(0.01)
    assert t.round_timeout() == 1.0


def test_timeouts_back_off_on_failed_terms_and_reset_on_progress():
    t = AdaptiveTimeouts(TimingConfig(min_round_timeout=1.0, max_timeout=1000.0))
    base = t.round_timeout()
    t.term_failed()
    t.term_failed()
    assert t.round_timeout() == 4 * base
    t.observe_round(0.0)
    assert t.round_timeout() == base

"""Safety: every certificate the core accepts counts DISTINCT signers (issue 22, property 1).

One member's valid signature repeated 2f+1 times is a single vote. Each test drives a Replica through its public
``step`` with hand-signed messages (or the Verifier the core uses), so that counting signatures instead of signers
-- in consensus/quorum.py or in the catch-up path of consensus/replica.py -- commits, locks or catches up a round
that no quorum agreed on, and the test fails.
"""
from __future__ import annotations

from consensus.actions import Apply, PersistEntry, PersistHardState, ValidateProposal
from consensus.events import Tick
from consensus.messages import (
    CatchUpResponse,
    CommitCertificate,
    CommittedEntry,
    NewTerm,
    Prepare,
    PreparedCertificate,
)
from consensus.quorum import Membership, Verifier
from consensus.replica import CANDIDATE, ELECTING, FOLLOWER, LEADER
from tests.test_consensus_harness import (
    MEMBERS,
    RING,
    SWARM,
    commit,
    entry,
    new_term,
    prepared_cert,
    preprepare,
    recv,
    replica,
    sign,
    vote,
)


def _repeated_commit_cert(e, signer="b", times=3, term=1) -> CommitCertificate:
    sig = commit(term, e, signer).sig
    return CommitCertificate(term, e.round, e.digest(), tuple((signer, sig) for _ in range(times)))


def _repeated_prepared_cert(e, signer="c", times=3, term=1) -> PreparedCertificate:
    sig = sign(Prepare(term, e.round, e.digest(), signer)).sig
    return PreparedCertificate(term, e.round, e, tuple((signer, sig) for _ in range(times)))


def _verifier() -> Verifier:
    return Verifier(SWARM, Membership(MEMBERS), RING.signer("a"))


def test_safety_verifier_counts_one_repeated_signer_once_in_commit_and_prepared_certificates():
    e = entry()
    v = _verifier()
    assert v.membership.quorum == 3
    assert not v.committed(_repeated_commit_cert(e, times=3))
    assert not v.committed(_repeated_commit_cert(e, times=10))
    assert not v.prepared(_repeated_prepared_cert(e, times=3))
    # Two distinct signers, one repeated: still two.
    sigs = tuple((s, commit(1, e, s).sig) for s in ("b", "c", "b", "c"))
    assert not v.committed(CommitCertificate(1, e.round, e.digest(), sigs))
    # The control: three distinct signers do commit and lock.
    assert v.committed(CommitCertificate(1, e.round, e.digest(),
                                         tuple((s, commit(1, e, s).sig) for s in ("b", "c", "d"))))
    assert v.prepared(prepared_cert(1, e))


def test_safety_catch_up_with_one_signer_repeated_2f_plus_1_times_commits_nothing():
    rep = replica("a")
    e1 = entry(1)
    forged = CommittedEntry(e1, _repeated_commit_cert(e1, "b", 3))
    actions = recv(rep, sign(CatchUpResponse(1, (forged,), "b")))
    assert not [a for a in actions if isinstance(a, (PersistEntry, Apply))]
    assert rep.committed_round == 0
    # Repeating a second signer too (two distinct) is still short of Q = 3.
    sigs = tuple((s, commit(1, e1, s).sig) for s in ("b", "c", "b", "c", "b"))
    two = CommittedEntry(e1, CommitCertificate(1, e1.round, e1.digest(), sigs))
    actions = recv(rep, sign(CatchUpResponse(1, (two,), "c")))
    assert not [a for a in actions if isinstance(a, (PersistEntry, Apply))] and rep.committed_round == 0
    # The control: the same entry with three distinct signers is caught up.
    good = CommittedEntry(e1, CommitCertificate(1, e1.round, e1.digest(),
                                                tuple((s, commit(1, e1, s).sig) for s in ("b", "c", "d"))))
    actions = recv(rep, sign(CatchUpResponse(1, (good,), "b")))
    assert [a.committed.entry.round for a in actions if isinstance(a, PersistEntry)] == [1]


def test_safety_new_term_whose_vote_carries_a_lock_of_one_repeated_signer_is_refused():
    """A prepared certificate inside a vote must be 2f+1 distinct Prepares: a lock forged from one member's
    signature would force the new leader to re-propose (and the swarm to commit) an entry nobody prepared."""
    locked = entry(variant=1)
    rep = replica("a")
    bad_lock = _repeated_prepared_cert(locked, "c", 3)
    votes = tuple(vote(2, v, "b", bad_lock if v == "c" else None) for v in ("b", "c", "d"))
    recv(rep, sign(NewTerm(2, votes, "b")))
    assert rep.leader is None and rep.term == 1
    # And its entry is not forced on us: a proposal of something else in term 2 is still unknown (no leader).
    assert not [a for a in recv(rep, preprepare(2, entry(variant=0))) if isinstance(a, ValidateProposal)]
    # The control: the same NewTerm with a lock of three distinct signers is adopted.
    rep2 = replica("a")
    recv(rep2, new_term(2, "b", voters=("b", "c", "d"), locks={"c": prepared_cert(1, locked)}))
    assert (rep2.term, rep2.leader, rep2.role) == (2, "b", FOLLOWER)


def test_safety_candidate_does_not_count_a_vote_whose_lock_repeats_one_signer():
    rep = replica("a", now=0.0)
    assert rep.role == ELECTING
    rep.step(rep.candidacy_at, Tick())
    assert rep.role == CANDIDATE
    recv(rep, vote(1, "b", "a"))
    bad_lock = _repeated_prepared_cert(entry(variant=1), "d", 3)
    actions = recv(rep, vote(1, "c", "a", lock=bad_lock))
    assert rep.role == CANDIDATE  # c's vote did not count: two votes, Q = 3
    assert not [a for a in actions if isinstance(a, PersistHardState) and a.state.lock is not None]
    recv(rep, vote(1, "d", "a"))
    assert rep.role == LEADER  # the control: a third valid vote wins

"""One test per protocol rule (DESIGN.md section 3) of the commit path, catch-up, durability and timing, each named
after the rule, driving one replica by hand (elections and signatures: tests/test_consensus_rules.py)."""
from __future__ import annotations

from dataclasses import replace

import pytest

from consensus.actions import (Apply, BuildProposal, LoadEntries, PersistEntry, PersistHardState, ReportEvidence,
                               ValidateProposal)
from consensus.events import EntriesLoaded, PayloadsReady, ProposalBuilt, Tick, ValidationResult
from consensus.messages import (CatchUpRequest, CatchUpResponse, Commit, CommitCertificate, CommittedEntry, EvidenceMessage,
                                PrePrepare, Prepare)
from consensus.quorum import Membership, Verifier
from consensus.state import HardState, PersistedState
from consensus.timing import AdaptiveTimeouts, TimingConfig

from tests.test_consensus_harness import (GENESIS as GENESIS_HASH, LATER, MEMBERS, RING, SWARM, TIMING, commit,
                                          entry, follower_of, index_of, is_persist, new_term, prepare, prepared_cert,
                                          preprepare, recv, replica, sent, sign, vote)
from tests.test_consensus_rules import _electing

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

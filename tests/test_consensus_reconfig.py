"""Committed membership changes in the consensus core: the configuration history, the entry that carries a change,
what a replica does when one commits, and the simulator over seeded schedules that grow and shrink the swarm."""
from __future__ import annotations

import os
import random
from dataclasses import replace
from multiprocessing import get_context

import pytest

from consensus.configs import ConfigHistory
from consensus.events import Received
from consensus.messages import (CatchUpRequest, CatchUpResponse, Commit, CommitCertificate, CommittedEntry, NewTerm,
                                Prepare, Timeout, Vote, entry_from_plain, from_wire, to_wire)
from consensus.quorum import sign_fields
from consensus.replica import ELECTING, Config, Replica
from consensus.sim.fakecrypto import KeyRing
from consensus.sim.runner import run_seed
from consensus.sim.scenarios import RECONFIG
from consensus.sim.world import GENESIS, build_entry
from consensus.state import PersistedState
from crypto.wire import DecodeError
from tests.test_consensus_harness import LATER, MEMBERS, SWARM, TIMING, sent

RING = KeyRing(7, MEMBERS + ["e"])  # the harness' keys for a..d, and one for a joiner


def sign(msg):
    sig = sign_fields(SWARM, RING.signer(msg.sender), msg.kind, msg.term, msg.round, msg.digest, msg.sender)
    return replace(msg, sig=sig)


def replica(node: str = "a") -> Replica:
    return Replica(Config(SWARM, node, MEMBERS, GENESIS, TIMING), RING.signer(node), PersistedState(),
                   random.Random(0), 0.0)


def committed(rnd: int, parent: bytes, members=None, signers=("b", "c", "d"), term: int = 1) -> CommittedEntry:
    e = build_entry(rnd, parent, MEMBERS, 3, change=members)
    sigs = tuple((s, sign(Commit(term, rnd, e.digest(), s)).sig) for s in sorted(signers))
    return CommittedEntry(e, CommitCertificate(term, rnd, e.digest(), sigs))


def catch_up(rep: Replica, entries, sender: str = "b"):
    return rep.step(LATER, Received(sign(CatchUpResponse(entries[0].entry.round, tuple(entries), sender))))


# ------------------------------------------------------------------------------------------------ the history

def test_history_gives_the_configuration_in_force_at_each_round():
    history = ConfigHistory(["a", "b", "c", "d"])
    history.add(4, ["a", "b", "c", "d", "e"])
    history.add(9, ["a", "b", "c"])
    assert [history.at(r).n for r in (1, 3, 4, 8, 9, 50)] == [4, 4, 5, 5, 3, 3]
    assert [history.epoch_of(r) for r in (1, 3, 4, 9, 50)] == [1, 1, 4, 9, 9]
    assert history.changes() == [(4, ("a", "b", "c", "d", "e")), (9, ("a", "b", "c"))]
    history.add(4, ["e", "d", "c", "b", "a"])  # the same change again (a replayed chain): nothing moves
    assert len(history) == 3
    with pytest.raises(ValueError, match="two different configurations"):
        history.add(4, ["a", "b"])
    with pytest.raises(ValueError, match="comes after"):
        history.add(6, ["a", "b"])


def test_an_entry_carries_its_change_on_the_wire_and_one_without_keeps_its_digest():
    plain = build_entry(1, GENESIS, MEMBERS, 3)
    assert "members" not in plain.to_plain()
    change = build_entry(1, GENESIS, MEMBERS, 3, change=("a", "b", "c", "d", "e"))
    assert change.digest() != plain.digest()
    assert entry_from_plain(change.to_plain()) == change
    for bad in (["b", "a"], ["a", "a"], [], ["a", ""], "a"):
        with pytest.raises(DecodeError):
            entry_from_plain({**change.to_plain(), "members": bad})


def test_a_new_term_names_its_configuration_and_the_wire_keeps_it():
    msg = sign(NewTerm(3, (), "b", epoch=7))
    assert from_wire(to_wire(msg)).epoch == 7
    assert sign(NewTerm(3, (), "b", epoch=8)).digest != msg.digest  # the leader's signature covers it
    with pytest.raises(DecodeError):
        from_wire({**to_wire(msg), "epoch": 0})


# ------------------------------------------------------------------------------------------------ the replica

def test_a_committed_change_puts_the_new_members_in_force_from_the_next_round_and_ends_the_term():
    rep = replica("a")
    first = committed(1, GENESIS, members=("a", "b", "c", "d", "e"))
    actions = catch_up(rep, [first])
    assert rep.committed_round == 1 and rep.membership.members == ("a", "b", "c", "d", "e")
    assert (rep.membership.n, rep.membership.quorum, rep.epoch) == (5, 4, 2)
    assert rep.role == ELECTING and rep.term == 2  # the term's certificate counted in the old configuration
    assert [m.term for m in sent(actions, Timeout)] == [2]
    assert "membership changed at round 1" in rep.last_term_change
    # round 2 is counted in the new configuration: three signers are no longer a quorum, four of them are
    second = committed(2, first.entry.state_hash, signers=("b", "c", "d"))
    catch_up(rep, [second])
    assert rep.committed_round == 1
    second = committed(2, first.entry.state_hash, signers=("b", "c", "d", "e"))
    catch_up(rep, [second], sender="e")
    assert rep.committed_round == 2


def test_a_removed_member_stops_counting_at_the_change_even_for_signatures_it_gave_before():
    rep = replica("a")
    first = committed(1, GENESIS, members=("a", "b", "c"))
    early = sign(Commit(1, 2, b"\x01" * 32, "d"))  # d, still a member, commits to round 2 before the change
    rep.step(LATER, Received(early))
    assert "d" in rep.commits[(1, 2, b"\x01" * 32)]
    catch_up(rep, [first])
    assert rep.membership.members == ("a", "b", "c") and rep.membership.quorum == 2
    assert rep._counted(rep.commits, (1, 2, b"\x01" * 32)) == {}
    assert sent(rep.step(LATER, Received(sign(Timeout(9, 1, "d")))), None) == []  # its messages are dropped
    assert "d" not in rep.highest_timeout


def test_a_leader_of_another_configuration_is_not_followed_until_its_changes_are_committed():
    rep = replica("a")
    votes = tuple(sign(Vote(2, 0, "b", None, v)) for v in ("b", "c", "d"))
    ahead = sign(NewTerm(2, votes, "b", epoch=5))  # b counts in a configuration from round 5 that we do not know
    actions = rep.step(LATER, Received(ahead))
    assert rep.leader is None
    assert [m.round for m in sent(actions, CatchUpRequest)] == [1]
    rep = replica("a")
    catch_up(rep, [committed(1, GENESIS, members=("a", "b", "c", "d", "e"))])
    stale = sign(NewTerm(2, votes, "b", epoch=1))  # a certificate of the old configuration
    rep.step(LATER, Received(stale))
    assert rep.leader is None


def test_a_node_outside_the_configuration_follows_the_chain_but_never_signs():
    joiner = replica("e")
    assert not joiner.is_member
    out = []
    for t in (1.0, 5.0, 30.0, LATER):
        out += joiner.step(t, Received(sign(Timeout(2, 0, "b"))))
    out += joiner.step(LATER, Received(sign(CatchUpResponse(1, (committed(1, GENESIS),), "b"))))
    assert joiner.committed_round == 1
    assert not [m for m in sent(out) if isinstance(m, (Vote, Prepare, Commit, Timeout))]
    # once a committed entry adds it, it counts: it enters the next term and says so
    second = committed(2, joiner.head_state_hash, members=("a", "b", "c", "d", "e"))
    actions = joiner.step(LATER, Received(sign(CatchUpResponse(2, (second,), "b"))))
    assert joiner.is_member and [m.term for m in sent(actions, Timeout)] == [2]


def test_a_restarted_replica_reads_changes_older_than_its_chain_tail_from_the_persisted_state():
    first = committed(1, GENESIS, members=("a", "b", "c", "d", "e"))
    second = committed(2, first.entry.state_hash, signers=("b", "c", "d", "e"))
    cfg = Config(SWARM, "a", MEMBERS, GENESIS, TIMING)
    rep = Replica(cfg, RING.signer("a"), PersistedState(chain=[second], base_round=1, configs=((2, first.entry.members),)),
                  random.Random(0), 0.0)
    assert rep.membership.n == 5 and rep.epoch == 2
    rep = Replica(cfg, RING.signer("a"), PersistedState(chain=[first, second]), random.Random(0), 0.0)
    assert rep.membership.n == 5 and rep.configs.changes() == [(2, first.entry.members)]


# ------------------------------------------------------------------------------------------------ the simulator

SEEDS_PER_SCENARIO = {4: 20, 7: 10}  # 6 scenarios x 30 = 180 seeds here; `python -m consensus.sim` runs thousands


def _run_chunk(job):
    scenario, n, seeds = job
    out = []
    for seed in seeds:
        res = run_seed(scenario, seed, n)
        out.append((res.violation and f"{res.violation}\n  replay: {res.replay_command()}", res.rounds))
    return out


def test_the_simulator_finds_no_violation_while_the_swarm_grows_and_shrinks():
    jobs = [(scenario, n, list(range(count))[i::2]) for scenario in RECONFIG
            for n, count in SEEDS_PER_SCENARIO.items() for i in range(2)]
    with get_context("fork").Pool(max(1, min(2, os.cpu_count() or 1))) as pool:
        results = [r for chunk in pool.map(_run_chunk, jobs, chunksize=1) for r in chunk]
    failures = [violation for violation, _ in results if violation]
    assert len(results) == 180
    assert not failures, "\n".join(failures[:5])


def test_changes_really_happen_in_the_simulated_schedules():
    from consensus.sim.scenarios import build_world

    grown = shrunk = 0
    for seed in range(12):
        world = build_world("reconfig_lossy", seed, 4)
        assert world.run()["live"]
        sizes = [len(members) for _round, members in sorted(world.changes.items())]
        grown += bool(sizes) and max(sizes) == 7
        shrunk += len(sizes) > 3 and sizes[-1] < 7
        joined = [n for n in world.live_nodes() if n.id in world.joiners]
        assert all(len(n.store.chain) >= world.target_round for n in joined)  # joiners caught up from round 0
    assert grown >= 10 and shrunk >= 8


def test_planted_bug_a_replica_that_keeps_counting_in_the_old_configuration_is_caught(monkeypatch):
    """Without _reconfigure, members keep counting a removed member's signatures (and an old, smaller quorum): the
    certificates they store are not quorums of the configuration in force."""
    monkeypatch.setattr(Replica, "_reconfigure", lambda self, round_: None)
    found = [run_seed("reconfig_happy", seed, 4).violation for seed in range(6)]
    assert all(v and v.startswith("certified in force") for v in found), found

"""Shared helpers for the consensus rule tests: a four-member swarm with fake keys and hand-signed messages."""
from __future__ import annotations

import random
from dataclasses import replace

from consensus.actions import Broadcast, PersistEntry, PersistHardState, Send
from consensus.events import Received
from consensus.messages import Commit, NewTerm, PrePrepare, Prepare, PreparedCertificate, Vote
from consensus.quorum import sign_fields
from consensus.replica import Config, Replica
from consensus.sim.fakecrypto import KeyRing
from consensus.sim.world import GENESIS, build_entry
from consensus.state import PersistedState
from consensus.timing import TimingConfig

SWARM = "test-swarm"
MEMBERS = ["a", "b", "c", "d"]  # n = 4, f = 1, Q = 3
RING = KeyRing(7, MEMBERS)
TIMING = TimingConfig(heartbeat_interval=0.5, min_round_timeout=2.0, max_timeout=30.0, candidacy_delay=0.3)
LATER = 1000.0  # a time at which every candidacy slot of term 1 or 2 is open


def sign(msg, swarm: str = SWARM):
    sig = sign_fields(swarm, RING.signer(msg.sender), msg.kind, msg.term, msg.round, msg.digest, msg.sender)
    return replace(msg, sig=sig)


def replica(node: str = "a", persisted: PersistedState | None = None, quorum_override: int | None = None,
            now: float = 0.0) -> Replica:
    cfg = Config(SWARM, node, MEMBERS, GENESIS, TIMING, quorum_override)
    return Replica(cfg, RING.signer(node), persisted or PersistedState(), random.Random(0), now)


def entry(rnd: int = 1, parent: bytes = GENESIS, variant: int = 0):
    return build_entry(rnd, parent, MEMBERS, 3, variant)


def vote(term: int, voter: str, candidate: str, lock: PreparedCertificate | None = None, rnd: int = 0) -> Vote:
    return sign(Vote(term, rnd, candidate, lock, voter))


def new_term(term: int, leader: str, voters=("b", "c", "d"), locks=None) -> NewTerm:
    locks = locks or {}
    votes = tuple(vote(term, v, leader, locks.get(v)) for v in sorted(voters))
    return sign(NewTerm(term, votes, leader))


def prepared_cert(term: int, e, signers=("b", "c", "d")) -> PreparedCertificate:
    sigs = tuple((s, sign(Prepare(term, e.round, e.digest(), s)).sig) for s in sorted(signers))
    return PreparedCertificate(term, e.round, e, sigs)


def recv(rep: Replica, msg, now: float = LATER):
    return rep.step(now, Received(msg))


def follower_of(leader: str = "b", term: int = 1, node: str = "a", now: float = LATER) -> Replica:
    """A replica that has accepted ``leader`` for ``term`` through a valid NewTerm."""
    rep = replica(node)
    recv(rep, new_term(term, leader, voters=tuple(m for m in MEMBERS if m != node)), now)
    assert rep.leader == leader and rep.term == term
    return rep


def sent(actions, kind=None):
    """Messages leaving in these actions (Send and Broadcast), optionally of one class."""
    out = [a.message for a in actions if isinstance(a, (Send, Broadcast))]
    return [m for m in out if kind is None or isinstance(m, kind)]


def index_of(actions, predicate) -> int:
    for i, a in enumerate(actions):
        if predicate(a):
            return i
    return -1


def is_persist(a) -> bool:
    return isinstance(a, (PersistHardState, PersistEntry))


def prepare(term, e, sender):
    return sign(Prepare(term, e.round, e.digest(), sender))


def commit(term, e, sender):
    return sign(Commit(term, e.round, e.digest(), sender))


def preprepare(term, e, leader="b"):
    return sign(PrePrepare(term, e.round, e, leader))

"""Pure election arithmetic: when a higher term may be adopted, when a term has failed, what a new leader must
re-propose. Kept apart from the replica so each rule is one small function with one test."""
from __future__ import annotations

import hashlib
from typing import Iterable

from .messages import PreparedCertificate, Vote


def adoptable_term(highest_timeout_by_sender: dict[str, int], my_term: int, weak_quorum: int) -> int | None:
    """The highest term that at least ``weak_quorum`` (f+1) senders have timed out into, if above ``my_term``.

    With f+1 senders at least one is honest, so one faulty node cannot drag anyone to a higher term; taking the
    (f+1)-th highest claim (PBFT: the smallest view in a set of f+1) ignores up to f inflated claims."""
    higher = sorted((t for t in highest_timeout_by_sender.values() if t > my_term), reverse=True)
    if len(higher) < weak_quorum:
        return None
    return higher[weak_quorum - 1]


def term_entered_by_quorum(highest_timeout_by_sender: dict[str, int], term: int, quorum: int) -> bool:
    """2f+1 members have entered ``term`` (their Timeout for it or a later one): only then may a node give up on
    ``term`` itself, so a lone node cut off from the rest does not climb terms on its own."""
    return sum(1 for t in highest_timeout_by_sender.values() if t >= term) >= quorum


def candidate_rank(term: int, candidate: str, members: Iterable[str]) -> int:
    """A per-term pseudo-random order of members that every node computes alike (0 stands first).

    Randomized back-off that all honest nodes agree on: the member at rank k stands after k slots, and voters refuse
    a candidate that stands before its slot. So a faulty node cannot grab votes by always standing first (with
    first-come voting it could split every election), and in each term a fresh order decides who goes first."""
    def key(m: str) -> bytes:
        return hashlib.sha256(f"swarm/candidate-order/{term}/{m}".encode()).digest()
    order = sorted(members, key=key)
    return order.index(candidate)


def grants_vote(request_term: int, candidate_round: int, my_term: int, voted_term: int, my_round: int,
                leader_known: bool, slot_open: bool = True) -> bool:
    """Raft's vote rule with BFT twists: the term must already be ours (entered by our own timeout or f+1 others'),
    one vote per term, only while the term has no leader, only once the candidate's slot has opened, and only for a
    candidate whose committed chain is at least as long as ours."""
    return (request_term == my_term and not leader_known and voted_term < request_term
            and candidate_round >= my_round and slot_open)


def required_reproposals(votes: Iterable[Vote]) -> dict[int, PreparedCertificate]:
    """PBFT's view-change rule: for each round, the prepared certificate with the highest term among the votes.

    A new leader must re-propose it for that round, and replicas refuse anything else: if any entry committed at that
    round, 2f+1 members locked it and at least one of them is in every term certificate."""
    required: dict[int, PreparedCertificate] = {}
    for v in votes:
        lock = v.lock
        if lock is not None:
            best = required.get(lock.round)
            if best is None or lock.term > best.term:
                required[lock.round] = lock
    return required

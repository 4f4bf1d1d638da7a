"""Caps on what one member's messages can make a replica remember.

A signed Prepare, Commit or PrePrepare lands in a table keyed by values its sender picks (term, round, digest). A
faulty member that signs junk as fast as it can must not grow those tables, so each keeps per sender only what an
honest sender could have produced in a round: one digest per (term, round), and at most ``MAX_TERMS_PER_ROUND``
terms (the lowest are evicted first; they are the least likely to complete a quorum). The caps only ever touch the
sender's own records, so a faulty member crowds out nobody but itself.
"""
from __future__ import annotations

MAX_TERMS_PER_ROUND = 4
# Evidence digests remembered this many rounds after they came in: enough for the leaders of the next rounds to
# commit them; the node keeps the digests of committed evidence, so a piece seen again later is not proposed twice.
EVIDENCE_MEMORY_ROUNDS = 16


def record_signature(table: dict[tuple[int, int, bytes], dict[str, bytes]], term: int, rnd: int, digest: bytes,
                     sender: str, sig: bytes, max_terms: int = MAX_TERMS_PER_ROUND) -> bool:
    """Record ``sender``'s signature on (term, rnd, digest) in a Prepare or Commit table; False if refused (a second
    digest for one (term, round), or a term below all ``max_terms`` the sender already holds in the round)."""
    mine = [key for key, sigs in table.items() if key[1] == rnd and sender in sigs]
    if any(key[0] == term and key[2] != digest for key in mine):
        return False
    terms = sorted({key[0] for key in mine})
    if term not in terms and len(terms) >= max_terms:
        if term < terms[0]:
            return False
        for key in mine:
            if key[0] == terms[0]:
                del table[key][sender]
                if not table[key]:
                    del table[key]
    table.setdefault((term, rnd, digest), {})[sender] = sig
    return True


def record_proposal(seen: dict[tuple[str, int, int], tuple[bytes, bytes]], sender: str, term: int, rnd: int,
                    digest: bytes, sig: bytes, max_terms: int = MAX_TERMS_PER_ROUND) -> None:
    """Remember the first PrePrepare of ``sender`` for (term, rnd) (what equivocation is detected against), keeping
    at most ``max_terms`` terms per sender and round."""
    terms = sorted(key[1] for key in seen if key[0] == sender and key[2] == rnd)
    if len(terms) >= max_terms:
        if term < terms[0]:
            return
        del seen[(sender, terms[0], rnd)]
    seen[(sender, term, rnd)] = (digest, sig)

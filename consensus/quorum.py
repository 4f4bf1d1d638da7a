"""Membership, quorum sizes, and signature checks for messages and certificates (one configuration at a time;
consensus/configs.py says which configuration counts at which round).

Q = ceil((n + f + 1) / 2), which is exactly 2f+1 when n = 3f+1: any two quorums then share at least f+1 members, so
at least one honest one. (For n = 2 or 3, f = 0 and 2f+1 = 1 would let two disjoint "quorums" decide differently;
the formula gives 2, the crash-fault majority.) Never a bare majority when f > 0.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Iterable, Protocol

from .messages import (CatchUpResponse, CommitCertificate, Evidence, EvidenceMessage, Message, NewTerm,
                       PreparedCertificate, Vote, signed_fields, signing_bytes)


NOT_MEMBER = "not_member"
BAD_SIGNATURE = "bad_signature"
DUPLICATE_SIGNER = "duplicate_signer"


class Crypto(Protocol):
    """Injected by the node: signs as this node, verifies any member's signature. Pure computation."""

    def sign(self, payload: bytes) -> bytes: ...

    def verify(self, sender_id: str, payload: bytes, sig: bytes) -> bool: ...


class Membership:
    """One configuration's member list; n, f and the quorum size derived from it."""

    def __init__(self, members: Iterable[str], quorum_override: int | None = None):
        self.members: tuple[str, ...] = tuple(sorted(set(members)))
        if not self.members:
            raise ValueError("membership needs at least one member")
        self.n = len(self.members)
        self.f = (self.n - 1) // 3
        # quorum_override exists only so tests can plant a bug (e.g. f+1) and watch the simulator catch it.
        self.quorum = quorum_override if quorum_override is not None else (self.n + self.f) // 2 + 1
        self.weak_quorum = self.f + 1  # enough to contain one honest member
        self._set = frozenset(self.members)

    def __contains__(self, node_id: str) -> bool:
        return node_id in self._set


class Verifier:
    """Checks consensus signatures for one swarm, memoizing results (a cert re-sends signatures already seen).
    The node's only signature cache: the Crypto it is given verifies every call."""

    def __init__(self, swarm_id: str, membership: Membership, crypto: Crypto, cache_size: int = 4096):
        self.swarm_id = swarm_id
        self.membership = membership
        self.crypto = crypto
        self._cache: OrderedDict[tuple, bool] = OrderedDict()
        self._cache_size = cache_size
        self.verifications = 0  # real signature checks done (cache misses), for benchmarks

    def check(self, kind: str, term: int, round: int, digest: bytes, signer: str, sig: bytes,
              config: Membership | None = None) -> bool:
        if signer not in (config or self.membership):
            return False
        key = (kind, term, round, digest, signer, sig)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        self.verifications += 1
        ok = bool(self.crypto.verify(signer, signing_bytes(self.swarm_id, kind, term, round, digest, signer), sig))
        self._cache[key] = ok
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return ok

    def message(self, msg: Message) -> bool:
        kind, term, rnd, digest, sender = signed_fields(msg)
        return self.check(kind, term, rnd, digest, sender, msg.sig)

    def signers(self, kind: str, term: int, round: int, digest: bytes, sigs: Iterable[tuple[str, bytes]],
                config: Membership | None = None) -> tuple[set[str], list[tuple[str, str]]]:
        """(the distinct members whose signature over (kind, term, round, digest) verifies, a (signer, why) pair
        for every signature that does not, why being NOT_MEMBER, DUPLICATE_SIGNER or BAD_SIGNATURE). The one
        reading of a
        certificate's signatures, for the core and for the ledger's checks of certificates inside entries.
        ``config``: the configuration in force at ``round`` (default: this verifier's)."""
        config = config or self.membership
        valid: set[str] = set()
        rejected: list[tuple[str, str]] = []
        seen: set[str] = set()
        for signer, sig in sigs:  # screened before any check: at most one signature check per member
            if signer not in config:
                rejected.append((signer, NOT_MEMBER))
            elif signer in seen:
                rejected.append((signer, DUPLICATE_SIGNER))
            else:
                seen.add(signer)
                if self.check(kind, term, round, digest, signer, sig, config):
                    valid.add(signer)
                else:
                    rejected.append((signer, BAD_SIGNATURE))
        return valid, rejected

    def quorum_of(self, kind: str, term: int, round: int, digest: bytes, sigs,
                  config: Membership | None = None) -> bool:
        """At least Q distinct members validly signed (kind, term, round, digest), and nothing else is in the
        certificate. What a faulty member can make us verify is bounded by work: the count, duplicates and
        non-members are screened before any signature is checked, and checking stops at the first bad one (an
        honest certificate holds only verified signatures of distinct members). ``config``: the configuration in
        force at ``round`` (default: this verifier's)."""
        config = config or self.membership
        if not self.well_formed(sigs, config):
            return False
        return all(self.check(kind, term, round, digest, signer, sig, config) for signer, sig in sigs)

    def well_formed(self, sigs, config: Membership | None = None) -> bool:
        """Between Q and n signatures, of distinct members: what any certificate must be before it costs a check."""
        config = config or self.membership
        if not config.quorum <= len(sigs) <= config.n:
            return False
        signers = [signer for signer, _sig in sigs]
        return len(set(signers)) == len(signers) and all(signer in config for signer in signers)

    def prepared(self, cert: PreparedCertificate, config: Membership | None = None) -> bool:
        return cert.entry.round == cert.round and self.quorum_of("prepare", cert.term, cert.round, cert.digest,
                                                                 cert.signatures, config)

    def committed(self, cert: CommitCertificate, config: Membership | None = None) -> bool:
        return self.quorum_of("commit", cert.term, cert.round, cert.digest, cert.signatures, config)

    def vote(self, vote: Vote, lock_config: Membership | None = None) -> bool:
        """The vote's signature, and its lock counted against ``lock_config``, the configuration in force at the
        lock's round (default: this verifier's)."""
        return self.message(vote) and (vote.lock is None or self.prepared(vote.lock, lock_config))

    def term_certificate(self, msg: NewTerm, config_at=None) -> bool:
        """2f+1 distinct members' valid votes for the sender in msg.term (locks included), counted against this
        verifier's configuration; ``config_at(round)`` gives the configuration a lock of that round is counted
        against (default: this verifier's)."""
        config = self.membership
        if not config.quorum <= len(msg.votes) <= config.n:
            return False  # screened before any signature is checked
        voters = set()
        for v in msg.votes:
            lock_config = config_at(v.lock.round) if config_at is not None and v.lock is not None else None
            if (v.term != msg.term or v.candidate != msg.sender or v.sender in voters
                    or not self.vote(v, lock_config)):
                return False
            voters.add(v.sender)
        return len(voters) >= config.quorum

    def evidence(self, e: Evidence) -> bool:
        """Two different digests, each signed in a PrePrepare for one (term, round) by the same member."""
        return (e.digest_a != e.digest_b
                and self.check("preprepare", e.term, e.round, e.digest_a, e.leader, e.sig_a)
                and self.check("preprepare", e.term, e.round, e.digest_b, e.leader, e.sig_b))


def sign_fields(swarm_id: str, crypto: Crypto, kind: str, term: int, round: int, digest: bytes, sender: str) -> bytes:
    return crypto.sign(signing_bytes(swarm_id, kind, term, round, digest, sender))


def signature_work(msg: Message) -> int:
    """The most signature checks ``msg`` can cost a replica: its own signature and every one inside the
    certificates it carries. The node charges this to the sender's rate budget before the core sees the message,
    so a member that packs certificates pays for the work it asks for."""
    if isinstance(msg, Vote):
        return 1 + (len(msg.lock.signatures) if msg.lock is not None else 0)
    if isinstance(msg, NewTerm):
        return 1 + sum(signature_work(vote) for vote in msg.votes)
    if isinstance(msg, CatchUpResponse):
        return 1 + sum(len(committed.cert.signatures) for committed in msg.entries)
    if isinstance(msg, EvidenceMessage):
        return 3
    return 1

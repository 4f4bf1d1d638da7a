"""Consensus messages, certificates and their plain-value wire form.

Every message is signed over ``signing_bytes(swarm_id, kind, term, round, digest, sender)`` where ``digest`` binds the
message's remaining content; so a signature made for one phase, term, round or swarm verifies for no other.
``to_wire``/``from_wire`` convert to and from plain values for :mod:`crypto.wire`; ``from_wire`` is strict and raises
only :class:`crypto.wire.DecodeError`.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Union

from crypto import wire
from crypto.wire import DecodeError

PROTOCOL_VERSION = 1
DIGEST_LEN = 32
MAX_ID_LEN = 128
MAX_SIG_LEN = 128
MAX_DIGESTS = 4096
MAX_CATCHUP_ENTRIES = 64
MAX_RULE_LEN = 64
MAX_MEMBERS = 1024

Signature = tuple[str, bytes]  # (signer id, signature bytes)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def signing_bytes(swarm_id: str, kind: str, term: int, round: int, digest: bytes, sender: str) -> bytes:
    """The exact bytes every consensus signature covers."""
    return wire.dumps(["swarm/consensus", PROTOCOL_VERSION, swarm_id, kind, term, round, digest, sender])


# --------------------------------------------------------------------------------------------------- entries

@dataclass(frozen=True)
class Entry:
    """What a round commits: which gradients, which rule, and the resulting state hash. Opaque to the core, except
    ``members``: when set, the entry reconfigures the swarm, and the sorted member ids it names are the configuration
    in force from the next round on (see consensus/configs.py)."""
    round: int
    gradient_digests: tuple[bytes, ...]
    rule: str
    params: dict = field(default_factory=dict, hash=False, compare=True)
    state_hash: bytes = b""
    parent_state_hash: bytes = b""
    members: tuple[str, ...] | None = None

    def to_plain(self) -> dict:
        plain = {"round": self.round, "gradients": list(self.gradient_digests), "rule": self.rule,
                 "params": dict(self.params), "state_hash": self.state_hash, "parent": self.parent_state_hash}
        if self.members is not None:  # absent otherwise, so entries without a change keep their digests
            plain["members"] = list(self.members)
        return plain

    def digest(self) -> bytes:
        cached = self.__dict__.get("_digest")
        if cached is None:
            cached = sha256(wire.dumps(self.to_plain()))
            object.__setattr__(self, "_digest", cached)
        return cached


@dataclass(frozen=True)
class PreparedCertificate:
    """2f+1 signed Prepares for (term, round, entry): the node's lock, carried in votes so a new leader re-proposes it."""
    term: int
    round: int
    entry: Entry
    signatures: tuple[Signature, ...]

    @property
    def digest(self) -> bytes:
        return self.entry.digest()

    def rank(self) -> tuple[int, int]:
        return (self.round, self.term)


@dataclass(frozen=True)
class CommitCertificate:
    """2f+1 signed Commits for (term, round, digest); the digest binds the entry and so its state hash."""
    term: int
    round: int
    digest: bytes
    signatures: tuple[Signature, ...]


@dataclass(frozen=True)
class CommittedEntry:
    entry: Entry
    cert: CommitCertificate


@dataclass(frozen=True)
class Evidence:
    """Two PrePrepares signed by one leader for one (term, round) with different digests: proof of equivocation."""
    leader: str
    term: int
    round: int
    digest_a: bytes
    sig_a: bytes
    digest_b: bytes
    sig_b: bytes

    def digest(self) -> bytes:
        a, b = sorted([(self.digest_a, self.sig_a), (self.digest_b, self.sig_b)])
        return sha256(wire.dumps([self.leader, self.term, self.round, a[0], a[1], b[0], b[1]]))


# --------------------------------------------------------------------------------------------------- messages

@dataclass(frozen=True)
class PrePrepare:
    term: int
    round: int
    entry: Entry
    sender: str
    sig: bytes = b""
    kind = "preprepare"

    @property
    def digest(self) -> bytes:
        return self.entry.digest()


@dataclass(frozen=True)
class Prepare:
    term: int
    round: int
    digest: bytes
    sender: str
    sig: bytes = b""
    kind = "prepare"


@dataclass(frozen=True)
class Commit:
    term: int
    round: int
    digest: bytes
    sender: str
    sig: bytes = b""
    kind = "commit"


@dataclass(frozen=True)
class Timeout:
    """"I gave up on the leader of term-1": f+1 of these for a term let a node adopt it."""
    term: int
    round: int  # the sender's committed round (information only)
    sender: str
    sig: bytes = b""
    kind = "timeout"

    @property
    def digest(self) -> bytes:
        return b""


@dataclass(frozen=True)
class RequestVote:
    term: int
    round: int  # the candidate's committed round: voters refuse candidates behind them
    sender: str
    sig: bytes = b""
    kind = "request_vote"

    @property
    def digest(self) -> bytes:
        return b""


@dataclass(frozen=True)
class Vote:
    """A vote for ``candidate`` in ``term``, carrying the voter's highest prepared certificate (PBFT view change)."""
    term: int
    round: int  # the voter's committed round
    candidate: str
    lock: PreparedCertificate | None
    sender: str
    sig: bytes = b""
    kind = "vote"

    @property
    def digest(self) -> bytes:
        lock = None if self.lock is None else [self.lock.term, self.lock.round, self.lock.digest]
        return sha256(wire.dumps([self.candidate, lock]))


@dataclass(frozen=True)
class NewTerm:
    """The new leader's announcement; ``votes`` is the term certificate (2f+1 votes for the sender) from the
    configuration in force from round ``epoch`` on. A leader proposes only rounds of that configuration."""
    term: int
    votes: tuple[Vote, ...]
    sender: str
    sig: bytes = b""
    epoch: int = 1
    kind = "new_term"
    round = 0

    @property
    def digest(self) -> bytes:
        return sha256(wire.dumps([[[v.sender, v.sig] for v in self.votes], self.epoch]))


@dataclass(frozen=True)
class Heartbeat:
    term: int
    round: int  # the leader's committed round, so a lagging follower knows to catch up
    sender: str
    sig: bytes = b""
    kind = "heartbeat"

    @property
    def digest(self) -> bytes:
        return b""


@dataclass(frozen=True)
class CatchUpRequest:
    round: int  # first round wanted
    sender: str
    sig: bytes = b""
    kind = "catchup_request"
    term = 0

    @property
    def digest(self) -> bytes:
        return b""


@dataclass(frozen=True)
class CatchUpResponse:
    """Committed entries from ``round`` on, each with its commit certificate (self-authenticating)."""
    round: int
    entries: tuple[CommittedEntry, ...]
    sender: str
    sig: bytes = b""
    kind = "catchup_response"
    term = 0

    @property
    def digest(self) -> bytes:
        return sha256(wire.dumps([[ce.entry.digest(), ce.cert.term] for ce in self.entries]))


@dataclass(frozen=True)
class EvidenceMessage:
    evidence: Evidence
    sender: str
    sig: bytes = b""
    kind = "evidence"

    @property
    def term(self) -> int:
        return self.evidence.term

    @property
    def round(self) -> int:
        return self.evidence.round

    @property
    def digest(self) -> bytes:
        return self.evidence.digest()


Message = Union[PrePrepare, Prepare, Commit, Timeout, RequestVote, Vote, NewTerm, Heartbeat, CatchUpRequest,
                CatchUpResponse, EvidenceMessage]
MESSAGE_TYPES = {cls.kind: cls for cls in (PrePrepare, Prepare, Commit, Timeout, RequestVote, Vote, NewTerm, Heartbeat,
                                           CatchUpRequest, CatchUpResponse, EvidenceMessage)}


def signed_fields(msg: Message) -> tuple[str, int, int, bytes, str]:
    return (msg.kind, msg.term, msg.round, msg.digest, msg.sender)


# --------------------------------------------------------------------------------------------------- to wire

def _sigs_plain(sigs: tuple[Signature, ...]) -> list:
    return [[s, sig] for s, sig in sigs]


def prepared_to_plain(c: PreparedCertificate) -> dict:
    return {"term": c.term, "round": c.round, "entry": c.entry.to_plain(), "sigs": _sigs_plain(c.signatures)}


def commit_cert_to_plain(c: CommitCertificate) -> dict:
    return {"term": c.term, "round": c.round, "digest": c.digest, "sigs": _sigs_plain(c.signatures)}


def committed_to_plain(ce: CommittedEntry) -> dict:
    return {"entry": ce.entry.to_plain(), "cert": commit_cert_to_plain(ce.cert)}


def evidence_to_plain(e: Evidence) -> dict:
    return {"leader": e.leader, "term": e.term, "round": e.round, "digest_a": e.digest_a, "sig_a": e.sig_a,
            "digest_b": e.digest_b, "sig_b": e.sig_b}


def _vote_plain(v: Vote) -> dict:
    return {"type": "vote", "term": v.term, "round": v.round, "candidate": v.candidate,
            "lock": None if v.lock is None else prepared_to_plain(v.lock), "sender": v.sender, "sig": v.sig}


def to_wire(msg: Message) -> dict:
    """Plain values (dict/list/int/bytes/str/None) ready for ``crypto.wire.dumps``."""
    base = {"type": msg.kind, "sender": msg.sender, "sig": msg.sig}
    if isinstance(msg, PrePrepare):
        return {**base, "term": msg.term, "round": msg.round, "entry": msg.entry.to_plain()}
    if isinstance(msg, (Prepare, Commit)):
        return {**base, "term": msg.term, "round": msg.round, "digest": msg.digest}
    if isinstance(msg, (Timeout, RequestVote, Heartbeat)):
        return {**base, "term": msg.term, "round": msg.round}
    if isinstance(msg, Vote):
        return _vote_plain(msg)
    if isinstance(msg, NewTerm):
        return {**base, "term": msg.term, "votes": [_vote_plain(v) for v in msg.votes], "epoch": msg.epoch}
    if isinstance(msg, CatchUpRequest):
        return {**base, "round": msg.round}
    if isinstance(msg, CatchUpResponse):
        return {**base, "round": msg.round, "entries": [committed_to_plain(ce) for ce in msg.entries]}
    if isinstance(msg, EvidenceMessage):
        return {**base, "evidence": evidence_to_plain(msg.evidence)}
    raise TypeError(f"not a consensus message: {type(msg).__name__}")


# --------------------------------------------------------------------------------------------------- from wire

def _fields(d: Any, keys: set[str], what: str) -> dict:
    if not isinstance(d, dict):
        raise DecodeError("bad_type", f"{what} is not a dict")
    if set(d) != keys:
        raise DecodeError("bad_fields", f"{what} has fields {sorted(d)}, expected {sorted(keys)}")
    return d


def _uint(v: Any, what: str) -> int:
    if type(v) is not int or v < 0:
        raise DecodeError("bad_int", f"{what} must be a non-negative int")
    return v


def _bytes(v: Any, what: str, max_len: int, exact: int | None = None) -> bytes:
    if type(v) is not bytes or len(v) > max_len or (exact is not None and len(v) != exact):
        raise DecodeError("bad_bytes", f"{what} must be bytes" + (f" of length {exact}" if exact else f" <= {max_len}"))
    return v


def _digest(v: Any, what: str) -> bytes:
    return _bytes(v, what, DIGEST_LEN, DIGEST_LEN)


def _id(v: Any, what: str) -> str:
    if type(v) is not str or not v or len(v.encode("utf-8")) > MAX_ID_LEN:
        raise DecodeError("bad_id", f"{what} must be a non-empty str of at most {MAX_ID_LEN} bytes")
    return v


def _list(v: Any, what: str, max_items: int) -> list:
    if type(v) is not list or len(v) > max_items:
        raise DecodeError("bad_list", f"{what} must be a list of at most {max_items} items")
    return v


def _sigs(v: Any) -> tuple[Signature, ...]:
    out = []
    for pair in _list(v, "sigs", 1024):
        if type(pair) is not list or len(pair) != 2:
            raise DecodeError("bad_sig", "signature must be [signer, sig]")
        out.append((_id(pair[0], "signer"), _bytes(pair[1], "sig", MAX_SIG_LEN)))
    return tuple(out)


_ENTRY_KEYS = {"round", "gradients", "rule", "params", "state_hash", "parent"}


def _members(v: Any) -> tuple[str, ...]:
    ids = tuple(_id(m, "member") for m in _list(v, "members", MAX_MEMBERS))
    if not ids or list(ids) != sorted(set(ids)):
        raise DecodeError("bad_members", "members must be a non-empty sorted list of distinct ids")
    return ids


def entry_from_plain(d: Any) -> Entry:
    d = _fields(d, _ENTRY_KEYS | {"members"} if isinstance(d, dict) and "members" in d else _ENTRY_KEYS, "entry")
    rule = d["rule"]
    if type(rule) is not str or len(rule) > MAX_RULE_LEN:
        raise DecodeError("bad_rule", "rule must be a short str")
    if type(d["params"]) is not dict:
        raise DecodeError("bad_params", "params must be a dict")
    grads = tuple(_digest(g, "gradient digest") for g in _list(d["gradients"], "gradients", MAX_DIGESTS))
    members = _members(d["members"]) if "members" in d else None
    return Entry(_uint(d["round"], "round"), grads, rule, d["params"], _digest(d["state_hash"], "state_hash"),
                 _digest(d["parent"], "parent"), members)


def prepared_from_plain(d: Any) -> PreparedCertificate:
    d = _fields(d, {"term", "round", "entry", "sigs"}, "prepared certificate")
    entry = entry_from_plain(d["entry"])
    rnd = _uint(d["round"], "round")
    if entry.round != rnd:
        raise DecodeError("bad_round", "certificate round differs from its entry's")
    return PreparedCertificate(_uint(d["term"], "term"), rnd, entry, _sigs(d["sigs"]))


def commit_cert_from_plain(d: Any) -> CommitCertificate:
    d = _fields(d, {"term", "round", "digest", "sigs"}, "commit certificate")
    return CommitCertificate(_uint(d["term"], "term"), _uint(d["round"], "round"), _digest(d["digest"], "digest"),
                             _sigs(d["sigs"]))


def committed_from_plain(d: Any) -> CommittedEntry:
    d = _fields(d, {"entry", "cert"}, "committed entry")
    return CommittedEntry(entry_from_plain(d["entry"]), commit_cert_from_plain(d["cert"]))


def evidence_from_plain(d: Any) -> Evidence:
    d = _fields(d, {"leader", "term", "round", "digest_a", "sig_a", "digest_b", "sig_b"}, "evidence")
    return Evidence(_id(d["leader"], "leader"), _uint(d["term"], "term"), _uint(d["round"], "round"),
                    _digest(d["digest_a"], "digest_a"), _bytes(d["sig_a"], "sig_a", MAX_SIG_LEN),
                    _digest(d["digest_b"], "digest_b"), _bytes(d["sig_b"], "sig_b", MAX_SIG_LEN))


_BASE = {"type", "sender", "sig"}
_KEYS = {
    "preprepare": _BASE | {"term", "round", "entry"},
    "prepare": _BASE | {"term", "round", "digest"},
    "commit": _BASE | {"term", "round", "digest"},
    "timeout": _BASE | {"term", "round"},
    "request_vote": _BASE | {"term", "round"},
    "heartbeat": _BASE | {"term", "round"},
    "vote": _BASE | {"term", "round", "candidate", "lock"},
    "new_term": _BASE | {"term", "votes", "epoch"},
    "catchup_request": _BASE | {"round"},
    "catchup_response": _BASE | {"round", "entries"},
    "evidence": _BASE | {"evidence"},
}


def from_wire(d: Any) -> Message:
    """Rebuild a message from plain values; anything malformed raises ``DecodeError`` (signatures are NOT checked)."""
    if not isinstance(d, dict) or "type" not in d:
        raise DecodeError("bad_type", "message must be a dict with a type")
    kind = d["type"]
    if type(kind) is not str or kind not in _KEYS:
        raise DecodeError("bad_type", f"unknown consensus message type {kind!r}")
    d = _fields(d, _KEYS[kind], kind)
    sender, sig = _id(d["sender"], "sender"), _bytes(d["sig"], "sig", MAX_SIG_LEN)
    if kind == "preprepare":
        entry = entry_from_plain(d["entry"])
        rnd = _uint(d["round"], "round")
        if entry.round != rnd:
            raise DecodeError("bad_round", "preprepare round differs from its entry's")
        return PrePrepare(_uint(d["term"], "term"), rnd, entry, sender, sig)
    if kind in ("prepare", "commit"):
        cls = Prepare if kind == "prepare" else Commit
        return cls(_uint(d["term"], "term"), _uint(d["round"], "round"), _digest(d["digest"], "digest"), sender, sig)
    if kind in ("timeout", "request_vote", "heartbeat"):
        cls = MESSAGE_TYPES[kind]
        return cls(_uint(d["term"], "term"), _uint(d["round"], "round"), sender, sig)
    if kind == "vote":
        lock = None if d["lock"] is None else prepared_from_plain(d["lock"])
        return Vote(_uint(d["term"], "term"), _uint(d["round"], "round"), _id(d["candidate"], "candidate"), lock,
                    sender, sig)
    if kind == "new_term":
        votes = tuple(from_wire(v) for v in _list(d["votes"], "votes", 1024))
        if not all(isinstance(v, Vote) for v in votes):
            raise DecodeError("bad_vote", "new_term votes must be votes")
        epoch = _uint(d["epoch"], "epoch")
        if epoch < 1:
            raise DecodeError("bad_epoch", "epoch must be a round >= 1")
        return NewTerm(_uint(d["term"], "term"), votes, sender, sig, epoch)  # type: ignore[arg-type]
    if kind == "catchup_request":
        return CatchUpRequest(_uint(d["round"], "round"), sender, sig)
    if kind == "catchup_response":
        entries = tuple(committed_from_plain(e) for e in _list(d["entries"], "entries", MAX_CATCHUP_ENTRIES))
        return CatchUpResponse(_uint(d["round"], "round"), entries, sender, sig)
    return EvidenceMessage(evidence_from_plain(d["evidence"]), sender, sig)

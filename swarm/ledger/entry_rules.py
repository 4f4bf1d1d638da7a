"""Rebuilding the replicated state from the genesis and committed entries, outside a running node.

The node replays its store on restart and the offline auditor (`swarm verify`) replays someone else's; both must
derive every input of `apply` the same way, from the genesis, the entry and the previous committed row alone, or
they would disagree on state hashes. This module is that shared derivation: the round rules, state_0, the
checks on the commit certificates an entry carries (which feed consensus reputation) and committed evidence.
"""
from __future__ import annotations

import hashlib
from typing import Any

from consensus.messages import Evidence, evidence_from_plain, evidence_to_plain
from consensus.quorum import DUPLICATE_SIGNER, NOT_MEMBER, Membership, Verifier
from crypto import wire
from crypto.keys import verify_by_peer_id
from crypto.wire import DecodeError
from swarm.config import Genesis, NodeConfig, genesis_to_dict
from swarm.ledger import staleness
from swarm.ledger.apply import InvalidEntry, RoundRules
from swarm.ledger.membership import ChangeRefused, MembershipChange, next_members
from swarm.ledger.state import ReplicatedState, genesis_state
from swarm.round import compression
from swarm.round.gradient import (GRADIENT_EVIDENCE, Gradient, GradientEquivocation, check_equivocation,
                                  equivocation_from_plain, verify_gradient)
from swarm.training.build import initial_parameters


def genesis_hash(genesis: Genesis) -> bytes:
    """The parent of state_0: binds every replicated setting of the genesis."""
    return hashlib.sha256(b"swarm/genesis/v1\0" + wire.dumps(genesis_to_dict(genesis))).digest()


def rules_of(genesis: Genesis) -> RoundRules:
    """The replicated aggregation settings a genesis fixes for every node."""
    return RoundRules(
        f=genesis.f, rule=genesis.aggregation.rule, options=dict(genesis.aggregation.options),
        nnm=genesis.aggregation.nnm, reputation_weighted=genesis.aggregation.reputation_weighted,
        reputation_floor=genesis.aggregation.reputation_floor,
        server_lr=genesis.server_optimizer.lr, momentum=genesis.server_optimizer.momentum,
        nesterov=genesis.server_optimizer.nesterov,
        staleness_bound=genesis.staleness.bound, staleness_decay=genesis.staleness.decay, follow_members=True)


def initial_state(genesis: Genesis, config: NodeConfig) -> ReplicatedState:
    """state_0: the model's seeded initial parameters (equal on every node) with a fresh reputation table."""
    return genesis_state(initial_parameters(config, genesis), genesis.peer_ids, genesis_hash(genesis))


class _VerifyOnly:
    """The consensus core's Crypto for checks outside a node: verifies members' signatures, signs nothing."""

    def sign(self, payload: bytes) -> bytes:
        raise TypeError("the ledger's checks never sign")

    def verify(self, sender_id: str, payload: bytes, sig: bytes) -> bool:
        return verify_by_peer_id(sender_id, payload, sig)


def _verifier(genesis: Genesis, members=None) -> Verifier:
    """The core's signature checks for this genesis's swarm and ``members`` (default: the genesis ones)."""
    return Verifier(genesis.swarm_id, Membership(genesis.peer_ids if members is None else members), _VerifyOnly())


def names_of(genesis: Genesis, state: ReplicatedState) -> dict[str, str]:
    """peer id -> name of the members in force after ``state``: its roster once the membership changed."""
    if state.roster is not None:
        return dict(state.roster.names)
    return {m.peer_id: m.name for m in genesis.members}


def epoch_of(state: ReplicatedState) -> int:
    """The first round of the configuration in force after ``state``."""
    return 1 if state.roster is None else state.roster.since


MEMBERSHIP_PARAM = "membership"


def entry_membership(genesis: Genesis, state: ReplicatedState, params: dict,
                     named: tuple[str, ...] | list[str] | None) -> tuple[tuple[str, str], ...] | None:
    """The (peer id, name) members an entry applied to ``state`` puts in force, or None when it changes nothing.
    The entry names the new member ids (``named``, the consensus core's ``Entry.members``) and carries the signed
    request in params; both must agree with what the request makes of the configuration in force, or the entry is
    invalid (InvalidEntry with the reason)."""
    if MEMBERSHIP_PARAM not in params:
        if named is not None:
            raise InvalidEntry("the entry changes the members without a signed request")
        return None
    try:
        change = MembershipChange.from_plain(params[MEMBERSHIP_PARAM])
        after = next_members(change, genesis.swarm_id, names_of(genesis, state), epoch_of(state))
    except (DecodeError, ChangeRefused) as exc:
        raise InvalidEntry(f"membership change refused: {exc}") from None
    if named is None or list(named) != sorted(after):
        raise InvalidEntry("the entry's members are not those its request makes")
    return tuple(sorted(after.items()))


def valid_commit_signers(genesis: Genesis, cert: Any, round_: int, digest: bytes,
                         members=None) -> tuple[set[str], list[str]]:
    """(members whose commit signature over (round, digest) verifies, one line per signature that does not);
    ``members``: those in force at ``round_`` (default: the genesis ones)."""
    term = cert.get("term") if isinstance(cert, dict) else None
    sigs = cert.get("sigs") if isinstance(cert, dict) else None
    if not isinstance(term, int) or not isinstance(sigs, list):
        return set(), ["certificate is malformed"]
    well_formed = [item for item in sigs if isinstance(item, (list, tuple)) and len(item) == 2
                   and isinstance(item[0], str) and isinstance(item[1], bytes)]
    problems = ["certificate holds a malformed signature"] * (len(sigs) - len(well_formed))
    valid, rejected = _verifier(genesis, members).signers("commit", term, round_, digest, well_formed)
    problems += [f"signer {signer[:16]} is not a member" if why == NOT_MEMBER
                 else f"{genesis.name_of(signer)} signed more than once" if why == DUPLICATE_SIGNER
                 else f"signature of {genesis.name_of(signer)} does not verify" for signer, why in rejected]
    return valid, problems


def previous_certificate_signers(genesis: Genesis, cert: Any, previous_round: int,
                                 previous_digest: bytes | None, members=None) -> frozenset[str]:
    """The signers of the previous round's certificate an entry carries; raises InvalidEntry when it is forged.
    Counted in ``members`` (those in force now): the entry after a membership change carries none, since its
    previous round counted in another configuration."""
    if (previous_digest is None or not isinstance(cert, dict) or cert.get("round") != previous_round
            or cert.get("digest") != previous_digest):
        raise InvalidEntry("prev_cert does not certify the previous round")
    valid, problems = valid_commit_signers(genesis, cert, previous_round, previous_digest, members)
    if problems:
        raise InvalidEntry(f"prev_cert carries an invalid signature ({problems[0]})")
    if len(valid) < Membership(genesis.peer_ids if members is None else members).quorum:
        raise InvalidEntry("prev_cert is not a quorum")
    return frozenset(valid)


def convicted_leader(genesis: Genesis, item: Any, members=None) -> str:
    """The member that committed evidence proves equivocated; raises InvalidEntry when it proves nothing."""
    try:
        evidence = evidence_from_plain(item)
    except DecodeError as exc:
        raise InvalidEntry(f"malformed evidence: {exc}") from None
    if not _verifier(genesis, members).evidence(evidence):
        raise InvalidEntry("evidence does not prove equivocation")
    return evidence.leader


# Pieces of equivocation evidence one entry may carry: each costs every follower two signature checks, and one
# piece per member is all a conviction needs.
MAX_ENTRY_EVIDENCE = 4

# Gradient-equivocation evidence for round e is valid only in the entries of rounds e - 1 through
# e + GRADIENT_EVIDENCE_ROUNDS (a node holds gradients for its pending round and the next). Nodes never propose a
# committed piece again (the EvidenceBook), but a node that resynced from a snapshot does not know what the
# skipped rounds committed, and a Byzantine leader could repeat a piece on purpose: the window bounds how often
# one offence can be convicted from the replicated data alone (at most GRADIENT_EVIDENCE_ROUNDS + 2 times).
GRADIENT_EVIDENCE_ROUNDS = 8


def gradient_evidence_in_window(evidence_round: int, entry_round: int) -> bool:
    return entry_round - GRADIENT_EVIDENCE_ROUNDS <= evidence_round <= entry_round + 1


def evidence_piece(item: Any) -> Evidence | GradientEquivocation:
    """A piece of an entry's params["evidence"] as an object, unverified: a leader's equivocation (the plain form
    without a kind, as before) or a gradient equivocation (kind "gradient"). DecodeError when malformed."""
    if isinstance(item, dict) and "kind" in item:
        if item["kind"] != GRADIENT_EVIDENCE:
            raise DecodeError("bad_evidence", f"unknown evidence kind {str(item['kind'])[:32]!r}")
        return equivocation_from_plain(item)
    return evidence_from_plain(item)


def evidence_to_entry(piece: Evidence | GradientEquivocation) -> dict:
    """The plain form an entry carries."""
    return piece.to_plain() if isinstance(piece, GradientEquivocation) else evidence_to_plain(piece)


def accused(piece: Evidence | GradientEquivocation) -> str:
    return piece.sender if isinstance(piece, GradientEquivocation) else piece.leader


def convicted_member(genesis: Genesis, item: Any, round_: int, members=None) -> str:
    """The member a piece of committed evidence in the entry of ``round_`` convicts; InvalidEntry when it proves
    nothing (forged, malformed, another swarm, not a member, outside its window)."""
    if not (isinstance(item, dict) and "kind" in item):
        return convicted_leader(genesis, item, members)
    try:
        piece = evidence_piece(item)
        member = check_equivocation(piece, genesis.swarm_id, set(genesis.peer_ids if members is None else members))
    except DecodeError as exc:
        raise InvalidEntry(f"gradient evidence proves nothing: {exc}") from None
    if not gradient_evidence_in_window(piece.round, round_):
        raise InvalidEntry(f"gradient evidence for round {piece.round} is outside the window of round {round_}")
    return member


def entry_extras(genesis: Genesis, params: dict, round_: int, previous_digest: bytes | None,
                 members=None) -> tuple[frozenset[str] | None, frozenset[str]]:
    """(certificate signers, convicted members) an entry's params prove, as `apply` takes them; ``members``: those
    in force at ``round_`` (default: the genesis ones)."""
    unknown = set(params) - {"prev_cert", "evidence", staleness.STALE_PARAM, MEMBERSHIP_PARAM}
    if unknown:
        raise InvalidEntry(f"unknown entry params {sorted(unknown)}")
    if staleness.STALE_PARAM in params:
        stale_named(genesis, params)  # well formed and within the bound (the gradients are checked by apply)
    signers = None
    if "prev_cert" in params:
        signers = previous_certificate_signers(genesis, params["prev_cert"], round_ - 1, previous_digest, members)
    evidence = params.get("evidence", [])
    if not isinstance(evidence, (list, tuple)) or len(evidence) > MAX_ENTRY_EVIDENCE:
        raise InvalidEntry(f"an entry carries a list of at most {MAX_ENTRY_EVIDENCE} pieces of evidence")
    convicted = frozenset(convicted_member(genesis, item, round_, members) for item in evidence)
    return signers, convicted


def stale_named(genesis: Genesis, params: dict) -> list[tuple[bytes, int]]:
    """[(digest, staleness)] of the late gradients an entry's params name (swarm/ledger/staleness.py): at most one
    per member, within the genesis' bound; InvalidEntry when malformed (or named while late updates are off)."""
    try:
        return staleness.from_params(params, genesis.staleness.bound, genesis.n)
    except staleness.StaleRefused as exc:
        raise InvalidEntry(str(exc)) from None


def open_gradient(raw: bytes, genesis: Genesis, dim: int, max_size: int, round_: int, parent: bytes,
                  digest: bytes | None = None, members=None) -> Gradient:
    """A stored envelope checked as a receiver checks it (signature, member, round, parent, decodable, finite);
    ``digest`` as in :func:`swarm.round.gradient.verify_gradient`; ``members``: those in force at ``round_``."""
    members = set(genesis.peer_ids if members is None else members)
    return verify_gradient(raw, swarm_id=genesis.swarm_id, members=members, max_size=max_size,
                           round=round_, parent=parent, digest=digest,
                           decode_payload=lambda payload: compression.decode(payload, dim, max_size))

"""Glue between the pure consensus core and the node: Ed25519 for its signatures, envelopes for its messages,
and the plain forms of what it asks the node to persist.

Consensus messages travel as CONSENSUS envelopes whose fields are the core's wire form. The envelope's signature
says which member passed the message on; the message's own signature (checked by the core, as are the signatures
inside certificates) says who made it, so relaying a signed message is allowed and forging one is not.
"""
from __future__ import annotations

from consensus.messages import (CommittedEntry, Message, committed_to_plain, from_wire, prepared_from_plain,
                                prepared_to_plain, to_wire)
from consensus.state import HardState, PersistedState
from crypto.envelope import Envelope, MessageType, seal
from crypto.keys import NodeKey, verify_by_peer_id
from crypto.wire import DecodeError


class Ed25519Crypto:
    """The core's Crypto: signs as this node, verifies any member's signature. It keeps no cache: the core's
    Verifier already remembers each signature it checked (the same Prepare signatures come back inside
    certificates), so a second cache here would only hold the same results twice."""

    def __init__(self, key: NodeKey):
        self._key = key

    def sign(self, payload: bytes) -> bytes:
        return self._key.sign(payload)

    def verify(self, sender_id: str, payload: bytes, sig: bytes) -> bool:
        return verify_by_peer_id(sender_id, payload, sig)


def encode_message(key: NodeKey, swarm_id: str, message: Message) -> bytes:
    term = getattr(message, "term", 0)
    round_ = getattr(message, "round", 0)
    return seal(key, MessageType.CONSENSUS, swarm_id, term, round_, to_wire(message)).encode()


def decode_message(envelope: Envelope) -> Message:
    """The core message inside a verified CONSENSUS envelope; DecodeError when malformed.

    The message may be another member's, relayed (a leader's NewTerm forwarded to a laggard, say): the envelope
    authenticates who passed it on, and the core checks the message's own signature."""
    if envelope.type != MessageType.CONSENSUS:
        raise DecodeError("wrong_type", f"expected a consensus message, got {envelope.type.name}")
    return from_wire(envelope.fields)


def hard_state_to_plain(hard: HardState) -> dict:
    return {"term": hard.term, "voted_term": hard.voted_term, "voted_for": hard.voted_for,
            "prepared_term": hard.prepared_term, "prepared_round": hard.prepared_round,
            "prepared_digest": hard.prepared_digest,
            "lock": None if hard.lock is None else prepared_to_plain(hard.lock)}


def hard_state_from_plain(value: dict) -> HardState:
    return HardState(term=value["term"], voted_term=value["voted_term"], voted_for=value["voted_for"],
                     prepared_term=value["prepared_term"], prepared_round=value["prepared_round"],
                     prepared_digest=value["prepared_digest"],
                     lock=None if value["lock"] is None else prepared_from_plain(value["lock"]))


def persisted_state(hard_plain: dict | None, chain: list[CommittedEntry], base_round: int = 0) -> PersistedState:
    """The core's restart state from the store: hard state plus the chain tail after ``base_round``."""
    hard = HardState() if hard_plain is None else hard_state_from_plain(hard_plain)
    return PersistedState(hard=hard, chain=chain, base_round=base_round)


__all__ = ["Ed25519Crypto", "committed_to_plain", "decode_message", "encode_message", "hard_state_from_plain",
           "hard_state_to_plain", "persisted_state"]

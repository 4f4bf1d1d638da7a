"""What one member can make a node verify (issue 23, finding 1): a NewTerm whose votes carry locks packed with
signatures used to cost the receiver an Ed25519 check per pair on its event loop, and the sender kept a perfect
local score. Now such a message is paid for from the sender's rate budget before anything is verified, a
certificate that fails costs its sender an "invalid_certificate" penalty, and junk certificates are screened out
before their first signature check."""
from __future__ import annotations

import asyncio
import dataclasses

import pytest

from consensus.messages import Entry, NewTerm, PreparedCertificate, Vote, signed_fields, signing_bytes


@pytest.fixture
def node_and_keys(tmp_path):
    from crypto.keys import load_key
    from swarm.config import load_genesis, load_node_config
    from swarm.node.node import Node
    from swarm.ops.cluster import ClusterOptions, init_cluster

    specs = init_cluster(tmp_path, ClusterOptions(nodes=4))
    config = load_node_config(specs[0].config_path)
    config.transport.control_messages_per_s, config.transport.control_burst = 200.0, 500
    node = Node(config, load_genesis(config.genesis), load_key(config.identity))
    keys = {spec.name: load_key(tmp_path / "keys" / f"{spec.name}.pem") for spec in specs}
    yield node, keys
    node.close()


def sign(key, swarm_id, message):
    kind, term, round_, digest, sender = signed_fields(message)
    return dataclasses.replace(message, sig=key.sign(signing_bytes(swarm_id, kind, term, round_, digest, sender)))


def packed_new_term(node, keys, attacker: str, pairs: int) -> NewTerm:
    """A NewTerm for term 5, signed by ``attacker`` (as are its votes: one key is all it holds), whose votes carry
    locks of ``pairs`` (member, junk signature) pairs each."""
    swarm_id = node.genesis.swarm_id
    entry = Entry(1, (b"g" * 32,), "median", {}, b"s" * 32, node.state.hash)
    members = node.genesis.peer_ids
    lock = PreparedCertificate(4, 1, entry, tuple((members[i % len(members)], b"x" * 64) for i in range(pairs)))
    attacker_key = keys[attacker]
    votes = tuple(sign(attacker_key, swarm_id, Vote(5, 0, attacker_key.peer_id, lock, attacker_key.peer_id))
                  for _ in range(3))
    return sign(attacker_key, swarm_id, NewTerm(5, votes, attacker_key.peer_id))


def deliver(node, key, message) -> None:
    from swarm.node.core_link import encode_message

    asyncio.run(node.inbound.on_control(key.peer_id, encode_message(key, node.genesis.swarm_id, message)))


def test_a_packed_certificate_is_paid_for_before_any_signature_is_checked(node_and_keys):
    node, keys = node_and_keys
    before = node.core.verify.verifications
    deliver(node, keys["node3"], packed_new_term(node, keys, "node3", pairs=1000))  # ~3000 checks asked for
    assert node.core.verify.verifications == before  # refused unread: over its budget of 500
    assert node.metrics.rejected["flooding"] == 1
    assert node.scores.get(keys["node3"].peer_id).score < 1.0


def test_an_invalid_certificate_costs_its_sender_and_few_checks(node_and_keys):
    node, keys = node_and_keys
    before = node.core.verify.verifications
    deliver(node, keys["node3"], packed_new_term(node, keys, "node3", pairs=4))  # within budget, still junk
    assert node.metrics.rejected["invalid_certificate"] == 1
    assert node.scores.get(keys["node3"].peer_id).score < 1.0
    assert node.core.verify.verifications - before <= 3  # the NewTerm, one vote, then the lock's shape fails
    assert node.scores.get(keys["node1"].peer_id).rejected == 0

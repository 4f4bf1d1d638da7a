"""What one member can make a node verify (issue 23, finding 1): a NewTerm whose votes carry locks packed with
signatures used to cost the receiver an Ed25519 check per pair on its event loop, and the sender kept a perfect
local score. Now such a message is paid for from the sender's rate budget before anything is verified, a
certificate that fails costs its sender an "invalid_certificate" penalty, and junk certificates are screened out
before their first signature check."""
from __future__ import annotations

import asyncio
import dataclasses

import pytest

from consensus.actions import Send
from consensus.messages import (MAX_CATCHUP_ENTRIES, CatchUpRequest, CatchUpResponse, CommitCertificate,
                                CommittedEntry, Entry, NewTerm, PreparedCertificate, Vote, signed_fields,
                                signing_bytes)
from consensus.ready import Ready


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


def full_catchup_answer(node, keys, server: str, from_round: int) -> CatchUpResponse:
    """A catch-up answer of 64 entries, each with a 4-signature certificate: 257 signature checks at n = 4. Its
    rounds are far ahead of the node, so the core sets it aside unverified (as an honest answer from another branch
    of time): only the admission charge is measured."""
    members = node.genesis.peer_ids
    entries = []
    for k in range(MAX_CATCHUP_ENTRIES):
        entry = Entry(from_round + k, (b"g" * 32,), "median", {}, b"s" * 32, b"p" * 32)
        cert = CommitCertificate(1, from_round + k, entry.digest(), tuple((m, b"x" * 64) for m in members))
        entries.append(CommittedEntry(entry, cert))
    key = keys[server]
    return sign(key, node.genesis.swarm_id, CatchUpResponse(from_round, tuple(entries), key.peer_id))


def asked(node, peer: str, from_round: int) -> None:
    """The node's core asks ``peer`` for entries from ``from_round``, through the node's real send path."""
    sent = []
    node.send = lambda to, data: sent.append(to)
    node.carry_out(Ready(messages=(Send(peer, CatchUpRequest(from_round, node.id)),)))
    assert sent == [peer]


def test_a_member_serving_the_catch_up_we_asked_for_is_never_charged_for_its_certificates(node_and_keys):
    """Found in a remove/re-add cluster run: a node catching up asks again after every full answer, each answer
    costs 257 checks at n = 4, and the member serving it was penalised for "flooding" by the node it was helping,
    then banned. Six answers (1542 checks) against a budget of 500: each one asked for, none charged."""
    node, keys = node_and_keys
    server = keys["node1"].peer_id
    for batch in range(6):
        from_round = 1000 + batch * MAX_CATCHUP_ENTRIES
        asked(node, server, from_round)
        deliver(node, keys["node1"], full_catchup_answer(node, keys, "node1", from_round))
    assert node.metrics.rejected["flooding"] == 0
    assert node.scores.get(server).rejected == 0


def test_catch_up_answers_nobody_asked_for_are_still_charged(node_and_keys):
    node, keys = node_and_keys
    asked(node, keys["node2"].peer_id, 1000)  # asked node2, not node3; and node3's second answer is a replay
    for _ in range(3):
        deliver(node, keys["node3"], full_catchup_answer(node, keys, "node3", 1000))
    assert node.metrics.rejected["flooding"] >= 1
    assert node.scores.get(keys["node3"].peer_id).score < 1.0
    # node2's answer is still owed: one reply, once
    for _ in range(3):
        deliver(node, keys["node2"], full_catchup_answer(node, keys, "node2", 1000))
    assert node.scores.get(keys["node2"].peer_id).rejected >= 1  # the first is excused, the replays are not

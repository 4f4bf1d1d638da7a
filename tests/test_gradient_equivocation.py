"""Committed evidence for gradient equivocation (issue 18): two different signed gradients from one key for one round
become a compact proof (the two signed heads, no payloads) that any replica checks from the genesis alone, rides in
the next entry, convicts the key in the committed reputation, and is committed once."""
from __future__ import annotations

import asyncio
import dataclasses

import pytest
import torch

from crypto import wire
from crypto.envelope import MessageType, seal
from crypto.keys import NodeKey
from swarm.config import Genesis, Member
from swarm.ledger.apply import InvalidEntry
from swarm.ledger.entry_rules import GRADIENT_EVIDENCE_ROUNDS, MAX_ENTRY_EVIDENCE, entry_extras
from swarm.ledger.evidence import EvidenceBook
from swarm.ledger.store import Store
from swarm.round.gradient import equivocation_from_plain, equivocation_from_raw, make_gradient

KEYS = [NodeKey.generate() for _ in range(4)]
GENESIS = Genesis(swarm_id="evidence-test", members=[Member(f"node{i}", k.peer_id) for i, k in enumerate(KEYS)])
PARENT = b"\x07" * 32
PAYLOAD_BYTES = 1 << 20  # a megabyte payload: the proof does not grow with it


def gradient(key: NodeKey, round_: int, fill: int, swarm_id: str = GENESIS.swarm_id, parent: bytes = PARENT) -> bytes:
    return make_gradient(key, swarm_id, round_, parent, bytes([fill]) * PAYLOAD_BYTES)


def proof(key: NodeKey = KEYS[3], round_: int = 5, **kwargs) -> dict:
    evidence = equivocation_from_raw(gradient(key, round_, 1, **kwargs), gradient(key, round_, 2, **kwargs))
    assert evidence is not None
    return evidence.to_plain()


def convicted(plain, round_: int = 5) -> frozenset[str]:
    return entry_extras(GENESIS, {"evidence": [plain]}, round_, None)[1]


def test_two_gradients_of_one_key_for_one_round_convict_it_with_a_few_hundred_bytes():
    plain = proof()
    assert convicted(plain) == {KEYS[3].peer_id}
    size = len(wire.dumps(plain))
    assert size < 600, size  # two ~110-byte headers, two payload hashes, two signatures; not the 2 MB of payloads
    # Canonical: the order the two arrived in does not matter, and the plain form survives the wire.
    a, b = gradient(KEYS[3], 5, 1), gradient(KEYS[3], 5, 2)
    assert equivocation_from_raw(b, a).to_plain() == plain
    assert wire.loads(wire.dumps(plain)) == plain
    assert equivocation_from_plain(plain).digest() == equivocation_from_raw(a, b).digest()


def test_a_different_parent_for_the_same_round_is_equivocation_too():
    first = gradient(KEYS[2], 5, 1)
    second = gradient(KEYS[2], 5, 1, parent=b"\x08" * 32)
    assert convicted(equivocation_from_raw(first, second).to_plain()) == {KEYS[2].peer_id}


def test_no_proof_from_one_signed_message_or_bytes_that_do_not_decode():
    raw = gradient(KEYS[1], 5, 1)
    assert equivocation_from_raw(raw, raw) is None
    assert equivocation_from_raw(raw, b"not an envelope") is None


def _swap(plain: dict, side: str, index: int, value: bytes) -> dict:
    changed = list(plain[side])
    changed[index] = value
    return {**plain, side: changed}


def _forgeries() -> dict[str, dict]:
    plain = proof()
    other_round = proof(round_=6)
    other_key = proof(key=KEYS[2])
    outsider = NodeKey.generate()
    heartbeat = seal(KEYS[3], MessageType.HEARTBEAT, GENESIS.swarm_id, 0, 5, {"parent": PARENT}, b"x").signed_head()
    hb = [heartbeat.header, heartbeat.payload_hash, heartbeat.signature]
    bad_fields = seal(KEYS[3], MessageType.GRADIENT, GENESIS.swarm_id, 0, 5, {"parent": b"short"}, b"y").signed_head()
    bf = [bad_fields.header, bad_fields.payload_hash, bad_fields.signature]
    forged_sig = bytes([plain["b"][2][0] ^ 1]) + plain["b"][2][1:]
    return {
        "signature altered": _swap(plain, "b", 2, forged_sig),
        "payload hash replaced": _swap(plain, "b", 1, b"\xff" * 32),
        "two signers": {**plain, "b": other_key["b"]} if plain["a"] < other_key["b"] else
                       {**plain, "a": other_key["b"], "b": plain["a"]},
        "two rounds": dict(kind="gradient", **dict(zip("ab", sorted([plain["a"], other_round["a"]])))),
        "one message twice": {**plain, "b": plain["a"]},
        "not in canonical order": {**plain, "a": plain["b"], "b": plain["a"]},
        "another swarm": proof(swarm_id="another-swarm"),
        "not a member": proof(key=outsider),
        "not a gradient": dict(kind="gradient", **dict(zip("ab", sorted([plain["a"], hb])))),
        "not a gradient's fields": dict(kind="gradient", **dict(zip("ab", sorted([plain["a"], bf])))),
        "unknown kind": {**plain, "kind": "gossip"},
        "extra field": {**plain, "note": b""},
        "short side": {**plain, "a": plain["a"][:2]},
        "truncated header": _swap(plain, "a", 0, plain["a"][0][:-1]),
    }


@pytest.mark.parametrize("name", sorted(_forgeries()))
def test_forged_or_mismatched_evidence_is_refused(name):
    with pytest.raises(InvalidEntry):
        convicted(_forgeries()[name])


def test_evidence_is_valid_only_within_its_window_of_rounds():
    plain = proof(round_=20)
    assert convicted(plain, 19) and convicted(plain, 20) and convicted(plain, 20 + GRADIENT_EVIDENCE_ROUNDS)
    for entry_round in (18, 21 + GRADIENT_EVIDENCE_ROUNDS):
        with pytest.raises(InvalidEntry, match="window"):
            convicted(plain, entry_round)


def test_an_entry_stays_bounded():
    pieces = [proof(key=KEYS[i % 4], round_=5 + i // 4) for i in range(MAX_ENTRY_EVIDENCE + 1)]
    with pytest.raises(InvalidEntry, match="at most"):
        entry_extras(GENESIS, {"evidence": pieces}, 6, None)


def test_the_book_proposes_one_piece_per_member_and_never_again_once_committed(tmp_path):
    book = EvidenceBook(Store(tmp_path))
    first = equivocation_from_plain(proof(round_=5))
    # Another pair for the same (key, round): the same offence, the same digest.
    again = equivocation_from_raw(gradient(KEYS[3], 5, 3), gradient(KEYS[3], 5, 4))
    assert again.digest() == first.digest() and again.to_plain() != first.to_plain()
    assert book.keep(first) and not book.keep(again)
    carried = book.for_proposal(6)
    assert carried == [first.to_plain()] and convicted(carried[0], 6) == {KEYS[3].peer_id}
    book.on_commit(carried, 6)
    assert not book.pending and not book.keep(first) and not book.keep(again)
    book.store.close()
    restarted = EvidenceBook(Store(tmp_path))
    assert restarted.known(first.digest()) and not restarted.keep(again)
    # Evidence too old for the entry being built is dropped, not proposed.
    old = equivocation_from_plain(proof(key=KEYS[1], round_=2))
    assert restarted.keep(old)
    assert restarted.for_proposal(3 + GRADIENT_EVIDENCE_ROUNDS) == []
    assert not restarted.pending
    restarted.store.close()


# ------------------------------------------------------------------------------------ on a built node, end to end


@pytest.fixture
def cluster_nodes(tmp_path):
    """node0 and node1 of a 4-member cluster, built (not running), with the keys of all four."""
    from crypto.keys import load_key
    from swarm.config import load_genesis, load_node_config
    from swarm.node.node import Node
    from swarm.ops.cluster import ClusterOptions, init_cluster

    specs = init_cluster(tmp_path, ClusterOptions(nodes=4))
    nodes = []
    for spec in specs[:2]:
        config = load_node_config(spec.config_path)
        nodes.append(Node(config, load_genesis(config.genesis), load_key(config.identity)))
    keys = [load_key(tmp_path / "keys" / f"{spec.name}.pem") for spec in specs]
    yield nodes, keys
    for node in nodes:
        node.close()


def test_a_node_that_receives_two_gradients_from_one_member_convicts_it_in_its_next_entry(cluster_nodes):
    """node3's key pushes two different gradients for round 1 to node0 (as two processes sharing the key would):
    node0 refuses the second locally, keeps the proof, its next proposal carries it, a replica (node1) re-derives
    the same state from the entry, and node3's committed reputation takes the penalty on both."""
    from consensus.messages import Entry, entry_from_plain
    from swarm.ledger import reputation
    from swarm.round.gradient import digest_of

    (node, replica), keys = cluster_nodes
    generator = torch.Generator().manual_seed(0)

    def push(key, scale: float = 1e-2) -> bytes:
        vector = torch.randn(node.dim, generator=generator) * scale
        return make_gradient(key, node.genesis.swarm_id, 1, node.state.hash, node.compressor.compress(vector))

    honest = [push(key) for key in keys]
    twin = push(keys[3])  # the same key, trained differently

    async def arrive() -> None:
        for key, raw in [*zip(keys, honest), (keys[3], twin)]:
            await node.inbound.on_payload(key.peer_id, digest_of(raw), raw)

    asyncio.run(arrive())
    accused = keys[3].peer_id
    assert node.metrics.rejected["equivocation"] == 1
    assert [g.digest for g in node.pool.for_round(1) if g.sender == accused] == [digest_of(honest[3])]
    assert [e.sender for e in node.inbound.evidence.values()] == [accused]

    params = node.worker.entry_params()
    assert len(params["evidence"]) == 1 and params["evidence"][0]["kind"] == "gradient"
    assert node.inbound.evidence == {}  # taken by the book
    # The same twin pushing again costs no second proof.
    asyncio.run(node.inbound.on_payload(accused, digest_of(twin), twin))
    assert node.inbound.evidence == {}

    gradients = node.pool.for_round(1, node.state.hash)

    async def build_and_derive():
        applied = await node.entries.apply_gradients(node.state, gradients, params)
        entry = Entry(round=1, gradient_digests=tuple(sorted(g.digest for g in gradients)), rule=node.rules.rule,
                      params=params, state_hash=applied.state.hash, parent_state_hash=node.state.hash)
        entry = entry_from_plain(wire.loads(wire.dumps(entry.to_plain())))  # as a PrePrepare carries it
        for raw in honest:  # the replica holds the same gradients
            replica.pool.add(replica.verify_gradient(raw, 1, replica.state.hash))
        derived = await replica.entries.derive(replica.state, entry)
        without = await node.entries.apply_gradients(node.state, gradients, {})
        return entry, applied, derived, without

    entry, applied, derived, without = asyncio.run(build_and_derive())
    assert derived.state.hash == entry.state_hash == applied.state.hash
    table, plain_table = dict(derived.state.reputation), dict(without.state.reputation)
    assert table[accused].penalties == 1
    assert all(rep.penalties == 0 for peer, rep in table.items() if peer != accused)
    assert reputation.score(table[accused]) < reputation.score(plain_table[accused])

    # A forged copy of the entry (one signature byte changed) is refused by the replica.
    forged = dict(params["evidence"][0])
    forged["a"] = [forged["a"][0], forged["a"][1], bytes(64)]
    bad = dataclasses.replace(entry, params={**params, "evidence": [forged]})
    with pytest.raises(InvalidEntry):
        asyncio.run(replica.entries.derive(replica.state, bad))

    # Committed: recorded once; the same offence found again later is never proposed again.
    node.evidence.on_commit(entry.params["evidence"], 1)
    assert node.evidence.pending == {}
    node.inbound._hold_evidence(node.pool.add(node.verify_gradient(twin, 1, node.state.hash)))
    assert node.inbound.evidence == {}
    assert "evidence" not in node.worker.entry_params()

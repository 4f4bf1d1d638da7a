"""Evidence on its way into the chain (swarm/ledger/evidence.py): bounded per accused member while it waits, one piece per
member in a proposal, and never proposed again once committed, across a restart too."""
from consensus.messages import Evidence, evidence_from_plain
from swarm.ledger.entry_rules import MAX_ENTRY_EVIDENCE
from swarm.ledger.evidence import PENDING_PER_MEMBER, EvidenceBook
from swarm.ledger.store import Store


def piece(accused: str, i: int) -> Evidence:
    return Evidence(accused, 1, i, bytes([1, i]) * 16, b"a" * 64, bytes([2, i]) * 16, b"b" * 64)


def test_waiting_evidence_is_bounded_per_member_and_a_proposal_carries_one_per_member(tmp_path):
    book = EvidenceBook(Store(tmp_path))
    kept = [book.keep(piece(accused, i)) for i in range(50) for accused in ("mallory", "trudy")]
    assert sum(kept) == 2 * PENDING_PER_MEMBER
    held = sorted(e.leader for e in book.pending.values())
    assert held == ["mallory"] * PENDING_PER_MEMBER + ["trudy"] * PENDING_PER_MEMBER
    assert sorted(evidence_from_plain(p).leader for p in book.for_proposal()) == ["mallory", "trudy"]
    for i in range(10):
        book.keep(piece(f"member{i}", 0))
    assert len(book.for_proposal()) == MAX_ENTRY_EVIDENCE
    book.store.close()


def test_committed_evidence_leaves_frees_its_slot_and_is_never_kept_again(tmp_path):
    book = EvidenceBook(Store(tmp_path))
    first, second, third = piece("mallory", 1), piece("mallory", 2), piece("mallory", 3)
    assert book.keep(first) and book.keep(second) and not book.keep(third)
    book.on_commit(book.for_proposal(), 7)
    assert len(book.pending) == 1 and book.keep(third)  # its slot is free again
    committed = next(p for p in (first, second) if p.digest() not in book.pending)
    book.store.close()

    again = EvidenceBook(Store(tmp_path))  # a restart: the pending pieces are gone, the committed record is not
    assert again.store.evidence_committed(committed.digest())
    assert not again.keep(committed)
    again.on_commit([], 8)  # an entry without evidence changes nothing
    assert [p for p in (first, second, third) if again.store.evidence_committed(p.digest())] == [committed]
    again.store.close()


def test_a_store_from_before_the_evidence_table_keeps_its_committed_digests(tmp_path):
    from swarm.ledger.store import LEGACY_EVIDENCE_KEY

    old = Store(tmp_path)
    old.put_meta(LEGACY_EVIDENCE_KEY, [piece("mallory", 1).digest(), piece("trudy", 2).digest()])
    old.close()
    store = Store(tmp_path)  # opening migrates the list into the table, once
    assert all(store.evidence_committed(piece(accused, i).digest()) for accused, i in (("mallory", 1), ("trudy", 2)))
    assert not store.evidence_committed(piece("mallory", 2).digest())
    assert store.get_meta(LEGACY_EVIDENCE_KEY) is None
    store.close()


def test_a_leader_equivocating_to_a_node_is_convicted_by_its_next_proposal(tmp_path):
    """The whole path on one (not running) node: two conflicting PrePrepares signed by node1 arrive on the control
    channel, the core turns them into evidence, the node keeps it, its next entry carries it, and applying that
    entry convicts node1 (a penalty in the committed reputation)."""
    import asyncio

    from consensus.messages import Entry, PrePrepare
    from consensus.quorum import sign_fields
    from crypto.keys import load_key
    from swarm.config import load_genesis, load_node_config
    from swarm.ledger import reputation
    from swarm.ledger.entry_rules import entry_extras
    from swarm.node.core_link import Ed25519Crypto, encode_message
    from swarm.node.node import Node
    from swarm.ops.cluster import ClusterOptions, init_cluster

    specs = init_cluster(tmp_path, ClusterOptions(nodes=4))
    config = load_node_config(specs[0].config_path)
    node = Node(config, load_genesis(config.genesis), load_key(config.identity))
    leader = load_key(tmp_path / "keys" / "node1.pem")
    swarm_id, term = node.genesis.swarm_id, node.core.term

    def proposal(variant: int) -> bytes:
        entry = Entry(1, (bytes([variant]) * 32,), node.rules.rule, {}, bytes([9, variant]) * 16,
                      node.state.hash)
        sig = sign_fields(swarm_id, Ed25519Crypto(leader), "preprepare", term, 1, entry.digest(), leader.peer_id)
        return encode_message(leader, swarm_id, PrePrepare(term, 1, entry, leader.peer_id, sig))

    async def equivocate() -> None:
        for variant in (1, 2):
            await node.inbound.on_control(leader.peer_id, proposal(variant))

    asyncio.run(equivocate())
    assert [e.leader for e in node.evidence.pending.values()] == [leader.peer_id]
    params = node.worker.entry_params()
    _signers, convicted = entry_extras(node.genesis, params, 1, None)
    assert convicted == {leader.peer_id}
    table = reputation.update(node.state.reputation, reputation.RoundObservation(
        frozenset(), frozenset(), {}, {}, None, convicted))
    assert dict(table)[leader.peer_id].penalties == 1
    assert all(rep.penalties == 0 for peer, rep in table if peer != leader.peer_id)
    node.close()

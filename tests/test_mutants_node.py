"""Tests written from mutation testing (TESTING.md, "Mutation testing"): each kills mutants of the node's glue
(swarm/node/entry_states.py, swarm/node/inbound.py) that the rest of the fast suite let survive. A node built but
not running, as in test_entry_check.py."""
from __future__ import annotations

import asyncio
import dataclasses

import pytest
import torch


@pytest.fixture
def built(tmp_path):
    """(node, the four members' round-1 gradient envelopes); none of them is in the node's pool yet. The members'
    keys are ``node.test_keys``."""
    from crypto.keys import load_key
    from swarm.config import load_genesis, load_node_config
    from swarm.node.node import Node
    from swarm.ops.cluster import ClusterOptions, init_cluster
    from swarm.round.gradient import make_gradient

    specs = init_cluster(tmp_path, ClusterOptions(nodes=4))
    config = load_node_config(specs[0].config_path)
    node = Node(config, load_genesis(config.genesis), load_key(config.identity))
    keys = [load_key(tmp_path / "keys" / f"{spec.name}.pem") for spec in specs]
    generator = torch.Generator().manual_seed(0)
    raws = [make_gradient(key, node.genesis.swarm_id, 1, node.state.hash,
                          node.compressor.compress(torch.randn(node.dim, generator=generator) * 1e-2))
            for key in keys]
    node.test_keys = keys
    yield node, raws
    node.close()


def _entry(node, gradients):
    from consensus.messages import Entry
    return Entry(round=1, gradient_digests=tuple(sorted(g.digest for g in gradients)), rule=node.rules.rule,
                 params={}, state_hash=bytes(32), parent_state_hash=node.state.hash)


def _expected_hash(node, gradients) -> bytes:
    from swarm.ledger.apply import apply
    return apply(node.state, gradients, node.rules).state.hash


# ----------------------------------------------------------------------------- EntryStates._gradient_by_digest

def _last_only_in_the_store(node, raws):
    """Round 1's four gradients: the first three in the pool, the last only in the store. (gradients, last)"""
    gradients = [node.verify_gradient(raw, 1, node.state.hash) for raw in raws]
    for g in gradients[:3]:
        node.pool.add(g)
    last = gradients[3]
    node.store.add_gradients([(last.digest, 1, last.sender, raws[3])])
    return gradients, last


def test_a_payload_missing_from_the_pool_is_taken_from_the_store_when_its_bytes_match_the_digest(built):
    node, raws = built
    gradients, last = _last_only_in_the_store(node, raws)
    asked = []

    async def fetch(digest):
        asked.append(digest)
        return None

    node.entries._fetch = fetch
    derived = asyncio.run(node.entries.derive(node.state, _entry(node, gradients)))
    assert asked == []  # the store had it: no peer is asked
    assert derived.state.hash == _expected_hash(node, gradients)
    kept = node.entries.fetched[last.digest]  # kept so that adopting the entry stores it
    assert kept.digest == last.digest and kept.sender == last.sender and kept.round == 1


def test_a_damaged_stored_copy_is_not_used_and_the_payload_is_fetched_and_checked(built):
    from swarm.ledger.apply import InvalidEntry

    node, raws = built
    gradients, last = _last_only_in_the_store(node, raws)
    node.store.payload_path(last.digest).write_bytes(raws[2])  # another valid envelope: not the one named
    asked = []

    async def fetch(digest):
        asked.append(digest)
        return raws[3] if digest == last.digest else None

    node.entries._fetch = fetch
    derived = asyncio.run(node.entries.derive(node.state, _entry(node, gradients)))
    assert asked == [last.digest]
    assert derived.state.hash == _expected_hash(node, gradients)
    assert node.entries.fetched[last.digest].digest == last.digest

    # what a peer gives is checked as a receiver checks it: an envelope for another round is refused
    node.entries.round_done()

    async def fetch_wrong(digest):
        return raws[3]

    node.entries._fetch = fetch_wrong
    node.store.payload_path(last.digest).unlink()
    with pytest.raises(Exception) as caught:
        asyncio.run(node.entries._gradient_by_digest(last.digest, 2, node.state.hash))
    assert "round" in str(caught.value)
    assert not isinstance(caught.value, InvalidEntry) or "not available" not in str(caught.value)
    with pytest.raises(Exception, match="parent"):
        asyncio.run(node.entries._gradient_by_digest(last.digest, 1, bytes(32)))


def test_a_payload_nobody_can_give_is_named_by_its_first_12_hex_digits(built):
    from swarm.ledger.apply import InvalidEntry

    node, _raws = built

    async def fetch(digest):
        return None

    node.entries._fetch = fetch
    digest = bytes(range(32))
    with pytest.raises(InvalidEntry) as caught:
        asyncio.run(node.entries._gradient_by_digest(digest, 1, node.state.hash))
    assert str(caught.value) == f"payload {digest.hex()[:12]} is not available from any peer"


# ------------------------------------------------------------------------ finish_and_hash, EntryStates.aggregate

def _synthetic(members=("m0", "m1", "m2", "m3"), dim=8):
    import hashlib

    from swarm.ledger.state import genesis_state
    from swarm.round.gradient import Gradient

    state = genesis_state(torch.arange(dim, dtype=torch.float32), list(members), b"\x09" * 32)

    def gradient(sender, seed):
        vector = torch.randn(dim, generator=torch.Generator().manual_seed(seed))
        raw = sender.encode() + vector.numpy().tobytes()
        return Gradient(sender, 1, state.hash, hashlib.sha256(raw).digest(), raw, vector)
    return state, gradient


def test_finish_and_hash_passes_the_certificate_signers_and_the_membership_change_on():
    from swarm.ledger.apply import RoundRules, aggregate_round, apply
    from swarm.ledger.state import Roster
    from swarm.node.entry_states import finish_and_hash

    state, gradient = _synthetic()
    grads = [gradient(m, i) for i, m in enumerate(state.members)]
    rules = RoundRules(f=1, rule="mean")
    aggregated = aggregate_round(state, grads, rules)
    signers = frozenset(state.members[:3])  # m3 did not sign the previous round's certificate
    members = (("m0", "a"), ("m1", "b"), ("m2", "c"), ("m4", "e"))  # m3 leaves, m4 joins
    done = finish_and_hash(state, aggregated, signers, frozenset(), members)
    reference = apply(state, grads, rules, signers, frozenset(), members=members)
    assert done.state.hash == reference.state.hash
    assert done.state.roster == Roster(2, members) and done.state.members == ("m0", "m1", "m2", "m4")
    # the signers count: without them (no certificate carried) the same round gives another state
    kept = finish_and_hash(state, aggregated, signers, frozenset())
    assert kept.state.hash == apply(state, grads, rules, signers, frozenset()).state.hash
    assert kept.state.reputation_of("m3").consensus < kept.state.reputation_of("m0").consensus
    assert finish_and_hash(state, aggregated, None, frozenset()).state.hash != kept.state.hash


def test_the_aggregation_of_each_gradient_set_is_cached_by_that_set_and_runs_in_the_state_thread():
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import swarm.node.entry_states as entry_states
    from swarm.ledger.apply import RoundRules, aggregate_round

    state, gradient = _synthetic()
    grads = [gradient(m, i) for i, m in enumerate(state.members)]
    threads = []

    def recording(*args):
        threads.append(threading.current_thread().name)
        return aggregate_round(*args)

    pool = ThreadPoolExecutor(1, thread_name_prefix="state-thread")
    entries = entry_states.EntryStates(None, RoundRules(f=1, rule="mean"), None, None, pool, None, None)
    original = entry_states.aggregate_round
    entry_states.aggregate_round = recording
    try:
        async def scenario():
            first = await entries.aggregate(state, grads[:3])
            again = await entries.aggregate(state, list(reversed(grads[:3])))  # the same set: computed once
            other = await entries.aggregate(state, grads)
            return first, again, other
        first, again, other = asyncio.run(scenario())
    finally:
        entry_states.aggregate_round = original
        pool.shutdown()
    assert again is first
    assert other.included == ("m0", "m1", "m2", "m3") and first.included == ("m0", "m1", "m2")
    assert not torch.equal(other.params, first.params)
    assert len(threads) == 2 and all(name.startswith("state-thread") for name in threads)


# --------------------------------------------------- EntryStates.extras / apply_gradients: the members in force


class _Rows:
    """The one store method EntryStates.extras reads: the previous round's committed row."""

    def __init__(self, round_, digest):
        self.round, self.digest = round_, digest

    def row(self, round_):
        from types import SimpleNamespace
        return SimpleNamespace(digest=self.digest) if round_ == self.round else None


def _prev_cert(genesis, signers, round_, digest, term=1) -> dict:
    from consensus.messages import signing_bytes
    return {"round": round_, "digest": digest, "term": term,
            "sigs": [[k.peer_id, k.sign(signing_bytes(genesis.swarm_id, "commit", term, round_, digest, k.peer_id))]
                     for k in signers]}


def test_the_previous_certificate_is_counted_in_the_members_in_force_and_against_the_stored_previous_row(five):
    import hashlib

    from swarm.ledger.apply import InvalidEntry, RoundRules
    from swarm.ledger.state import genesis_state
    from swarm.node.entry_states import EntryStates
    from swarm.round.gradient import Gradient

    genesis, keys = five
    grown = tuple(sorted(k.peer_id for k in keys))  # node4 was added before round 5
    digest = b"\x04" * 32
    cert = _prev_cert(genesis, keys[1:], 4, digest)  # node1..node4 signed round 4: node4 counts, node0 did not sign
    entries = EntryStates(genesis, RoundRules(f=1, rule="mean", follow_members=True), _Rows(4, digest), None,
                          None, None, None)
    signers, convicted = entries.extras({"prev_cert": cert}, 5, grown)
    assert signers == frozenset(k.peer_id for k in keys[1:]) and convicted == frozenset()
    with pytest.raises(InvalidEntry, match="not a member"):  # the genesis members alone do not include node4
        entries.extras({"prev_cert": cert}, 5, tuple(genesis.peer_ids))
    # the digest checked is the stored row's of the previous round
    with pytest.raises(InvalidEntry, match="does not certify the previous round"):
        EntryStates(genesis, None, _Rows(4, b"\x05" * 32), None, None, None, None).extras({"prev_cert": cert}, 5,
                                                                                          grown)
    with pytest.raises(InvalidEntry, match="does not certify the previous round"):
        EntryStates(genesis, None, _Rows(3, digest), None, None, None, None).extras({"prev_cert": cert}, 5, grown)

    # apply_gradients counts it in the members of the state it applies to
    state = genesis_state(torch.zeros(4), list(grown), b"\x06" * 32)
    state = type(state)(4, state.params, state.momentum, state.reputation, state.parent_hash)

    def gradient(sender, i):
        vector = torch.full((4,), float(i))
        raw = sender.encode() + vector.numpy().tobytes()
        return Gradient(sender, 5, state.hash, hashlib.sha256(raw).digest(), raw, vector)

    grads = [gradient(peer, i) for i, peer in enumerate(grown)]

    async def scenario(entries):
        return await entries.apply_gradients(state, grads, {"prev_cert": cert})

    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(1) as pool:
        entries = EntryStates(genesis, RoundRules(f=1, rule="mean", follow_members=True), _Rows(4, digest), None,
                              pool, None, None)
        applied = asyncio.run(scenario(entries))
    assert applied.state.round == 5
    assert applied.state.reputation_of(keys[0].peer_id).consensus < applied.state.reputation_of(keys[4].peer_id).consensus


def test_apply_gradients_puts_the_membership_change_an_entry_carries_in_force(five):
    import hashlib
    from concurrent.futures import ThreadPoolExecutor

    from swarm.ledger.apply import InvalidEntry, RoundRules
    from swarm.ledger.entry_rules import MEMBERSHIP_PARAM
    from swarm.ledger.membership import ADD, sign_change
    from swarm.ledger.state import Roster, genesis_state
    from swarm.node.entry_states import EntryStates
    from swarm.round.gradient import Gradient

    genesis, keys = five
    state = genesis_state(torch.zeros(4), genesis.peer_ids, b"\x06" * 32)
    grads = []
    for i, peer in enumerate(state.members):
        vector = torch.full((4,), float(i))
        raw = peer.encode() + vector.numpy().tobytes()
        grads.append(Gradient(peer, 1, state.hash, hashlib.sha256(raw).digest(), raw, vector))
    request = sign_change(keys[1], genesis.swarm_id, ADD, keys[4].peer_id, "node4", 1)
    params = {MEMBERSHIP_PARAM: request.to_plain()}
    grown = tuple(sorted([*state.members, keys[4].peer_id]))

    with ThreadPoolExecutor(1) as pool:
        entries = EntryStates(genesis, RoundRules(f=1, rule="mean", follow_members=True), _Rows(0, None), None,
                              pool, None, None)
        applied = asyncio.run(entries.apply_gradients(state, grads, params, named=grown))
        with pytest.raises(InvalidEntry, match="not those its request makes"):
            asyncio.run(entries.apply_gradients(state, grads, params, named=grown[:-1]))
        plain = asyncio.run(entries.apply_gradients(state, grads, {}))
    assert applied.state.members == grown and plain.state.members == state.members
    assert applied.state.roster.since == 2 and dict(applied.state.roster.names)[keys[4].peer_id] == "node4"
    assert isinstance(applied.state.roster, Roster) and plain.state.roster is None


def test_derive_returns_the_result_kept_for_an_entry_and_names_why_digests_are_refused():
    from consensus.messages import Entry
    from swarm.ledger.apply import InvalidEntry, RoundRules
    from swarm.node.entry_states import EntryStates

    state, _gradient = _synthetic()
    entries = EntryStates(None, RoundRules(f=1, rule="mean"), None, None, None, None, None)
    entry = Entry(round=1, gradient_digests=(b"\x02" * 32, b"\x01" * 32), rule="mean", params={},
                  state_hash=bytes(32), parent_state_hash=state.hash)
    with pytest.raises(InvalidEntry) as caught:
        asyncio.run(entries.derive(state, entry))
    assert str(caught.value) == "gradient digests must be sorted, distinct and at least a quorum"
    kept = object()
    entries.applied[entry.digest()] = kept  # a result already derived (ours, or checked) is not derived again
    assert asyncio.run(entries.derive(state, entry)) is kept


def test_derive_puts_in_force_the_members_an_entry_names(built):
    from crypto.keys import NodeKey
    from swarm.ledger.apply import InvalidEntry
    from swarm.ledger.entry_rules import MEMBERSHIP_PARAM
    from swarm.ledger.membership import ADD, sign_change

    node, raws = built
    gradients = [node.verify_gradient(raw, 1, node.state.hash) for raw in raws]
    for g in gradients:
        node.pool.add(g)
    newcomer = NodeKey.from_seed(b"\x42" * 32).peer_id
    request = sign_change(node.test_keys[1], node.genesis.swarm_id, ADD, newcomer, "node4", 1)
    grown = tuple(sorted([*node.state.members, newcomer]))
    entry = _entry(node, gradients)
    entry = dataclasses.replace(entry, params={MEMBERSHIP_PARAM: request.to_plain()}, members=grown)
    derived = asyncio.run(node.entries.derive(node.state, entry))
    assert derived.state.members == grown and dict(derived.state.roster.names)[newcomer] == "node4"
    node.entries.round_done()
    unnamed = dataclasses.replace(entry, members=None)
    with pytest.raises(InvalidEntry, match="not those its request makes"):
        asyncio.run(node.entries.derive(node.state, unnamed))

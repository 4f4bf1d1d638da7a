"""Re-deriving an entry's state (swarm/node/entry_states.py) on a node that is built but not running: the aggregation of
one gradient set runs once however many ask, an entry that cannot follow from our state is refused with its
reason, and a valid one gives the state hash the leader computed."""
from __future__ import annotations

import asyncio
import dataclasses

import pytest
import torch


@pytest.fixture
def node(tmp_path):
    from crypto.keys import load_key
    from swarm.config import load_genesis, load_node_config
    from swarm.node.node import Node
    from swarm.ops.cluster import ClusterOptions, init_cluster

    specs = init_cluster(tmp_path, ClusterOptions(nodes=4))
    config = load_node_config(specs[0].config_path)
    node = Node(config, load_genesis(config.genesis), load_key(config.identity))
    keys = [load_key(tmp_path / "keys" / f"{spec.name}.pem") for spec in specs]
    generator = torch.Generator().manual_seed(0)
    for key in keys:
        raw = make_push(node, key, torch.randn(node.dim, generator=generator) * 1e-2)
        node.pool.add(node.verify_gradient(raw, 1, node.state.hash))
    yield node
    node.close()


def make_push(node, key, vector) -> bytes:
    from swarm.round.gradient import make_gradient
    return make_gradient(key, node.genesis.swarm_id, 1, node.state.hash, node.compressor.compress(vector))


def test_one_gradient_set_is_aggregated_once_and_a_valid_entry_checks_out(node, monkeypatch):
    import swarm.node.entry_states as entry_check
    from consensus.messages import Entry

    calls = []
    real = entry_check.aggregate_round
    monkeypatch.setattr(entry_check, "aggregate_round", lambda *args: (calls.append(1), real(*args))[1])
    gradients = node.pool.for_round(1, node.state.hash)

    async def scenario():
        speculated = node.entries.aggregate(node.state, gradients)  # as when a quorum of gradients is in
        built = await node.entries.apply_gradients(node.state, gradients, {})  # the leader's build
        entry = Entry(round=1, gradient_digests=tuple(sorted(g.digest for g in gradients)), rule=node.rules.rule,
                      params={}, state_hash=built.state.hash, parent_state_hash=node.state.hash)
        checked = await node.entries.derive(node.state, entry)  # a follower's validation
        await speculated
        return built, checked

    built, checked = asyncio.run(scenario())
    assert len(calls) == 1
    assert checked.state.hash == built.state.hash and checked.state.round == 1


def test_an_entry_that_cannot_follow_from_our_state_is_refused(node):
    from consensus.messages import Entry
    from swarm.ledger.apply import InvalidEntry

    digests = tuple(sorted(g.digest for g in node.pool.for_round(1, node.state.hash)))
    good = Entry(round=1, gradient_digests=digests, rule=node.rules.rule, params={}, state_hash=bytes(32),
                 parent_state_hash=node.state.hash)
    cases = {
        "does not extend our state": dataclasses.replace(good, parent_state_hash=bytes(32)),
        "the genesis says": dataclasses.replace(good, rule="mean" if node.rules.rule != "mean" else "median"),
        "sorted, distinct and at least a quorum": dataclasses.replace(good, gradient_digests=digests[::-1]),
        "not available from any peer": dataclasses.replace(good, gradient_digests=tuple(sorted(
            digests[:-1] + (b"\xff" * 32,)))),
        "unknown entry params": dataclasses.replace(good, params={"junk": 1}),
    }

    async def fetch_nothing(digest):
        return None

    node.entries._fetch = fetch_nothing  # no transport here: a payload we lack is unavailable
    for reason, entry in cases.items():
        with pytest.raises(InvalidEntry, match=reason):
            asyncio.run(node.entries.derive(node.state, entry))

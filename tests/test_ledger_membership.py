"""The ledger across a committed membership change (issue 19): what the entry carries, what apply makes of it, what
the state records and what its snapshot gives back. In process, with the real data path of the golden run."""
from __future__ import annotations

import pytest

from crypto.keys import NodeKey, save_key
from swarm.config import load_genesis, load_node_config
from swarm.ledger.apply import InvalidEntry, apply
from swarm.ledger.entry_rules import (MEMBERSHIP_PARAM, entry_extras, entry_membership, epoch_of, initial_state,
                                      names_of, open_gradient, rules_of)
from swarm.ledger.membership import ADD, REMOVE, sign_change
from swarm.ledger.restore import certified_snapshot
from swarm.ledger.state import PeerReputation, ReplicatedState
from swarm.ops.cluster import ClusterOptions, init_cluster
from swarm.round.compression import Compressor
from swarm.round.gradient import make_gradient
from swarm.training.build import build_trainer


@pytest.fixture(scope="module")
def swarm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("members")
    keys = [NodeKey.from_seed(bytes([i + 1]) * 32) for i in range(5)]
    for i, key in enumerate(keys[:4]):
        save_key(key, folder / "keys" / f"node{i}.pem")
    specs = init_cluster(folder, ClusterOptions(nodes=4, swarm_id="members", local_steps=1))
    config = load_node_config(specs[0].config_path)
    genesis = load_genesis(config.genesis)
    trainer = build_trainer(config, genesis, keys[0].peer_id)
    return genesis, config, keys, trainer


def run_round(swarm, state, senders, params=None, named=None):
    """One round: each of ``senders`` signs an update, then the entry's params and members are checked and applied
    as replay and the node do."""
    genesis, config, keys, trainer = swarm
    r, dim, limit = state.round + 1, state.params.numel(), config.transport.max_payload_bytes
    compressor = Compressor("fp16")
    gradients = []
    for key in senders:
        raw = make_gradient(key, genesis.swarm_id, r, state.hash, compressor.compress(trainer.local_update(state.params)))
        gradients.append(open_gradient(raw, genesis, dim, limit, r, state.hash, members=state.members))
    params = params or {}
    extras = entry_extras(genesis, params, r, None, state.members)
    change = entry_membership(genesis, state, params, named)
    return apply(state, gradients, rules_of(genesis), *extras, members=change).state


def test_an_added_member_counts_from_the_next_round_at_a_neutral_score(swarm):
    genesis, config, keys, _trainer = swarm
    state = run_round(swarm, initial_state(genesis, config), keys[:4])
    request = sign_change(keys[1], genesis.swarm_id, ADD, keys[4].peer_id, "node4", epoch_of(state))
    named = tuple(sorted([*state.members, keys[4].peer_id]))
    grown = run_round(swarm, state, keys[:4], {MEMBERSHIP_PARAM: request.to_plain()}, named)
    assert grown.members == named and grown.roster.since == 3
    assert names_of(genesis, grown)[keys[4].peer_id] == "node4"
    assert grown.reputation_of(keys[4].peer_id) == PeerReputation()
    with pytest.raises(Exception, match="not a member"):  # its update for round 2 was refused
        run_round(swarm, state, [keys[4]])
    after = run_round(swarm, grown, keys)  # round 3: all five count
    assert after.reputation_of(keys[4].peer_id).rounds_included == 1
    assert after.roster == grown.roster  # the roster stays until the next change
    # the snapshot gives the same state back, with members it lists itself (its certified hash vouches for them)
    restored = certified_snapshot(after.serialize(), after.hash, after.params.numel(), None)
    assert restored.hash == after.hash and restored.roster == after.roster
    # and the request is spent: the configuration it changed is no longer in force
    with pytest.raises(InvalidEntry, match="configuration of round 1"):
        entry_membership(genesis, after, {MEMBERSHIP_PARAM: request.to_plain()}, named)


def test_a_removed_members_row_leaves_the_table_and_its_updates_stop_counting(swarm):
    genesis, config, keys, _trainer = swarm
    state = initial_state(genesis, config)
    request = sign_change(keys[0], genesis.swarm_id, REMOVE, keys[3].peer_id, "node3", 1)
    named = tuple(m for m in state.members if m != keys[3].peer_id)
    shrunk = run_round(swarm, state, keys[:4], {MEMBERSHIP_PARAM: request.to_plain()}, named)
    assert keys[3].peer_id not in shrunk.members and len(shrunk.reputation) == 3
    with pytest.raises(Exception, match="not a member"):
        run_round(swarm, shrunk, keys[:4])


def test_an_entry_whose_members_disagree_with_its_request_is_invalid(swarm):
    genesis, config, keys, _trainer = swarm
    state = initial_state(genesis, config)
    request = sign_change(keys[1], genesis.swarm_id, ADD, keys[4].peer_id, "node4", 1)
    right = tuple(sorted([*state.members, keys[4].peer_id]))
    with pytest.raises(InvalidEntry, match="not those its request makes"):
        entry_membership(genesis, state, {MEMBERSHIP_PARAM: request.to_plain()}, right[:-1])
    with pytest.raises(InvalidEntry, match="without a signed request"):
        entry_membership(genesis, state, {}, right)
    forged = {**request.to_plain(), "name": "mallory"}
    with pytest.raises(InvalidEntry, match="signature"):
        entry_membership(genesis, state, {MEMBERSHIP_PARAM: forged}, right)
    assert entry_membership(genesis, state, {}, None) is None


def test_a_state_without_a_change_keeps_its_bytes(swarm):
    genesis, config, keys, _trainer = swarm
    state = run_round(swarm, initial_state(genesis, config), keys[:4])
    assert state.roster is None and b"roster" not in state.serialize()[-400:]
    assert ReplicatedState.deserialize(state.serialize(), state.params.numel(), list(state.members)).hash == state.hash

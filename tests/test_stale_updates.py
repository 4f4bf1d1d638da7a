"""Late updates kept, within a bound (swarm/ledger/staleness.py, issue 20).

A chain of certified rounds is built in process where member 3 misses round 2 and its round-2 gradient is named
late in round 3 (and again a round-3 one in round 5, two rounds late): `swarm verify` replays and passes it, from
the genesis and from a snapshot. Then what must be refused (beyond the bound, a state the chain never had, counted
twice, with its member's fresh one, late updates off), the documented weights (decay ** staleness, the rule sees
the scaled row), that lateness costs no reputation, and a node's leader build and follower check of such an entry.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from consensus.messages import CommitCertificate, Entry, commit_cert_to_plain, signing_bytes
from crypto.keys import NodeKey, save_key
from swarm.config import Genesis, NodeConfig, genesis_to_dict, load_genesis, load_node_config, write_yaml
from swarm.ledger import staleness
from swarm.ledger.apply import InvalidEntry, aggregate_round, apply
from swarm.ledger.audit import audit_store
from swarm.ledger.entry_rules import entry_extras, initial_state, open_gradient, rules_of
from swarm.ledger.state import ReplicatedState
from swarm.ledger.store import ChainRow, Store
from swarm.ops.cluster import ClusterOptions, init_cluster
from swarm.round import compression
from swarm.round.gradient import Gradient, digest_of, make_gradient
from swarm.round.pool import GradientPool

BOUND, DECAY = 2, 0.5
ROUNDS = 5
SLOW = 3  # the index of the member that misses rounds 2, 3 and 4


def _keys() -> list[NodeKey]:
    return [NodeKey.from_seed(bytes([i + 1]) * 32) for i in range(4)]


def _setup(folder: Path, bound: int = BOUND, rule: str = "mean") -> tuple[Genesis, NodeConfig, list]:
    keys = _keys()
    for i, key in enumerate(keys):
        save_key(key, folder / "keys" / f"node{i}.pem")
    specs = init_cluster(folder, ClusterOptions(nodes=4, swarm_id="stale", dataset="synthetic", rule=rule))
    config = load_node_config(specs[0].config_path)
    genesis = load_genesis(config.genesis)
    genesis.staleness.bound, genesis.staleness.decay = bound, DECAY
    write_yaml(folder / "genesis.yaml", genesis_to_dict(genesis))
    return load_genesis(config.genesis), config, specs


def _certificate(keys: list[NodeKey], swarm_id: str, round_: int, digest: bytes) -> dict:
    sigs = tuple((key.peer_id, key.sign(signing_bytes(swarm_id, "commit", 1, round_, digest, key.peer_id)))
                 for key in keys)
    return commit_cert_to_plain(CommitCertificate(1, round_, digest, sigs))


class Signer:
    """Makes members' signed gradients for a genesis, decoded as a receiver decodes them."""

    def __init__(self, genesis: Genesis, config: NodeConfig, dim: int, seed: int = 5):
        self.genesis, self.dim, self.max_size = genesis, dim, config.transport.max_payload_bytes
        self.generator = torch.Generator().manual_seed(seed)

    def gradient(self, key: NodeKey, round_: int, parent: bytes, vector: torch.Tensor | None = None) -> Gradient:
        vector = torch.randn(self.dim, generator=self.generator) if vector is None else vector
        raw = make_gradient(key, self.genesis.swarm_id, round_, parent, compression.encode(vector))
        return open_gradient(raw, self.genesis, self.dim, self.max_size, round_, parent)


@dataclass
class Chain:
    data_dir: Path
    genesis: Genesis
    config: NodeConfig
    states: list[ReplicatedState]  # index r: state_r
    late: dict[int, Gradient]      # round of the entry -> the late gradient it names


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Chain:
    """Rounds 1-5; member 3 is in round 1, misses 2-4 (its round-2 gradient is named late in round 3, its round-3
    one two rounds late in round 5) and every entry from round 2 carries the previous certificate."""
    folder = tmp_path_factory.mktemp("stale-chain")
    genesis, config, specs = _setup(folder)
    keys = _keys()
    rules = rules_of(genesis)
    states = [initial_state(genesis, config)]
    signer = Signer(genesis, config, states[0].params.numel())
    store = Store(specs[0].data_dir)
    late_made = {}  # the round it is for -> the slow member's gradient, built on that round's parent
    late_named = {3: 2, 5: 3}  # the entry's round -> the round of the late gradient it names
    previous_cert = None
    for round_ in range(1, ROUNDS + 1):
        state = states[-1]
        members = keys if round_ == 1 else keys[:SLOW]
        fresh = [signer.gradient(key, round_, state.hash) for key in members]
        if round_ in (2, 3):
            late_made[round_] = signer.gradient(keys[SLOW], round_, state.hash)
        late = [late_made[late_named[round_]]] if round_ in late_named else []
        params = {} if previous_cert is None else {"prev_cert": previous_cert}
        if late:
            params["stale"] = staleness.to_params(round_, late)
        signers = None if previous_cert is None else frozenset(genesis.peer_ids)
        applied = apply(state, fresh, rules, signers, stale=late)
        entry = Entry(round_, tuple(sorted(g.digest for g in fresh)), genesis.aggregation.rule, params,
                      applied.state.hash, state.hash)
        certificate = _certificate(keys, genesis.swarm_id, round_, entry.digest())
        store.append(ChainRow(round_, 1, entry.digest(), entry.to_plain(), certificate, applied.state.hash),
                     [(g.digest, round_, g.sender, g.raw) for g in fresh + late])
        if round_ == 3:
            store.save_snapshot(round_, applied.state.hash, applied.state.serialize())
        states.append(applied.state)
        previous_cert = certificate
    store.close()
    return Chain(specs[0].data_dir, genesis, config, states,
                 {r: late_made[q] for r, q in late_named.items()})


def test_a_committed_late_update_is_replayed_by_swarm_verify(chain, capsys):
    from cli.main import main

    assert chain.late[3].sender == _keys()[SLOW].peer_id
    rep = dict(chain.states[3].reputation)[chain.late[3].sender]
    assert rep.rounds_included == 2  # round 1, then its late round-2 gradient in round 3
    report = audit_store(chain.data_dir, chain.genesis, chain.config)
    assert report.ok, [str(f) for f in report.findings]
    assert report.replayed == ROUNDS and not report.certificate_only
    assert main(["verify", "--data-dir", str(chain.data_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_a_snapshot_carries_what_checking_the_next_late_update_needs(chain, tmp_path):
    """Resumed from the snapshot of round 3 (payloads of rounds 1-3 gone), the audit still checks round 5's
    two-rounds-late gradient: the ancestors and counted rounds travel in the state."""
    import shutil
    data_dir = tmp_path / "node"
    shutil.copytree(chain.data_dir, data_dir)
    store = Store(data_dir)
    for row in store.rows(1, 3):
        for digest in row.entry["gradients"]:
            store.payload_path(digest).unlink()
    store.close()
    snapshot = ReplicatedState.deserialize(chain.states[3].serialize(), chain.states[3].params.numel(),
                                           chain.genesis.peer_ids)
    assert snapshot.hash == chain.states[3].hash and snapshot.recent == chain.states[3].recent
    report = audit_store(data_dir, chain.genesis, chain.config)
    assert report.from_snapshot == [3] and report.replayed == 2
    assert not [f for f in report.findings if f.round > 3], [str(f) for f in report.findings]


def test_a_tampered_staleness_record_fails_the_audit(chain, tmp_path):
    """The entry's record is what the certificate signs: naming the late gradient as two rounds late fails."""
    import shutil
    import sqlite3
    from crypto import wire
    data_dir = tmp_path / "node"
    shutil.copytree(chain.data_dir, data_dir)
    with sqlite3.connect(data_dir / "node.sqlite") as db:
        (raw,) = db.execute("SELECT entry FROM chain WHERE round = 3").fetchone()
        entry = wire.loads(raw)
        entry["params"]["stale"][0][1] = 2
        db.execute("UPDATE chain SET entry = ? WHERE round = 3", (wire.dumps(entry),))
    report = audit_store(data_dir, chain.genesis, chain.config)
    assert not report.ok and any(f.round == 3 for f in report.findings)


# ------------------------------------------------------------------------------------------------ refusals

def test_what_may_not_enter_as_a_late_update_is_refused_with_its_reason(chain):
    keys = _keys()
    genesis, rules = chain.genesis, rules_of(chain.genesis)
    signer = Signer(genesis, chain.config, chain.states[0].params.numel(), seed=9)
    state_3, state_4 = chain.states[3], chain.states[4]
    fresh_4 = [signer.gradient(key, 4, state_3.hash) for key in keys[:SLOW]]
    fresh_5 = [signer.gradient(key, 5, state_4.hash) for key in keys[:SLOW]]
    cases = {
        # round 5's entry naming a round-2 gradient: three rounds late, the bound is 2
        "beyond the bound": (state_4, fresh_5, signer.gradient(keys[SLOW], 2, chain.states[1].hash)),
        # a round-3 gradient built on something that is not state_2
        "state the chain did not have": (state_3, fresh_4, signer.gradient(keys[SLOW], 3, b"\x05" * 32)),
        # its round-2 gradient was counted in round 3 already: naming it again in round 4
        "was counted already": (state_3, fresh_4, chain.late[3]),
        # a member's own fresh gradient and a late one in one entry
        "has a gradient of this round": (state_3, fresh_4, signer.gradient(keys[0], 3, chain.states[2].hash)),
    }
    for reason, (state, fresh, late) in cases.items():
        with pytest.raises(InvalidEntry, match=reason):
            aggregate_round(state, fresh, rules, [late])
        chosen, refused = staleness.choose(state, rules.staleness_bound, [late], fresh)
        assert not chosen
        # a leader passes over, without a word, what its member superseded or had counted (the round-2 gradient
        # beyond the bound is also one the slow member had counted); the rest it reports with the reason
        silent = ("has a gradient of this round", "was counted already", "beyond the bound")
        assert refused == [] if reason in silent else reason in refused[0][1]
    # a second, different round-2 gradient of the slow member: counted already too (one per member and round)
    again = signer.gradient(keys[SLOW], 2, chain.states[1].hash)
    with pytest.raises(InvalidEntry, match="counted already"):
        aggregate_round(chain.states[3], fresh_4, rules, [again])


def test_the_entry_record_of_late_updates_is_checked_before_any_payload(chain):
    genesis = chain.genesis
    digest = b"\x01" * 32
    for params, reason in [
        ({"stale": [[digest, BOUND + 1]]}, "beyond the bound"),
        ({"stale": [[digest, 0]]}, "beyond the bound"),
        ({"stale": [[b"\x02" * 32, 1], [digest, 1]]}, "sorted by digest"),
        ({"stale": [[digest, 1], [digest, 1]]}, "sorted by digest"),
        ({"stale": [[digest]]}, "not \\[32-byte digest, staleness\\]"),
        ({"stale": []}, "a list of 1 to 4"),
        ({"stale": [[digest, 1]] * 5}, "a list of 1 to 4"),
    ]:
        with pytest.raises(InvalidEntry, match=reason):
            entry_extras(genesis, params, 3, None)


def test_late_updates_are_refused_where_the_genesis_leaves_them_off(tmp_path):
    genesis, config, _specs = _setup(tmp_path, bound=0)
    with pytest.raises(InvalidEntry, match="off in this genesis"):
        entry_extras(genesis, {"stale": [[b"\x01" * 32, 1]]}, 3, None)
    rules = rules_of(genesis)
    state_0 = initial_state(genesis, config)
    signer = Signer(genesis, config, state_0.params.numel())
    keys = _keys()
    state_1 = apply(state_0, [signer.gradient(key, 1, state_0.hash) for key in keys[:SLOW]], rules).state
    assert state_1.recent is None  # the state's bytes are those of a swarm without late updates
    with pytest.raises(InvalidEntry, match="off in this genesis"):
        aggregate_round(state_1, [signer.gradient(key, 2, state_1.hash) for key in keys[:SLOW]], rules,
                        [signer.gradient(keys[SLOW], 1, state_0.hash)])


def test_the_pool_keeps_the_bound_of_older_rounds_and_no_more():
    pool = GradientPool(stale_bound=2)
    pool.advance(5)
    assert [pool.accepts_round(r) for r in range(2, 8)] == [False, True, True, True, True, False]
    vector = torch.zeros(3)
    for round_ in (3, 4, 5):
        pool.add(Gradient("peer", round_, b"\0" * 32, bytes([round_]) * 32, b"", vector))
    assert [g.round for g in pool.late(5)] == [3, 4]
    pool.advance(6)
    assert [g.round for g in pool.late(6)] == [4, 5] and pool.by_digest(bytes([3]) * 32) is None


# ------------------------------------------------------------------------------------------------ weights

def test_weights_decay_as_documented_and_the_rule_sees_the_scaled_row(chain):
    assert [staleness.weight(s, DECAY) for s in range(4)] == [1.0, 0.5, 0.25, 0.125]
    assert staleness.weight(3, 0.9) == 0.9 * 0.9 * 0.9
    keys, rules = _keys(), rules_of(chain.genesis)  # rule mean, server lr 1, no momentum
    signer = Signer(chain.genesis, chain.config, chain.states[0].params.numel(), seed=11)
    state_3 = chain.states[3]  # one round late: the slow member's round-3 gradient in round 4, weight 0.5
    fresh = [signer.gradient(key, 4, state_3.hash) for key in keys[:SLOW]]
    late = signer.gradient(keys[SLOW], 3, chain.states[2].hash)
    result = aggregate_round(state_3, fresh, rules, [late])
    rows = [g.vector.double() for g in fresh] + [0.5 * late.vector.double()]
    assert torch.allclose(result.params.double(), state_3.params.double() - sum(rows) / 4, atol=1e-5)
    assert result.stale == (late.sender,) and late.sender in result.included
    # two rounds late, with a member that missed both rounds 2 and 3: weight 0.25 (the chain's round 5)
    state_4 = chain.states[4]
    fresh = [signer.gradient(key, 5, state_4.hash) for key in keys[:SLOW]]
    late = chain.late[5]
    result = aggregate_round(state_4, fresh, rules, [late])
    rows = [g.vector.double() for g in fresh] + [0.25 * late.vector.double()]
    assert torch.allclose(result.params.double(), state_4.params.double() - sum(rows) / 4, atol=1e-5)
    # deterministic: the same inputs give the same state bytes
    again = apply(state_4, fresh, rules, stale=[late]).state
    assert again.hash == apply(state_4, list(reversed(fresh)), rules, stale=[late]).state.hash


def test_lateness_costs_no_reputation(chain):
    """A late gradient is scored exactly as the same update would be had it come on time (it is in the reference,
    scored unscaled, and counts as participation): every member's committed reputation is the same either way;
    only the model differs, by the weight."""
    keys, rules = _keys(), rules_of(chain.genesis)
    state = chain.states[4]
    base = torch.randn(state.params.numel(), generator=torch.Generator().manual_seed(3))
    signer = Signer(chain.genesis, chain.config, state.params.numel())
    fresh = [signer.gradient(key, 5, state.hash, base + 0.01 * i) for i, key in enumerate(keys[:SLOW])]
    update = -base  # pointing away from the others: it scores badly, late or not, so the comparison bites
    late = signer.gradient(keys[SLOW], 3, chain.states[2].hash, update)  # admissible: counted round is 2
    on_time = signer.gradient(keys[SLOW], 5, state.hash, update)
    signers = frozenset(chain.genesis.peer_ids)
    with_late = apply(state, fresh, rules, signers, stale=[late]).state
    with_on_time = apply(state, fresh + [on_time], rules, signers).state
    without = apply(state, fresh, rules, signers).state
    assert with_late.reputation == with_on_time.reputation
    slow = keys[SLOW].peer_id
    before, after, absent = (dict(s.reputation)[slow] for s in (state, with_late, without))
    assert after.participation > before.participation > absent.participation
    assert after.quality < before.quality  # still scored: a bad update does not hide behind lateness
    assert not torch.equal(with_late.params, with_on_time.params)


# ------------------------------------------------------------------------------------------------ a node

def test_a_leader_names_a_late_gradient_and_a_follower_derives_the_same_state(tmp_path):
    """The node's own path: the pool keeps the late gradient, the leader's build names it in params.stale, a
    follower that holds the same payloads derives the same state, and the entry's late payload is stored."""
    from consensus.messages import CommittedEntry
    from crypto.keys import load_key
    from swarm.node.node import Node

    genesis, config, specs = _setup(tmp_path, rule="median")
    keys = _keys()
    nodes = [Node(load_node_config(spec.config_path), genesis, load_key(load_node_config(spec.config_path).identity))
             for spec in specs[:2]]
    try:
        leader, follower = nodes
        signer = Signer(genesis, config, leader.dim, seed=2)
        rules = leader.rules

        def feed(gradient: Gradient) -> None:
            for node in nodes:
                node.pool.add(node.verify_gradient(gradient.raw, gradient.round, gradient.parent))

        state_0 = leader.state
        round_1 = [signer.gradient(key, 1, state_0.hash) for key in keys[:SLOW]]
        state_1 = apply(state_0, round_1, rules).state
        late = signer.gradient(keys[SLOW], 1, state_0.hash)  # finished after round 1 was committed
        for node in nodes:
            node.state = state_1
            node.pool.advance(2)
        assert leader._parent_for(1) == state_0.hash and leader._parent_for(0) is None
        feed(late)
        for key in keys[:SLOW]:
            feed(signer.gradient(key, 2, state_1.hash))
        assert [g.digest for g in leader.pool.late(2)] == [late.digest]

        built: list = []
        leader.step = lambda event, source=None: built.append(event)

        async def scenario():
            leader.worker.entry_params = lambda: {}  # no previous certificate in this harness
            await leader.worker._build(2, state_1.hash)
            entry = built[0].entry
            derived = await follower.entries.derive(follower.state, entry)
            await follower.worker._adopt(CommittedEntry(entry, None), derived)
            return entry, derived

        entry, derived = asyncio.run(scenario())
        assert entry.params["stale"] == [[late.digest, 1]]
        assert late.digest not in entry.gradient_digests and len(entry.gradient_digests) == SLOW
        assert derived.state.hash == entry.state_hash and derived.stale == (late.sender,)
        assert follower.store.gradient_envelope(late.digest) == late.raw
    finally:
        for node in nodes:
            node.close()


def test_the_genesis_refuses_a_bound_or_decay_out_of_range(tmp_path):
    from swarm.config_schema import ConfigError
    genesis, _config, _specs = _setup(tmp_path)
    plain = genesis_to_dict(genesis)
    assert plain["staleness"] == {"bound": BOUND, "decay": DECAY}
    for staleness_settings, key in [({"bound": 9}, "staleness.bound"), ({"bound": -1}, "staleness.bound"),
                                    ({"bound": 2, "decay": 0.0}, "staleness.decay"),
                                    ({"bound": 2, "decay": 1.5}, "staleness.decay")]:
        write_yaml(tmp_path / "bad.yaml", {**plain, "staleness": staleness_settings})
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_genesis(tmp_path / "bad.yaml")
    off = {k: v for k, v in plain.items() if k != "staleness"}
    write_yaml(tmp_path / "off.yaml", off)
    assert "staleness" not in genesis_to_dict(load_genesis(tmp_path / "off.yaml"))  # off: the hash is unchanged


def test_a_node_drops_a_late_gradient_beyond_the_bound_or_on_a_state_it_never_had(tmp_path, caplog):
    import logging
    from crypto.keys import load_key
    from swarm.node.node import Node

    genesis, config, specs = _setup(tmp_path)
    node = Node(config, genesis, load_key(config.identity))
    keys = _keys()
    try:
        signer = Signer(genesis, config, node.dim, seed=4)
        states = [node.state]
        for round_ in (1, 2, 3):
            states.append(apply(states[-1], [signer.gradient(key, round_, states[-1].hash) for key in keys[:SLOW]],
                                node.rules).state)
        peer = keys[SLOW].peer_id

        async def push(gradient: Gradient) -> None:
            await node.inbound.on_payload(peer, gradient.digest, gradient.raw)

        caplog.set_level(logging.INFO, logger="swarm.node")
        # at state_0, a "round 0" gradient is within the window but names no state this node had
        asyncio.run(push(signer.gradient(keys[SLOW], 0, b"\x03" * 32)))
        assert "built on a state this node never had" in caplog.text
        node.state = states[3]
        node.pool.advance(4)
        too_old = signer.gradient(keys[SLOW], 1, states[0].hash)  # three rounds late, bound 2
        asyncio.run(push(too_old))
        assert "staleness 3 is beyond the bound 2" in caplog.text
        wrong_base = signer.gradient(keys[SLOW], 2, states[2].hash)  # round 2 is built on state_1
        asyncio.run(push(wrong_base))
        good = signer.gradient(keys[SLOW], 2, states[1].hash)
        asyncio.run(push(good))
        assert [g.digest for g in node.pool.late(4)] == [good.digest]
        assert node.metrics.rejected["stale_or_future_round"] == 2 and node.metrics.rejected["wrong_parent"] == 1
    finally:
        node.close()

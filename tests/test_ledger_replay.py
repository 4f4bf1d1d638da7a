"""Replaying a store (swarm.ledger.replay, .restore, .audit): a chain of four certified rounds is built in process,
then replayed whole, from a snapshot, and with one thing broken at a time; each break stops the replay at its
round with its own reason."""
from __future__ import annotations

import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from consensus.messages import CommitCertificate, Entry, commit_cert_to_plain, signing_bytes
from crypto import wire
from crypto.keys import NodeKey, save_key
from swarm.config import Genesis, NodeConfig, load_genesis, load_node_config
from swarm.ledger.apply import apply
from swarm.ledger.audit import audit_store
from swarm.ledger.entry_rules import initial_state, open_gradient, rules_of
from swarm.ledger.replay import Replayer, StopReason
from swarm.ledger.restore import restore
from swarm.ledger.state import ReplicatedState
from swarm.ledger.store import ChainRow, Store
from swarm.ops.cluster import ClusterOptions, init_cluster
from swarm.round import compression
from swarm.round.gradient import digest_of, make_gradient

ROUNDS = 4
SNAPSHOT_ROUND = 2


@dataclass
class Chain:
    data_dir: Path
    genesis: Genesis
    config: NodeConfig
    state_0: ReplicatedState
    hashes: list[bytes]          # state hash after each round, index 0 = round 1

    @property
    def max_size(self) -> int:
        return self.config.transport.max_payload_bytes

    def copy(self, dest: Path) -> Path:
        shutil.copytree(self.data_dir, dest)
        return dest

    def replayer(self, store: Store, max_size: int | None = None) -> Replayer:
        return Replayer(self.genesis, self.state_0.params.numel(), max_size or self.max_size, store.gradient_envelope)


def _signed_certificate(keys: list[NodeKey], swarm_id: str, round_: int, digest: bytes) -> dict:
    sigs = tuple((key.peer_id, key.sign(signing_bytes(swarm_id, "commit", 1, round_, digest, key.peer_id)))
                 for key in keys)
    return commit_cert_to_plain(CommitCertificate(1, round_, digest, sigs))


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Chain:
    """Four members commit ROUNDS rounds; from round 2 each entry carries the previous round's certificate, so
    replay must derive the certificate's signers from the previous row's digest. A snapshot at SNAPSHOT_ROUND."""
    folder = tmp_path_factory.mktemp("chain")
    keys = [NodeKey.from_seed(bytes([i + 1]) * 32) for i in range(4)]
    for i, key in enumerate(keys):
        save_key(key, folder / "keys" / f"node{i}.pem")
    specs = init_cluster(folder, ClusterOptions(nodes=4, swarm_id="replay", dataset="synthetic", rule="mean"))
    config = load_node_config(specs[0].config_path)
    genesis = load_genesis(config.genesis)
    state_0 = state = initial_state(genesis, config)
    dim, max_size = state.params.numel(), config.transport.max_payload_bytes
    store = Store(specs[0].data_dir)
    generator = torch.Generator().manual_seed(5)
    previous_cert, hashes = None, []
    for round_ in range(1, ROUNDS + 1):
        raws = [make_gradient(key, genesis.swarm_id, round_, state.hash,
                              compression.encode(torch.randn(dim, generator=generator)))
                for key in keys]
        gradients = [open_gradient(raw, genesis, dim, max_size, round_, state.hash) for raw in raws]
        params = {} if previous_cert is None else {"prev_cert": previous_cert}
        signers = None if previous_cert is None else frozenset(genesis.peer_ids)
        applied = apply(state, gradients, rules_of(genesis), signers)
        entry = Entry(round_, tuple(sorted(digest_of(raw) for raw in raws)), genesis.aggregation.rule, params,
                      applied.state.hash, state.hash)
        certificate = _signed_certificate(keys, genesis.swarm_id, round_, entry.digest())
        store.append(ChainRow(round_, 1, entry.digest(), entry.to_plain(), certificate, applied.state.hash),
                     [(digest_of(raw), round_, key.peer_id, raw) for raw, key in zip(raws, keys)])
        state, previous_cert = applied.state, certificate
        hashes.append(state.hash)
        if round_ == SNAPSHOT_ROUND:
            store.save_snapshot(round_, state.hash, state.serialize())
    store.close()
    return Chain(specs[0].data_dir, genesis, config, state_0, hashes)


def _payload_of(data_dir: Path, round_: int) -> Path:
    with sqlite3.connect(data_dir / "node.sqlite") as db:
        (digest,) = db.execute("SELECT digest FROM payloads WHERE round = ? ORDER BY digest", (round_,)).fetchone()
    return data_dir / "payloads" / digest.hex()[:2] / digest.hex()


def _replay_all(chain: Chain, data_dir: Path, **replayer_options):
    store = Store(data_dir, read_only=True)
    try:
        return list(chain.replayer(store, **replayer_options).replay(chain.state_0, store.rows(), None))
    finally:
        store.close()


def test_replay_from_the_genesis_reproduces_every_certified_state_hash(chain):
    steps = _replay_all(chain, chain.data_dir)
    assert [step.stop for step in steps] == [None] * ROUNDS
    assert [step.state.hash for step in steps] == chain.hashes
    assert [step.state.round for step in steps] == list(range(1, ROUNDS + 1))


@pytest.mark.parametrize("damage, reason", [
    (lambda path: path.unlink(), StopReason.MISSING_PAYLOAD),
    (lambda path: path.write_bytes(path.read_bytes()[:-1] + bytes([path.read_bytes()[-1] ^ 1])),
     StopReason.DAMAGED_PAYLOAD),
])
def test_replay_stops_at_the_round_of_an_unusable_payload(chain, tmp_path, damage, reason):
    data_dir = chain.copy(tmp_path / "node")
    damage(_payload_of(data_dir, 3))
    steps = _replay_all(chain, data_dir)
    assert [step.stop for step in steps[:2]] == [None, None]
    assert len(steps) == 3 and steps[2].state is None
    assert (steps[2].stop.round, steps[2].stop.reason) == (3, reason)
    assert reason.payload_unusable


def test_a_payload_that_fails_the_receivers_checks_stops_the_replay(chain):
    steps = _replay_all(chain, chain.data_dir, max_size=64)  # every envelope is larger than that
    assert len(steps) == 1 and steps[0].stop.reason is StopReason.INVALID_PAYLOAD


def test_a_certified_state_hash_that_replay_does_not_reach_is_a_divergence(chain, tmp_path):
    data_dir = chain.copy(tmp_path / "node")
    with sqlite3.connect(data_dir / "node.sqlite") as db:
        db.execute("UPDATE chain SET state_hash = ? WHERE round = 3", (b"\x07" * 32,))
    steps = _replay_all(chain, data_dir)
    assert (steps[-1].stop.round, steps[-1].stop.reason) == (3, StopReason.STATE_HASH_DIFFERS)
    (data_dir / "snapshots").joinpath(f"{chain.hashes[SNAPSHOT_ROUND - 1].hex()}.state").unlink()
    restored = _restore(chain, data_dir)
    assert restored.diverged and restored.state.round == 2 and restored.state.hash == chain.hashes[1]


def test_the_previous_rows_digest_decides_whether_a_carried_certificate_counts(chain):
    store = Store(chain.data_dir, read_only=True)
    try:
        rows = list(store.rows())
        replayer = chain.replayer(store)
        state_1 = next(replayer.replay(chain.state_0, rows[:1], None)).state
        right = next(replayer.replay(state_1, rows[1:2], rows[0].digest))
        wrong = next(replayer.replay(state_1, rows[1:2], b"\x01" * 32))
    finally:
        store.close()
    assert right.stop is None and right.state.hash == chain.hashes[1]
    assert wrong.stop.reason is StopReason.INVALID_ENTRY and "prev_cert" in wrong.stop.detail


def _restore(chain: Chain, data_dir: Path):
    store = Store(data_dir)
    try:
        return restore(store, chain.genesis, chain.state_0, chain.max_size)
    finally:
        store.close()


def test_restore_starts_from_the_certified_snapshot_and_replays_the_rest(chain, tmp_path):
    data_dir = chain.copy(tmp_path / "node")
    for round_ in range(1, SNAPSHOT_ROUND + 1):  # only the snapshot can give these rounds back now
        _payload_of(data_dir, round_).unlink()
    restored = _restore(chain, data_dir)
    assert restored.snapshot_round == SNAPSHOT_ROUND and restored.stop is None and not restored.diverged
    assert restored.state.round == ROUNDS and restored.state.hash == chain.hashes[-1]


def test_restore_skips_a_snapshot_that_does_not_decode_and_replays_from_the_genesis(chain, tmp_path, caplog):
    data_dir = chain.copy(tmp_path / "node")
    snapshot = data_dir / "snapshots" / f"{chain.hashes[SNAPSHOT_ROUND - 1].hex()}.state"
    snapshot.write_bytes(b"garbage")
    restored = _restore(chain, data_dir)
    assert restored.snapshot_round is None and restored.state.hash == chain.hashes[-1]
    assert "unusable" in caplog.text


def test_restore_stops_behind_at_a_missing_payload_without_calling_it_divergence(chain, tmp_path):
    data_dir = chain.copy(tmp_path / "node")
    _payload_of(data_dir, ROUNDS).unlink()
    restored = _restore(chain, data_dir)
    assert restored.stop.round == ROUNDS and restored.stop.reason is StopReason.MISSING_PAYLOAD
    assert not restored.diverged and restored.state.hash == chain.hashes[-2]


def test_restore_of_an_empty_store_is_the_genesis_state(chain, tmp_path):
    store = Store(tmp_path / "empty")
    try:
        restored = restore(store, chain.genesis, chain.state_0, chain.max_size)
    finally:
        store.close()
    assert restored.state is chain.state_0 and restored.stop is None


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_audit_replays_a_sound_store_and_writes_nothing(chain):
    before = _tree(chain.data_dir)
    report = audit_store(chain.data_dir, chain.genesis, chain.config)
    assert report.ok, [str(f) for f in report.findings]
    assert report.replayed == ROUNDS and report.from_snapshot == []
    assert _tree(chain.data_dir) == before


def test_the_audit_names_a_damaged_payloads_round_and_resumes_at_the_next_snapshot(chain, tmp_path):
    data_dir = chain.copy(tmp_path / "node")
    path = _payload_of(data_dir, 1)
    path.write_bytes(path.read_bytes()[:-1] + bytes([path.read_bytes()[-1] ^ 1]))
    report = audit_store(data_dir, chain.genesis, chain.config)
    assert [(f.round, f.check) for f in report.findings] == [(1, "gradient")]
    assert report.from_snapshot == [SNAPSHOT_ROUND]
    assert report.replayed == ROUNDS - SNAPSHOT_ROUND


def test_the_audit_does_not_replay_an_entry_that_its_digest_does_not_name(chain, tmp_path):
    data_dir = chain.copy(tmp_path / "node")
    with sqlite3.connect(data_dir / "node.sqlite") as db:
        entry = wire.loads(db.execute("SELECT entry FROM chain WHERE round = 3").fetchone()[0])
        entry["rule"] = "median"
        db.execute("UPDATE chain SET entry = ? WHERE round = 3", (wire.dumps(entry),))
    report = audit_store(data_dir, chain.genesis, chain.config)
    assert [(f.round, f.check) for f in report.findings] == [(3, "digest")]
    assert report.replayed == 2 and report.from_snapshot == []  # rounds 3 and 4 have no snapshot to resume from


def test_the_audit_names_each_certificate_signature_that_does_not_count(chain, tmp_path):
    data_dir = chain.copy(tmp_path / "node")
    with sqlite3.connect(data_dir / "node.sqlite") as db:
        cert = wire.loads(db.execute("SELECT certificate FROM chain WHERE round = 3").fetchone()[0])
        cert["sigs"][0][1] = bytes([cert["sigs"][0][1][0] ^ 1]) + cert["sigs"][0][1][1:]
        cert["sigs"][1][0] = "12D3KooWNotAMember"
        db.execute("UPDATE chain SET certificate = ? WHERE round = 3", (wire.dumps(cert),))
    report = audit_store(data_dir, chain.genesis, chain.config)
    assert sorted(f.detail for f in report.findings) == [
        "2 distinct valid signers, 3 needed", "signature of node0 does not verify",
        "signer 12D3KooWNotAMemb is not a member"]
    assert {f.round for f in report.findings} == {3}


def test_a_malformed_certificate_or_signature_is_named_not_raised(chain):
    from swarm.ledger.entry_rules import valid_commit_signers
    assert valid_commit_signers(chain.genesis, {"sigs": []}, 1, b"\0" * 32) == (set(), ["certificate is malformed"])
    valid, problems = valid_commit_signers(chain.genesis, {"term": 1, "sigs": [["node0"], [1, b"sig"]]}, 1,
                                           b"\0" * 32)
    assert valid == set() and problems == ["certificate holds a malformed signature"] * 2

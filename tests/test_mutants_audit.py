"""Tests written from mutation run 5 (TESTING.md, "Mutation testing"): each kills mutants of swarm/ledger/audit.py
that the rest of the fast suite let survive. They reuse tests/test_ledger_replay.py's store of four certified
rounds (a snapshot at round 2), copied and changed one way at a time."""
from __future__ import annotations

import sqlite3
from dataclasses import replace

import pytest

from consensus.messages import entry_from_plain
from consensus.quorum import Membership
from crypto import wire
from swarm.ledger.audit import Finding, _check_certificate, audit_store
from swarm.ledger.store import ChainRow
from tests.test_ledger_replay import (  # noqa: F401 - chain is a fixture
    ROUNDS,
    SNAPSHOT_ROUND,
    _payload_of,
    _signed_certificate,
    chain,
)


def _findings(report) -> list[tuple[int, str, str]]:
    return [(f.round, f.check, f.detail) for f in report.findings]


def _tamper_entry(data_dir, round_: int, **changes) -> None:
    """Change the stored entry of ``round_`` (not its digest, certificate or state hash)."""
    with sqlite3.connect(data_dir / "node.sqlite") as db:
        entry = wire.loads(db.execute("SELECT entry FROM chain WHERE round = ?", (round_,)).fetchone()[0])
        entry.update(changes)
        db.execute("UPDATE chain SET entry = ? WHERE round = ?", (wire.dumps(entry), round_))


def _redigest(data_dir, round_: int) -> None:
    """Make the row's stored digest the changed entry's (its certificate then certifies another digest)."""
    with sqlite3.connect(data_dir / "node.sqlite") as db:
        entry = wire.loads(db.execute("SELECT entry FROM chain WHERE round = ?", (round_,)).fetchone()[0])
        db.execute("UPDATE chain SET digest = ? WHERE round = ?", (entry_from_plain(entry).digest(), round_))


def _delete_row(data_dir, round_: int) -> None:
    with sqlite3.connect(data_dir / "node.sqlite") as db:
        db.execute("DELETE FROM chain WHERE round = ?", (round_,))


def test_a_finding_names_its_round_or_the_store():
    assert str(Finding(3, "quorum", "2 distinct valid signers, 3 needed")) == \
        "round 3: quorum: 2 distinct valid signers, 3 needed"
    assert str(Finding(0, "chain", "no committed rounds in the store")) == \
        "store: chain: no committed rounds in the store"


# ------------------------------------------------------------------------------------------ _check_row: the chain

def test_a_chain_that_does_not_start_at_round_1_is_named(chain, tmp_path):  # noqa: F811
    """Round 1's row deleted (SQLite edited by hand: the store itself never skips a round)."""
    data_dir = chain.copy(tmp_path / "node")
    _delete_row(data_dir, 1)
    report = audit_store(data_dir, chain.genesis, chain.config)
    assert not report.ok and report.rounds == ROUNDS - 1
    assert (2, "chain", "the chain starts at round 2, not 1") in _findings(report)


def test_a_gap_in_the_chain_is_named_at_the_round_after_it_and_not_replayed_across(chain, tmp_path):  # noqa: F811
    """Round 3's row deleted. The audit used to crash here (ValueError from the replayer: a run of replayable rows
    was replayed across the gap); now it names the gap and the broken parent link, and replays rounds 1 and 2."""
    data_dir = chain.copy(tmp_path / "node")
    _delete_row(data_dir, 3)
    report = audit_store(data_dir, chain.genesis, chain.config)
    assert not report.ok
    assert [f for f in report.findings if f.check == "chain"] == [Finding(4, "chain", "round 2 is followed by round 4")]
    assert {(f.round, f.check) for f in report.findings} == {(4, "chain"), (4, "parent")}
    assert report.replayed == 2 and report.from_snapshot == []


# ------------------------------------------------------------------------------------------ _replay_chain

def test_after_an_entry_its_digest_does_not_name_the_audit_resumes_at_the_next_snapshot(chain, tmp_path):  # noqa: F811
    """Round 1's entry is not the certified one: not replayed; round 2 resumes from its certified snapshot and
    rounds 3 and 4 are replayed from there (the row after the refused one is not skipped, the loop goes on)."""
    data_dir = chain.copy(tmp_path / "node")
    _tamper_entry(data_dir, 1, rule="median")
    report = audit_store(data_dir, chain.genesis, chain.config)
    assert [(f.round, f.check) for f in report.findings] == [(1, "digest")]
    assert report.from_snapshot == [SNAPSHOT_ROUND] and report.replayed == ROUNDS - SNAPSHOT_ROUND


def test_a_row_whose_entry_is_not_the_certified_one_never_vouches_for_a_snapshot(chain, tmp_path):  # noqa: F811
    """Round 2's entry is changed: its stored state hash is no longer certified by anything, so the snapshot file of
    that hash is not resumed from, even though the rounds before it replayed fine."""
    data_dir = chain.copy(tmp_path / "node")
    _tamper_entry(data_dir, SNAPSHOT_ROUND, rule="median")
    report = audit_store(data_dir, chain.genesis, chain.config)
    assert [(f.round, f.check) for f in report.findings] == [(SNAPSHOT_ROUND, "digest")]
    assert report.from_snapshot == [] and report.replayed == SNAPSHOT_ROUND - 1


def test_a_round_that_fails_its_replay_resumes_from_its_own_certified_snapshot(chain, tmp_path):  # noqa: F811
    """The payload of the snapshot's round is damaged: that round fails, and the audit resumes from the snapshot
    of that same round (its state hash is certified) and replays the rest."""
    data_dir = chain.copy(tmp_path / "node")
    path = _payload_of(data_dir, SNAPSHOT_ROUND)
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    report = audit_store(data_dir, chain.genesis, chain.config)
    assert [(f.round, f.check) for f in report.findings] == [(SNAPSHOT_ROUND, "gradient")]
    (finding,) = report.findings
    assert finding.detail and "digest" in finding.detail and str(finding).startswith(f"round {SNAPSHOT_ROUND}:")
    assert report.from_snapshot == [SNAPSHOT_ROUND]
    assert report.replayed == (SNAPSHOT_ROUND - 1) + (ROUNDS - SNAPSHOT_ROUND)


def test_the_first_round_is_replayed_with_no_previous_digest(chain, tmp_path):  # noqa: F811
    """A round-1 entry carrying a previous certificate (for 'round 0' and, say, the last row's digest) is refused
    because round 1 has no previous row; the replay must not take any stored row's digest as round 0's."""
    data_dir = chain.copy(tmp_path / "node")
    with sqlite3.connect(data_dir / "node.sqlite") as db:
        last = db.execute("SELECT digest FROM chain WHERE round = ?", (ROUNDS,)).fetchone()[0]
    _tamper_entry(data_dir, 1, params={"prev_cert": {"term": 1, "round": 0, "digest": last, "sigs": []}})
    _redigest(data_dir, 1)
    report = audit_store(data_dir, chain.genesis, chain.config)
    replay = [f for f in report.findings if f.check == "replay"]
    assert replay == [
        Finding(1, "replay", "the entry cannot be applied: prev_cert does not certify the previous round")]


def test_an_entry_that_does_not_decode_is_named_and_not_replayed(chain, tmp_path):  # noqa: F811
    data_dir = chain.copy(tmp_path / "node")
    with sqlite3.connect(data_dir / "node.sqlite") as db:
        db.execute("UPDATE chain SET entry = ? WHERE round = 3", (wire.dumps("not an entry"),))
    report = audit_store(data_dir, chain.genesis, chain.config)
    assert _findings(report) == [(3, "entry", "entry does not decode: bad_type: entry is not a dict")]
    assert report.replayed == 2 and report.from_snapshot == []


def test_a_row_whose_state_hash_is_not_its_entrys_is_named_and_so_is_the_next_parent(chain, tmp_path):  # noqa: F811
    """Only the row's state hash column is changed (its entry, digest and certificate are the certified ones)."""
    data_dir = chain.copy(tmp_path / "node")
    with sqlite3.connect(data_dir / "node.sqlite") as db:
        db.execute("UPDATE chain SET state_hash = ? WHERE round = 3", (b"\x07" * 32,))
    report = audit_store(data_dir, chain.genesis, chain.config)
    assert _findings(report) == [
        (3, "entry", "the entry's round or state hash differs from the stored row"),
        (4, "parent", "the entry's parent is not the state hash of round 3")]
    assert report.replayed == 2  # round 3 is not replayed: its row is not the certified one


def test_round_1s_parent_is_checked_against_the_genesis_state(chain, tmp_path):  # noqa: F811
    """Round 1's entry names another parent (its digest recomputed, so its certificate no longer matches)."""
    data_dir = chain.copy(tmp_path / "node")
    _tamper_entry(data_dir, 1, parent=b"\x07" * 32)
    _redigest(data_dir, 1)
    report = audit_store(data_dir, chain.genesis, chain.config)
    found = _findings(report)
    assert (1, "parent", "the entry's parent is not the genesis state hash") in found
    assert (1, "certificate", "the certificate is for another round or digest") in found
    assert [f for f in found if f[1] == "certificate"] == [
        (1, "certificate", "the certificate is for another round or digest")]
    assert [f for f in found if f[1] == "quorum"] == []  # a certificate for another digest is not counted at all


def test_a_certificate_that_does_not_decode_is_named_without_counting_it(chain, tmp_path):  # noqa: F811
    data_dir = chain.copy(tmp_path / "node")
    with sqlite3.connect(data_dir / "node.sqlite") as db:
        db.execute("UPDATE chain SET certificate = ? WHERE round = 3", (wire.dumps("not a certificate"),))
    report = audit_store(data_dir, chain.genesis, chain.config)
    assert _findings(report) == [
        (3, "certificate", "certificate does not decode: bad_type: commit certificate is not a dict")]


def test_a_certificate_is_counted_in_the_members_in_force_at_its_round(five):
    """After a membership change (node0 out, the fifth key in) the audit counts a certificate in the members in
    force then, not the genesis: the added member's signature counts, the removed member's does not."""
    genesis, keys = five
    digest = b"\x42" * 32
    in_force = Membership([k.peer_id for k in keys[1:]])

    def row(signers) -> ChainRow:
        return ChainRow(7, 1, digest, {}, _signed_certificate(signers, genesis.swarm_id, 7, digest), b"\0" * 32)

    assert _check_certificate(row(keys[1:]), genesis, in_force) == []
    found = [(f.check, f.detail) for f in _check_certificate(row(keys[:3]), genesis, in_force)]
    assert found == [("certificate", f"signer {keys[0].peer_id[:16]} is not a member"),
                     ("quorum", "2 distinct valid signers, 3 needed")]


# ------------------------------------------------------------------------------------------ snapshot files

def _add_snapshot_row(data_dir, round_: int, state_hash: bytes) -> None:
    with sqlite3.connect(data_dir / "node.sqlite") as db:
        db.execute("INSERT INTO snapshots VALUES (?, ?)", (round_, state_hash))


def test_a_snapshot_file_no_certificate_names_is_reported_past_a_pruned_one(chain, tmp_path):  # noqa: F811
    """Snapshot rows are checked newest first: a newer one whose file was pruned is skipped, and an older file
    whose hash no round certifies is still named (the store as a whole: round 0)."""
    data_dir = chain.copy(tmp_path / "node")
    stray = b"\x0b" * 32
    _add_snapshot_row(data_dir, 9, b"\x09" * 32)  # recorded, file pruned since
    _add_snapshot_row(data_dir, 1, stray)
    (data_dir / "snapshots" / f"{stray.hex()}.state").write_bytes(b"not certified")
    report = audit_store(data_dir, chain.genesis, chain.config)
    assert _findings(report) == [(0, "snapshot", f"{stray.hex()}.state is not a certified state")]
    assert not report.ok and report.replayed == ROUNDS


def test_an_unreadable_certified_snapshot_is_named_and_the_next_one_used(chain, tmp_path):  # noqa: F811
    """The custom code the config names is not imported, so the model's size comes from the oldest readable
    certified snapshot. Round 1's snapshot file cannot be read (a directory stands in for a damaged disk): the audit
    takes the size from round 2's and resumes there, and names round 1's file instead of crashing (it raised
    IsADirectoryError from the last check before)."""
    data_dir = chain.copy(tmp_path / "node")
    _add_snapshot_row(data_dir, 1, chain.hashes[0])
    unreadable = data_dir / "snapshots" / f"{chain.hashes[0].hex()}.state"
    unreadable.mkdir()
    config = replace(chain.config, dataset=replace(chain.config.dataset, custom="not_imported_mod:make"))
    report = audit_store(data_dir, chain.genesis, config)
    assert report.not_imported == ["not_imported_mod:make"]
    assert _findings(report) == [(1, "snapshot", f"{unreadable.name} cannot be read: Is a directory")]
    assert report.from_snapshot == [SNAPSHOT_ROUND] and report.replayed == ROUNDS - SNAPSHOT_ROUND
    assert report.certificate_only == list(range(1, SNAPSHOT_ROUND))


def test_a_certified_snapshot_file_with_other_bytes_is_named_at_its_round(chain, tmp_path):  # noqa: F811
    data_dir = chain.copy(tmp_path / "node")
    snapshot = data_dir / "snapshots" / f"{chain.hashes[SNAPSHOT_ROUND - 1].hex()}.state"
    snapshot.write_bytes(b"other bytes")
    report = audit_store(data_dir, chain.genesis, chain.config)
    assert _findings(report) == [(SNAPSHOT_ROUND, "snapshot", f"{snapshot.name} does not hash to its name")]


# ------------------------------------------------------------------------------------------ audit_store

def test_an_empty_store_fails_the_audit_with_its_reason(tmp_path):
    from swarm.ledger.store import Store
    Store(tmp_path / "node").close()
    report = audit_store(tmp_path / "node", None, None)  # nothing to check: the genesis is never reached
    assert not report.ok and report.rounds == 0
    assert report.findings == [Finding(0, "chain", "no committed rounds in the store")]


def test_the_audit_opens_the_store_read_only_and_creates_none(chain, tmp_path):  # noqa: F811
    """A folder without a store is an error, not a new empty store (the audit opens read-only); a custom model or
    dataset is not imported unless the caller trusts it."""
    with pytest.raises(FileNotFoundError):
        audit_store(tmp_path / "nothing", chain.genesis, chain.config)
    assert not (tmp_path / "nothing").exists()
    config = replace(chain.config, dataset=replace(chain.config.dataset, custom="not_imported_mod:make"))
    assert audit_store(chain.data_dir, chain.genesis, config).not_imported == ["not_imported_mod:make"]


def test_the_audit_counts_certificates_after_a_membership_change_in_the_new_members(chain, tmp_path):  # noqa: F811
    """Round 2's entry names new members (node0 out, a fifth key in) and is certified by the genesis members;
    rounds 3 and 4 are then certified by the new members only. Their certificates count in the members in force
    from round 3 (the replay of this hand-made entry fails, which is not what is checked here)."""
    from crypto.keys import NodeKey
    keys = [NodeKey.from_seed(bytes([i + 1]) * 32) for i in range(5)]  # the fixture's four members and a fifth
    new_members = sorted(k.peer_id for k in keys[1:])
    data_dir = chain.copy(tmp_path / "node")
    _tamper_entry(data_dir, 2, members=new_members)
    _redigest(data_dir, 2)
    with sqlite3.connect(data_dir / "node.sqlite") as db:
        for round_, signers in ((2, keys[:4]), (3, keys[1:]), (4, keys[1:])):
            digest = db.execute("SELECT digest FROM chain WHERE round = ?", (round_,)).fetchone()[0]
            db.execute("UPDATE chain SET certificate = ? WHERE round = ?",
                       (wire.dumps(_signed_certificate(signers, chain.genesis.swarm_id, round_, digest)), round_))
    report = audit_store(data_dir, chain.genesis, chain.config)
    assert [f for f in report.findings if f.check in ("certificate", "quorum", "entry", "digest")] == []
    # what fails is the replay: round 2 is a change without its signed request, round 3 (resumed from round 2's
    # snapshot) carries the certificate of round 2's old digest
    assert [(f.round, f.check) for f in report.findings] == [(2, "replay"), (3, "replay")]

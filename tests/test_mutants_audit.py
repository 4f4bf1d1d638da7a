"""Tests written from mutation run 5 (TESTING.md, "Mutation testing"): each kills mutants of swarm/ledger/audit.py
that the rest of the fast suite let survive. They reuse tests/test_ledger_replay.py's store of four certified
rounds (a snapshot at round 2), copied and changed one way at a time."""
from __future__ import annotations

import sqlite3

from crypto import wire
from swarm.ledger.audit import Finding, audit_store
from tests.test_ledger_replay import ROUNDS, SNAPSHOT_ROUND, _payload_of, chain  # noqa: F401 - chain is a fixture


def _findings(report) -> list[tuple[int, str, str]]:
    return [(f.round, f.check, f.detail) for f in report.findings]


def _tamper_entry(data_dir, round_: int, **changes) -> None:
    """Change the stored entry of ``round_`` (not its digest, certificate or state hash)."""
    with sqlite3.connect(data_dir / "node.sqlite") as db:
        entry = wire.loads(db.execute("SELECT entry FROM chain WHERE round = ?", (round_,)).fetchone()[0])
        entry.update(changes)
        db.execute("UPDATE chain SET entry = ? WHERE round = ?", (wire.dumps(entry), round_))


def _delete_row(data_dir, round_: int) -> None:
    with sqlite3.connect(data_dir / "node.sqlite") as db:
        db.execute("DELETE FROM chain WHERE round = ?", (round_,))


def test_a_finding_names_its_round_or_the_store():
    assert str(Finding(3, "quorum", "2 distinct valid signers, 3 needed")) == \
        "round 3: quorum: 2 distinct valid signers, 3 needed"
    assert str(Finding(0, "chain", "no committed rounds in the store")) == "store: chain: no committed rounds in the store"


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
    with sqlite3.connect(data_dir / "node.sqlite") as db:  # the row's digest made to match (uncertified now)
        from consensus.messages import entry_from_plain
        entry = wire.loads(db.execute("SELECT entry FROM chain WHERE round = 1").fetchone()[0])
        db.execute("UPDATE chain SET digest = ? WHERE round = 1", (entry_from_plain(entry).digest(),))
    report = audit_store(data_dir, chain.genesis, chain.config)
    replay = [f for f in report.findings if f.check == "replay"]
    assert replay == [Finding(1, "replay", "the entry cannot be applied: prev_cert does not certify the previous round")]

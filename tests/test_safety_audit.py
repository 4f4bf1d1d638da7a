"""Safety of `swarm verify` (issue 22, property 8): swarm/ledger/audit.py audit_store rejects a certificate below
2f+1 distinct valid signers (one valid signer repeated included), a broken parent link and a wrong entry digest.

A small real store (four members, four certified rounds, built in process by tests/test_ledger_replay.py's
fixture) is copied and corrupted one way at a time; each corruption must produce its own finding at its round.
"""
from __future__ import annotations

import sqlite3

from consensus.messages import (
    CommitCertificate,
    commit_cert_to_plain,
    entry_from_plain,
    signing_bytes,
)
from crypto import wire
from crypto.keys import NodeKey
from swarm.ledger.audit import audit_store
from tests.test_ledger_replay import chain  # noqa: F401 - the module-scoped store fixture

KEYS = [NodeKey.from_seed(bytes([i + 1]) * 32) for i in range(4)]  # the fixture's members


def _audit(chain, data_dir):  # noqa: F811
    report = audit_store(data_dir, chain.genesis, chain.config)
    return report, {(f.round, f.check) for f in report.findings}


def _row(db, round_, column):
    return db.execute(f"SELECT {column} FROM chain WHERE round = ?", (round_,)).fetchone()[0]


def _set(db, round_, column, value):
    db.execute(f"UPDATE chain SET {column} = ? WHERE round = ?", (value, round_))


def test_safety_audit_control_the_store_is_sound(chain):  # noqa: F811
    report, found = _audit(chain, chain.data_dir)
    assert report.ok and found == set()
    assert chain.genesis.quorum == 3


def test_safety_audit_rejects_one_valid_signer_repeated_2f_plus_1_times(chain, tmp_path):  # noqa: F811
    data_dir = chain.copy(tmp_path / "node")
    with sqlite3.connect(data_dir / "node.sqlite") as db:
        cert = wire.loads(_row(db, 3, "certificate"))
        assert len(cert["sigs"]) == 4
        cert["sigs"] = [cert["sigs"][1]] * 4  # node1's genuine signature, four times
        _set(db, 3, "certificate", wire.dumps(cert))
    report, _found = _audit(chain, data_dir)
    assert not report.ok
    assert (3, "quorum", "1 distinct valid signers, 3 needed") in [(f.round, f.check, f.detail)
                                                                    for f in report.findings]
    assert {f.round for f in report.findings} == {3}


def test_safety_audit_rejects_a_certificate_of_two_distinct_signers(chain, tmp_path):  # noqa: F811
    data_dir = chain.copy(tmp_path / "node")
    with sqlite3.connect(data_dir / "node.sqlite") as db:
        cert = wire.loads(_row(db, 2, "certificate"))
        cert["sigs"] = cert["sigs"][:2] + [cert["sigs"][0], cert["sigs"][1]]  # two signers, each twice
        _set(db, 2, "certificate", wire.dumps(cert))
    report, _found = _audit(chain, data_dir)
    assert (2, "quorum", "2 distinct valid signers, 3 needed") in [(f.round, f.check, f.detail)
                                                                    for f in report.findings]
    assert {f.round for f in report.findings} == {2}


def _resign(swarm_id: str, entry_plain: dict, round_: int) -> tuple[bytes, bytes]:
    """(digest, certificate bytes) for an entry, certified by all four members: a store its own members forged."""
    digest = entry_from_plain(entry_plain).digest()
    sigs = tuple((k.peer_id, k.sign(signing_bytes(swarm_id, "commit", 1, round_, digest, k.peer_id)))
                 for k in KEYS)
    return digest, wire.dumps(commit_cert_to_plain(CommitCertificate(1, round_, digest, sigs)))



def test_safety_audit_rejects_a_broken_parent_link(chain, tmp_path):  # noqa: F811
    """Round 3's entry names another parent; its digest and certificate are made consistent with it (all four
    members re-sign), so only the link to round 2's state hash is wrong."""
    data_dir = chain.copy(tmp_path / "node")
    with sqlite3.connect(data_dir / "node.sqlite") as db:
        entry = wire.loads(_row(db, 3, "entry"))
        entry["parent"] = bytes(32)
        digest, cert = _resign(chain.genesis.swarm_id, entry, 3)
        _set(db, 3, "entry", wire.dumps(entry))
        _set(db, 3, "digest", digest)
        _set(db, 3, "certificate", cert)
    report, found = _audit(chain, data_dir)
    assert (3, "parent") in found
    assert [f.detail for f in report.findings if f.check == "parent"] == [
        "the entry's parent is not the state hash of round 2"]
    assert not any(f.check in ("digest", "quorum", "certificate") for f in report.findings)


def test_safety_audit_rejects_an_entry_digest_that_is_not_the_entrys(chain, tmp_path):  # noqa: F811
    """The stored digest column no longer matches the stored entry (the entry itself is untouched)."""
    data_dir = chain.copy(tmp_path / "node")
    with sqlite3.connect(data_dir / "node.sqlite") as db:
        _set(db, 2, "digest", bytes(32))
    report, found = _audit(chain, data_dir)
    assert (2, "digest") in found
    assert [f.detail for f in report.findings if f.check == "digest"] == [
        "the entry's digest differs from the stored digest"]


def test_safety_audit_rejects_an_entry_whose_digest_was_recomputed_but_not_certified(chain, tmp_path):  # noqa: F811
    """The entry is changed and its digest column updated to match: the certificate signs the old digest."""
    data_dir = chain.copy(tmp_path / "node")
    with sqlite3.connect(data_dir / "node.sqlite") as db:
        entry = wire.loads(_row(db, 2, "entry"))
        entry["rule"] = "median"
        _set(db, 2, "entry", wire.dumps(entry))
        _set(db, 2, "digest", entry_from_plain(entry).digest())
    report, found = _audit(chain, data_dir)
    assert (2, "certificate") in found and not report.ok

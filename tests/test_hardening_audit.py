"""Issue 23, finding 6 and the snapshot part of 7: `swarm verify` never runs code named by the bundle it audits
(unless the operator names the config), and a crafted snapshot file is hashed before it is parsed: the node starts
anyway (the file is set aside) and the audit names it instead of crashing."""
from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import yaml

from cli.main import main
from crypto import wire
from swarm.ledger.audit import audit_store
from swarm.ledger.state import STATE_VERSION
from swarm.ledger.store import Store
from tests.test_ledger_replay import ROUNDS, SNAPSHOT_ROUND, _restore, chain  # noqa: F401 - chain is a fixture

MARKER_MODULE = '''
from pathlib import Path
Path({marker!r}).write_text("imported")   # what an auditor must never cause

def make(*args, **kwargs):
    Path({marker!r}).write_text("called")
    raise SystemExit("the auditor ran the bundle's code")
'''


def _bundle(chain, tmp_path: Path, monkeypatch, where: str) -> tuple[Path, Path]:
    """A copy of the chain's cluster folder whose genesis or node config names a module that writes a marker."""
    cluster = tmp_path / "cluster"
    shutil.copytree(chain.data_dir.parent.parent, cluster)
    marker = tmp_path / "MARKER"
    module_dir = tmp_path / "modules"
    module_dir.mkdir()
    (module_dir / "bundle_marker_mod.py").write_text(MARKER_MODULE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(module_dir))
    name = chain.data_dir.name
    path = cluster / ("genesis.yaml" if where == "genesis" else f"{name}.yaml")
    data = yaml.safe_load(path.read_text())
    if where == "genesis":
        data.setdefault("model", {})["custom"] = "bundle_marker_mod:make"
    else:
        data.setdefault("dataset", {})["custom"] = "bundle_marker_mod:make"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return cluster / "data" / name, marker


@pytest.mark.parametrize("where", ["config", "genesis"])
def test_verify_does_not_import_code_named_by_the_bundle(chain, tmp_path, monkeypatch, capsys, where):
    data_dir, marker = _bundle(chain, tmp_path, monkeypatch, where)
    code = main(["verify", "--data-dir", str(data_dir), "--json"])
    out = capsys.readouterr().out
    assert not marker.exists(), "swarm verify ran code named by the bundle it audits"
    report = json.loads(out[out.index("{"):])
    assert code == 0 and report["ok"], report
    assert report["not_imported"] == ["bundle_marker_mod:make"]
    # state_0 is unknown without the code: the chain is replayed from its certified snapshot onwards
    assert report["from_snapshot"] == [SNAPSHOT_ROUND] and report["replayed"] == ROUNDS - SNAPSHOT_ROUND
    assert report["certificate_only"] == list(range(1, SNAPSHOT_ROUND))


def test_verify_without_a_snapshot_checks_certificates_only_and_still_runs_nothing(chain, tmp_path, monkeypatch,
                                                                                  capsys):
    data_dir, marker = _bundle(chain, tmp_path, monkeypatch, "config")
    for path in (data_dir / "snapshots").iterdir():
        path.unlink()
    code = main(["verify", "--data-dir", str(data_dir)])
    out = capsys.readouterr().out
    assert code == 0 and not marker.exists()
    assert "certificate-checked only" in out and "bundle_marker_mod:make" in out


def test_verify_imports_the_code_when_the_operator_names_the_config(chain, tmp_path, monkeypatch, capsys):
    data_dir, marker = _bundle(chain, tmp_path, monkeypatch, "config")
    config = data_dir.parent.parent / f"{data_dir.name}.yaml"
    with pytest.raises(SystemExit):
        main(["verify", "--data-dir", str(data_dir), "--config", str(config)])
    assert marker.exists()  # trusted explicitly: the operator's choice


def _crafted_snapshot(chain) -> bytes:
    """A snapshot whose reputation rows lack their record: ReplicatedState.deserialize raised IndexError on it."""
    members = sorted(chain.genesis.peer_ids)
    dim = chain.state_0.params.numel()
    header = wire.dumps({"version": STATE_VERSION, "round": SNAPSHOT_ROUND, "parent": b"\0" * 32, "dim": dim,
                         "reputation": [[m] for m in members]})
    return b"\0" * (8 * dim) + header + struct.pack("<I", len(header))


def test_a_crafted_snapshot_does_not_stop_the_node_and_is_set_aside(chain, tmp_path, caplog):
    data_dir = chain.copy(tmp_path / "node")
    snapshot = data_dir / "snapshots" / f"{chain.hashes[SNAPSHOT_ROUND - 1].hex()}.state"
    snapshot.write_bytes(_crafted_snapshot(chain))
    restored = _restore(chain, data_dir)  # raised IndexError before
    assert restored.snapshot_round is None and restored.stop is None
    assert restored.state.hash == chain.hashes[-1]  # replayed from the genesis instead
    assert not snapshot.exists() and snapshot.with_name(snapshot.name + ".bad").exists()
    assert "unusable" in caplog.text


def test_the_audit_names_a_crafted_snapshot_and_leaves_it_alone(chain, tmp_path):
    data_dir = chain.copy(tmp_path / "node")
    snapshot = data_dir / "snapshots" / f"{chain.hashes[SNAPSHOT_ROUND - 1].hex()}.state"
    snapshot.write_bytes(_crafted_snapshot(chain))
    (data_dir / "payloads").rename(data_dir / "payloads.gone")  # so the audit must try the snapshot
    report = audit_store(data_dir, chain.genesis, chain.config)
    assert not report.ok and report.from_snapshot == []
    assert (SNAPSHOT_ROUND, "snapshot") in [(f.round, f.check) for f in report.findings]
    assert snapshot.exists()  # an audit never writes to what it inspects
    store = Store(data_dir, read_only=True)
    store.close()

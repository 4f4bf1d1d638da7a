"""`swarm keygen` and `swarm genesis` as a user runs them: real processes, real files."""
import os
import stat
import subprocess
import sys

from crypto.keys import load_key
from swarm.config import load_genesis


def swarm(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "COLUMNS": "200"}, timeout=60)


def test_help_lists_subcommands():
    result = swarm("--help")
    assert result.returncode == 0
    assert "keygen" in result.stdout and "genesis" in result.stdout


def test_keygen_writes_a_0600_key_and_prints_its_peer_id(tmp_path):
    out = tmp_path / "keys" / "n0.pem"
    result = swarm("keygen", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert result.stdout.strip() == load_key(out).peer_id


def test_keygen_refuses_to_overwrite_and_load_refuses_a_0644_copy(tmp_path):
    out = tmp_path / "n0.pem"
    assert swarm("keygen", "--out", str(out)).returncode == 0
    again = swarm("keygen", "--out", str(out))
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr
    assert "Traceback" not in again.stderr
    copy = tmp_path / "copy.pem"
    copy.write_bytes(out.read_bytes())
    os.chmod(copy, 0o644)
    import pytest
    from crypto.keys import KeyFileError
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_key(copy)


def test_genesis_from_a_folder_of_keys(tmp_path):
    keys = tmp_path / "keys"
    peer_ids = []
    for i in range(4):
        result = swarm("keygen", "--out", str(keys / f"node{i}.pem"))
        peer_ids.append(result.stdout.strip())
    out = tmp_path / "genesis.yaml"
    result = swarm("genesis", "--keys", str(keys), "--out", str(out), "--swarm-id", "lab")
    assert result.returncode == 0, result.stderr
    genesis = load_genesis(out)
    assert genesis.swarm_id == "lab" and genesis.peer_ids == peer_ids and genesis.f == 1
    assert [m.name for m in genesis.members] == ["node0", "node1", "node2", "node3"]

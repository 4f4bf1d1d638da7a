"""Issue 23, finding 7 (configs): a config holding the API token is created 0600 from its first byte, one readable
by others is refused at load with the fix in the message, and a token must have a minimum strength."""
from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

import pytest
import yaml

import swarm.config as config_module
from swarm.config import load_node_config, write_yaml
from swarm.config_schema import ConfigError
from swarm.ops.cluster import ClusterOptions, init_cluster


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_cluster_init_creates_token_configs_0600_without_a_readable_moment(tmp_path, monkeypatch):
    seen: list[tuple[str, int]] = []
    real_replace = os.replace

    def replace(src, dst):  # the mode a config has when it appears under its name
        seen.append((Path(dst).name, _mode(Path(src))))
        return real_replace(src, dst)

    def no_chmod(self, mode):  # a file written readable and then chmod-ed was readable for a moment
        raise AssertionError(f"chmod {mode:o} after the write: {self}")

    old_umask = os.umask(0o000)  # the worst umask: nothing but the mode given at creation protects the file
    try:
        monkeypatch.setattr(config_module.os, "replace", replace)
        monkeypatch.setattr(Path, "chmod", no_chmod)
        specs = init_cluster(tmp_path, ClusterOptions(nodes=4, api_host="0.0.0.0"))
    finally:
        os.umask(old_umask)
    for spec in specs:
        assert _mode(spec.config_path) == 0o600
        assert (spec.config_path.name, 0o600) in seen
        config = load_node_config(spec.config_path)  # and the node accepts what init wrote
        assert config.api.token and len(config.api.token) >= 16
    assert _mode(tmp_path / "genesis.yaml") & 0o044  # no secret in it: readable as before


def test_a_token_config_readable_by_others_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump({"identity": "k.pem", "genesis": "g.yaml",
                                    "api": {"host": "0.0.0.0", "token": secrets.token_urlsafe(32)}}))
    path.chmod(0o644)
    with pytest.raises(ConfigError) as info:
        load_node_config(path)
    assert "chmod 600" in str(info.value) and "0644" in str(info.value)
    path.chmod(0o600)
    assert load_node_config(path).api.token
    path.chmod(0o640)
    with pytest.raises(ConfigError):
        load_node_config(path)
    assert load_node_config(path, check_secrets=False).api.token  # an offline audit never uses the token


@pytest.mark.parametrize("token", [" ", "", "t0k", "short-token-1", "a" * 40, "abababababababababab",
                                   " " + secrets.token_urlsafe(32)])
def test_weak_tokens_are_refused(tmp_path, token):
    path = tmp_path / "node.yaml"
    write_yaml(path, {"identity": "k.pem", "genesis": "g.yaml", "api": {"host": "127.0.0.1", "token": token}})
    assert _mode(path) == 0o600
    with pytest.raises(ConfigError) as info:
        load_node_config(path)
    assert info.value.key == "api.token"


def test_a_strong_token_is_accepted(tmp_path):
    path = tmp_path / "node.yaml"
    token = secrets.token_urlsafe(32)
    write_yaml(path, {"identity": "k.pem", "genesis": "g.yaml", "api": {"host": "0.0.0.0", "token": token}})
    assert load_node_config(path).api.token == token

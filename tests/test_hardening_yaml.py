"""Issue 23, finding 5: a few hundred bytes of YAML aliases (the "billion laughs") in a node config or genesis must
be refused at once, in bounded memory and time, never expanded into an error message."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from swarm.config import load_genesis, load_node_config
from swarm.config_schema import ConfigError

REPO = Path(__file__).resolve().parents[1]


def bomb(key: str) -> str:
    """Nine levels of nine aliases each: 9**9 (387 million) strings once expanded; about 500 bytes of YAML."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    names = "abcdefghi"
    for prev, name in zip(names, names[1:]):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    lines.append(f"{key}: *i")
    return "\n".join(lines) + "\n"


CHILD = textwrap.dedent("""
    import resource, sys, time
    limit = 1 << 30  # 1 GiB of address space: the unfixed loader needs about 2 GB here
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from swarm.config import load_genesis, load_node_config
    from swarm.config_schema import ConfigError
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    try:
        (load_genesis if sys.argv[2] == "genesis" else load_node_config)(sys.argv[1])
    except ConfigError as exc:
        message = str(exc)
    else:
        raise SystemExit("loaded a bomb")
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(f"{time.monotonic() - start:.3f} {grown_kib} {len(message)}")
    print(message)
""")


@pytest.mark.parametrize("kind,key", [("config", "listen"), ("genesis", "swarm_id"), ("config", "identity")])
def test_a_yaml_bomb_is_refused_in_bounded_memory_and_time(tmp_path: Path, kind: str, key: str) -> None:
    path = tmp_path / f"{kind}.yaml"
    text = bomb(key)
    assert len(text.encode()) < 600
    path.write_text(text)
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", CHILD, str(path), kind], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, (done.stdout, done.stderr[-2000:])
    seconds, grown_kib, length = done.stdout.split("\n")[0].split()
    assert float(seconds) < 2.0 and int(grown_kib) < 50_000 and int(length) < 1000, done.stdout
    assert "alias" in done.stdout
    assert time.monotonic() - start < 30


def test_aliases_are_refused_and_deep_nesting_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text("identity: &k key.pem\ngenesis: *k\n")
    with pytest.raises(ConfigError, match="alias"):
        load_node_config(path)
    path.write_text("identity: " + "[" * 50_000 + "]" * 50_000 + "\n")
    with pytest.raises(ConfigError):
        load_node_config(path)
    path.write_text("identity: x\n" + "#" * (2 << 20) + "\n")  # bigger than any config: refused unread
    with pytest.raises(ConfigError, match="larger"):
        load_genesis(path)


def test_a_wrong_value_is_described_in_bounded_work() -> None:
    from swarm.config import NodeConfig
    from swarm.config_schema import build

    huge = [["x" * 1000] * 1000] * 1000  # a billion characters if printed whole
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        build(NodeConfig, {"identity": huge, "genesis": "g"}, "node.yaml")
    assert time.monotonic() - start < 0.5 and len(str(info.value)) < 200

"""docker-compose.yml and the Dockerfile agree with what `swarm cluster init` writes and `swarm node` runs.

No Docker engine is needed: the compose file is validated by docker-compose itself when it is installed, and its
services are checked against the configs that the init service's own command produces in a temporary folder.
"""
from __future__ import annotations

import json
import shlex
import shutil
import stat
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from cli.main import main as swarm_main
from swarm.config import load_genesis, load_node_config, write_yaml
from swarm.ops import healthcheck
from swarm.ops.cluster import TOKEN_FILE

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
CLUSTER_MOUNT = "/cluster"

TOKEN = "compose-test-token-3f9a1c7e"  # strong enough for the config checks (16+ chars, 8+ distinct)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def initialised(compose, tmp_path_factory) -> Path:
    """Run the init service's command, with its /cluster volume mapped to a temporary folder."""
    folder = tmp_path_factory.mktemp("cluster")
    argv = shlex.split(compose["services"]["init"]["command"])
    assert argv[:3] == ["swarm", "cluster", "init"]
    argv = [str(folder) if arg == CLUSTER_MOUNT else arg for arg in argv[1:]]
    assert swarm_main(argv) == 0
    return folder


def node_services(compose: dict, profiled: bool | None = None) -> dict[str, dict]:
    services = {name: svc for name, svc in compose["services"].items() if name != "init"}
    if profiled is None:
        return services
    return {name: svc for name, svc in services.items() if bool(svc.get("profiles")) == profiled}


def config_path(folder: Path, service: dict) -> Path:
    argv = shlex.split(service["command"]) if isinstance(service["command"], str) else service["command"]
    assert argv[:3] == ["swarm", "node", "--config"], argv
    assert argv[3].startswith(CLUSTER_MOUNT + "/")
    return folder / argv[3][len(CLUSTER_MOUNT) + 1:]


def mounts(service: dict) -> dict[str, str]:
    """container path -> 'volume[:mode]'."""
    out = {}
    for item in service["volumes"]:
        source, target, *mode = item.split(":")
        out[target] = ":".join([source, *mode])
    return out


def test_docker_compose_validates_the_file():
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    result = subprocess.run([exe, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, timeout=60,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    result = subprocess.run([exe, "-f", str(COMPOSE), "--profile", "byzantine", "config", "--services"],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert {"init", "node0", "node1", "node2", "node3", "node4"} <= set(result.stdout.split())


def test_four_honest_nodes_by_default_and_a_byzantine_profile(compose, initialised):
    default, byzantine = node_services(compose, False), node_services(compose, True)
    assert sorted(default) == ["node0", "node1", "node2", "node3"]
    assert list(byzantine) == ["node4"] and byzantine["node4"]["profiles"] == ["byzantine"]
    genesis = load_genesis(initialised / "genesis.yaml")
    assert sorted(m.name for m in genesis.members) == sorted(node_services(compose))
    assert len(default) >= genesis.quorum, "the default services alone must be able to commit"
    for name in default:
        assert load_node_config(config_path(initialised, default[name])).attack is None
    assert load_node_config(config_path(initialised, byzantine["node4"])).attack


def test_each_node_runs_its_own_config_key_and_volume(compose, initialised):
    data_volumes = set()
    for name, service in node_services(compose).items():
        config = load_node_config(config_path(initialised, service))
        assert config.name == name
        assert Path(config.identity) == initialised / "keys" / f"{name}.pem"
        mounted = mounts(service)
        assert mounted[CLUSTER_MOUNT] == "cluster:ro", "nodes only read the shared cluster folder"
        own = [(target, source) for target, source in mounted.items() if target != CLUSTER_MOUNT]
        assert len(own) == 1, f"{name} needs exactly one volume of its own: {mounted}"
        target, source = own[0]
        assert Path(config.data_dir).is_relative_to(target), f"{name} keeps its store outside its volume"
        assert source in compose["volumes"]
        data_volumes.add(source)
        assert service["depends_on"]["init"]["condition"] == "service_completed_successfully"
    assert len(data_volumes) == len(node_services(compose)), "two nodes share a data volume"
    assert mounts(compose["services"]["init"])[CLUSTER_MOUNT] == "cluster"


def test_nodes_find_each_other_by_service_name(compose, initialised):
    """No fixed addresses: every node listens on all of its container's addresses and dials the others by their
    service names, which the compose network resolves (Docker's DNS, podman's dnsname plugin)."""
    services = node_services(compose)
    assert "ipam" not in (compose["networks"]["swarm"] or {})
    port = {}
    for name, service in services.items():
        assert service["networks"] == ["swarm"]
        config = load_node_config(config_path(initialised, service))
        parts = config.listen.split("/")
        assert parts[:3] == ["", "ip4", "0.0.0.0"] and parts[3] == "tcp", config.listen
        port[name] = parts[4]
    for name, service in services.items():
        config = load_node_config(config_path(initialised, service))
        dialled = {addr.split("/p2p/")[0] for addr in config.bootstrap}
        assert dialled == {f"/dns4/{other}/tcp/{port[other]}" for other in services if other != name}


def test_api_published_on_loopback_only_with_a_token(compose, initialised):
    token_file = initialised / TOKEN_FILE
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    for name, service in node_services(compose).items():
        config = load_node_config(config_path(initialised, service))
        assert config.api.host == "0.0.0.0" and config.api.token == token
        assert len(service["ports"]) == 1, f"{name} publishes more than its API"
        host_ip, host_port, container_port = service["ports"][0].split(":")
        assert host_ip == "127.0.0.1"
        assert int(container_port) == config.api.port


def test_healthchecks_ask_each_node_for_its_own_status(compose, initialised):
    for name, service in node_services(compose).items():
        test = service["healthcheck"]["test"]
        assert test[:4] == ["CMD", "python", "-m", "swarm.ops.healthcheck"]
        assert config_path(initialised, {"command": ["swarm", "node", "--config", test[4]]}) == \
            config_path(initialised, service), f"{name}'s healthcheck reads another node's config"


def test_init_is_idempotent_keeps_keys_and_token(compose, initialised, tmp_path):
    before = {p.name: p.read_bytes() for p in [*(initialised / "keys").iterdir(), initialised / TOKEN_FILE,
                                               initialised / "genesis.yaml"]}
    argv = [str(initialised) if arg == CLUSTER_MOUNT else arg
            for arg in shlex.split(compose["services"]["init"]["command"])[1:]]
    assert swarm_main(argv) == 0
    after = {p.name: p.read_bytes() for p in [*(initialised / "keys").iterdir(), initialised / TOKEN_FILE,
                                              initialised / "genesis.yaml"]}
    assert before == after


class _StatusServer(BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None]] = []
    answer: dict = {}

    def do_GET(self):  # noqa: N802 - http.server's name
        self.seen.append((self.path, self.headers.get("Authorization")))
        body = json.dumps(self.answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_healthcheck_sends_the_token_to_status_and_fails_before_a_commit_or_on_divergence(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StatusServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = tmp_path / "node.yaml"
        write_yaml(config, {"identity": "k.pem", "genesis": "g.yaml",
                            "api": {"host": "0.0.0.0", "port": server.server_address[1], "token": TOKEN}})
        _StatusServer.answer = {"round": 3, "diverged": None}
        assert healthcheck.check(str(config)) is None
        assert _StatusServer.seen[-1] == ("/status", f"Bearer {TOKEN}")
        _StatusServer.answer = {"round": 3, "diverged": "state hash mismatch at round 3"}
        assert "diverged" in healthcheck.check(str(config))
        _StatusServer.answer = {"round": 0, "diverged": None}  # answering, but nothing committed yet
        assert healthcheck.check(str(config)) == "no round committed yet"
    finally:
        server.shutdown()
        server.server_close()
    assert healthcheck.check(str(config)) == "the API does not answer /status"


def test_dockerfile_installs_cpu_torch_with_the_constraints():
    """Users' defaults (the slim Python image, PyTorch's CPU index); tests/test_containers.py builds and runs it."""
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG BASE=python:3.11-slim" in text
    stages = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert stages and all(line.startswith("FROM ${BASE}") for line in stages), stages
    assert "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu" in text
    assert "-c /src/constraints.txt" in text
    assert "USER swarm" in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored

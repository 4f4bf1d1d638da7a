"""The compose cluster for real: the image builds, `docker compose up -d` starts the init step and four nodes that
commit rounds on the compose network, `--profile byzantine` adds node4, which ends quarantined, and `down` then
`up -d` resumes every chain from the volumes.

Runs as root where podman and docker-compose are installed (scripts/system-deps.sh installs both): docker-compose
speaks to podman's Docker-compatible API on a socket this test starts, so the compose commands are the README's.
No registry image can be pulled on these machines, so the base image is built from Debian packages, once a machine
(`podman image exists` skips it), and podman's layer cache keeps the dependency layers between runs.
Everything the test starts (containers, network, volumes, the API service) is removed at the end, pass or fail.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from swarm.ops.http_json import get_json

pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.timeout(2400)]

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
BASE_IMAGE = "localhost/swarm-base:bookworm"
SUITE = "bookworm"            # Python 3.11, the version of the CPU torch wheel kept on these machines' disk
WHEELS = Path(os.environ.get("SWARM_TEST_WHEELS", "/opt/wheels"))
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
PROJECT = "swarmci"           # COMPOSE_PROJECT_NAME: names the containers, network and volumes this test owns
HONEST = ["node0", "node1", "node2", "node3"]
ATTACKER = "node4"
BYZANTINE = ("--profile", "byzantine")


def readme_commands() -> set[str]:
    """The `docker compose ...` lines of the README, without their comments."""
    lines = (ROOT / "README.md").read_text().splitlines()
    return {line.split("#")[0].strip() for line in lines if line.startswith("docker compose ")}


def _missing() -> str | None:
    if os.environ.get("SWARM_CONTAINER_TESTS") == "0":
        # Part of make test where podman is installed (scripts/system-deps.sh installs it as root): a cold build
        # takes about 15 min on 2 cores, 3 once the images are cached. SWARM_CONTAINER_TESTS=0 leaves it out.
        return "container tests turned off (SWARM_CONTAINER_TESTS=0)"
    if os.geteuid() != 0:
        return "needs root (podman runs containers as root here)"
    for program in ("podman", "docker-compose"):
        if shutil.which(program) is None:
            return f"{program} is not installed (bash scripts/system-deps.sh as root)"
    return None


def sh(argv: list[str], timeout: float, env: dict | None = None, check: bool = True,
       cwd: Path = ROOT) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd,
                            stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-3000:]}")
    return result


def debian_mirror() -> str:
    """The mirror apt already uses on this machine (deb822 or one-line sources)."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        match = re.search(r"^URIs:\s*(\S+)", path.read_text(), re.MULTILINE)
        if match:
            return match.group(1)
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        match = re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", legacy.read_text(), re.MULTILINE)
        if match:
            return match.group(1)
    return "http://deb.debian.org/debian"


def ensure_base_image() -> None:
    """A Debian base with python3 and venv, built with debootstrap unless this machine already has it."""
    if sh(["podman", "image", "exists", BASE_IMAGE], 60, check=False).returncode == 0:
        return
    if shutil.which("debootstrap") is None:
        pytest.fail("debootstrap is not installed (bash scripts/system-deps.sh as root)")
    with tempfile.TemporaryDirectory(prefix="swarm-base-") as tmp:
        root = Path(tmp) / "root"
        sh(["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates", SUITE,
            str(root), debian_mirror()], 900)
        tar = subprocess.Popen(["tar", "-C", str(root), "-cf", "-", "."], stdout=subprocess.PIPE)
        try:
            imported = subprocess.run(["podman", "import", "-", BASE_IMAGE], check=False, stdin=tar.stdout,
                                      capture_output=True, text=True, timeout=600)
        finally:
            tar.stdout.close()
            tar.wait(60)
        assert imported.returncode == 0 and tar.returncode == 0, imported.stderr


def build_command() -> list[str]:
    """The podman build that docs/operations.md gives for these machines: host network and CA bundle for pip,
    the Debian base, and torch from the CPU wheel on disk (PyTorch's own index cannot be reached here)."""
    argv = ["podman", "build", "--network=host", "--volume", f"{CA_BUNDLE}:{CA_BUNDLE}:ro",
            "--build-arg", f"BASE={BASE_IMAGE}"]
    if any(WHEELS.glob("torch-*+cpu-*.whl")):
        argv += ["--volume", f"{WHEELS}:{WHEELS}:ro", "--build-arg", "TORCH_INDEX=",
                 "--build-arg", f"TORCH_FIND_LINKS={WHEELS}"]
    return [*argv, "-t", image_name(), "."]


def image_name() -> str:
    return yaml.safe_load(COMPOSE_FILE.read_text())["x-node"]["image"]


def api_ports() -> dict[str, int]:
    """Each node's API port on the host, as the compose file publishes it."""
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    ports = {}
    for name, service in services.items():
        if name.startswith("node"):
            host_ip, host_port, _ = service["ports"][0].split(":")
            assert host_ip == "127.0.0.1"
            ports[name] = int(host_port)
    return ports


class Engine:
    """`podman system service` on a private socket, and docker-compose pointed at it."""

    def __init__(self):
        self.folder = tempfile.mkdtemp(prefix="swarm-podman-")
        self.socket = os.path.join(self.folder, "podman.sock")
        with open(os.path.join(self.folder, "log"), "wb") as log:
            self.proc = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{self.socket}"],
                                         stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{self.socket}", "COMPOSE_PROJECT_NAME": PROJECT}
        deadline = time.monotonic() + 60
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                pytest.fail(f"podman system service did not start: {Path(self.folder, 'log').read_text()[-2000:]}")
            time.sleep(0.2)

    def _answers(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX) as conn:
                conn.settimeout(2)
                conn.connect(self.socket)
                conn.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
                return b"200" in conn.recv(100)
        except OSError:
            return False

    def compose(self, *args: str, timeout: float = 300, check: bool = True,
                documented: bool = True) -> subprocess.CompletedProcess:
        """`docker compose ARGS` (the plugin when the docker CLI has it, else docker-compose); the README must
        show the command unless it is only the test's own bookkeeping (ps, logs, the final clean-up)."""
        if documented:
            assert "docker compose " + " ".join(args) in readme_commands(), f"the README lacks: {args}"
        plugin = shutil.which("docker") and sh(["docker", "compose", "version"], 30, self.env,
                                                 check=False).returncode == 0
        program = ["docker", "compose"] if plugin else ["docker-compose"]
        return sh([*program, "-f", str(COMPOSE_FILE), *args], timeout, self.env, check)

    def remove_everything(self) -> None:
        """`down -v`, then whatever a failed down may have left with this project's label."""
        self.compose(*BYZANTINE, "down", "-v", "--remove-orphans", "--timeout", "10", timeout=180, check=False,
                     documented=False)
        label = f"label=com.docker.compose.project={PROJECT}"
        for kind in ("container", "volume", "network"):
            listed = sh(["podman", kind, "ls", "-a" if kind == "container" else "-q", "--filter", label,
                         *(["-q"] if kind == "container" else [])], 60, check=False).stdout.split()
            if listed:
                sh(["podman", kind, "rm", "-f", *listed], 120, check=False)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="module")
def image() -> str:
    missing = _missing()
    if missing:
        pytest.skip(missing)
    started = time.monotonic()
    ensure_base_image()
    sh(build_command(), 1500)
    print(f"base and node image ready in {time.monotonic() - started:.0f} s")
    return image_name()


@pytest.fixture(scope="module")
def engine(image):
    engine = Engine()
    try:
        engine.remove_everything()  # what an interrupted earlier run may have left
        yield engine
    finally:
        try:
            engine.remove_everything()
        finally:
            engine.close()


def test_image_runs_cpu_torch_as_a_non_root_user(image):
    out = sh(["podman", "run", "--rm", image, "python", "-c",
              "import os, torch, swarm; print(os.getuid(), torch.__version__, torch.version.cuda)"], 120).stdout
    uid, version, cuda = out.split()
    pinned = re.search(r"^torch==(\S+)", (ROOT / "constraints.txt").read_text(), re.MULTILINE).group(1)
    assert uid != "0"
    assert version.split("+")[0] == pinned and cuda == "None", out


def wait_for(what: str, probe, timeout: float, engine: Engine):
    """Poll ``probe`` until it returns something true; on timeout fail with its last answer and the logs."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last and last[0]:
            return last[1]
        time.sleep(2)
    logs = engine.compose(*BYZANTINE, "logs", "--tail", "15", timeout=60, check=False, documented=False).stdout
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; last: {last}\n{logs[-6000:]}")


def test_compose_cluster_trains_quarantines_the_attacker_and_resumes(engine):
    ports = api_ports()
    t0 = time.monotonic()
    engine.compose("up", "-d")
    token = engine.compose("run", "--rm", "init", "cat", "/cluster/api.token").stdout.strip()
    assert len(token) >= 16

    def get(name: str, path: str):
        return get_json(f"http://127.0.0.1:{ports[name]}{path}", 3.0, token)

    def statuses(names):
        return {name: get(name, "/status") for name in names}

    def healthy(cid: str) -> bool:
        return sh(["podman", "healthcheck", "run", cid], 60, check=False).returncode == 0

    # The default services: four nodes that commit, each healthy only once it has committed a round.
    containers = {name: engine.compose("ps", "-q", name, timeout=60, documented=False).stdout.strip()
                  for name in HONEST}

    def committed():
        seen = statuses(HONEST)
        for name in HONEST:
            if healthy(containers[name]):  # never healthy before its first commit (rounds only grow: read after)
                later = get(name, "/status")
                assert later and later["round"] >= 1, (name, later)
        return all(s and s["round"] >= 2 for s in seen.values()), {n: s and s["round"] for n, s in seen.items()}
    wait_for("two committed rounds on node0..node3", committed, 300, engine)
    assert all(healthy(cid) for cid in containers.values())
    assert get(ATTACKER, "/status") is None, "node4 runs without the byzantine profile"
    print(f"4 nodes committing {time.monotonic() - t0:.0f} s after up")

    # The byzantine profile adds node4 (sign_flip); every honest node's committed reputation quarantines it.
    engine.compose(*BYZANTINE, "up", "-d")

    def quarantined():
        views = {name: get(name, "/peers") for name in HONEST}
        flags = {name: next((row["quarantined"] for row in rows if row["name"] == ATTACKER), None) if rows else None
                 for name, rows in views.items()}
        return all(flags.values()), flags
    wait_for("node4 quarantined by node0..node3", quarantined, 420, engine)
    for name, rows in ((name, get(name, "/peers")) for name in HONEST):
        assert not any(row["quarantined"] for row in rows if row["name"] != ATTACKER), (name, rows)
    print(f"node4 quarantined {time.monotonic() - t0:.0f} s after up")

    # down keeps the volumes; up again continues every chain where it stopped.
    before = statuses(HONEST)
    assert all(before.values()), before
    chain_before = get("node0", f"/log?from=1&limit={before['node0']['round']}")
    engine.compose(*BYZANTINE, "down")
    assert not any(statuses(HONEST).values()), "a node still answers after down"
    assert engine.compose(*BYZANTINE, "ps", "-q", documented=False).stdout.strip() == ""
    engine.compose(*BYZANTINE, "up", "-d")

    def answering():
        seen = statuses(HONEST)
        return all(seen.values()), seen
    first = wait_for("node0..node3 answering after up", answering, 300, engine)
    for name in HONEST:  # each opened its store: a fresh chain would answer round 0
        assert first[name]["round"] >= before[name]["round"], (name, before[name]["round"], first[name]["round"])
    target = max(s["round"] for s in first.values()) + 2

    def progressed():
        seen = statuses(HONEST)
        return all(s and s["round"] >= target for s in seen.values()), {n: s and s["round"] for n, s in seen.items()}
    wait_for(f"round {target} after the restart", progressed, 300, engine)
    # Every node's chain keeps the rounds committed before down (same state hashes) and goes on past them, and
    # all four agree on the state of every round they have all committed.
    common = min(s["round"] for s in statuses(HONEST).values())
    chains = {name: get(name, f"/log?from=1&limit={common}") for name in HONEST}
    for name, rows in chains.items():
        assert [row["round"] for row in rows] == list(range(1, common + 1)), name
    reference = [row["state_hash"] for row in chains["node0"]]
    assert reference[:len(chain_before)] == [row["state_hash"] for row in chain_before]
    for name, rows in chains.items():
        assert [row["state_hash"] for row in rows] == reference, f"{name} diverged from node0"
    print(f"resumed at round {min(s['round'] for s in first.values())}, went on to {common}: "
          f"{time.monotonic() - t0:.0f} s after the first up")

"""Network namespaces for fault tests: one namespace per node, veth pairs on a bridge in the root namespace.

Why namespaces: a partition or a slow link must hit the node's real sockets, which loopback cannot do. Each node
gets 10.77.S.(i+1)/24 on its own ``eth0``; the bridge holds 10.77.S.254 so the test (root namespace) reaches
every API directly. Faults live inside a node's namespace (iptables rules, a tbf qdisc), so deleting the
namespace removes them; ``NetLab.close`` deletes everything this lab created, and is safe to call twice.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def missing_requirements() -> str | None:
    """Why namespace tests cannot run here, or None."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "iptables", "tc"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (apt-get install iproute2 iptables)"
    return None


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result


@dataclass
class NetLab:
    """``n`` namespaces on one bridge; names carry a unique prefix so parallel runs never collide."""

    n: int
    prefix: str = field(default_factory=lambda: f"swf{os.getpid() % 100000}")
    subnet: int = field(default_factory=lambda: 100 + os.getpid() % 150)
    created: list[tuple[str, str]] = field(default_factory=list)  # ("netns"|"link", name), in creation order

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"

    @property
    def gateway(self) -> str:
        return f"10.77.{self.subnet}.254"

    def ns(self, i: int) -> str:
        return f"{self.prefix}n{i}"

    def ip(self, i: int) -> str:
        return f"10.77.{self.subnet}.{i + 1}"

    def host_link(self, i: int) -> str:
        return f"{self.prefix}v{i}"

    def open(self) -> "NetLab":
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        self.created.append(("link", self.bridge))
        sh("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for i in range(self.n):
            ns, link, peer = self.ns(i), self.host_link(i), f"{self.prefix}p{i}"
            sh("ip", "netns", "add", ns)
            self.created.append(("netns", ns))
            sh("ip", "link", "add", link, "type", "veth", "peer", "name", peer)
            self.created.append(("link", link))
            sh("ip", "link", "set", peer, "netns", ns)
            sh("ip", "link", "set", link, "master", self.bridge, "up")
            self.exec(i, "ip", "link", "set", peer, "name", "eth0")
            self.exec(i, "ip", "addr", "add", f"{self.ip(i)}/24", "dev", "eth0")
            self.exec(i, "ip", "link", "set", "eth0", "up")
            self.exec(i, "ip", "link", "set", "lo", "up")
        return self

    def exec(self, i: int, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", self.ns(i), *argv, check=check)

    def popen(self, i: int, argv: list[str], log: Path) -> subprocess.Popen:
        """Start a process inside namespace ``i``; `ip netns exec` execs it, so the pid is the process's own."""
        with open(log, "ab") as out:
            return subprocess.Popen(["ip", "netns", "exec", self.ns(i), *argv], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=str(ROOT), env={**os.environ, "PYTHONUNBUFFERED": "1"})

    # ------------------------------------------------------------------------------------------- faults
    def isolate(self, i: int) -> None:
        """Drop every packet between node ``i`` and the other nodes (the test's own address stays reachable)."""
        for j in range(self.n):
            if j != i:
                self.exec(i, "iptables", "-A", "INPUT", "-s", self.ip(j), "-j", "DROP")
                self.exec(i, "iptables", "-A", "OUTPUT", "-d", self.ip(j), "-j", "DROP")

    def heal(self, i: int) -> None:
        self.exec(i, "iptables", "-F", "INPUT")
        self.exec(i, "iptables", "-F", "OUTPUT")

    def slow(self, i: int, rate: str) -> None:
        """Shape node ``i``'s link both ways with a token bucket (there is no netem here)."""
        tbf = ["tbf", "rate", rate, "burst", "16kb", "latency", "500ms"]
        self.exec(i, "tc", "qdisc", "add", "dev", "eth0", "root", *tbf)
        sh("tc", "qdisc", "add", "dev", self.host_link(i), "root", *tbf)

    def unslow(self, i: int) -> None:
        self.exec(i, "tc", "qdisc", "del", "dev", "eth0", "root", check=False)
        sh("tc", "qdisc", "del", "dev", self.host_link(i), "root", check=False)

    def close(self) -> None:
        while self.created:
            kind, name = self.created.pop()
            if kind == "netns":
                sh("ip", "netns", "del", name, check=False)
            else:
                sh("ip", "link", "del", name, check=False)  # a veth's peer goes with it


def stop_processes(procs: list[subprocess.Popen], timeout: float = 20.0) -> None:
    """SIGCONT (a stopped node cannot exit), SIGTERM, then SIGKILL whatever is left: no orphans."""
    for proc in procs:
        if proc.poll() is None:
            for sig in (signal.SIGCONT, signal.SIGTERM):
                try:
                    proc.send_signal(sig)
                except ProcessLookupError:
                    pass
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

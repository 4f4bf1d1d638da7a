"""Spawn and drive peer_process instances (real processes on 127.0.0.1) for tests and benchmarks.

Synchronous on purpose (subprocess + urllib): a test reads like a script, and nothing here shares a loop with
the processes under test. Every process started is stopped by ``Cluster.close()``.
"""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crypto.keys import NodeKey, save_key

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Peer:
    name: str
    key_path: Path
    peer_id: str
    port: int
    proc: subprocess.Popen | None = None
    api_port: int = 0

    @property
    def addr(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.port}/p2p/{self.peer_id}"

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 30) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.api_port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())

    def status(self) -> Any:
        return self.call("GET", "/status", timeout=5)

    def received(self) -> Any:
        return self.call("GET", "/received")

    def connected(self) -> set[str]:
        return {pid for pid, p in self.status()["peers"].items() if p["connected"]}


def make_key(folder: Path, name: str) -> tuple[Path, str]:
    key = NodeKey.generate()
    path = folder / f"{name}.pem"
    save_key(key, path)
    return path, key.peer_id


class Cluster:
    """n member processes, each bootstrapped from the ones before it (node 0 from the last)."""

    def __init__(self, folder: Path, n: int, extra_args: list[str] | None = None, spare_members: int = 0) -> None:
        self.folder = folder
        self.extra_args = extra_args or []
        self.peers: list[Peer] = []
        for i in range(n):
            path, pid = make_key(folder, f"node{i}")
            self.peers.append(Peer(f"node{i}", path, pid, free_port()))
        # genesis members with no process: their keys let a test act as a (rogue) member
        self.spare_keys = [NodeKey.generate() for _ in range(spare_members)]
        self.members = [p.peer_id for p in self.peers] + [k.peer_id for k in self.spare_keys]

    def start_all(self, timeout: float = 30) -> None:
        for i, peer in enumerate(self.peers):
            boot = [p.addr for p in self.peers[:i]] or [self.peers[-1].addr]
            self.spawn(peer, boot)
        for peer in self.peers:
            self.wait_ready(peer, timeout)

    def spawn(self, peer: Peer, bootstrap: list[str]) -> None:
        cmd = [sys.executable, "-m", "swarm.transport.harness.peer_process", "--key", str(peer.key_path),
               "--listen", f"/ip4/127.0.0.1/tcp/{peer.port}", "--members", ",".join(self.members),
               "--api-port", "0", "--swarm-id", "test", *self.extra_args]
        if bootstrap:
            cmd += ["--bootstrap", *bootstrap]
        log = open(self.folder / f"{peer.name}.log", "ab")
        peer.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=log,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log.close()

    def wait_ready(self, peer: Peer, timeout: float = 30) -> None:
        assert peer.proc is not None and peer.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([peer.proc.stdout], [], [], 0.2)
            if ready:
                line = peer.proc.stdout.readline().decode()
                if line.startswith("READY "):
                    peer.api_port = json.loads(line[6:])["api_port"]
                    return
                if not line and peer.proc.poll() is not None:
                    break
        raise RuntimeError(f"{peer.name} did not become ready: see {self.folder / (peer.name + '.log')}")

    def wait_mesh(self, timeout: float = 20, peers: list[Peer] | None = None) -> float:
        """Wait until every listed peer sees every other listed peer connected; returns the seconds it took."""
        peers = peers or self.peers
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if all(p.connected() >= {q.peer_id for q in peers if q is not p} for p in peers):
                return time.monotonic() - start
            time.sleep(0.1)
        raise TimeoutError("mesh did not form: " + json.dumps({p.name: sorted(p.connected()) for p in peers}))

    def kill(self, peer: Peer, sig: int = signal.SIGKILL) -> None:
        if peer.proc is not None and peer.proc.poll() is None:
            peer.proc.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
                peer.proc.wait(10)

    def stop(self, peer: Peer, timeout: float = 10) -> int | None:
        """SIGTERM then wait; SIGKILL if it does not exit. Returns the exit code."""
        proc = peer.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()
        return proc.returncode

    def close(self) -> None:
        for peer in self.peers:
            self.stop(peer)

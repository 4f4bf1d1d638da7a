"""Attacks on a live 4-node cluster on loopback (issue 23): does the swarm keep committing, and is anything lost?

    python -m bench.adversarial [--window 30] [--attacks packed_newterm,api_log,...] [--write SECURITY.md]

Starts node0..node2 of a 4-member cluster on 127.0.0.1 (swarm.ops.cluster, as `swarm cluster up` does). node3
is never started: the attacker holds its genesis key, so it passes every member gate a Byzantine member would
pass (n = 4, f = 1, quorum 3: every honest node is needed for a commit, so stalling any one of them stalls the
swarm). It measures the rounds committed in a window with no attack, then with each attack in turn, each attack a
separate attacker process on this machine:

  packed_newterm  NewTerms whose three votes carry locks packed with 1024 (member, junk signature) pairs, 40
                  messages/s on one control stream to node0, signed with node3's key (the finding: 2 rounds in 30 s)
  api_log         500 concurrent HTTP clients looping on node0's /log?from=1&limit=10000
  api_status      the same 500 clients on node0's /status
  half_open       500 HTTP requests to node0 sent up to the middle of their headers and held open; one that the
                  node closes is opened again 0.25 s later
  label_streams   thousands of libp2p streams from node3's key to node1, each carrying a frame whose error text
                  the attacker chooses (sizes, kinds, magic): /metrics size and rejection labels before and after

Rounds are read from node2 (never attacked). After each attack: how long until commits resumed, the attacker's
local score on the node it attacked (/peers), /metrics size there, node0's open descriptors at their peak. At the
end the nodes are stopped and every store is audited with `swarm verify`; chains must agree, and every payload a
committed entry names (past the retention horizon) must be on disk. `--write` puts the table in SECURITY.md.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HONEST = ["node0", "node1", "node2"]
ATTACKER = "node3"
WATCHER = "node2"            # rounds are read here; no attack targets it
ATTACK_NAMES = ["packed_newterm", "api_log", "api_status", "half_open", "label_streams"]
TARGET = {"packed_newterm": "node0", "api_log": "node0", "api_status": "node0", "half_open": "node0",
          "label_streams": "node1"}
RATE = {"packed_newterm": "40 msg/s, 3x1024 pairs each", "api_log": "500 clients, looping",
        "api_status": "500 clients, looping", "half_open": "500 held, reopened 0.25 s after a close",
        "label_streams": "up to {n} streams, 16 at once"}
PACKED_PAIRS = 1024
PACKED_RATE = 40.0
HTTP_CLIENTS = 500
LABEL_STREAMS = 3000


# ================================================================================================ attackers
# Each runs in its own process (`python -m bench.adversarial attack NAME ...`) and prints one JSON line of what it
# did. Nothing here reaches beyond 127.0.0.1.

def _packed_messages(key, swarm_id: str, members: list[str], count: int, pairs: int, base_term: int) -> list[bytes]:
    """``count`` encoded NewTerms (terms base_term.., each above any view the swarm reaches in a bench) signed
    by ``key``, each with three votes (all by ``key``: it holds one key) whose locks carry ``pairs`` (member,
    junk signature) pairs."""
    from consensus.messages import (
        Entry,
        NewTerm,
        PreparedCertificate,
        Vote,
        signed_fields,
        signing_bytes,
    )
    from swarm.node.core_link import encode_message

    def sign(message):
        kind, term, round_, digest, sender = signed_fields(message)
        return dataclasses.replace(message, sig=key.sign(signing_bytes(swarm_id, kind, term, round_, digest,
                                                                         sender)))

    junk = tuple((members[i % len(members)], bytes([i % 251]) * 64) for i in range(pairs))
    entry = Entry(1, (b"g" * 32,), "median", {}, b"s" * 32, b"p" * 32)
    out = []
    for k in range(count):
        term = base_term + k
        lock = PreparedCertificate(term - 1, 1, entry, junk)
        votes = tuple(sign(Vote(term, 0, key.peer_id, lock, key.peer_id)) for _ in range(3))
        out.append(encode_message(key, swarm_id, sign(NewTerm(term, votes, key.peer_id))))
    return out


async def _libp2p_host(key):
    from libp2p import new_host
    from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
    from libp2p.custom_types import TProtocol
    from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
    from libp2p.security.noise.transport import Transport as NoiseTransport
    from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
    from libp2p.stream_muxer.yamux.yamux import Yamux

    from swarm.transport.security import libp2p_key_pair
    kp = libp2p_key_pair(key)
    return new_host(key_pair=kp, muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
                    sec_opt={TProtocol(NOISE_PROTOCOL_ID):
                             NoiseTransport(kp, noise_privkey=create_x25519_key_pair().private_key)})


def attack_packed_newterm(args) -> dict:
    import multiaddr
    import trio
    from libp2p.custom_types import TProtocol
    from libp2p.peer.peerinfo import info_from_p2p_addr

    from crypto.keys import load_key
    from swarm.config import load_genesis
    from swarm.transport.engine import CONTROL_PROTOCOL
    from swarm.transport.framing import KIND_DATA, encode_control

    key = load_key(args.key)
    genesis = load_genesis(args.genesis)
    built = time.monotonic()
    frames = [encode_control(KIND_DATA, body) for body in
              _packed_messages(key, genesis.swarm_id, list(genesis.peer_ids), 40, args.pairs, 1000)]
    stats = {"frame_bytes": len(frames[0]), "build_s": round(time.monotonic() - built, 2), "sent": 0,
             "write_errors": 0}

    async def run() -> None:
        host = await _libp2p_host(key)
        async with host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            info = info_from_p2p_addr(multiaddr.Multiaddr(args.target))
            with trio.fail_after(10):
                await host.connect(info)
            stream = await host.new_stream(info.peer_id, [TProtocol(CONTROL_PROTOCOL)])
            start = trio.current_time()
            with trio.move_on_after(args.seconds):
                i = 0
                while True:
                    try:
                        await stream.write(frames[i % len(frames)])
                        stats["sent"] += 1
                    except Exception:  # noqa: BLE001 - a reset stream: open another, as an attacker would
                        stats["write_errors"] += 1
                        with trio.move_on_after(2):
                            stream = await host.new_stream(info.peer_id, [TProtocol(CONTROL_PROTOCOL)])
                    i += 1
                    next_at = start + i / args.rate
                    await trio.sleep(max(0.0, next_at - trio.current_time()))
            stats["elapsed_s"] = round(trio.current_time() - start, 2)
            with trio.move_on_after(1):
                await stream.reset()

    trio.run(run)
    stats["achieved_per_s"] = round(stats["sent"] / max(stats.get("elapsed_s", 1), 1e-9), 1)
    return stats


def _label_payloads(n: int) -> list[tuple[str, bytes]]:
    """(channel, bytes) for ``n`` streams, each breaking the framing in a way whose error text carries numbers
    or bytes the attacker chose: the label-growth attack of finding 4."""
    from swarm.transport.framing import (
        CONTROL_HEADER,
        KIND_DATA,
        MAX_CONTROL_BYTES,
        bulk_header,
    )
    out = []
    for i in range(n):
        kind = i % 4
        if kind == 0:    # a control frame over the limit, by a size the attacker picks
            out.append(("control", CONTROL_HEADER.pack(MAX_CONTROL_BYTES + 1 + i, KIND_DATA)))
        elif kind == 1:  # an unknown control kind
            out.append(("control", CONTROL_HEADER.pack(8, 3 + i % 250) + bytes(8)))
        elif kind == 2:  # a push announcing more than the payload limit
            out.append(("push", bulk_header((1 << 40) + i, i.to_bytes(32, "big"))))
        else:            # a push with a bad magic the attacker picks
            out.append(("push", f"{i % 10000:04d}".encode() + bulk_header(16, bytes(32))[4:] + bytes(16)))
    return out


def attack_label_streams(args) -> dict:
    import multiaddr
    import trio
    from libp2p.custom_types import TProtocol
    from libp2p.peer.peerinfo import info_from_p2p_addr

    from crypto.keys import load_key
    from swarm.transport import bulk
    from swarm.transport.engine import CONTROL_PROTOCOL

    key = load_key(args.key)
    sends = _label_payloads(args.streams)
    stats = {"opened": 0, "open_failed": 0, "reset_or_closed": 0, "no_answer": 0}
    protocols = {"control": TProtocol(CONTROL_PROTOCOL), "push": bulk.PUSH_PROTOCOL}

    async def one(host, peer_id, channel: str, data: bytes) -> None:
        try:
            with trio.fail_after(5):
                stream = await host.new_stream(peer_id, [protocols[channel]])
        except BaseException as exc:
            if isinstance(exc, trio.Cancelled):
                raise
            stats["open_failed"] += 1
            return
        stats["opened"] += 1
        try:
            await stream.write(data)
            with trio.move_on_after(0.5) as scope:
                await stream.read(64)
            stats["no_answer" if scope.cancelled_caught else "reset_or_closed"] += 1
        except Exception:  # noqa: BLE001 - a reset is the answer we expect
            stats["reset_or_closed"] += 1
        with trio.move_on_after(0.5):
            await bulk.reset(stream)  # best effort, never raises

    async def run() -> None:
        host = await _libp2p_host(key)
        async with host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            info = info_from_p2p_addr(multiaddr.Multiaddr(args.target))
            with trio.fail_after(10):
                await host.connect(info)
            start = trio.current_time()
            limit = trio.CapacityLimiter(16)
            with trio.move_on_after(args.seconds):
                async with trio.open_nursery() as nursery:
                    for channel, data in sends:
                        await limit.acquire_on_behalf_of(data)

                        async def go(channel=channel, data=data) -> None:
                            try:
                                await one(host, info.peer_id, channel, data)
                            finally:
                                limit.release_on_behalf_of(data)
                        nursery.start_soon(go)
            stats["elapsed_s"] = round(trio.current_time() - start, 2)

    trio.run(run)
    return stats


async def _http_flood(port: int, path: str, clients: int, seconds: float) -> dict:
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    stats: dict = {"requests": 0, "by_status": {}, "errors": 0, "bytes": 0}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds

    async def client() -> None:
        while loop.time() < deadline:
            writer = None
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
                writer.write(request)
                first = await asyncio.wait_for(reader.read(65536), 15)
                status = first.split(b" ", 2)[1].decode() if first.startswith(b"HTTP/") else "no_answer"
                size = len(first)
                while loop.time() < deadline + 15:
                    chunk = await asyncio.wait_for(reader.read(1 << 20), 15)
                    if not chunk:
                        break
                    size += len(chunk)
                stats["requests"] += 1
                stats["bytes"] += size
                stats["by_status"][status] = stats["by_status"].get(status, 0) + 1
            except (TimeoutError, OSError, IndexError, UnicodeDecodeError):
                stats["errors"] += 1
                await asyncio.sleep(0.05)
            finally:
                if writer is not None:
                    writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return stats


async def _half_open(port: int, clients: int, seconds: float, reopen_s: float = 0.25) -> dict:
    partial = b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "  # never finished
    stats: dict = {"opened": 0, "connect_errors": 0, "ended": {}, "open_now": 0, "peak_open": 0, "held_s": []}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds

    async def holder() -> None:
        while loop.time() < deadline:
            writer = None
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
                writer.write(partial)
                stats["opened"] += 1
                stats["open_now"] += 1
                stats["peak_open"] = max(stats["peak_open"], stats["open_now"])
                opened = loop.time()
                try:
                    data = await asyncio.wait_for(reader.read(1024), max(0.01, deadline - loop.time()))
                    how = ("503" if data.startswith(b"HTTP/1.1 503") else
                           "closed" if not data else data.split(b" ", 2)[1].decode(errors="replace"))
                    stats["held_s"].append(loop.time() - opened)
                except TimeoutError:
                    how = "held_to_end"
                except OSError:
                    how = "reset"
                    stats["held_s"].append(loop.time() - opened)
                stats["ended"][how] = stats["ended"].get(how, 0) + 1
                stats["open_now"] -= 1
            except (TimeoutError, OSError):
                stats["connect_errors"] += 1
            finally:
                if writer is not None:
                    writer.close()
            await asyncio.sleep(reopen_s)

    await asyncio.gather(*(holder() for _ in range(clients)))
    held = stats.pop("held_s")
    stats["median_held_s"] = round(statistics.median(held), 2) if held else None
    stats["max_held_s"] = round(max(held), 2) if held else None
    return stats


def attack_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.adversarial attack")
    parser.add_argument("name", choices=ATTACK_NAMES)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--target", help="the target's /p2p/ multiaddr (libp2p attacks)")
    parser.add_argument("--port", type=int, help="the target's API port (HTTP attacks)")
    parser.add_argument("--key", help="the member key the attacker holds")
    parser.add_argument("--genesis")
    parser.add_argument("--rate", type=float, default=PACKED_RATE)
    parser.add_argument("--pairs", type=int, default=PACKED_PAIRS)
    parser.add_argument("--clients", type=int, default=HTTP_CLIENTS)
    parser.add_argument("--streams", type=int, default=LABEL_STREAMS)
    args = parser.parse_args(argv)
    if args.name == "packed_newterm":
        result = attack_packed_newterm(args)
    elif args.name == "label_streams":
        result = attack_label_streams(args)
    elif args.name == "half_open":
        result = asyncio.run(_half_open(args.port, args.clients, args.seconds))
    else:
        path = "/log?from=1&limit=10000" if args.name == "api_log" else "/status"
        result = asyncio.run(_http_flood(args.port, path, args.clients, args.seconds))
    print(json.dumps(result), flush=True)


# ================================================================================================ the bench

@dataclass
class Window:
    name: str
    seconds: float
    committed: int                      # rounds committed on the watcher during the window
    target: str | None = None
    attacker: dict = field(default_factory=dict)     # what the attacker process reported
    resumed_after_s: float | None = None             # from the attack's end to the next two commits
    local_score: float | None = None                 # the attacker's local score on the target, after
    banned: bool | None = None
    rejected_by_reason: dict = field(default_factory=dict)
    metrics_before: int | None = None
    metrics_after: int | None = None
    rejected_series_after: int | None = None
    api_probes: tuple[int, int] = (0, 0)             # the target's /status answered, asked (one a second)
    peak_fds: int | None = None                      # the target process's open descriptors at their peak
    target_cpu_s: float | None = None                # CPU seconds the target node used during the window
    attacker_cpu_s: float | None = None              # and the attacker process (same machine, same cores)
    target_log_bytes: int | None = None              # how much the target's log grew during the window
    target_term: tuple[int | None, int | None] = (None, None)

    def per_30s(self) -> float:
        return self.committed * 30.0 / self.seconds


@dataclass
class Outcome:
    windows: list[Window]
    verify: dict[str, dict]             # node -> `swarm verify --json` report (and rc)
    chains_agree: bool
    chain_lengths: dict[str, int]
    missing_payloads: dict[str, int]    # node -> payload files named by committed entries but absent
    notes: list[str] = field(default_factory=list)

    @property
    def baseline(self) -> Window:
        return self.windows[0]


def _get(url: str, timeout: float = 3.0):
    from swarm.ops.http_json import get_json
    return get_json(url, timeout)


def _metrics_text(api: str) -> str | None:
    import urllib.request
    try:
        with urllib.request.urlopen(f"{api}/metrics", timeout=5) as response:
            return response.read().decode()
    except OSError:
        return None


def _retry(fn, seconds: float = 20.0, interval: float = 0.5):
    deadline = time.monotonic() + seconds
    while True:
        value = fn()
        if value is not None or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a live process (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


class Bench:
    """One cluster, its windows and its checks. ``log`` gets one line per step (print, or a test's capture)."""

    def __init__(self, folder: Path, window_s: float = 30.0, local_steps: int = 3, log=print,
                 node_fd_limit: int | None = 512):
        from swarm.ops.cluster import Cluster, ClusterOptions, init_cluster
        self.folder, self.window_s, self.log, self.node_fd_limit = folder, window_s, log, node_fd_limit
        # Retention off (0 = keep every snapshot and payload): `swarm verify` then replays every committed round
        # from state_0, so "nothing lost" is checked on the whole chain, not only past the pruning horizon.
        options = ClusterOptions(nodes=4, local_steps=local_steps,
                                 node_overrides={"consensus": {"keep_snapshots": 0, "keep_payload_rounds": 0}})
        self.specs = {s.name: s for s in init_cluster(folder, options)}
        self.cluster = Cluster(folder, list(self.specs.values()))
        self.attackers: list[subprocess.Popen] = []

    # ---- the cluster ----------------------------------------------------------------------------------------
    def start(self, warmup_rounds: int = 3, timeout: float = 180.0) -> None:
        """Start node0..node2 (with at most ``node_fd_limit`` descriptors each, the limit finding 3 ran out of;
        the attackers keep this process's own) and wait for the first rounds."""
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if self.node_fd_limit:
            cap = self.node_fd_limit if hard == resource.RLIM_INFINITY else min(self.node_fd_limit, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (cap, hard))
        try:
            for name in HONEST:
                self.cluster.start_node(self.specs[name])
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        deadline = time.monotonic() + timeout
        while min(self.rounds().values()) < warmup_rounds:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no progress before the attacks: {self.rounds()}")
            time.sleep(1)

    def stop(self) -> None:
        for proc in self.attackers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.cluster.stop()

    def status(self, name: str) -> dict | None:
        return _get(f"{self.specs[name].api}/status")

    def rounds(self) -> dict[str, int]:
        return {n: (self.status(n) or {}).get("round", -1) for n in HONEST}

    def watcher_round(self) -> int:
        value = _retry(lambda: (self.status(WATCHER) or {}).get("round"))
        if value is None:
            raise RuntimeError(f"{WATCHER} stopped answering")
        return value

    def attacker_row(self, target: str) -> dict | None:
        def row():
            peers = _get(f"{self.specs[target].api}/peers", 5.0)
            return None if peers is None else next(r for r in peers if r["name"] == ATTACKER)
        return _retry(row, 30.0)

    # ---- one window -----------------------------------------------------------------------------------------
    def window(self, name: str) -> Window:
        target = TARGET.get(name)
        spec = self.specs[target] if target else None
        metrics_before = None
        if spec is not None:
            text = _retry(lambda: _metrics_text(spec.api))
            metrics_before = len(text) if text else None
        term_before = (self.status(target) or {}).get("term") if target else None
        proc = self._launch(name) if name != "baseline" else None
        if proc is not None:
            time.sleep(1.0 if name != "packed_newterm" else 2.0)  # the attacker connects (and builds its messages)
        start_round, started = self.watcher_round(), time.monotonic()
        probes, answered, peak_fds = 0, 0, 0
        pid = self.cluster.procs[target].pid if target else None
        log_path = self.folder / "logs" / f"{target}.log"
        cpu_before = (_cpu_s(pid) if pid else None, _cpu_s(proc.pid) if proc else None)
        log_before = log_path.stat().st_size if target and log_path.exists() else None
        while time.monotonic() - started < self.window_s:
            if target:
                probes += 1
                answered += _get(f"{spec.api}/status", 1.0) is not None
                peak_fds = max(peak_fds, _fds(pid) or 0)
            time.sleep(max(0.0, 1.0 - (time.monotonic() - started) % 1.0))
        committed = self.watcher_round() - start_round
        seconds = time.monotonic() - started
        cpu_after = (_cpu_s(pid) if pid else None, _cpu_s(proc.pid) if proc else None)
        result = Window(name, seconds, committed, target)
        if cpu_before[0] is not None and cpu_after[0] is not None:
            result.target_cpu_s = round(cpu_after[0] - cpu_before[0], 1)
        if cpu_before[1] is not None and cpu_after[1] is not None:
            result.attacker_cpu_s = round(cpu_after[1] - cpu_before[1], 1)
        if log_before is not None:
            result.target_log_bytes = log_path.stat().st_size - log_before
        if proc is not None:
            result.attacker = self._finish(proc)
            ended = time.monotonic()
            base = self.watcher_round()
            while self.watcher_round() < base + 2 and time.monotonic() - ended < 90:
                time.sleep(0.25)
            result.resumed_after_s = round(time.monotonic() - ended, 1) if self.watcher_round() >= base + 2 else None
            row = self.attacker_row(target)
            if row is not None:
                result.local_score, result.banned = row["local_score"], row["banned"]
                result.rejected_by_reason = row["rejected_by_reason"]
            text = _retry(lambda: _metrics_text(spec.api))
            if text is not None:
                result.metrics_before, result.metrics_after = metrics_before, len(text)
                result.rejected_series_after = sum(1 for line in text.splitlines()
                                                   if line.startswith("swarm_messages_rejected_total{"))
            result.api_probes, result.peak_fds = (answered, probes), peak_fds
            result.target_term = (term_before, (self.status(target) or {}).get("term"))
        self.log(f"{name}: {committed} rounds in {seconds:.1f} s ({result.per_30s():.1f} per 30 s)"
                 + (f"; attacker {json.dumps(result.attacker)}; resumed after {result.resumed_after_s} s; "
                    f"attacker's local score on {target}: {result.local_score} (banned {result.banned}, "
                    f"{result.rejected_by_reason}); /metrics {result.metrics_before} -> {result.metrics_after} B; "
                    f"{target} /status answered {answered}/{probes}; peak fds {peak_fds}; term "
                    f"{result.target_term}; CPU s target {result.target_cpu_s} attacker {result.attacker_cpu_s}; "
                    f"target log +{result.target_log_bytes} B" if proc is not None else ""))
        return result

    def _launch(self, name: str) -> subprocess.Popen:
        target = self.specs[TARGET[name]]
        seconds = self.window_s + (2.0 if name == "packed_newterm" else 1.0)
        argv = [sys.executable, "-m", "bench.adversarial", "attack", name, "--seconds", f"{seconds:.1f}"]
        if name in ("packed_newterm", "label_streams"):
            argv += ["--target", target.multiaddr, "--key", str(self.folder / "keys" / f"{ATTACKER}.pem"),
                     "--genesis", str(self.folder / "genesis.yaml")]
        else:
            argv += ["--port", str(target.api_port)]
        with open(self.folder / "logs" / f"attack-{name}.err", "wb") as err:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                                    cwd=str(REPO))
        self.attackers.append(proc)
        return proc

    def _finish(self, proc: subprocess.Popen) -> dict:
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        lines = [line for line in out.decode(errors="replace").splitlines() if line.startswith("{")]
        return json.loads(lines[-1]) if lines else {"error": f"attacker exited {proc.returncode} without a report"}

    # ---- after the attacks ----------------------------------------------------------------------------------
    def audit(self) -> tuple[dict, bool, dict, dict]:
        """Every node stopped: `swarm verify --json` on each store, the chains compared, payloads counted."""
        verify, chains, missing = {}, {}, {}
        for name in HONEST:
            data = self.specs[name].data_dir
            run = subprocess.run([sys.executable, "-m", "cli.main", "verify", "--data-dir", str(data), "--json"],
                                 check=False, capture_output=True, text=True, cwd=str(REPO), timeout=300)
            try:
                report = json.loads(run.stdout)
            except json.JSONDecodeError:
                report = {"ok": False, "stdout": run.stdout[-400:], "stderr": run.stderr[-400:]}
            report["rc"] = run.returncode
            verify[name] = report
            chains[name], missing[name] = _chain_and_missing(data)
        lengths = {name: len(chain) for name, chain in chains.items()}
        common = min(lengths.values())
        agree = len({tuple(chain[:common]) for chain in chains.values()}) == 1
        return verify, agree, lengths, missing

    def run(self, attacks: list[str], baseline_after: bool = True) -> Outcome:
        """A baseline window, one window per attack, another baseline (the box's drift), then the audit."""
        windows = [self.window("baseline")]
        for name in attacks:
            windows.append(self.window(name))
        if baseline_after:
            windows.append(dataclasses.replace(self.window("baseline"), name="baseline_after"))
        self.cluster.stop()
        verify, agree, lengths, missing = self.audit()
        return Outcome(windows, verify, agree, lengths, missing)


def _chain_and_missing(data_dir: Path) -> tuple[list[bytes], int]:
    """The chain's digests in round order, and how many payload files its entries name (past the node's
    pruning horizon) are not on disk."""
    from consensus.messages import entry_from_plain
    from swarm.ledger.store import Store, payload_file
    store = Store(data_dir, read_only=True)
    try:
        rows = list(store.rows())
        pruned_through = int(store.get_meta("payloads_pruned_through", 0) or 0)
    finally:
        store.close()
    missing = sum(not payload_file(data_dir, digest).exists()
                  for row in rows if row.round > pruned_through
                  for digest in entry_from_plain(row.entry).gradient_digests)
    return [row.digest for row in rows], missing


# ================================================================================================ report

def table(outcome: Outcome) -> str:
    from bench.report import table as md_table
    base = outcome.baseline.per_30s()
    # One audit after every window, of every round committed in any of them: the same verdict for each row.
    data_lost = ("none" if all(v.get("ok") for v in outcome.verify.values()) and outcome.chains_agree
                 and not any(outcome.missing_payloads.values()) else "SEE BELOW")
    rows = []
    for w in outcome.windows:
        rate = "none" if w.name.startswith("baseline") else RATE[w.name].format(n=LABEL_STREAMS)
        achieved = ""
        if w.name == "packed_newterm" and "achieved_per_s" in w.attacker:
            achieved = f" ({w.attacker['achieved_per_s']}/s sent)"
        elif w.name == "label_streams" and "opened" in w.attacker:
            achieved = f" ({w.attacker['opened']} opened)"
        elif w.name in ("api_log", "api_status") and "requests" in w.attacker:
            achieved = f" ({w.attacker['requests']} answered: {_statuses(w.attacker)})"
        elif w.name == "half_open" and "opened" in w.attacker:
            achieved = (f" ({w.attacker['opened']} opened, peak {w.attacker['peak_open']} held, median "
                        f"{w.attacker['median_held_s']} s)")
        score = "—"
        if w.name in ("packed_newterm", "label_streams") and w.local_score is not None:
            score = f"{w.local_score:.2f}{' (banned)' if w.banned else ''} on {w.target}"
        elif w.target is not None:
            score = "n/a (no key used)"
        metrics = (f"{w.metrics_before / 1024:.1f} → {w.metrics_after / 1024:.1f} KB"
                   if w.metrics_before and w.metrics_after else "—")
        probes = f"{w.api_probes[0]}/{w.api_probes[1]}" if w.target else "—"
        cpu = (f"{w.target_cpu_s} / {w.attacker_cpu_s}" if w.target_cpu_s is not None and w.attacker_cpu_s is not None
               else "—")
        extra = (f"{w.peak_fds} fds, log +{(w.target_log_bytes or 0) / 1024:.0f} KB" if w.target else "—")
        rows.append([w.name, rate + achieved, f"{w.per_30s():.0f}", f"{100 * w.per_30s() / base:.0f}%" if base else "—",
                     data_lost, "—" if w.resumed_after_s is None and w.target is None else f"{w.resumed_after_s} s",
                     score, metrics, probes, cpu, extra])
    head = md_table(["attack", "rate", "rounds / 30 s", "vs baseline", "data lost", "commits resumed after",
                     "attacker's local score", "target /metrics", "target /status answered",
                     "CPU s: target / attacker", "target peak fds, log growth"], rows)
    verify = "; ".join(f"{name}: {'ok' if v.get('ok') else 'FAILED'}, {v.get('rounds')} rounds, "
                       f"{v.get('replayed')} replayed" for name, v in outcome.verify.items())
    return (f"{head}\n\nData lost: **{data_lost}** (one audit after all windows, the nodes stopped). `swarm verify`: {verify}. Chains agree: "
            f"{outcome.chains_agree} (lengths {outcome.chain_lengths}). Payload files named by committed entries "
            f"and missing: {outcome.missing_payloads}.\n")


def _statuses(stats: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(stats.get("by_status", {}).items())) or "none"


def write(path: Path, body: str, command: str, when=None) -> None:
    """Rewrite only the adversarial section of ``path`` (the prose around it is hand-written)."""
    from bench import report
    text = path.read_text() if path.exists() else "# Security\n"
    path.write_text(report.replace_section(text, "adversarial", report.section("adversarial", body, command, when)))
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "attack":
        attack_main(argv[1:])
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.adversarial", description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", type=float, default=30.0, help="seconds per window (default 30)")
    parser.add_argument("--attacks", default=",".join(ATTACK_NAMES),
                        help=f"comma-separated, in order (default {','.join(ATTACK_NAMES)})")
    parser.add_argument("--local-steps", type=int, default=3)
    parser.add_argument("--node-fd-limit", type=int, default=512,
                        help="descriptors each node may open (finding 3 ran out at 512; 0: this process's limit)")
    parser.add_argument("--dir", help="cluster folder to use (default: a temporary one, removed after)")
    parser.add_argument("--render", metavar="JSON", help="only print (and --write) the table of a saved run "
                        "(DIR/adversarial.json), with that run's command and date")
    parser.add_argument("--write", metavar="FILE", help="write the table into FILE's adversarial section")
    args = parser.parse_args(argv)
    attacks = [a for a in args.attacks.split(",") if a]
    unknown = set(attacks) - set(ATTACK_NAMES)
    if unknown:
        parser.error(f"unknown attacks {sorted(unknown)}")
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        windows = [Window(**{**w, "api_probes": tuple(w["api_probes"]), "target_term": tuple(w["target_term"])})
                   for w in saved["windows"]]
        outcome = Outcome(windows, saved["verify"], saved["chains_agree"], saved["chain_lengths"],
                          saved["missing_payloads"])
        body = table(outcome)
        print(body)
        if args.write:
            import datetime as dt
            write(Path(args.write), body, saved["command"], dt.datetime.fromtimestamp(saved["when"]).astimezone())
        return 0
    holder = None if args.dir else tempfile.TemporaryDirectory(prefix="swarm-adversarial-")
    folder = Path(args.dir or holder.name)
    bench = Bench(folder, args.window, args.local_steps, node_fd_limit=args.node_fd_limit or None)
    try:
        bench.start()
        outcome = bench.run(attacks)
    finally:
        bench.stop()
    body = table(outcome)
    command = "python -m bench.adversarial " + " ".join(argv)
    (folder / "adversarial.json").write_text(json.dumps(
        {"command": command, "when": time.time(), "windows": [dataclasses.asdict(w) for w in outcome.windows],
         "verify": outcome.verify, "chains_agree": outcome.chains_agree, "chain_lengths": outcome.chain_lengths,
         "missing_payloads": outcome.missing_payloads}, indent=1))
    print(body)
    if args.write:
        write(Path(args.write), body, command)
    if holder is not None:
        holder.cleanup()
    ok = all(v.get("ok") for v in outcome.verify.values()) and outcome.chains_agree
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

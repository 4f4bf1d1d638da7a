"""Transport benchmark: libp2p (our Transport, real processes) side by side with plain asyncio TCP, same run.

    python -m bench.transport [--repeats 3] [--pings 500]

Push: MB/s of payload for 1, 8 and 32 MB pushed to one peer and to three peers concurrently (time until every
peer acknowledged a digest-checked copy; MB/s counts the payload once, not once per peer). Pushes to a peer reuse
the push stream the warm-up opened, as a running node does (see swarm/transport/bulk.py). The TCP baseline does
the same work: length + SHA-256 header, body, digest check on arrival, one-byte ack. Control: round trip of a
small message (ping -> pong on the long-lived control stream, through both nodes' asyncio<->trio bridges),
against an asyncio TCP echo. Medians over the repeats.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from swarm.transport.harness.cluster import REPO, Cluster, free_port

SIZES = (1 << 20, 8 << 20, 32 << 20)
HEADER = struct.Struct(">Q32s")


# ---- plain asyncio TCP baseline (server runs in its own process) --------------------------------------------
async def _serve(port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                kind = await reader.readexactly(1)
                if kind == b"P":
                    length, digest = HEADER.unpack(await reader.readexactly(HEADER.size))
                    body = await reader.readexactly(length)
                    writer.write(b"\x00" if hashlib.sha256(body).digest() == digest else b"\x01")
                else:
                    (length,) = struct.unpack(">I", await reader.readexactly(4))
                    writer.write(b"E" + struct.pack(">I", length) + await reader.readexactly(length))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, limit=1 << 20)
    print("READY", flush=True)
    async with server:
        await server.serve_forever()


async def _tcp_bench(ports: list[int], repeats: int, pings: int) -> dict[str, object]:
    conns = [await asyncio.open_connection("127.0.0.1", p, limit=1 << 20) for p in ports]
    results: dict[str, object] = {}
    for fanout in (1, 3):
        for size in SIZES:
            times = []
            for seed in range(repeats):
                payload = os.urandom(size)
                start = time.perf_counter()
                header = b"P" + HEADER.pack(size, hashlib.sha256(payload).digest())

                async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                    writer.write(header)
                    writer.write(payload)
                    await writer.drain()
                    assert await reader.readexactly(1) == b"\x00"

                await asyncio.gather(*(one(r, w) for r, w in conns[:fanout]))
                times.append(time.perf_counter() - start)
            results[f"push {size >> 20} MB x{fanout}"] = size / statistics.median(times) / 1e6
    reader, writer = conns[0]
    rtts = []
    for _ in range(pings):
        body = b"x" * 200
        start = time.perf_counter()
        writer.write(b"E" + struct.pack(">I", len(body)) + body)
        await writer.drain()
        await reader.readexactly(5 + len(body))
        rtts.append((time.perf_counter() - start) * 1000)
    results["rtt"] = rtts
    for _, w in conns:
        w.close()
    return results


def tcp_baseline(repeats: int, pings: int) -> dict[str, object]:
    ports = [free_port() for _ in range(3)]
    procs = [subprocess.Popen([sys.executable, "-m", "bench.transport", "--tcp-server", str(p)], cwd=REPO,
                              stdout=subprocess.PIPE) for p in ports]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().startswith(b"READY")
        return asyncio.run(_tcp_bench(ports, repeats, pings))
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()


# ---- libp2p through our Transport, real peer processes ---------------------------------------------------------
def libp2p_bench(repeats: int, pings: int) -> dict[str, object]:
    results: dict[str, object] = {}
    for fanout in (1, 3):
        with tempfile.TemporaryDirectory() as folder:
            cluster = Cluster(Path(folder), fanout + 1)
            try:
                cluster.start_all()
                cluster.wait_mesh(timeout=60)  # a loaded 2-core box can take a while to start 4 processes
                src = cluster.peers[0]
                src.call("POST", "/push", {"size": 1 << 20, "seed": 999})  # warm-up
                for size in SIZES:
                    times = []
                    for seed in range(repeats):
                        answer = src.call("POST", "/push", {"size": size, "seed": seed}, timeout=120)
                        assert all(r["ok"] for r in answer["results"].values()), answer
                        assert len(answer["results"]) == fanout
                        times.append(answer["seconds"])
                    results[f"push {size >> 20} MB x{fanout}"] = size / statistics.median(times) / 1e6
                if fanout == 1:
                    src.call("POST", "/ping", {"peer": cluster.peers[1].peer_id, "count": 50})  # warm-up
                    results["rtt"] = src.call("POST", "/ping", {"peer": cluster.peers[1].peer_id,
                                                                "count": pings}, timeout=120)["rtt_ms"]
            finally:
                cluster.close()
    return results


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.transport", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pings", type=int, default=500)
    parser.add_argument("--tcp-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tcp_server:
        asyncio.run(_serve(args.tcp_server))
        return 0
    lib = libp2p_bench(args.repeats, args.pings)
    tcp = tcp_baseline(args.repeats, args.pings)
    print(f"# transport bench: {os.cpu_count()} cores, loopback, median of {args.repeats}; MB = 10^6 bytes")
    print("| what | libp2p Transport | plain asyncio TCP |")
    print("|---|---|---|")
    for fanout in (1, 3):
        for size in SIZES:
            key = f"push {size >> 20} MB x{fanout}"
            peers = "1 peer" if fanout == 1 else "3 peers"
            print(f"| push {size >> 20} MB to {peers} (MB/s) | {lib[key]:.1f} | {tcp[key]:.1f} |")
    lr, tr = lib["rtt"], tcp["rtt"]  # type: ignore[assignment]
    print(f"| control round trip p50 / p99 (ms), {len(lr)} pings | {pct(lr, .5):.2f} / {pct(lr, .99):.2f} "  # type: ignore[arg-type]
          f"| {pct(tr, .5):.2f} / {pct(tr, .99):.2f} |")  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())

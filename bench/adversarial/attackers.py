"""The attacker processes: each runs alone (`python -m bench.adversarial attack NAME ...`), holds node3's key or
plays HTTP clients, and prints one JSON line of what it did. Nothing here reaches beyond 127.0.0.1."""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import time

from bench.adversarial.common import ATTACK_NAMES, HTTP_CLIENTS, LABEL_STREAMS, PACKED_PAIRS, PACKED_RATE

# ================================================================================================ attackers
# Each runs in its own process (`python -m bench.adversarial attack NAME ...`) and prints one JSON line of what it
# did. Nothing here reaches beyond 127.0.0.1.

def _packed_messages(key, swarm_id: str, members: list[str], count: int, pairs: int, base_term: int) -> list[bytes]:
    """``count`` encoded NewTerms (terms base_term.., each above any view the swarm reaches in a bench) signed
    by ``key``, each with three votes (all by ``key``: it holds one key) whose locks carry ``pairs`` (member,
    junk signature) pairs."""
    from consensus.messages import Entry, NewTerm, PreparedCertificate, Vote, signed_fields, signing_bytes
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
    from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID, Transport as NoiseTransport
    from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID, Yamux

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
    from swarm.transport.framing import CONTROL_HEADER, KIND_DATA, MAX_CONTROL_BYTES, bulk_header
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

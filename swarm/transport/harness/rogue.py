"""A deliberately misbehaving libp2p client, for tests: wrong security or muxer, garbage on our protocols.

Runs under its own ``trio.run`` (call ``run_rogue`` from synchronous code). It never uses our member gate, so it
can speak with any key; what a target does with it is what the tests check.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass, field

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID, Transport as NoiseTransport
from libp2p.stream_muxer.mplex.mplex import MPLEX_PROTOCOL_ID, Mplex
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID, Yamux

from crypto.keys import NodeKey
from swarm.transport.security import libp2p_key_pair


@dataclass
class RogueReport:
    connected: bool = False
    error: str | None = None
    streams: list[str] = field(default_factory=list)   # one outcome per (protocol, bytes) sent


async def _rogue(key: NodeKey, target: str, sends: list[tuple[str, bytes]], security: str, muxer: str) -> RogueReport:
    kp = libp2p_key_pair(key)
    sec = ({TProtocol(PLAINTEXT_PROTOCOL_ID): InsecureTransport(kp)} if security == "plaintext" else
           {TProtocol(NOISE_PROTOCOL_ID): NoiseTransport(kp, noise_privkey=create_x25519_key_pair().private_key)})
    mux = {TProtocol(MPLEX_PROTOCOL_ID): Mplex} if muxer == "mplex" else {TProtocol(YAMUX_PROTOCOL_ID): Yamux}
    host = new_host(key_pair=kp, sec_opt=sec, muxer_opt=mux)
    report = RogueReport()
    async with host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        info = info_from_p2p_addr(multiaddr.Multiaddr(target))
        try:
            with trio.fail_after(5):
                await host.connect(info)
            report.connected = True
        except BaseException as exc:  # noqa: BLE001 - the refusal is the expected outcome for some tests
            if isinstance(exc, trio.Cancelled):
                raise
            report.error = f"{type(exc).__name__}: {exc}"
            return report
        for protocol, data in sends:
            report.streams.append(await _garbage_stream(host, info.peer_id, protocol, data))
            await trio.sleep(0.05)
    return report


async def _garbage_stream(host, peer_id, protocol: str, data: bytes) -> str:  # type: ignore[no-untyped-def]
    try:
        with trio.fail_after(5):
            stream = await host.new_stream(peer_id, [TProtocol(protocol)])
            await stream.write(data)
            outcome = "no answer within 1 s"
            with trio.move_on_after(1):
                try:
                    answer = await stream.read(64)
                    outcome = f"answered {answer[:8]!r}"
                except Exception as exc:  # noqa: BLE001
                    outcome = f"closed: {type(exc).__name__}"
            await stream.reset()
            return outcome
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, trio.Cancelled):
            raise
        return f"failed: {type(exc).__name__}"


def run_rogue(key: NodeKey, target: str, sends: list[tuple[str, bytes]] | None = None,
              security: str = "noise", muxer: str = "yamux") -> RogueReport:
    """Connect to ``target`` (a /p2p/ multiaddr) and write each ``(protocol, bytes)`` on a fresh stream."""
    return trio.run(_rogue, key, target, sends or [], security, muxer)


def raw_tcp_garbage(port: int, data: bytes) -> None:
    """Bytes straight onto the TCP port, below libp2p's negotiation."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(data)
        sock.settimeout(1)
        try:
            sock.recv(1024)
        except OSError:
            pass

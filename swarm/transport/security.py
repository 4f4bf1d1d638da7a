"""Connection upgrades: Noise + Yamux only, members only (the configuration in force), no SO_REUSEPORT.

Members are checked right after the Noise handshake authenticates the remote key, before any muxer or stream
exists, so a non-member never gets to open a stream. py-libp2p listens with SO_REUSEPORT (for hole punching),
which lets a second node bind our port and steal dials (TRANSPORT-NOTES bug 6): we keep SO_REUSEADDR only.
"""
from __future__ import annotations

import socket
from typing import Callable, Collection

from libp2p.crypto.ed25519 import Ed25519PrivateKey as LibP2PEd25519PrivateKey
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.security.exceptions import HandshakeFailure
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
import libp2p.transport.tcp.tcp as libp2p_tcp

from crypto.keys import NodeKey
from swarm.transport import fastpath


def libp2p_key_pair(key: NodeKey) -> KeyPair:
    """The node's PEM key as a libp2p key pair (same seed, so the same peer id)."""
    private = LibP2PEd25519PrivateKey.from_bytes(key.seed)
    return KeyPair(private, private.get_public_key())


class MemberNoise(NoiseTransport):
    """Noise that refuses any authenticated remote whose peer id is not in ``allowed``."""

    def __init__(self, key_pair: KeyPair, allowed: Collection[str], on_refused: Callable[[str], None]) -> None:
        super().__init__(key_pair, noise_privkey=create_x25519_key_pair().private_key)
        self._allowed = allowed  # the engine's own set: a committed membership change updates it in place
        self._on_refused = on_refused

    async def _check(self, secure_conn):  # type: ignore[no-untyped-def]
        remote = secure_conn.get_remote_peer().to_base58()
        if remote not in self._allowed:
            try:
                await secure_conn.close()
            finally:
                self._on_refused(remote)
            raise HandshakeFailure(f"peer {remote} is not a member")
        return fastpath.accelerate(secure_conn)  # authenticated member: batched Noise framing (fastpath.py)

    async def secure_inbound(self, conn):  # type: ignore[no-untyped-def]
        return await self._check(await super().secure_inbound(conn))

    async def secure_outbound(self, conn, peer_id: ID):  # type: ignore[no-untyped-def]
        return await self._check(await super().secure_outbound(conn, peer_id))


def upgrade_options(key_pair: KeyPair, allowed: Collection[str], on_refused: Callable[[str], None]):  # type: ignore[no-untyped-def]
    """(sec_opt, muxer_opt) for new_host: only Noise and only Yamux are offered or accepted."""
    sec_opt = {TProtocol(NOISE_PROTOCOL_ID): MemberNoise(key_pair, allowed, on_refused)}
    muxer_opt = {TProtocol(YAMUX_PROTOCOL_ID): Yamux}
    return sec_opt, muxer_opt


def _reuseaddr_only(sock) -> None:  # type: ignore[no-untyped-def]
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    except OSError:
        pass


def disable_reuseport() -> None:
    """Make py-libp2p's TCP listener bind exclusively (a busy port then fails loudly instead of being shared)."""
    libp2p_tcp._set_reuse_flags = _reuseaddr_only

"""A fast deterministic stand-in for Ed25519 in the simulator: HMAC-SHA256 with a per-node secret key.

Forging without the key fails exactly as with real signatures, which is all the core relies on."""
from __future__ import annotations

import hashlib
import hmac


class KeyRing:
    """The simulator's key authority: every node's secret, derived from the seed."""

    def __init__(self, seed: int, members: list[str]):
        self._keys = {m: hashlib.sha256(f"sim-key/{seed}/{m}".encode()).digest() for m in members}

    def signer(self, node_id: str) -> "FakeCrypto":
        return FakeCrypto(node_id, self)

    def mac(self, node_id: str, payload: bytes) -> bytes:
        return hmac.new(self._keys[node_id], payload, hashlib.sha256).digest()


class FakeCrypto:
    def __init__(self, node_id: str, ring: KeyRing):
        self.node_id, self._ring = node_id, ring

    def sign(self, payload: bytes) -> bytes:
        return self._ring.mac(self.node_id, payload)

    def verify(self, sender_id: str, payload: bytes, sig: bytes) -> bool:
        try:
            expected = self._ring.mac(sender_id, payload)
        except KeyError:
            return False
        return hmac.compare_digest(expected, sig)

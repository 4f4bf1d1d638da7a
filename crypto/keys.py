"""Ed25519 node keys: generate, store as PEM (0600), load, sign and verify.

The same 32-byte seed is the node's libp2p identity and its message-signing key, so the peer id names the key
that signs. Key files readable by group or others are refused: a leaked key lets anyone speak for the node.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from crypto.peer_id import PeerIdError, peer_id_from_public_key, public_key_from_peer_id


class KeyFileError(Exception):
    """A key file could not be written or loaded; the message says how to fix it."""


@dataclass(frozen=True)
class NodeKey:
    """A node's private key with its public key and peer id."""

    private: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> "NodeKey":
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> "NodeKey":
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def seed(self) -> bytes:
        return self.private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                          serialization.NoEncryption())

    @property
    def public_bytes(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def peer_id(self) -> str:
        return peer_id_from_public_key(self.public_bytes)

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)

    def to_pem(self) -> bytes:
        return self.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``public_key``'s Ed25519 signature of ``message``; never raises on bad input."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
        return True
    except (InvalidSignature, ValueError):
        return False


def verify_by_peer_id(peer_id: str, message: bytes, signature: bytes) -> bool:
    try:
        return verify(public_key_from_peer_id(peer_id), message, signature)
    except PeerIdError:
        return False


def save_key(key: NodeKey, path: str | Path) -> None:
    """Write ``key`` as PEM with mode 0600; an existing file is never overwritten."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} already exists; refusing to overwrite a key (move it away first)") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.to_pem())
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(path, 0o600)  # the umask may have narrowed it further; make it exactly 0600


def load_key(path: str | Path) -> NodeKey:
    """Load a PEM Ed25519 key, refusing files that group or others can read or write."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file (create one with `swarm keygen --out {path}`)") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{path} is accessible by group or others (mode {stat.S_IMODE(mode):04o}); "
                           f"fix it with `chmod 600 {path}`")
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not a PEM private key: {exc}") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise KeyFileError(f"{path} holds a {type(private).__name__}, not an Ed25519 key")
    return NodeKey(private)


def load_public_key(path: str | Path) -> bytes:
    """Raw public key from a PEM public or private key file (used to build a genesis from other nodes' keys)."""
    data = Path(path).read_bytes()
    try:
        if b"PRIVATE KEY" in data:
            return load_key(path).public_bytes
        public = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise KeyFileError(f"{path} is not a PEM key: {exc}") from None
    if not isinstance(public, Ed25519PublicKey):
        raise KeyFileError(f"{path} holds a {type(public).__name__}, not an Ed25519 key")
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_pem(key: NodeKey) -> bytes:
    return key.private.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)

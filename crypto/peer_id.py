"""libp2p peer ids for Ed25519 keys, computed without importing libp2p.

A `12D3KooW...` id is base58btc(identity-multihash(protobuf PublicKey{Type=Ed25519, Data=key})): it embeds the
32-byte public key, so anyone can verify a signature from the peer id alone.
"""
from __future__ import annotations

_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}
# protobuf PublicKey: field 1 (KeyType) = 1 (Ed25519), field 2 (bytes, 32 long); then identity multihash 0x00, length 36.
_PREFIX = bytes([0x00, 0x24, 0x08, 0x01, 0x12, 0x20])


class PeerIdError(ValueError):
    """A string is not the peer id of an Ed25519 key."""


def b58encode(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    out = []
    while number:
        number, rem = divmod(number, 58)
        out.append(_ALPHABET[rem])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    number = 0
    for char in text:
        if char not in _INDEX:
            raise PeerIdError(f"not base58: {char!r}")
        number = number * 58 + _INDEX[char]
    zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\0" * zeros + body


def peer_id_from_public_key(public_key: bytes) -> str:
    if len(public_key) != 32:
        raise PeerIdError("an Ed25519 public key is 32 bytes")
    return b58encode(_PREFIX + public_key)


def public_key_from_peer_id(peer_id: str) -> bytes:
    if not isinstance(peer_id, str) or not 40 <= len(peer_id) <= 60:
        raise PeerIdError(f"not an Ed25519 peer id: {peer_id!r}")
    raw = b58decode(peer_id)
    if len(raw) != 38 or not raw.startswith(_PREFIX):
        raise PeerIdError(f"not an Ed25519 peer id: {peer_id!r}")
    return raw[len(_PREFIX):]

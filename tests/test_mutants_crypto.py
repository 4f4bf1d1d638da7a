"""Tests that kill mutants mutation testing found unchecked in crypto/ (issue 22, TESTING.md): the signed head
(an envelope less its payload, what gradient-equivocation evidence stands on) was reached only through the evidence
code, and a genesis's public key files only through the CLI.

Every refusal is checked by its reason, so a check that is removed or loosened makes a test fail (a bad head that
is refused for some other reason further on would hide it)."""
from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from crypto.envelope import (DOMAIN, MAX_SIGNED_HEAD, Envelope, MessageType, SignedHead, open_signed_head,
                             parse_header, seal)
from crypto.keys import KeyFileError, NodeKey, load_key, load_public_key, public_pem, save_key
from crypto.wire import DecodeError

KEY = NodeKey.from_seed(bytes(range(32)))
OTHER = NodeKey.from_seed(bytes(range(1, 33)))
SWARM = "mutants"


def reason(call) -> str:
    """The refusal's reason label; every refusal also says why in words, for the log."""
    with pytest.raises(DecodeError) as caught:
        call()
    assert len(str(caught.value)) > len(caught.value.reason) + 2, str(caught.value)
    return caught.value.reason


def signed(header: bytes, payload_hash: bytes, key: NodeKey = KEY) -> SignedHead:
    """A head whose signature is valid for exactly these header bytes (whatever they hold)."""
    return SignedHead(header, payload_hash, key.sign(DOMAIN + header + payload_hash))


def unsigned(fields, payload: bytes = b"payload") -> Envelope:
    return Envelope(MessageType.GRADIENT, SWARM, KEY.public_bytes, 3, 7, fields, payload)


def test_a_signed_head_opens_to_exactly_what_was_sealed():
    envelope = seal(KEY, MessageType.GRADIENT, SWARM, 3, 7, {"parent": b"p" * 32, "n": 2}, b"x" * 1000)
    head = envelope.signed_head()
    assert head.header == envelope.header() and head.signature == envelope.signature
    assert head.payload_hash == hashlib.sha256(envelope.payload).digest()
    opened = open_signed_head(head, SWARM)
    assert (opened.type, opened.swarm_id, opened.sender_key, opened.term, opened.round, opened.fields,
            opened.payload_size) == (MessageType.GRADIENT, SWARM, KEY.public_bytes, 3, 7,
                                     {"parent": b"p" * 32, "n": 2}, 1000)
    assert opened.sender == KEY.peer_id
    assert parse_header(head.header) == opened


def test_a_signed_head_of_another_swarm_key_or_payload_is_refused():
    head = seal(KEY, MessageType.GRADIENT, SWARM, 3, 7, {"a": 1}, b"payload").signed_head()
    assert reason(lambda: open_signed_head(head, "elsewhere")) == "wrong_swarm"
    flipped = bytes([head.signature[0] ^ 1]) + head.signature[1:]
    assert reason(lambda: open_signed_head(SignedHead(head.header, head.payload_hash, flipped), SWARM)) \
        == "bad_signature"
    other_payload = hashlib.sha256(b"another payload").digest()
    assert reason(lambda: open_signed_head(SignedHead(head.header, other_payload, head.signature), SWARM)) \
        == "bad_signature"
    # Signed by another key than the one the header names.
    forged = signed(head.header, head.payload_hash, key=OTHER)
    assert reason(lambda: open_signed_head(forged, SWARM)) == "bad_signature"
    # The domain string is part of what is signed: a signature over the bare bytes does not verify.
    bare = SignedHead(head.header, head.payload_hash, KEY.sign(head.header + head.payload_hash))
    assert reason(lambda: open_signed_head(bare, SWARM)) == "bad_signature"


@pytest.mark.parametrize("hash_len, sig_len", [(31, 64), (33, 64), (0, 64), (32, 63), (32, 65), (32, 0)])
def test_a_signed_head_of_the_wrong_shape_is_refused_before_parsing(hash_len, sig_len):
    head = seal(KEY, MessageType.GRADIENT, SWARM, 3, 7, {}, b"p").signed_head()
    bad = SignedHead(head.header, (head.payload_hash * 2)[:hash_len], (head.signature * 2)[:sig_len])
    assert reason(lambda: open_signed_head(bad, SWARM)) == "bad_head"


def test_a_header_of_exactly_the_limit_parses_and_one_byte_more_is_too_large():
    base = len(unsigned({"blob": b""}).header())
    exact = unsigned({"blob": b"z" * (MAX_SIGNED_HEAD - base)}).header()
    assert len(exact) == MAX_SIGNED_HEAD
    assert open_signed_head(signed(exact, hashlib.sha256(b"payload").digest()), SWARM).fields["blob"] \
        == b"z" * (MAX_SIGNED_HEAD - base)
    over = unsigned({"blob": b"z" * (MAX_SIGNED_HEAD - base + 1)}).header()
    assert reason(lambda: parse_header(over)) == "too_large"
    assert reason(lambda: open_signed_head(signed(over, bytes(32)), SWARM)) == "too_large"


def test_a_header_that_is_not_exactly_one_header_with_dict_fields_is_refused():
    header = unsigned({"a": 1}).header()
    payload_hash = hashlib.sha256(b"payload").digest()
    # Validly signed, so only the parse can refuse these.
    assert reason(lambda: open_signed_head(signed(header + b"\0", payload_hash), SWARM)) == "trailing_bytes"
    assert reason(lambda: open_signed_head(signed(header[:-1], payload_hash), SWARM)) == "truncated"
    for not_a_dict in ([1, 2], 5, b"bytes", None):
        assert reason(lambda value=not_a_dict: parse_header(unsigned(value).header())) == "bad_fields", not_a_dict
    assert reason(lambda: parse_header(b"SWRX" + header[4:])) == "bad_magic"


def test_public_key_files_load_from_public_and_private_pem(tmp_path):
    public = tmp_path / "node.pub"
    public.write_bytes(public_pem(KEY))
    assert public_pem(KEY).startswith(b"-----BEGIN PUBLIC KEY-----")
    assert load_public_key(public) == KEY.public_bytes
    private = tmp_path / "node.pem"
    save_key(KEY, private)
    assert load_public_key(private) == KEY.public_bytes
    assert load_public_key(private) != OTHER.public_bytes


def test_public_key_files_that_are_not_ed25519_pem_are_refused(tmp_path):
    garbage = tmp_path / "garbage.pub"
    garbage.write_bytes(b"-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
    with pytest.raises(KeyFileError, match="is not a PEM key"):
        load_public_key(garbage)
    x25519 = tmp_path / "x25519.pub"
    x25519.write_bytes(X25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(KeyFileError, match="holds a X25519PublicKey, not an Ed25519 key"):
        load_public_key(x25519)
    x25519_private = tmp_path / "x25519.pem"
    x25519_private.write_bytes(X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    x25519_private.chmod(0o600)
    for load in (load_public_key, load_key):
        with pytest.raises(KeyFileError, match="holds a X25519PrivateKey, not an Ed25519 key"):
            load(x25519_private)


def test_a_key_from_a_seed_is_that_seed_and_nothing_else():
    seed = bytes(range(5, 37))
    key = NodeKey.from_seed(seed)
    assert key.seed == seed and NodeKey.from_seed(seed).public_bytes == key.public_bytes
    assert NodeKey.from_seed(bytes(range(6, 38))).public_bytes != key.public_bytes


def test_a_saved_key_creates_its_folders_and_is_never_on_disk_with_a_wider_mode(tmp_path, monkeypatch):
    """The mode is set when the file is created, before the key is written: the final chmod alone would leave the
    key readable by others between the write and the chmod (with a umask of 0, world-readable)."""
    import os
    import stat

    import crypto.keys

    path = tmp_path / "a" / "b" / "node.pem"
    modes = []
    real_chmod = os.chmod

    def chmod(target, mode, *args, **kwargs):
        # os.chmod is process-wide: only this file's call is recorded (a thread left by another test may chmod too)
        if str(target) == str(path):
            modes.append(stat.S_IMODE(os.stat(target).st_mode))
        return real_chmod(target, mode, *args, **kwargs)

    monkeypatch.setattr(crypto.keys.os, "chmod", chmod)
    old = os.umask(0)
    try:
        save_key(KEY, path)
    finally:
        os.umask(old)
    assert modes == [0o600]  # the mode the file had before the final chmod, with nothing masked
    assert NodeKey(serialization.load_pem_private_key(path.read_bytes(), password=None)).seed == KEY.seed

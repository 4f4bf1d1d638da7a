"""Node keys: PEM at 0600, refusal of shared key files, peer ids equal to libp2p's."""
import os
import stat

import pytest

from crypto.keys import KeyFileError, NodeKey, load_key, save_key, verify, verify_by_peer_id
from crypto.peer_id import PeerIdError, public_key_from_peer_id


def test_saved_key_is_0600_and_loads_back_to_the_same_peer_id(tmp_path):
    key = NodeKey.generate()
    path = tmp_path / "node.pem"
    save_key(key, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key(path).peer_id == key.peer_id
    assert key.peer_id.startswith("12D3KooW")


def test_existing_key_file_is_never_overwritten(tmp_path):
    path = tmp_path / "node.pem"
    save_key(NodeKey.generate(), path)
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        save_key(NodeKey.generate(), path)
    assert path.read_bytes() == before


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_readable_by_others_is_refused_with_the_fix(tmp_path, mode):
    path = tmp_path / "node.pem"
    save_key(NodeKey.generate(), path)
    os.chmod(path, mode)
    with pytest.raises(KeyFileError, match=f"chmod 600 {path}"):
        load_key(path)


def test_missing_and_garbage_key_files_give_clear_errors(tmp_path):
    with pytest.raises(KeyFileError, match="swarm keygen"):
        load_key(tmp_path / "absent.pem")
    bad = tmp_path / "bad.pem"
    bad.write_bytes(b"not a key")
    os.chmod(bad, 0o600)
    with pytest.raises(KeyFileError, match="not a PEM"):
        load_key(bad)


def test_peer_id_matches_libp2p_and_embeds_the_public_key():
    from libp2p.crypto.ed25519 import Ed25519PrivateKey
    from libp2p.peer.id import ID

    key = NodeKey.generate()
    libp2p_key = Ed25519PrivateKey.from_bytes(key.seed)
    assert ID.from_pubkey(libp2p_key.get_public_key()).to_base58() == key.peer_id
    assert public_key_from_peer_id(key.peer_id) == key.public_bytes
    # libp2p signs with the same seed: one key is both the transport identity and the message signer.
    assert libp2p_key.sign(b"m") == key.sign(b"m")


def test_sign_and_verify_by_peer_id():
    key, other = NodeKey.generate(), NodeKey.generate()
    signature = key.sign(b"hello")
    assert verify(key.public_bytes, b"hello", signature)
    assert verify_by_peer_id(key.peer_id, b"hello", signature)
    assert not verify_by_peer_id(other.peer_id, b"hello", signature)
    assert not verify(key.public_bytes, b"hellO", signature)
    assert not verify(key.public_bytes, b"hello", signature[:-1])
    assert not verify_by_peer_id("not-a-peer-id", b"hello", signature)


@pytest.mark.parametrize("text", ["", "12D3", "Qm" + "1" * 44, "0OIl" * 12, "12D3KooW" + "z" * 44])
def test_malformed_peer_ids_are_rejected(text):
    with pytest.raises(PeerIdError):
        public_key_from_peer_id(text)

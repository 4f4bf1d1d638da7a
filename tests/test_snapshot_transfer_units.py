"""The pieces of a chunked snapshot transfer without libp2p: the ranged fetch's checks on both sides (fake
streams), ranges served from a snapshot file, the part file's resume rules, peers that disagree on the size, and
the resync of the state worker going through the transfer and showing in /status."""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import trio

from consensus.messages import Entry
from swarm.ledger.state import ReplicatedState, genesis_state
from swarm.ledger.store import Store
from swarm.node.part_file import PartFile
from swarm.node.serve import PayloadServer
from swarm.node.snapshot_transfer import SnapshotTransfer, TransferSettings
from swarm.node.state_worker import StateWorker
from swarm.ops.api import status_view
from swarm.transport import bulk
from swarm.transport.base import PeerInfo
from swarm.transport.framing import FrameError, StreamClosed
from tests.test_inspect_support import fake_node

CHUNK = 64 << 10
BLOB = random.Random(5).randbytes(5 * CHUNK + 99)
DIGEST = hashlib.sha256(BLOB).digest()


class ScriptedStream:
    """A stream whose reads give ``incoming`` (then EOF) and whose writes are kept."""

    def __init__(self, incoming: bytes = b"") -> None:
        self.incoming, self.written = bytearray(incoming), bytearray()

    async def read(self, n: int) -> bytes:
        data = bytes(self.incoming[:n])
        del self.incoming[:n]
        return data

    async def write(self, data: bytes) -> None:
        self.written += data


def answer(status: int, total: int, body: bytes, length: int | None = None) -> bytes:
    return bulk.RANGE_ANSWER.pack(status, total, len(body) if length is None else length) + body


def ask(incoming: bytes, offset: int = 0, length: int = CHUNK, max_total: int = 1 << 20):
    return asyncio.run(bulk.request_range(ScriptedStream(incoming), DIGEST, offset, length, max_total))


def test_a_good_range_answer_is_taken_and_the_request_is_what_was_asked() -> None:
    stream = ScriptedStream(answer(bulk.RANGE_OK, len(BLOB), BLOB[CHUNK:2 * CHUNK]))
    got = asyncio.run(bulk.request_range(stream, DIGEST, CHUNK, CHUNK, 1 << 20))
    assert got == (len(BLOB), BLOB[CHUNK:2 * CHUNK])
    assert bytes(stream.written) == bulk.RANGE_REQUEST.pack(bulk.RANGE_MAGIC, DIGEST, CHUNK, CHUNK)
    tail = 5 * CHUNK
    assert ask(answer(bulk.RANGE_OK, len(BLOB), BLOB[tail:]), tail) == (len(BLOB), BLOB[tail:])  # short at the end
    assert ask(answer(bulk.RANGE_NOT_FOUND, 0, b"")) is None
    with pytest.raises(bulk.RangeRefused):
        ask(answer(bulk.RANGE_REFUSED, 0, b""))


@pytest.mark.parametrize(("incoming", "why"), [
    (answer(bulk.RANGE_OK, 2 << 20, BLOB[:CHUNK]), "over the"),                          # size over the limit
    (answer(bulk.RANGE_OK, len(BLOB), BLOB[:CHUNK - 1]), "answered"),                     # one byte short
    (answer(bulk.RANGE_OK, len(BLOB), BLOB[:CHUNK + 1]), "answered"),                     # one byte too many
    (answer(bulk.RANGE_OK, 100, b""), "of only"),                                          # range outside the object
    (answer(9, len(BLOB), b""), "bad range status"),
])
def test_a_range_answer_that_breaks_the_rules_is_refused_with_its_reason(incoming: bytes, why: str) -> None:
    offset = 200 if why == "of only" else 0
    with pytest.raises(FrameError, match=why):
        ask(incoming, offset)


def test_a_truncated_range_answer_ends_the_stream_and_no_bad_request_is_sent() -> None:
    with pytest.raises(StreamClosed):
        ask(answer(bulk.RANGE_OK, len(BLOB), BLOB[:100], length=CHUNK))
    for offset, length in ((0, 0), (0, bulk.MAX_RANGE_BYTES + 1), (-1, 10)):
        with pytest.raises(ValueError, match="bad range request"):
            bulk.range_request(DIGEST, offset, length)


def serve(request: bytes, lookup) -> tuple[bytes, str | None]:  # type: ignore[no-untyped-def]
    stream = ScriptedStream(request)
    refused = trio.run(bulk.serve_range, stream, lookup, 1 << 20)
    return bytes(stream.written), refused


async def honest(digest: bytes, offset: int, length: int) -> tuple[int, bytes] | None:
    return (len(BLOB), BLOB[offset:offset + length]) if digest == DIGEST else None


def test_the_server_answers_ranges_and_refuses_malformed_ones_before_any_lookup() -> None:
    written, error = serve(bulk.range_request(DIGEST, CHUNK, 10), honest)
    assert (written, error) == (answer(bulk.RANGE_OK, len(BLOB), BLOB[CHUNK:CHUNK + 10]), None)
    written, error = serve(bulk.range_request(b"\1" * 32, 0, 10), honest)
    assert (written, error) == (answer(bulk.RANGE_NOT_FOUND, 0, b""), None)
    looked_up = []

    async def counting(digest: bytes, offset: int, length: int) -> tuple[int, bytes] | None:
        looked_up.append(offset)
        return await honest(digest, offset, length)

    for request, why in ((bulk.RANGE_REQUEST.pack(b"NOPE", DIGEST, 0, 10), "magic"),
                         (bulk.RANGE_REQUEST.pack(bulk.RANGE_MAGIC, DIGEST, 0, 0), "0 bytes"),
                         (bulk.RANGE_REQUEST.pack(bulk.RANGE_MAGIC, DIGEST, 0, bulk.MAX_RANGE_BYTES + 1), "allowed")):
        written, error = serve(request, counting)
        assert written == answer(bulk.RANGE_REFUSED, 0, b"") and error is not None and why in error
    assert looked_up == []
    written, error = serve(bulk.range_request(DIGEST, len(BLOB), 10), counting)
    assert written == answer(bulk.RANGE_REFUSED, len(BLOB), b"") and error is not None and "past the end" in error


def test_the_server_never_sends_a_range_its_own_lookup_got_wrong() -> None:
    async def too_long(digest: bytes, offset: int, length: int) -> tuple[int, bytes]:
        return len(BLOB), BLOB[offset:offset + length + 1]

    async def too_big(digest: bytes, offset: int, length: int) -> tuple[int, bytes]:
        return 2 << 20, BLOB[offset:offset + length]

    for lookup in (too_long, too_big):
        assert serve(bulk.range_request(DIGEST, 0, 10), lookup) == (answer(bulk.RANGE_NOT_FOUND, 0, b""), None)


def test_ranges_of_a_snapshot_file_are_read_from_it_and_a_damaged_file_is_never_served(tmp_path: Path) -> None:
    store = Store(tmp_path)
    try:
        store.save_snapshot(3, DIGEST, BLOB)
        state = SimpleNamespace(hash=b"\2" * 32)
        server = PayloadServer(SimpleNamespace(by_digest=lambda d: None), store, lambda: state)
        for offset in (0, CHUNK, 5 * CHUNK):
            assert asyncio.run(server.get_range(DIGEST, offset, CHUNK)) == (len(BLOB), BLOB[offset:offset + CHUNK])
        assert asyncio.run(server.get_range(DIGEST, len(BLOB) + 5, CHUNK)) == (len(BLOB), b"")
        assert asyncio.run(server.get_range(b"\7" * 32, 0, CHUNK)) is None
        # one byte flipped on disk (a new modification time): checked again, refused and set aside
        path = store.snapshot_path(DIGEST)
        damaged = bytearray(BLOB)
        damaged[7] ^= 1
        path.write_bytes(bytes(damaged))
        os.utime(path, ns=(1, 1))
        assert asyncio.run(server.get_range(DIGEST, 0, CHUNK)) is None
        assert not path.exists() and path.with_name(path.name + ".bad").exists()
    finally:
        store.close()


def test_ranges_of_the_current_state_are_slices_of_its_serialization(tmp_path: Path) -> None:
    store = Store(tmp_path)
    try:
        state = genesis_state(torch.arange(20000, dtype=torch.float32), ["a", "b"], b"\0" * 32)
        raw = state.serialize()
        server = PayloadServer(SimpleNamespace(by_digest=lambda d: None), store, lambda: state)
        got = b"".join(asyncio.run(server.get_range(state.hash, offset, 4096))[1]
                       for offset in range(0, len(raw), 4096))
        assert got == raw and asyncio.run(server.get(state.hash)) == raw
    finally:
        store.close()


def test_a_part_file_resumes_only_what_its_record_and_bytes_agree_on(tmp_path: Path) -> None:
    part = PartFile(tmp_path, DIGEST, CHUNK)
    part.start(len(BLOB))
    for index in (0, 2, 5):
        offset, length = part.span(index)
        part.write(index, BLOB[offset:offset + length], "peer")
    again = PartFile(tmp_path, DIGEST, CHUNK)
    assert again.load() == 2 * CHUNK + 99 and sorted(again.done) == [0, 2, 5]
    assert PartFile(tmp_path, DIGEST, 2 * CHUNK).load() == 0          # another chunk size: start afresh
    record = json.loads(part.record_path.read_text())
    record["done"]["9"] = ["00" * 32, "peer"]                         # a chunk that does not exist
    record["done"]["1"] = ["00" * 32, "peer"]                         # a chunk whose bytes are not on disk
    part.record_path.write_text(json.dumps(record))
    third = PartFile(tmp_path, DIGEST, CHUNK)
    assert third.load() == 2 * CHUNK + 99 and sorted(third.done) == [0, 2, 5]
    part.data_path.unlink()
    assert PartFile(tmp_path, DIGEST, CHUNK).load() == 0


def test_a_part_file_verifies_chunks_written_in_any_order_and_a_rewritten_one(tmp_path: Path) -> None:
    def chunk(index: int) -> bytes:
        return BLOB[index * CHUNK:(index + 1) * CHUNK]

    part = PartFile(tmp_path, DIGEST, CHUNK)
    part.start(len(BLOB))
    for index in (2, 0, 5, 1, 4):
        part.write(index, chunk(index), "peer")
    assert part.read_verified() is None                                  # chunk 3 missing: zeros there
    part.write(3, bytes([BLOB[3 * CHUNK] ^ 1]) + chunk(3)[1:], "liar")
    assert part.read_verified() is None                                  # one wrong byte
    part.write(3, chunk(3), "peer")                                      # rewritten right
    assert part.read_verified() == BLOB
    resumed = PartFile(tmp_path, DIGEST, CHUNK)                          # the same, after a restart
    resumed.load()
    assert resumed.read_verified() == BLOB
    # out of order but never rewritten: the running hash covers every chunk, and it alone says right or wrong
    for lie in (False, True):
        fresh = PartFile(tmp_path / str(lie), DIGEST, CHUNK)
        fresh.start(len(BLOB))
        for index in (1, 0, 3, 2, 5, 4):
            fresh.write(index, chunk(index), "peer")
        assert fresh._prefix == fresh.chunks
        if lie:
            fresh._running.update(b"!")  # type: ignore[union-attr]
        assert fresh.read_verified() == (None if lie else BLOB)


class FakeTransport:
    """Members that answer ranges from their own copy of an object (an honest copy, or a lie)."""

    def __init__(self, copies: dict[str, bytes]) -> None:
        self.copies = copies
        self.listen_addrs: list[str] = []

    def peers(self) -> dict[str, PeerInfo]:
        return {peer: PeerInfo(True, None, None) for peer in self.copies}

    async def fetch_range(self, peer: str, digest: bytes, offset: int, length: int) -> tuple[int, bytes] | None:
        await asyncio.sleep(0.001)
        copy = self.copies[peer]
        return len(copy), copy[offset:offset + length]


def test_a_peer_announcing_another_size_first_does_not_stop_the_transfer(tmp_path: Path) -> None:
    longer = BLOB + b"x" * CHUNK
    transport = FakeTransport({"a-liar": longer, "b": BLOB, "c": BLOB})   # the liar is asked first
    reports: list[str] = []
    transfer = SnapshotTransfer(transport, DIGEST, 1 << 20, tmp_path, "t", TransferSettings(chunk_bytes=CHUNK),
                                on_bad_peer=lambda peer, what: reports.append(peer))
    assert asyncio.run(transfer.run()) == BLOB
    assert transfer._claims["a-liar"] == len(longer)                   # it did set the first size
    assert reports == ["a-liar"]


def test_a_peer_that_announces_another_size_and_then_goes_quiet_is_outvoted(tmp_path: Path) -> None:
    longer = BLOB + b"x" * CHUNK

    class QuietLiar(FakeTransport):
        async def fetch_range(self, peer: str, digest: bytes, offset: int, length: int) -> tuple[int, bytes] | None:
            if peer == "a-liar" and offset:
                await asyncio.sleep(60)     # answered the first chunk, then never again
            return await super().fetch_range(peer, digest, offset, length)

    reports: list[str] = []
    settings = TransferSettings(chunk_bytes=CHUNK, chunk_timeout_s=0.2, stall_s=1.0)
    transfer = SnapshotTransfer(QuietLiar({"a-liar": longer, "b": BLOB, "c": BLOB}), DIGEST, 1 << 20, tmp_path, "t",
                                settings, on_bad_peer=lambda peer, what: reports.append(peer))
    assert asyncio.run(transfer.run()) == BLOB
    assert transfer._claims["a-liar"] == len(longer) and reports == ["a-liar"]


def test_peers_that_agree_on_wrong_bytes_fail_the_transfer_and_nothing_is_returned(tmp_path: Path) -> None:
    wrong = bytes([BLOB[0] ^ 1]) + BLOB[1:]
    transport = FakeTransport({"a": wrong, "b": wrong})
    transfer = SnapshotTransfer(transport, DIGEST, 1 << 20, tmp_path, "t", TransferSettings(chunk_bytes=CHUNK))
    assert asyncio.run(transfer.run()) is None
    assert transfer.progress.state == "failed" and list(tmp_path.iterdir()) == []   # no part file left to resume


def test_a_transfer_with_nobody_holding_the_object_stalls_and_says_so(tmp_path: Path) -> None:
    class Nobody(FakeTransport):
        async def fetch_range(self, peer: str, digest: bytes, offset: int, length: int) -> None:
            return None

    transfer = SnapshotTransfer(Nobody({"a": b""}), DIGEST, 1 << 20, tmp_path, "t",
                                TransferSettings(chunk_bytes=CHUNK, stall_s=0.5))
    assert asyncio.run(transfer.run()) is None
    assert transfer.progress.state == "stalled" and not transfer.answered


def test_the_state_worker_resyncs_through_the_chunked_transfer_and_status_shows_it(tmp_path: Path, caplog) -> None:
    node = fake_node()
    state = ReplicatedState(4, torch.randn(70_000), torch.zeros(70_000), node.state.reputation, b"\3" * 32)
    raw = state.serialize()
    node.store = Store(tmp_path / "store")
    node.dim = 70_000
    node.fetch_timeout_s = 5.0
    node.config = SimpleNamespace(transport=SimpleNamespace(max_payload_bytes=1 << 30), data_dir=str(tmp_path))
    node.transport = FakeTransport({"b": raw, "c": raw})
    rejected = []
    node.inbound = SimpleNamespace(reject=lambda *args: rejected.append(args))

    async def whole_fetch(digest: bytes) -> None:
        raise AssertionError("the whole-payload fetch is not used when peers answer ranges")

    node.fetch = whole_fetch
    entry = Entry(round=4, gradient_digests=(), rule="median", state_hash=state.hash)
    try:
        with caplog.at_level(logging.INFO, logger="swarm.node"):
            assert asyncio.run(StateWorker(node)._resync_from_snapshot(entry))
        assert node.state.hash == state.hash and node.metrics.snapshot_resyncs == 1
        assert node.store.snapshot_path(state.hash).read_bytes() == raw
        shown = status_view(node)["snapshot_transfer"]
        assert (shown["state"], shown["total"], shown["done_bytes"], shown["what"]) == (
            "done", len(raw), len(raw), "snapshot of round 4")
        assert shown["hash"] == state.hash.hex()[:16] and set(shown["peers"]) <= {"b", "c"}
        assert "fetched and verified" in caplog.text and rejected == []
    finally:
        node.store.close()

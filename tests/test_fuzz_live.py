"""Fuzzing a live node: 100,000+ malformed, mutated, replayed and misattributed messages on its real channels.

The fuzzer holds node3's genesis key (the swarm's one Byzantine member, n=4, f=1), so it passes the member gate and
its bytes reach the node's framing and envelope decoder. The three honest nodes must keep committing, keep one
chain, and account for what they rejected. A node bans a peer whose local score is exhausted and then drops its
messages unread: that is correct, so the accounting counts "rejected by reason" plus "dropped while banned".
"""
from __future__ import annotations

import random
import sqlite3
import struct
import time
from collections import Counter
from pathlib import Path

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID, Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID, Yamux

from crypto.envelope import MessageType, seal
from crypto.keys import NodeKey, load_key
from swarm.ledger.store import payload_file
from swarm.ops.cluster import Cluster, ClusterOptions, init_cluster
from swarm.ops.http_json import get_json
from swarm.transport import bulk
from swarm.transport.engine import CONTROL_PROTOCOL
from swarm.transport.framing import CONTROL_HEADER, KIND_DATA, bulk_header, encode_control
from swarm.transport.security import libp2p_key_pair

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]
HONEST = ["node0", "node1", "node2"]
FUZZER = "node3"
CONTROL_MESSAGES = 100_000
BATCH = 2_000
PUSHES = 200
FRAME_KILLERS = 20


# ----------------------------------------------------------------------------------------------- corpus
def valid_corpus(key: NodeKey, swarm_id: str, replays: list[bytes]) -> list[bytes]:
    """Well-formed envelopes to mutate: the fuzzer's own signed messages of every type, and honest replays."""
    own = [seal(key, t, swarm_id, term, rnd, {"a": 1, "b": [1, 2, b"x"]}, payload=bytes(range(64))).encode()
           for t in MessageType for term, rnd in ((0, 0), (1, 3), (2**63, 2**63))]
    junk_consensus = [seal(key, MessageType.CONSENSUS, swarm_id, 1, 2, fields).encode()
                      for fields in ({}, {"kind": "prepare"}, {"kind": 7, "term": "x"}, {"sender": 1})]
    return own + junk_consensus + replays


def mutations(rng: random.Random, corpus: list[bytes], key: NodeKey, swarm_id: str):
    """Endless stream of (category, body): each category is one way a peer can send a wrong message."""
    strangers = [NodeKey.generate() for _ in range(4)]
    stranger_msgs = [seal(k, MessageType.CONSENSUS, swarm_id, 1, 1, {"kind": "vote"}).encode() for k in strangers]
    wrong_swarm = seal(key, MessageType.CONSENSUS, "another-swarm", 1, 1, {}).encode()
    while True:
        base = rng.choice(corpus)
        choice = rng.randrange(9)
        if choice == 0:
            yield "truncated", base[:rng.randrange(len(base))]
        elif choice == 1:
            flipped = bytearray(base)
            for _ in range(rng.randint(1, 4)):
                flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
            yield "bit_flip", bytes(flipped)
        elif choice == 2:
            yield "wrong_type", base[:5] + bytes([rng.choice((0, 6, 7, 200, 255))]) + base[6:]
        elif choice == 3:
            yield "garbage", rng.randbytes(rng.randrange(1, 300))
        elif choice == 4:
            yield "trailing", base + rng.randbytes(rng.randint(1, 16))
        elif choice == 5:
            yield "non_member", rng.choice(stranger_msgs)
        elif choice == 6:
            yield "replay", base
        elif choice == 7:
            yield "wrong_swarm", wrong_swarm
        else:
            length = struct.pack("<I", rng.choice((0xFFFFFFFF, 1 << 30, len(base))))
            yield "bad_length", base[:70] + length + base[74:]


# ----------------------------------------------------------------------------------------------- client
async def _fuzz(key: NodeKey, target: str, bodies: list[bytes], pushes: list[bytes], killers: list[bytes]) -> dict:
    kp = libp2p_key_pair(key)
    host = new_host(key_pair=kp, muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
                    sec_opt={TProtocol(NOISE_PROTOCOL_ID):
                             NoiseTransport(kp, noise_privkey=create_x25519_key_pair().private_key)})
    sent = Counter()
    async with host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        info = info_from_p2p_addr(multiaddr.Multiaddr(target))
        with trio.fail_after(10):
            await host.connect(info)
        stream = await host.new_stream(info.peer_id, [TProtocol(CONTROL_PROTOCOL)])
        for start in range(0, len(bodies), BATCH):  # many frames per write: one yamux write per batch
            chunk = bodies[start:start + BATCH]
            await stream.write(b"".join(encode_control(KIND_DATA, body) for body in chunk))
            sent["control"] += len(chunk)
        await trio.sleep(1)
        await stream.reset()
        for data in pushes:  # the bulk channel: one stream per push, as the protocol has it
            with trio.move_on_after(3):
                try:  # once banned, the node resets our streams before it reads a byte: negotiation fails
                    push = await host.new_stream(info.peer_id, [bulk.PUSH_PROTOCOL])
                    await push.write(data)
                    await push.close()
                    await push.read(1)
                except Exception:  # noqa: BLE001 - a reset is a fine answer to garbage
                    pass
            sent["push"] += 1
        for data in killers:  # frames that break the control framing: each ends its stream
            with trio.move_on_after(3):
                try:
                    killer = await host.new_stream(info.peer_id, [TProtocol(CONTROL_PROTOCOL)])
                    await killer.write(data)
                    await killer.read(1)
                except Exception:  # noqa: BLE001
                    pass
            sent["frame"] += 1
    return dict(sent)


def bulk_garbage(rng: random.Random, corpus: list[bytes], n: int) -> list[bytes]:
    import hashlib
    out = []
    for i in range(n):
        body = rng.choice(corpus)
        kind = i % 4
        if kind == 0:      # right digest, mutated envelope: reaches the gradient verifier
            body = body[:-1] + bytes([body[-1] ^ 1])
            out.append(bulk_header(len(body), hashlib.sha256(body).digest()) + body)
        elif kind == 1:    # digest mismatch
            out.append(bulk_header(len(body), bytes(32)) + body)
        elif kind == 2:    # bad magic
            out.append(b"XXXX" + bulk_header(len(body), bytes(32))[4:] + body)
        else:              # announces more than the limit
            out.append(bulk_header(1 << 40, bytes(32)))
    return out


def frame_killers(n: int) -> list[bytes]:
    return [CONTROL_HEADER.pack(8, 9) + bytes(8) if i % 2 else CONTROL_HEADER.pack(0x7FFFFFFF, KIND_DATA)
            for i in range(n)]


# ----------------------------------------------------------------------------------------------- test
def replays_from_store(data_dir: Path, limit: int = 8) -> list[bytes]:
    """Old valid gradients signed by honest nodes, read from a node's store (payload files named by digest)."""
    db = sqlite3.connect(f"file:{data_dir / 'node.sqlite'}?mode=ro", uri=True)
    try:
        digests = [bytes(r[0]) for r in db.execute("select digest from payloads order by round limit ?", (limit,))]
    finally:
        db.close()
    rows = [payload_file(data_dir, d).read_bytes() for d in digests]
    assert rows, "no stored gradients to replay"
    return rows


def rejected_by(view: list[dict], name: str) -> Counter:
    return Counter(next(row for row in view if row["name"] == name)["rejected_by_reason"])


def test_live_node_survives_100k_fuzzed_messages(tmp_path):
    specs = init_cluster(tmp_path, ClusterOptions(nodes=4, local_steps=3))
    by_name = {s.name: s for s in specs}
    cluster = Cluster(tmp_path, specs)
    for name in HONEST:
        cluster.start_node(by_name[name])
    target = by_name["node0"]
    try:
        def rounds():
            return {n: (get_json(f"{by_name[n].api}/status", 3.0) or {}).get("round", -1) for n in HONEST}
        deadline = time.monotonic() + 180
        while min(rounds().values()) < 3:
            assert time.monotonic() < deadline, f"no progress before fuzzing: {rounds()}"
            time.sleep(1)

        key = load_key(tmp_path / "keys" / f"{FUZZER}.pem")
        swarm_id = "local"
        corpus = valid_corpus(key, swarm_id, replays_from_store(tmp_path / "data" / "node1"))
        rng = random.Random(8)
        generator = mutations(rng, corpus, key, swarm_id)
        pairs = [next(generator) for _ in range(CONTROL_MESSAGES)]
        categories = Counter(category for category, _ in pairs)
        before_round = rounds()["node0"]
        before = rejected_by(get_json(f"{target.api}/peers", 5.0), FUZZER)

        started = time.monotonic()
        sent = trio.run(_fuzz, key, target.multiaddr, [body for _, body in pairs],
                        bulk_garbage(rng, corpus, PUSHES), frame_killers(FRAME_KILLERS))
        fuzz_seconds = time.monotonic() - started
        assert sent == {"control": CONTROL_MESSAGES, "push": PUSHES, "frame": FRAME_KILLERS}
        assert min(categories.values()) > CONTROL_MESSAGES / 20, categories

        # The swarm kept committing through the fuzzing, and keeps committing after it.
        during = rounds()
        assert during["node0"] > before_round, (before_round, during, fuzz_seconds)
        deadline = time.monotonic() + 90
        while min(rounds().values()) < during["node0"] + 3:
            assert time.monotonic() < deadline, f"no progress after fuzzing: {rounds()}"
            time.sleep(1)

        # One chain: state changed only through certified entries, identically on every honest node.
        upto = min(rounds().values())
        chains = {n: [(r["round"], r["digest"], r["state_hash"])
                      for r in get_json(f"{by_name[n].api}/log?from=1&limit={upto}", 5.0)] for n in HONEST}
        assert chains["node0"] == chains["node1"] == chains["node2"]
        assert [r for r, _, _ in chains["node0"]] == list(range(1, upto + 1))
        for name in HONEST:
            status = get_json(f"{by_name[name].api}/status", 3.0)
            assert status is not None and not status["diverged"]

        # Accounting: what node0 rejected from the fuzzer, by reason, and the ban it earned.
        peers = get_json(f"{target.api}/peers", 5.0)
        fuzzer_row = next(row for row in peers if row["name"] == FUZZER)
        after = rejected_by(peers, FUZZER)
        counted = after - before
        # It was banned: messages were dropped unread (the ban itself may have run out by now: BAN_SECONDS).
        assert counted["banned"] > 0, (counted, fuzzer_row)
        assert sum(counted.values()) >= 5, counted  # it took several rejections to exhaust the local score
        known = {"truncated", "bad_magic", "bad_version", "bad_type", "bad_tag", "bad_count", "bad_fields",
                 "bad_utf8", "bad_signature", "non_canonical", "non_finite", "too_deep", "too_large",
                 "trailing_bytes", "wrong_swarm", "wrong_type", "relayed", "unknown_peer", "banned", "flooding",
                 "malformed_frame", "bad_sig"}
        unexplained = {r for r in counted if r not in known}
        assert not unexplained, counted
        for row in peers:  # honest peers were not punished for the fuzzer's bytes
            if row["name"] in HONEST and not row["self"]:
                assert not row["banned"] and row["rejected"] == 0, row
        total = sum(sent.values())
        if "banned" not in after:
            pytest.xfail(f"node counts no drops while banned (hook requested): {sum(counted.values())} of "
                         f"{total} counted, by reason {dict(counted)}")
        assert 0.99 * total <= sum(counted.values()) <= total, (counted, sent)
    finally:
        cluster.stop()

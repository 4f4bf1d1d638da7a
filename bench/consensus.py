"""Cost of the consensus core per committed round, with real Ed25519 signatures.

    python -m bench.consensus [--rounds 30] [--nodes 4 7 10]

Runs the deterministic simulator's fault-free network (so the numbers are the protocol's own cost, not
retransmissions) with every node signing and verifying through ``cryptography``'s Ed25519. Counts only the core's
work: messages it sends, signatures it makes and verifies (verification results are memoized per node, so a
signature seen in a message and again in a certificate is checked once), and CPU time inside ``Replica.step``.
The first rounds (election included) are a warm-up and are not counted.
"""
from __future__ import annotations

import argparse
import hashlib
import heapq
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consensus.sim.world import FaultPlan, World


class Ed25519Ring:
    """Real Ed25519 keys for every member (derived from the member id, for repeatability)."""

    def __init__(self, members):
        self._private = {m: Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"bench/{m}".encode()).digest())
                         for m in members}
        self._public = {m: k.public_key() for m, k in self._private.items()}
        self.signed = 0

    def signer(self, node_id: str) -> "Ed25519Crypto":
        return Ed25519Crypto(node_id, self)


class Ed25519Crypto:
    def __init__(self, node_id: str, ring: Ed25519Ring):
        self.node_id, self.ring = node_id, ring

    def sign(self, payload: bytes) -> bytes:
        self.ring.signed += 1
        return self.ring._private[self.node_id].sign(payload)

    def verify(self, sender_id: str, payload: bytes, sig: bytes) -> bool:
        key = self.ring._public.get(sender_id)
        if key is None:
            return False
        try:
            key.verify(sig, payload)
            return True
        except InvalidSignature:
            return False


def measure(n: int, rounds: int, warmup: int = 3, seed: int = 1) -> dict:
    world = World(seed, n, FaultPlan(gst=0.0))
    ring = Ed25519Ring(world.members)
    world.keys = ring
    for m in world.members:
        world.add_node(m)
    cpu = [0.0]
    original_feed = world.feed

    def timed_feed(node, event, source=None):
        replica = node.replica
        step = replica.step

        def timed_step(now, ev):
            t0 = time.process_time()
            try:
                return step(now, ev)
            finally:
                cpu[0] += time.process_time() - t0
        replica.step = timed_step
        try:
            original_feed(node, event, source=source)
        finally:
            del replica.step

    world.feed = timed_feed

    def committed():
        return min(len(node.store.chain) for node in world.nodes)

    def snapshot():
        return (sum(nd.replica.messages_sent for nd in world.nodes), ring.signed,
                sum(nd.replica.verify.verifications for nd in world.nodes), cpu[0], world.now)

    def run_until(target):
        while world._queue and committed() < target:
            at, _, item = heapq.heappop(world._queue)
            world.now = at
            world._dispatch(*item)

    run_until(warmup)
    before = snapshot()
    run_until(warmup + rounds)
    after = snapshot()
    msgs, sigs, verifs, cpu_s, sim_s = (a - b for a, b in zip(after, before))
    return {"n": n, "rounds": rounds, "messages": msgs / rounds, "signed": sigs / rounds,
            "verified": verifs / rounds, "cpu_ms": 1000 * cpu_s / rounds, "cpu_ms_per_node": 1000 * cpu_s / rounds / n}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.consensus", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--nodes", type=int, nargs="+", default=[4, 7, 10])
    args = p.parse_args(argv)
    print("Consensus core cost per committed round (Ed25519 via cryptography, fault-free network, "
          f"{args.rounds} rounds after warm-up)")
    print("| n | f | messages sent | signatures made | signatures verified | core CPU ms (all nodes) | per node |")
    print("|---|---|---|---|---|---|---|")
    for n in args.nodes:
        r = measure(n, args.rounds)
        print(f"| {n} | {(n - 1) // 3} | {r['messages']:.1f} | {r['signed']:.1f} | {r['verified']:.1f} | "
              f"{r['cpu_ms']:.2f} | {r['cpu_ms_per_node']:.2f} |")


if __name__ == "__main__":
    main()

"""Baseline peer for bench/round.py: the same training, compression, signing and libp2p transport as a node, but
no consensus and no robust filtering: wait for every peer's gradient of the round, take the plain mean, step.

Run by bench/round.py as one process per peer; prints one JSON line with the wall time of each round.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time

import torch

from crypto.keys import load_key
from swarm.config import TransportConfig
from swarm.round.compression import Compressor, decode
from swarm.round.gradient import make_gradient, verify_gradient
from swarm.training.trainer import Trainer
from swarm.transport.base import Callbacks
from swarm.transport.libp2p_host import Libp2pTransport

PARENT = b"\0" * 32


async def main(args) -> None:
    key = load_key(args.key)
    members = args.members.split(",")
    trainer = Trainer(args.model, "mnist5k", args.index, len(members), 0, local_steps=args.local_steps, lr=0.2)
    compressor = Compressor(args.compression, k=args.ratio)
    params = trainer.initial_parameters()
    dim = params.numel()
    received: dict[int, dict[str, torch.Tensor]] = {}
    arrived = asyncio.Event()

    async def on_payload(peer, digest, data):
        gradient = verify_gradient(data, swarm_id="bench", members=set(members), max_size=64 << 20,
                                   decode_payload=lambda p: decode(p, dim, 64 << 20), digest=digest)
        received.setdefault(gradient.round, {})[gradient.sender] = gradient.vector
        arrived.set()

    transport = Libp2pTransport(key, args.listen, args.bootstrap.split(",") if args.bootstrap else [], members,
                                TransportConfig(), Callbacks(on_payload=on_payload))
    await transport.start()
    while sum(info.connected for info in transport.peers().values()) < len(members) - 1:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    loop = asyncio.get_running_loop()
    times = []
    for round_ in range(1, args.rounds + 1):
        started = time.monotonic()
        update = await loop.run_in_executor(None, trainer.local_update, params)
        raw = make_gradient(key, "bench", round_, PARENT, compressor.compress(update))
        mine = verify_gradient(raw, swarm_id="bench", members=set(members), max_size=64 << 20,
                               decode_payload=lambda p: decode(p, dim, 64 << 20))
        received.setdefault(round_, {})[key.peer_id] = mine.vector
        await transport.push(raw)
        while len(received.get(round_, {})) < len(members):
            arrived.clear()
            await arrived.wait()
        stack = torch.stack([received[round_][p] for p in sorted(received[round_])])
        params = params - stack.mean(0)
        del received[round_]
        times.append(time.monotonic() - started)
    await asyncio.sleep(1.0)  # let the slowest peer finish its last round before we leave
    await transport.stop()
    print(json.dumps({"peer": key.peer_id, "round_seconds": times}), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    for name in ("key", "listen", "bootstrap", "members", "model", "compression"):
        parser.add_argument(f"--{name}", required=name not in ("bootstrap",), default="")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--local-steps", type=int, default=10)
    parser.add_argument("--ratio", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (as the swarm node's)")
    arguments = parser.parse_args()
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    asyncio.run(main(arguments))

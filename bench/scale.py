"""Scale: what one node spends on one round as the model (d) and the swarm (n) grow, beside its floor.

Each cell runs in its own process (so the peak RSS is the cell's): n members' gradients, fp16-compressed and
signed as real members sign them, go through the receiving node's real path: verify every envelope (signature,
decode, finiteness), aggregate with the default rule through ``apply`` and hash the new state. Measured: CPU
seconds of that path (one torch thread), the peak RSS it adds over what the node held before (the n envelopes,
the state), and the bytes a member receives and sends (each member pushes its envelope once to every other member;
the sizes are the real envelopes'). Memory is the peak RSS less the interpreter's and torch's own (measured
before the round's data exists). Each beside a floor:
- bytes: (n-1) * P in and out, P the envelope size; the push protocol meets it by construction, so the column says
  what the consensus messages and headers add (not measured here) is left out;
- memory: the n envelopes plus one float32 row per member (the rows the rule must see) plus the old and new
  state (parameters and momentum), the least a node that aggregates all rows at once can hold;
- CPU: one pass over that memory at this machine's measured copy bandwidth, plus SHA-256 over the envelopes and
  the state at its measured rate (signature checks are microseconds).
Cells the memory formula of the current code puts above the machine's memory are not run; the table says so.

    python -m bench scale [--dims 1e6 1e7 1e8] [--sizes 4 16 64]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

PART = "scale"
HEADING = "## Scale: one node's round from 1M to 100M parameters and 4 to 64 members"
HEADROOM = 0.7  # a cell runs only when the current code's formula needs at most this share of the memory


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dims", type=float, nargs="+", default=None, help="model sizes (default 1e6 1e7 1e8)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="swarm sizes (default 4 16 64)")


def envelope_bytes(dim: int) -> int:
    """An fp16 envelope: 2 bytes a parameter plus the envelope's and codec's headers (a few hundred bytes)."""
    return 2 * dim + 512


def current_code_bytes(dim: int, n: int) -> int:
    """Peak memory of the path as the code stands (README "Memory per node"): the n envelopes, the n x d float32
    stack the rule reads (each row decoded straight into it), the old and the new state at 16 bytes a parameter
    each (parameters and momentum, and the serialized body kept beside them for hashing and serving), and the
    float64 aggregate."""
    return n * envelope_bytes(dim) + n * 4 * dim + 40 * dim


def floor_bytes(dim: int, n: int) -> int:
    """The least a node holding every row at once needs: envelopes, one float32 row each, old and new state."""
    return n * envelope_bytes(dim) + n * 4 * dim + 16 * dim


def _rss_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    """Linux: writing 5 to clear_refs resets VmHWM to the current RSS, so the next peak is this section's."""
    Path("/proc/self/clear_refs").write_text("5")


def measure_bandwidth(megabytes: int = 512) -> tuple[float, float]:
    """(copy bytes/s, SHA-256 bytes/s) on this machine, one thread: the floors' unit costs."""
    import torch

    source = torch.ones(megabytes << 18, dtype=torch.float32)  # megabytes MiB
    target = torch.empty_like(source)
    started = time.process_time()
    for _ in range(3):
        target.copy_(source)
    copy_rate = 3 * 2 * source.numel() * 4 / max(time.process_time() - started, 1e-9)  # read + write
    block = bytes(64 << 20)
    started = time.process_time()
    hashlib.sha256(block).digest()
    sha_rate = len(block) / max(time.process_time() - started, 1e-9)
    return copy_rate, sha_rate


def run_cell(dim: int, n: int) -> dict:
    """One cell, in this process: build the n envelopes, then measure the receiving node's path."""
    import torch

    from crypto.keys import NodeKey
    from swarm.ledger.apply import RoundRules, apply
    from swarm.ops.cluster import DEFAULT_RULE, RULE_OPTIONS
    from swarm.ledger.state import genesis_state
    from swarm.round import compression
    from swarm.round.gradient import make_gradient, verify_gradient

    torch.set_num_threads(1)
    base = _rss_bytes("VmRSS")  # the interpreter and torch, before anything of the round exists
    keys = [NodeKey.from_seed(bytes([i % 256, i // 256]) * 16) for i in range(n)]
    members = [k.peer_id for k in keys]
    state = genesis_state(torch.zeros(dim), members, b"\0" * 32)
    generator = torch.Generator().manual_seed(dim + n)
    envelopes = []
    for key in keys:
        vector = torch.randn(dim, generator=generator) * 1e-3
        envelopes.append(make_gradient(key, "scale", 1, state.hash, compression.encode(vector, "fp16")))
        del vector
    max_size = max(len(e) for e in envelopes) + 1024
    held = _rss_bytes("VmRSS")
    _reset_peak()
    cpu = time.process_time()
    wall = time.monotonic()
    gradients = [verify_gradient(raw, swarm_id="scale", members=set(members), max_size=max_size,
                                 decode_payload=lambda p: compression.decode(p, dim, max_size),
                                 round=1, parent=state.hash) for raw in envelopes]
    applied = apply(state, gradients, RoundRules(f=(n - 1) // 3, rule=DEFAULT_RULE,
                                                 options=dict(RULE_OPTIONS.get(DEFAULT_RULE, {}))))
    state_hash = applied.state.hash
    cpu = time.process_time() - cpu
    wall = time.monotonic() - wall
    peak = _rss_bytes("VmHWM")
    return {"dim": dim, "n": n, "cpu_s": cpu, "wall_s": wall, "base": base, "held": held, "peak": peak,
            "round_bytes": peak - base, "envelope": len(envelopes[0]), "hash": state_hash.hex()[:12]}


def _cell_in_subprocess(dim: int, n: int) -> dict:
    done = subprocess.run([sys.executable, "-m", "bench.scale", "--cell", str(dim), str(n)], capture_output=True,
                          text=True, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"cell d={dim} n={n} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _memory_total() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _mb(value: float) -> str:
    return f"{value / 1e6:,.0f}"


def run(args) -> str:
    from bench.report import rule_text, table
    from swarm.ops.cluster import DEFAULT_RULE, RULE_OPTIONS

    dims = [int(d) for d in (args.dims or ([1e6, 1e7] if args.quick else [1e6, 1e7, 1e8]))]
    sizes = args.sizes or ([4, 16] if args.quick else [4, 16, 64])
    copy_rate, sha_rate = measure_bandwidth()
    rows, skipped = [], []
    for dim in dims:
        for n in sizes:
            need = current_code_bytes(dim, n)
            if need > HEADROOM * _memory_total():
                skipped.append(f"d = {dim:,}, n = {n}: the current code needs about {need / 1e9:.0f} GB")
                continue
            print(f"  scale d={dim} n={n} ...", file=sys.stderr, flush=True)
            cell = _cell_in_subprocess(dim, n)
            envelope = cell["envelope"]
            floor_mem = floor_bytes(dim, n)
            floor_cpu = floor_mem / copy_rate + (n * envelope + 16 * dim) / sha_rate
            rows.append([f"{dim:,}", n, f"{cell['cpu_s']:.2f}", f"{floor_cpu:.2f}", f"{cell['cpu_s'] / floor_cpu:.1f}x",
                         _mb(cell["round_bytes"]), _mb(floor_mem), f"{cell['round_bytes'] / floor_mem:.1f}x",
                         _mb(current_code_bytes(dim, n)), _mb((n - 1) * envelope), _mb((n - 1) * envelope)])
    body = [
        (f"Measured copy bandwidth {copy_rate / 1e9:.1f} GB/s (read + write), SHA-256 {sha_rate / 1e9:.2f} GB/s, "
         f"one thread; memory {_memory_total() / 2**30:.0f} GiB. fp16 envelopes, the genesis default rule "
         f"({rule_text(DEFAULT_RULE, RULE_OPTIONS.get(DEFAULT_RULE, {}))}), f = (n-1)//3."),
        "",
        table(["d", "n", "CPU s", "CPU floor s", "CPU / floor", "memory MB", "floor MB", "memory / floor",
               "formula MB", "bytes in MB", "bytes out MB"], rows),
    ]
    if skipped:
        body += ["", "Not run (over " + f"{HEADROOM:.0%} of this machine's memory by the formula): " + "; ".join(skipped) + "."]
    return "\n".join(body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale")
    parser.add_argument("--cell", type=int, nargs=2, metavar=("DIM", "N"), required=True)
    args = parser.parse_args(argv)
    print(json.dumps(run_cell(*args.cell)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

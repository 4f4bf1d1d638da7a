"""A large model for real (issue 17): 4 node processes on 127.0.0.1 train a GPT of at least 25M parameters (the
``lm`` task sized up), commit rounds, then one member is killed with kill -9, the others go on, and the member
comes back through a chunked, verified snapshot fetched from its peers.

Why the snapshot path is taken: the nodes keep one snapshot file and one round of payload files
(``consensus.snapshot_every: 2, keep_snapshots: 1, keep_payload_rounds: 1``), so by the time the victim is back its
peers have pruned the gradient payloads of the rounds it missed. This is the case of a member that was down longer
than its peers' retention (a long outage, a machine being repaired): it cannot replay the missed rounds and has to
fetch the certified state. The victim's own data dir is kept (restart replays its own rows first).

Measured: seconds per round and gradient bytes pushed per node and round (a survivor's ``swarm_bytes_out``) before
the kill; the victim's time from restart to the committed head with the same state hash as every other node; the
snapshot's size, fetch time and rate (the victim's log line "... bytes fetched and verified in S s"); each node's
peak RSS (VmHWM) at the end.

    python -m bench large [--layers 8] [--width 512] [--rounds-before 3] [--rounds-down 4]
"""
from __future__ import annotations

import argparse
import re
import signal
import tempfile
import time
from pathlib import Path

from bench.report import table
from swarm.ops.cluster import Cluster, ClusterOptions, init_cluster
from swarm.ops.http_json import get_json

PART = "large"
HEADING = "## A large model for real: 25M+ parameters, kill -9 and back by a chunked snapshot"
VICTIM = "node3"
MIN_PARAMETERS = 25_000_000
FETCHED = re.compile(r"snapshot of round (\d+): (\d+) bytes fetched and verified in ([\d.]+) s "
                     r"\((\d+) resumed from disk\) from (\d+) peer")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--context", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--local-steps", type=int, default=2)
    parser.add_argument("--rounds-before", type=int, default=2, help="committed rounds before the kill")
    parser.add_argument("--rounds-down", type=int, default=3, help="rounds the others commit while it is down")
    parser.add_argument("--peer-timeout", type=float, default=20.0, help="transport.peer_timeout_s")
    parser.add_argument("--collection-timeout", type=float, default=20.0, help="consensus.collection_timeout_s")
    parser.add_argument("--election-timeout", type=float, default=10.0, help="consensus.election_timeout_s")
    parser.add_argument("--timeout", type=float, default=840.0, help="seconds for the whole run")


def task_options(args) -> dict:
    return {"layers": args.layers, "width": args.width, "heads": args.heads, "context": args.context,
            "corpus_bytes": 1_000_000, "validation_bytes": 4_096}


def parameter_count(options: dict) -> int:
    # torch is imported only when the part runs
    from swarm.training.tasks.lm import LanguageModelTask
    return sum(p.numel() for p in LanguageModelTask(options).build_model().parameters())


def cluster_options(args) -> ClusterOptions:
    # Timeouts for shared cores: a 25M-parameter round (50 MB per update, three 100 MB hashes) on a loaded CPU
    # keeps a node's event loop busy for seconds, longer than the defaults (2 s peer silence, 3 s collection).
    # No evaluation: a validation pass over a 25M-parameter model costs more CPU than the round itself here.
    overrides = {"training": {"device": "cpu", "eval_every": 0}, "torch_threads": 1,
                 "transport": {"peer_timeout_s": args.peer_timeout},
                 "consensus": {"snapshot_every": 2, "keep_snapshots": 1, "keep_payload_rounds": 1,
                               "collection_timeout_s": args.collection_timeout,
                               "election_timeout_s": args.election_timeout, "heartbeat_s": 1.0}}
    return ClusterOptions(nodes=4, task="lm", dataset="stdlib", task_options=task_options(args), lr=None,
                          batch_size=args.batch_size, local_steps=args.local_steps, compression="fp16",
                          node_overrides=overrides)


def _status(spec) -> dict | None:
    return get_json(f"{spec.api}/status", 2.0)


def _bytes_out(spec) -> int | None:
    import urllib.request
    try:
        text = urllib.request.urlopen(f"{spec.api}/metrics", timeout=2.0).read().decode()
    except OSError:
        return None
    match = re.search(r"^swarm_bytes_out(?:\{\})? ([0-9.e+]+)$", text, re.MULTILINE)
    return int(float(match.group(1))) if match else None


def _peak_rss_mb(pid: int) -> float | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"VmHWM:\s+(\d+) kB", text)
    return int(match.group(1)) / 1024 if match else None


def run_cluster(args, folder: Path, log=print) -> dict:
    """The whole scenario in ``folder``; every node process is stopped before it returns or raises."""
    specs = init_cluster(folder, cluster_options(args))
    cluster = Cluster(folder, specs)
    victim = next(s for s in specs if s.name == VICTIM)
    others = [s for s in specs if s is not victim]
    deadline = time.monotonic() + args.timeout
    result: dict = {}

    def wait(what: str, done) -> dict:
        while time.monotonic() < deadline:
            statuses = {s.name: _status(s) for s in specs}
            value = done(statuses)
            if value:
                return statuses
            dead = [n for n, p in cluster.procs.items() if p.poll() is not None and n != VICTIM]
            if dead:
                raise RuntimeError(f"{dead} exited; logs in {folder / 'logs'}")
            time.sleep(0.5)
        raise RuntimeError(f"timed out waiting for {what}; logs in {folder / 'logs'}")

    def head(statuses: dict, names) -> int:
        return min((statuses[n] or {}).get("round", -1) for n in names)

    try:
        cluster.start()
        names = [s.name for s in specs]
        wait("the first commit", lambda st: head(st, names) >= 1)
        first = {"t": time.monotonic(), "round": head(wait("", lambda st: True), names),
                 "bytes": _bytes_out(others[0])}
        log(f"round {first['round']} committed by every node")
        statuses = wait(f"round {first['round'] + args.rounds_before}",
                        lambda st: head(st, names) >= first["round"] + args.rounds_before)
        second = {"t": time.monotonic(), "round": head(statuses, names), "bytes": _bytes_out(others[0])}
        result["s_per_round"] = (second["t"] - first["t"]) / max(1, second["round"] - first["round"])
        if first["bytes"] is not None and second["bytes"] is not None:
            result["bytes_per_round"] = (second["bytes"] - first["bytes"]) / max(1, second["round"] - first["round"])
        result["killed_at"] = statuses[VICTIM]["round"]
        result["peak_rss_before_kill_mb"] = _peak_rss_mb(cluster.procs[VICTIM].pid)
        cluster.kill_node(VICTIM, signal.SIGKILL)
        log(f"{VICTIM} killed with SIGKILL at round {result['killed_at']}")
        others_names = [s.name for s in others]
        statuses = wait("the others to go on", lambda st: head(st, others_names) >= result["killed_at"] +
                        args.rounds_down)
        result["restarted_behind"] = head(statuses, others_names)
        restarted = time.monotonic()
        cluster.start_node(victim)
        log(f"{VICTIM} restarted; the others are at round {result['restarted_behind']}")

        def caught_up(st: dict) -> bool:
            mine = st.get(VICTIM)
            if not mine or any(st[n] is None for n in others_names):
                return False
            return (mine["round"] >= result["restarted_behind"] and
                    any(st[n]["round"] == mine["round"] and st[n]["state_hash"] == mine["state_hash"]
                        for n in others_names))
        statuses = wait(f"{VICTIM} to catch up", caught_up)
        result["catch_up_s"] = time.monotonic() - restarted
        result["back_at"] = statuses[VICTIM]["round"]
        result["transfer_view"] = statuses[VICTIM].get("snapshot_transfer")
        log(f"{VICTIM} back at round {result['back_at']} after {result['catch_up_s']:.1f} s")
        # every node on the same round: compare all four state hashes there
        statuses = wait("every node on one round", lambda st: all(st[n] for n in names) and
                        len({st[n]["round"] for n in names}) == 1)
        result["final_round"] = statuses[names[0]]["round"]
        result["hashes"] = {n: statuses[n]["state_hash"] for n in names}
        result["peak_rss_mb"] = {n: _peak_rss_mb(p.pid) for n, p in cluster.procs.items()}
    finally:
        cluster.stop()
    text = (folder / "logs" / f"{VICTIM}.log").read_text(errors="replace")
    fetched = FETCHED.findall(text)
    result["fetched"] = [tuple(float(x) if "." in x else int(x) for x in f) for f in fetched]
    result["resynced"] = text.count("resynchronised from the certified snapshot")
    return result


def run(args) -> str:
    options = task_options(args)
    d = parameter_count(options)
    if d < MIN_PARAMETERS:
        raise SystemExit(f"the model has {d} parameters, fewer than {MIN_PARAMETERS}: raise --layers/--width")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-large-") as tmp:
        r = run_cluster(args, Path(tmp), log=lambda line: print(f"  [{time.monotonic() - started:6.1f} s] {line}",
                                                               flush=True))
    total_s = time.monotonic() - started
    hashes = set(r["hashes"].values())
    if not r["fetched"]:
        raise SystemExit(f"{VICTIM} came back without a chunked snapshot transfer: {r}")
    snap_round, size, seconds, resumed, peers = r["fetched"][-1]
    rss = r["peak_rss_mb"]
    rows = [
        ["parameters", f"{d:,}"],
        ["rounds committed (all nodes at the end)", r["final_round"]],
        ["seconds per round (4 nodes, before the kill)", f"{r['s_per_round']:.1f}"],
        ["gradient bytes pushed per node and round (fp16)",
         f"{r['bytes_per_round'] / 1e6:.1f} MB" if "bytes_per_round" in r else "not read (/metrics)"],
        [f"{VICTIM} killed (kill -9) at round / restarted when the others were at",
         f"{r['killed_at']} / {r['restarted_behind']}"],
        ["snapshot fetched (round, size)", f"round {snap_round}, {size / 1e6:.1f} MB"],
        ["snapshot transfer time, rate, peers",
         (f"{seconds:.1f} s, {size / 1e6 / max(seconds, 1e-9):.1f} MB/s, "
          f"{peers} peer(s), {resumed} bytes resumed from disk")],
        [f"{VICTIM} restart -> at the head with an equal state hash", f"{r['catch_up_s']:.1f} s (round {r['back_at']})"],
        [f"state hashes of the 4 nodes at round {r['final_round']}",
         ("all equal: " if len(hashes) == 1 else "DIFFERENT: ") + ", ".join(sorted(h[:12] for h in hashes))],
        ["peak RSS per node",
         ", ".join(f"{n} {v:.0f} MB" for n, v in sorted(rss.items()) if v is not None)
         + f" ({VICTIM}: since its restart)"],
        ["whole run", f"{total_s:.0f} s"],
    ]
    body = [(
        f"Four node processes on 127.0.0.1 (libp2p, PBFT commit, the default rule, fp16 updates, `torch_threads: 1`, "
        f"under `nice -n 5` on 2 shared cores) train the `lm` task sized up: {args.layers} layers, width "
        f"{args.width}, {args.heads} heads, context {args.context} ({d / 1e6:.1f}M parameters), "
        f"{args.local_steps} inner AdamW steps of batch {args.batch_size} per round, no evaluation. Retention "
        f"`consensus.snapshot_every: 2, keep_snapshots: 1, keep_payload_rounds: 1`: while {VICTIM} is down its "
        f"peers prune the payloads of the rounds it misses, as after an outage longer than their retention, so "
        f"after its restart (its own data dir kept: it replays its own rows first) it cannot replay them and must "
        f"fetch the certified state (parameters and momentum) in chunks, verified against the hash the commit "
        f"certificate signs. Timeouts for loaded shared cores: `transport.peer_timeout_s: {args.peer_timeout:g}`, "
        f"`consensus.collection_timeout_s: {args.collection_timeout:g}, election_timeout_s: {args.election_timeout:g}, "
        f"heartbeat_s: 1`. Snapshot numbers from {VICTIM}'s log; hashes from every node's `/status`."),
        "",
        table(["", "value"], rows),
    ]
    return "\n".join(body)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    add_arguments(parser)
    print(run(parser.parse_args()))

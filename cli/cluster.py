"""`swarm cluster up|down|init`: a local training swarm of node processes on 127.0.0.1, no Docker needed."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import yaml
from rich.console import Console

from cli.errors import UserFacingError
from swarm.config import DATASETS
from swarm.ops.cluster import (
    DEFAULT_RULE,
    PIDS_FILE,
    Cluster,
    ClusterOptions,
    init_cluster,
    stop_background_cluster,
)
from swarm.ops.http_json import get_json


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("cluster", help="run a local cluster of nodes")
    actions = parser.add_subparsers(dest="cluster_command", metavar="ACTION", required=True)
    for name, help_text in (("up", "create what is missing and run the nodes"),
                            ("init", "only create keys, genesis and configs")):
        sub = actions.add_parser(name, help=help_text)
        sub.add_argument("--nodes", type=int, default=4, help="number of nodes (default 4)")
        sub.add_argument("--dir", required=True, help="cluster folder (keys, genesis, configs, data, logs)")
        sub.add_argument("--base-port", type=int, help="listen on P..P+N-1, API on P+100..; default: free ports")
        sub.add_argument("--rule", default=DEFAULT_RULE,
                         help=f"aggregation rule written to a new genesis, nnm+<rule> for nearest-neighbour "
                              f"mixing first (default {DEFAULT_RULE})")
        sub.add_argument("--dataset", default=None,
                         help="a built-in dataset or a user's module:function (default: the task's own: mnist5k, "
                              "or stdlib for --task lm)")
        sub.add_argument("--task", help="what a new genesis trains: lm (a small GPT on the standard library's "
                                        "sources, DiLoCo outer step) or a user's module:Class; default: MNIST "
                                        "classification")
        sub.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE",
                         help="a hyper-parameter written to a new genesis's model.options (repeatable)")
        sub.add_argument("--compression", default="fp16")
        sub.add_argument("--attack", action="append", default=[], metavar="NODE:PROFILE",
                         help="make NODE Byzantine with an attack profile, e.g. node3:sign_flip (repeatable)")
        sub.add_argument("--hosts", help="comma-separated IPv4 address or DNS name per node (containers: a name "
                                         "listens on 0.0.0.0 and is dialled as /dns4/); default 127.0.0.1 for all")
        sub.add_argument("--api-host", default="127.0.0.1",
                         help="API bind address; beyond loopback a token is written to DIR/api.token")
        sub.add_argument("--data-root", help="absolute folder for the nodes' data dirs (default DIR/data)")
        if name == "up":
            sub.add_argument("--rounds", type=int, help="exit after this many committed rounds")
            sub.add_argument("--json", action="store_true", help="print a JSON summary at the end")
            sub.add_argument("--timeout", type=float, default=1800.0, help="give up after this many seconds")
        sub.set_defaults(run=run_up if name == "up" else run_init)
    join = actions.add_parser("join", help="start one more local node (a key of its own) and add it as a member")
    join.add_argument("--dir", required=True, help="the running cluster's folder")
    join.add_argument("--name", help="the new node's name (default: the next free nodeN)")
    join.add_argument("--as", dest="sponsor", default="node0",
                      help="the member whose key signs the request to add it (default node0)")
    join.set_defaults(run=run_join)
    down = actions.add_parser("down", help="stop a cluster started in the background")
    down.add_argument("--dir", required=True)
    down.set_defaults(run=run_down)


def _options(args) -> ClusterOptions:
    if args.nodes < 1:
        raise UserFacingError("--nodes must be at least 1")
    attacks = {}
    for item in args.attack:
        node, sep, profile = item.partition(":")
        if not sep or not profile:
            raise UserFacingError(f"--attack expects NODE:PROFILE, got {item!r}")
        attacks[node] = profile
    hosts = [h.strip() for h in args.hosts.split(",")] if args.hosts else None
    if hosts is not None and len(hosts) != args.nodes:
        raise UserFacingError(f"--hosts names {len(hosts)} addresses for {args.nodes} nodes")
    if args.data_root and not args.data_root.startswith("/"):
        raise UserFacingError("--data-root must be an absolute path")
    task_options = {}
    for item in args.task_option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserFacingError(f"--task-option expects KEY=VALUE, got {item!r}")
        task_options[key] = yaml.safe_load(value)
    lm = args.task == "lm"
    dataset = args.dataset or ("stdlib" if lm else "mnist5k")
    if dataset not in DATASETS and ":" not in dataset:
        raise UserFacingError(f"--dataset: expected one of {', '.join(DATASETS)} or module:function, got {dataset!r}")
    return ClusterOptions(nodes=args.nodes, base_port=args.base_port, attacks=attacks, rule=args.rule,
                          dataset=dataset, compression=args.compression, task=args.task,
                          task_options=task_options, lr=None if args.task else 0.2, batch_size=16 if lm else 64,
                          max_rounds=getattr(args, "rounds", None), hosts=hosts, api_host=args.api_host,
                          data_root=args.data_root)


def run_init(args) -> int:
    specs = _init(args)
    console = Console()
    for spec in specs:
        console.print(f"{spec.name}  {spec.peer_id}  config {spec.config_path}", highlight=False)
    return 0


def _init(args):
    try:
        return init_cluster(Path(args.dir), _options(args))
    except (ValueError, OSError) as exc:
        raise UserFacingError(str(exc)) from None


def run_join(args) -> int:
    """Write the new node's config, start it in the background (its log in DIR/logs, its pid in the cluster's
    pid file for `swarm cluster down`), then ask the swarm to add it, signed by the --as member's key."""
    from cli.members import submit_change
    from swarm.ops.cluster import join_spec

    folder = Path(args.dir)
    sponsor = folder / f"{args.sponsor}.yaml"
    if not sponsor.exists():
        raise UserFacingError(f"no config {sponsor} for the member that signs the request (--as)")
    try:
        spec = join_spec(folder, args.name)
    except ValueError as exc:
        raise UserFacingError(str(exc)) from None
    cluster = Cluster(folder, [spec])
    pids_file = folder / PIDS_FILE
    known = json.loads(pids_file.read_text()) if pids_file.exists() else {"supervisor": os.getpid(), "nodes": {}}
    proc = cluster.start_node(spec)
    known["nodes"][spec.name] = proc.pid
    pids_file.write_text(json.dumps(known))
    submit_change(sponsor, "add", spec.peer_id, spec.name)
    Console().print(f"{spec.name}: API {spec.api}  ({spec.peer_id}); it catches up and contributes once added",
                    highlight=False, soft_wrap=True)
    return 0


def run_down(args) -> int:
    stopped = stop_background_cluster(Path(args.dir))
    Console().print(f"stopped {len(stopped)} processes" if stopped else "no cluster running in that folder")
    return 0


def run_up(args) -> int:
    specs = _init(args)
    console = Console(stderr=args.json)
    cluster = Cluster(Path(args.dir), specs)
    stopping = []

    def on_signal(signum, frame):
        stopping.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    cluster.start()
    for spec in specs:
        console.print(f"{spec.name}: API {spec.api}  ({spec.peer_id})", highlight=False, soft_wrap=True)
    started = time.monotonic()
    shown = 0
    summary = None
    try:
        while not stopping:
            time.sleep(0.5)
            statuses = {spec.name: get_json(f"{spec.api}/status", 1.0) for spec in specs}
            shown = _print_new_rounds(console, specs, shown)
            if args.rounds and _all_reached(statuses, args.rounds):
                summary = _summary(statuses)
                break
            if time.monotonic() - started > args.timeout:
                console.print(f"[red]timeout after {args.timeout:.0f} s[/]")
                summary = _summary(statuses)
                break
            dead = [name for name, proc in cluster.procs.items() if proc.poll() is not None]
            if dead and len(dead) == len(specs):
                console.print("[red]every node exited; see the logs folder[/]")
                break
    finally:
        cluster.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if args.json and summary is not None:
        print(json.dumps(summary, indent=2))
    return 0 if (summary is None or not args.rounds or _all_reached_summary(summary, args.rounds)) else 1


def _print_new_rounds(console: Console, specs, shown: int) -> int:
    """Print rounds committed since the last call, as the first reachable node logged them."""
    for spec in specs:
        status = get_json(f"{spec.api}/status", 1.0)
        if status is None:
            continue
        if status["round"] <= shown:
            return shown
        for row in get_json(f"{spec.api}/log?from={shown + 1}&limit=100", 2.0) or []:
            console.print(_round_line(row), highlight=False, soft_wrap=True)
            shown = row["round"]
        return shown
    return shown


def _round_line(row: dict) -> str:
    metrics = "" if row.get("accuracy") is None else f"loss {row['loss']:.4f}  acc {row['accuracy']:.4f}  "
    quarantined = f"  quarantined {','.join(row['quarantined'])}" if row.get("quarantined") else ""
    leader = f"leader {row['leader']}  " if row.get("leader") else ""
    return (f"round {row['round']:4d}  term {row['certificate_term']:3d}  {leader}{metrics}"
            f"state {row['state_hash'][:12]}  signers {len(row['certificate_signers'])}  "
            f"aggregated {','.join(row.get('aggregated') or row['included'])}{quarantined}")


def _all_reached(statuses: dict, rounds: int) -> bool:
    alive = [s for s in statuses.values() if s is not None]
    return bool(alive) and len(alive) == len(statuses) and all(s["round"] >= rounds for s in alive)


def _summary(statuses: dict) -> dict:
    return {"nodes": {name: None if s is None else {
        "round": s["round"], "state_hash": s["state_hash"], "accuracy": s["accuracy"], "loss": s["loss"],
        "term": s["term"], "leader": s["leader_name"], "peer_id": s["peer_id"]} for name, s in statuses.items()}}


def _all_reached_summary(summary: dict, rounds: int) -> bool:
    return all(node is not None and node["round"] >= rounds for node in summary["nodes"].values())

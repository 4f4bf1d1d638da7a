"""`swarm status`: one node's view of the swarm (round, term, leader, model quality, connected peers)."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from cli.api_client import add_api_arguments, node_json, print_json
from swarm.ops.api import status_view


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("status", help="show a running node's round, leader and peers")
    add_api_arguments(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    status = node_json(args, "/status", status_view)
    if args.json:
        print_json(status)
        return 0
    Console().print(render_status(status))
    return 0


def render_status(s: dict) -> Table:
    table = Table(title=f"{s['name']} ({s['peer_id'][:16]}...) in swarm {s['swarm_id']}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    leader = s.get("leader_name") or "none"
    rows = [
        ("round", str(s["round"])), ("term", str(s["term"])), ("role", s["role"]), ("leader", leader),
        ("members", f"n={s['n']}  f={s['f']}  quorum={s['quorum']}"), ("rule", s["rule"]),
        ("loss", _fmt(s.get("loss"))), ("accuracy", _fmt(s.get("accuracy"))),
        ("state hash", s["state_hash"][:16]), ("uptime", f"{s['uptime_s']:.0f} s"),
    ]
    privacy = s.get("privacy")
    if privacy:
        text = (f"epsilon {privacy['epsilon']:.3f} of {privacy['budget']:g} at delta {privacy['delta']:g}, "
                f"{privacy['rounds']} rounds")
        rows.append(("privacy", f"[red]{text}: budget reached, not contributing[/]" if privacy["exhausted"] else text))
    if s.get("diverged"):
        rows.append(("DIVERGED", f"[red]{s['diverged']}[/]"))
    connected = [p["name"] for p in s.get("peers", []) if p["connected"]]
    rows.append(("connected", ", ".join(connected) or "[yellow]no peers[/]"))
    for key, value in rows:
        table.add_row(key, value)
    return table


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"

"""`swarm top`: a live terminal view of one node or a local cluster (round, leader, quality, reputation, rejections).

Each frame polls every node's /status and /peers; a node that does not answer is shown as down rather than ending
the view, since nodes come and go while an operator watches. `--once` draws one frame and exits (scripts, tests).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from cli.api_client import fetch_json, url_from_data_dir
from cli.errors import UserFacingError

BAR_WIDTH = 20


@dataclass
class NodeView:
    label: str
    url: str
    status: dict | None = None
    peers: list | None = None
    error: str | None = None


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("top", help="live view of a node or a local cluster")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--api", action="append", metavar="URL", help="a node's API (repeatable)")
    where.add_argument("--dir", metavar="CLUSTER_DIR", help="a local cluster folder: every node in data/*/api.port")
    parser.add_argument("--token", help="bearer token for nodes bound beyond loopback")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between frames (default 1)")
    parser.add_argument("--once", action="store_true", help="draw one frame and exit")
    parser.set_defaults(run=run)


def run(args) -> int:
    targets = _targets(args)
    console = Console()
    if args.once:
        views = poll(targets, args.token)
        console.print(render(views))
        return 0 if any(v.status for v in views) else 1
    with Live(render(poll(targets, args.token)), console=console, refresh_per_second=4, screen=False) as live:
        while True:
            time.sleep(max(0.2, args.interval))
            live.update(render(poll(_targets(args), args.token)))


def _targets(args) -> list[tuple[str, str]]:
    if args.api:
        return [(url, url.rstrip("/")) for url in args.api]
    if args.dir:
        data = Path(args.dir) / "data"
        folders = sorted(p for p in data.glob("*") if p.is_dir()) if data.is_dir() else []
        found = [(p.name, url_from_data_dir(p)) for p in folders if (p / "api.port").exists()]
        if not found:
            raise UserFacingError(f"no running node in {data} (no data/<name>/api.port files)")
        return found
    raise UserFacingError("give --api URL (repeatable) or --dir CLUSTER_DIR")


def poll(targets: list[tuple[str, str]], token: str | None) -> list[NodeView]:
    views = []
    for label, url in targets:
        view = NodeView(label, url)
        try:
            view.status = fetch_json(url, "/status", token, timeout=2.0)
            view.peers = fetch_json(url, "/peers", token, timeout=2.0)
        except UserFacingError as exc:
            view.error = str(exc)
        views.append(view)
    return views


def render(views: list[NodeView]) -> Group:
    parts = [_nodes_table(views)]
    reference = next((v for v in views if v.peers), None)
    if reference is not None:
        parts.append(_reputation_table(reference))
        parts.append(_rejections(views))
    return Group(*parts)


def _nodes_table(views: list[NodeView]) -> Table:
    table = Table(title=f"swarm top  {time.strftime('%H:%M:%S')}")
    for column in ("node", "round", "term", "role", "leader", "loss", "accuracy", "state hash", "peers up"):
        table.add_column(column)
    for view in views:
        s = view.status
        if s is None:
            table.add_row(view.label, "[red]down[/]", "", "", "", "", "", "", view.error or "")
            continue
        up = sum(1 for p in s.get("peers", []) if p["connected"])
        table.add_row(s["name"], str(s["round"]), str(s["term"]), s["role"], s.get("leader_name") or "-",
                      _fmt(s.get("loss")), _fmt(s.get("accuracy")),
                      ("[red]DIVERGED[/] " if s.get("diverged") else "") + s["state_hash"][:12],
                      f"{up}/{len(s.get('peers', []))}")
    return table


def _reputation_table(view: NodeView) -> Table:
    table = Table(title=f"committed reputation (as {view.status['name'] if view.status else view.label} sees it)")
    for column in ("member", "reputation", "", "included", "state"):
        table.add_column(column)
    for row in view.peers:
        score = row["reputation"]
        colour = "red" if row["quarantined"] or row["banned"] else "green"
        state = "banned" if row["banned"] else "quarantined" if row["quarantined"] else "ok"
        table.add_row(row["name"], f"{score:.3f}", reputation_bar(score, colour), str(row["rounds_included"]),
                      Text(state, style=colour))
    return table


def reputation_bar(score: float, colour: str) -> Text:
    filled = round(max(0.0, min(1.0, score)) * BAR_WIDTH)
    return Text("█" * filled + "·" * (BAR_WIDTH - filled), style=colour)


def _rejections(views: list[NodeView]) -> Table:
    table = Table(title="rejected messages (by sender, as each node saw them)")
    for column in ("seen by", "sender", "count", "reasons"):
        table.add_column(column)
    rows = 0
    for view in views:
        for peer in view.peers or []:
            if peer["rejected"]:
                reasons = ", ".join(f"{k}: {v}" for k, v in sorted(peer["rejected_by_reason"].items()))
                table.add_row(view.status["name"] if view.status else view.label, peer["name"],
                              str(peer["rejected"]), reasons)
                rows += 1
    if rows == 0:
        table.add_row("-", "-", "0", "none")
    return table


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"

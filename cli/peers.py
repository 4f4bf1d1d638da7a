"""`swarm peers`: who is trusted. Committed reputation and its parts, local score, quarantine or ban and why."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from cli.api_client import add_api_arguments, node_json, print_json
from swarm.ops.api import peers_view


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("peers", help="show every member's reputation as a running node sees it")
    add_api_arguments(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    rows = node_json(args, "/peers", peers_view)
    if args.json:
        print_json(rows)
        return 0
    Console().print(render_peers(rows))
    return 0


def render_peers(rows: list[dict]) -> Table:
    table = Table(title="members", caption_justify="left")
    table.add_column("name")
    table.add_column("peer id")
    table.add_column("reputation", justify="right")
    table.add_column("q / p / c", justify="right")
    for column in ("included", "local score", "rejected", "up", "state"):
        table.add_column(column, justify="left" if column == "state" else "right")
    for row in rows:
        state = "[red]banned[/]" if row["banned"] else "[yellow]quarantined[/]" if row["quarantined"] else "[green]ok[/]"
        table.add_row(
            row["name"] + (" (self)" if row["self"] else ""), row["peer_id"][:12], f"{row['reputation']:.3f}",
            f"{row['quality']:.2f} / {row['participation']:.2f} / {row['consensus']:.2f}",
            str(row["rounds_included"]), f"{row['local_score']:.2f}", str(row["rejected"]),
            "yes" if row["connected"] else "[red]no[/]", state)
    whys = [f"{row['name']}: {row['why']}" for row in rows if row.get("why")]
    table.caption = "q / p / c: quality, participation, consensus" + "".join(f"\n{why}" for why in whys)
    return table

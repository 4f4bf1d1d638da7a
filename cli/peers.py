"""`swarm peers`: who is trusted. Committed reputation and its parts, local score, quarantine or ban and why."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from cli.api_client import add_api_arguments, api_url, fetch_json, print_json


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("peers", help="show every member's reputation as a running node sees it")
    add_api_arguments(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    rows = fetch_json(api_url(args), "/peers", args.token)
    if args.json:
        print_json(rows)
        return 0
    Console().print(render_peers(rows))
    return 0


def render_peers(rows: list[dict]) -> Table:
    table = Table(title="members")
    for column in ("name", "peer id", "reputation", "quality", "particip.", "consensus", "included",
                   "local score", "rejected", "connected", "state"):
        table.add_column(column, justify="right" if column not in ("name", "peer id", "state") else "left")
    for row in rows:
        state = "[red]banned[/]" if row["banned"] else "[yellow]quarantined[/]" if row["quarantined"] else "[green]ok[/]"
        if row.get("why"):
            state += f" ({row['why']})"
        table.add_row(
            row["name"] + (" (self)" if row["self"] else ""), row["peer_id"][:16], f"{row['reputation']:.3f}",
            f"{row['quality']:.3f}", f"{row['participation']:.3f}", f"{row['consensus']:.3f}",
            str(row["rounds_included"]), f"{row['local_score']:.2f}", str(row["rejected"]),
            "yes" if row["connected"] else "[red]no[/]", state)
    return table

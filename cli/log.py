"""`swarm log`: what was committed. One row per round: term, digest, included senders, state hash, signers."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from cli.api_client import add_api_arguments, node_json, print_json
from cli.errors import UserFacingError
from swarm.ops.api import log_view


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("log", help="show a running node's committed rounds")
    add_api_arguments(parser)
    parser.add_argument("--from", dest="start", type=int, default=1, help="first round (default 1)")
    parser.add_argument("--limit", type=int, default=100, help="at most this many rounds (default 100)")
    parser.set_defaults(run=run)


def run(args) -> int:
    if args.start < 1 or not 1 <= args.limit <= 10_000:
        raise UserFacingError("--from must be >= 1 and --limit in 1..10000")
    rows = node_json(args, f"/log?from={args.start}&limit={args.limit}",
                     lambda node: log_view(node, args.start, args.limit))
    if args.json:
        print_json(rows)
        return 0
    Console().print(render_log(rows))
    return 0


def render_log(rows: list[dict]) -> Table:
    table = Table(title="committed rounds")
    for column in ("round", "term", "digest", "rule", "included", "quarantined", "state hash", "signers", "acc"):
        table.add_column(column, justify="right" if column in ("round", "term", "acc") else "left")
    for row in rows:
        accuracy = row.get("accuracy")
        table.add_row(
            str(row["round"]), str(row["term"]), row["digest"][:12], row.get("rule_used") or row["rule"],
            ", ".join(row["included"]), ", ".join(row.get("quarantined") or []) or "-", row["state_hash"][:12],
            ", ".join(row["certificate_signers"]), "-" if accuracy is None else f"{accuracy:.3f}")
    return table

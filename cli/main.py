"""Entry point of the `swarm` command: one subcommand per module, each with `add_parser` and `run`."""
from __future__ import annotations

import argparse
import importlib
import sys

from rich.console import Console

from cli.errors import UserFacingError

# name -> module under cli/ ; each module defines add_parser(subparsers) and run(args) -> int
SUBCOMMANDS = ["keygen", "genesis", "node", "cluster", "status", "peers", "members", "log", "verify", "top"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swarm", description="Peer-to-peer swarm training with Byzantine agreement.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"cli.{name}":
                continue  # not built yet
            raise
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except UserFacingError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False)
        return 1


if __name__ == "__main__":
    sys.exit(main())

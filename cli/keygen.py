"""`swarm keygen --out PATH`: create a node key (Ed25519, PEM, mode 0600) and print its peer id."""
from __future__ import annotations

from rich.console import Console

from cli.errors import UserFacingError

from crypto.keys import KeyFileError, NodeKey, save_key


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("keygen", help="create a node key and print its peer id")
    parser.add_argument("--out", required=True, help="where to write the PEM key (refuses to overwrite)")
    parser.set_defaults(run=run)


def run(args) -> int:
    key = NodeKey.generate()
    try:
        save_key(key, args.out)
    except KeyFileError as exc:
        raise UserFacingError(str(exc)) from None
    Console().print(key.peer_id, highlight=False, soft_wrap=True)
    return 0

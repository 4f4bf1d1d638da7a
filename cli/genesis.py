"""`swarm genesis --keys DIR --out FILE`: a genesis naming every key in a folder as a member."""
from __future__ import annotations

from pathlib import Path

from rich.console import Console

from cli.errors import UserFacingError

from crypto.keys import KeyFileError, load_public_key
from crypto.peer_id import peer_id_from_public_key
from swarm.config import Genesis, Member, genesis_to_dict, validate_genesis, write_yaml


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("genesis", help="write a genesis file from a folder of keys")
    parser.add_argument("--keys", required=True, help="folder of *.pem files (public keys or key files)")
    parser.add_argument("--out", required=True, help="genesis YAML to write")
    parser.add_argument("--swarm-id", default="swarm", help="name of the swarm (default: swarm)")
    parser.set_defaults(run=run)


def members_from_keys(folder: Path) -> list[Member]:
    """One member per PEM file, named after the file, in file-name order."""
    members = []
    for path in sorted(folder.glob("*.pem")):
        members.append(Member(name=path.stem, peer_id=peer_id_from_public_key(load_public_key(path))))
    return members


def run(args) -> int:
    folder = Path(args.keys)
    if not folder.is_dir():
        raise UserFacingError(f"{folder} is not a folder")
    try:
        members = members_from_keys(folder)
    except KeyFileError as exc:
        raise UserFacingError(str(exc)) from None
    if not members:
        raise UserFacingError(f"no *.pem keys in {folder}")
    out = Path(args.out)
    if out.exists():
        raise UserFacingError(f"{out} already exists; refusing to overwrite a genesis")
    genesis = Genesis(swarm_id=args.swarm_id, members=members)
    validate_genesis(genesis, str(out))
    write_yaml(out, genesis_to_dict(genesis))
    console = Console()
    console.print(f"genesis for swarm [bold]{genesis.swarm_id}[/]: n={genesis.n}, f={genesis.f}, "
                  f"quorum={genesis.quorum} -> {out}")
    for member in members:
        console.print(f"  {member.name}  {member.peer_id}", highlight=False)
    return 0

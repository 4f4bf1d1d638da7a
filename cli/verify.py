"""`swarm verify --data-dir DIR`: audit a node's store offline (certificates, quorums, links, replayed state hashes).

In the cluster layout (CLUSTER/data/<name>) the genesis and the node config sit two folders up; elsewhere give
--genesis (and --config when the node trains on another dataset than the default, since the model's shape and so
state_0 depend on it).
"""
from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from cli.errors import UserFacingError
from swarm.config import ConfigError, NodeConfig, load_genesis, load_node_config
from swarm.ledger.audit import audit_store


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("verify", help="audit a node's store offline against the genesis")
    parser.add_argument("--data-dir", required=True, help="the node's data folder (holds node.sqlite)")
    parser.add_argument("--genesis", help="genesis file (default: DIR/../../genesis.yaml)")
    parser.add_argument("--config", help="the node's config, for its dataset (default: DIR/../../<name>.yaml)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(run=run)


def run(args) -> int:
    data_dir = Path(args.data_dir)
    genesis_path = Path(args.genesis) if args.genesis else data_dir.resolve().parent.parent / "genesis.yaml"
    if not genesis_path.exists():
        raise UserFacingError(f"no genesis at {genesis_path}; give --genesis FILE")
    try:
        genesis = load_genesis(genesis_path)
        config = _node_config(args, data_dir, genesis_path)
        report = audit_store(data_dir, genesis, config)
    except ConfigError as exc:
        raise UserFacingError(str(exc)) from None
    except FileNotFoundError as exc:
        raise UserFacingError(str(exc)) from None
    if args.json:
        print(json.dumps({"ok": report.ok, "rounds": report.rounds, "replayed": report.replayed,
                          "from_snapshot": report.from_snapshot,
                          "failures": [{"round": f.round, "check": f.check, "detail": f.detail}
                                       for f in report.findings]}, indent=2))
        return 0 if report.ok else 1
    console = Console()
    for finding in report.findings:
        console.print(f"[red]FAIL[/] {finding}", highlight=False)
    if report.ok:
        console.print(f"[green]OK[/] {report.rounds} rounds certified by a quorum, linked, and replayed "
                      f"to the same state hash ({report.replayed} replayed, "
                      f"{len(report.from_snapshot)} from certified snapshots)", highlight=False)
        return 0
    console.print(f"[red]{len(report.findings)} failure(s)[/] in {report.rounds} rounds", highlight=False)
    return 1


def _node_config(args, data_dir: Path, genesis_path: Path) -> NodeConfig:
    if args.config:
        return load_node_config(args.config)
    guess = data_dir.resolve().parent.parent / f"{data_dir.resolve().name}.yaml"
    if guess.exists():
        return load_node_config(guess)
    return NodeConfig(identity="", genesis=str(genesis_path), data_dir=str(data_dir))

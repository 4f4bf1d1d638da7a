"""`swarm verify --data-dir DIR`: audit a node's store offline (certificates, quorums, links, replayed state hashes).

In the cluster layout (CLUSTER/data/<name>) the genesis and the node config sit two folders up; elsewhere give
--genesis (and --config when the node trains on another dataset than the default, since the model's shape and so
state_0 depend on it).

An auditor does not run code from what it audits: a custom model or dataset ("module:function") named by the
genesis or the node config is imported only when the operator names the config with --config. Without it, such a
chain is replayed from its oldest certified snapshot and the rounds before it are checked for certificates and
links only (the report says which).
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
    parser.add_argument("--config", help="the node's config, for its dataset (default: DIR/../../<name>.yaml); "
                        "naming it also trusts the custom model or dataset code it and the genesis name")
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
        report = audit_store(data_dir, genesis, config, trust_code=bool(args.config))
    except ConfigError as exc:
        raise UserFacingError(str(exc)) from None
    except FileNotFoundError as exc:
        raise UserFacingError(str(exc)) from None
    if args.json:
        print(json.dumps({"ok": report.ok, "rounds": report.rounds, "replayed": report.replayed,
                          "from_snapshot": report.from_snapshot,
                          "certificate_only": report.certificate_only, "not_imported": report.not_imported,
                          "pruned_through": report.pruned_through,
                          "failures": [{"round": f.round, "check": f.check, "detail": f.detail}
                                       for f in report.findings]}, indent=2))
        return 0 if report.ok else 1
    console = Console()
    if report.not_imported:
        console.print(f"[yellow]NOTE[/] not importing {', '.join(report.not_imported)} named by the bundle "
                      f"(give --config to trust it): {len(report.certificate_only)} round(s) checked for "
                      f"certificates and links only", highlight=False)
    if report.pruned_through:
        console.print(f"[yellow]NOTE[/] the node pruned the payloads of rounds up to {report.pruned_through} "
                      f"(consensus.keep_payload_rounds): replayed from its oldest certified snapshot, "
                      f"{len(report.certificate_only)} round(s) checked for certificates and links only",
                      highlight=False)
    for finding in report.findings:
        console.print(f"[red]FAIL[/] {finding}", highlight=False)
    if report.ok and report.certificate_only:
        console.print(f"[green]OK[/] {report.rounds} rounds certified by a quorum and linked; "
                      f"{report.rounds - len(report.certificate_only)} replayed to the same state hash "
                      f"({report.replayed} replayed, {len(report.from_snapshot)} from certified snapshots), "
                      f"{len(report.certificate_only)} certificate-checked only", highlight=False)
        return 0
    if report.ok:
        console.print(f"[green]OK[/] {report.rounds} rounds certified by a quorum, linked, and replayed "
                      f"to the same state hash ({report.replayed} replayed, "
                      f"{len(report.from_snapshot)} from certified snapshots)", highlight=False)
        return 0
    console.print(f"[red]{len(report.findings)} failure(s)[/] in {report.rounds} rounds", highlight=False)
    return 1


def _node_config(args, data_dir: Path, genesis_path: Path) -> NodeConfig:
    if args.config:
        return load_node_config(args.config, check_secrets=False)  # the audit never uses the API token
    guess = data_dir.resolve().parent.parent / f"{data_dir.resolve().name}.yaml"
    if guess.exists():
        return load_node_config(guess, check_secrets=False)
    return NodeConfig(identity="", genesis=str(genesis_path), data_dir=str(data_dir))

"""`swarm members`: the configuration in force and its history; `swarm members add|remove`: ask the swarm to
change it, with a request signed by your own member key and sent to your running node (issue 19)."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from cli.api_client import TIMEOUT_S, add_api_arguments, api_url, fetch_json, print_json
from cli.errors import UserFacingError
from swarm.ops import http_json


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("members", help="list the members in force, or add / remove one")
    add_api_arguments(parser)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    add = actions.add_parser("add", help="add a member (its peer id and a name), signed with your member key")
    add.add_argument("--peer-id", required=True, help="the new member's peer id (`swarm keygen` prints it)")
    add.add_argument("--name", required=True, help="its name in logs and tables")
    remove = actions.add_parser("remove", help="remove a member by name or peer id, signed with your member key")
    remove.add_argument("member", help="the member's name or peer id")
    for action in (add, remove):
        action.add_argument("--config", required=True, help="your node's config: its key signs the request, and "
                                                             "its API (data_dir/api.port) takes it")
    parser.set_defaults(run=run)


def run(args) -> int:
    if getattr(args, "action", None) in ("add", "remove"):
        return request_change(args)
    view = fetch_json(api_url(args), "/members", args.token)
    if args.json:
        print_json(view)
        return 0
    Console().print(render(view))
    return 0


def request_change(args) -> int:
    from swarm.ledger.membership import ADD

    if args.action == ADD:
        submit_change(args.config, ADD, args.peer_id, args.name, args.api, args.token)
    else:
        submit_change(args.config, "remove", args.member, None, args.api, args.token)
    return 0


def submit_change(config_path, op: str, member: str, name: str | None, api: str | None = None,
                  token: str | None = None) -> None:
    """Sign a change with the key of the node configured at ``config_path`` and send it to that node's API
    (``member``: the peer id to add, or the name or peer id to remove). UserFacingError with the reason when the
    node refuses it."""
    from crypto.keys import load_key
    from swarm.config import load_genesis, load_node_config
    from swarm.ledger.membership import ADD, REMOVE, sign_change

    config = load_node_config(config_path)
    genesis = load_genesis(config.genesis)
    key = load_key(config.identity)
    token = token or config.api.token
    base = api.rstrip("/") if api else f"http://127.0.0.1:{_api_port(config)}"
    view = fetch_json(base, "/members", token)
    if op == ADD:
        peer_id = member
    else:
        match = [m for m in view["members"] if member in (m["name"], m["peer_id"])]
        if not match:
            raise UserFacingError(f"{member} is not a member of the configuration in force")
        op, peer_id, name = REMOVE, match[0]["peer_id"], match[0]["name"]
    change = sign_change(key, genesis.swarm_id, op, peer_id, name, view["since"])
    body = {**change.to_plain(), "sig": change.sig.hex()}
    try:
        status, answer = http_json.post_json(base + "/members", body, TIMEOUT_S, token)
    except http_json.ApiError as exc:
        raise UserFacingError(f"cannot reach the node at {base} ({exc.detail}); is it running?") from None
    if status != 202:
        raise UserFacingError(f"refused: {answer.get('error', answer) if isinstance(answer, dict) else answer}")
    n_after = view["n"] + (1 if op == ADD else -1)
    print(f"requested: {op} {name} ({peer_id[:16]}); once committed, n = {n_after} from the next round "
          f"(`swarm members` shows it)")


def _api_port(config) -> int:
    from pathlib import Path

    try:
        return int((Path(config.data_dir) / "api.port").read_text().strip())
    except (OSError, ValueError):
        if config.api.port:
            return config.api.port
        raise UserFacingError(f"no running node found for {config.data_dir} (no api.port); is it running?") from None


def render(view: dict) -> Table:
    table = Table(title=f"members in force since round {view['since']}: n={view['n']} f={view['f']} "
                        f"quorum={view['quorum']} (this node: {view['this_node']})", caption_justify="left")
    table.add_column("name")
    table.add_column("peer id")
    for member in view["members"]:
        table.add_row(member["name"], member["peer_id"])
    lines = [f"round {h['round']}: {h['op']} {h['name']} (requested by {h['requested_by']}), in force from round "
             f"{h['in_force_from']}" for h in view["history"]]
    if view.get("pending"):
        lines.append(f"pending: {view['pending']['op']} {view['pending']['name']}")
    table.caption = "\n".join(lines) or "no change since the genesis"
    return table

"""Reaching a node's HTTP API from the CLI: which URL, with which token, and one clear error when it fails.

Nodes bind their API to a free port by default and write it to ``<data_dir>/api.port``, so there is no fixed
default URL: the inspecting commands take ``--api URL`` or ``--data-dir DIR`` (or SWARM_API / SWARM_API_TOKEN).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

from cli.errors import UserFacingError
from swarm.ops import http_json

TIMEOUT_S = 5.0


def add_api_arguments(parser, *, repeatable: bool = False) -> None:
    where = parser.add_mutually_exclusive_group()
    if repeatable:
        where.add_argument("--api", action="append", metavar="URL",
                           help="a node's API, e.g. http://127.0.0.1:9100 (repeatable)")
    else:
        where.add_argument("--api", metavar="URL", help="the node's API, e.g. http://127.0.0.1:9100 "
                                                        "(default: $SWARM_API)")
        where.add_argument("--data-dir", metavar="DIR", help="a node's data folder: read its api.port, or its store "
                                                              "when the node is not running")
        parser.add_argument("--genesis", metavar="FILE",
                            help="with --data-dir and a stopped node outside the cluster layout: its genesis "
                                 "(default DIR/../../genesis.yaml)")
    parser.add_argument("--token", default=os.environ.get("SWARM_API_TOKEN"),
                        help="bearer token, when the node's API is bound beyond loopback (default: $SWARM_API_TOKEN)")
    parser.add_argument("--json", action="store_true", help="print the raw JSON for scripts")


def api_url(args) -> str:
    """The node URL from --api, --data-dir or $SWARM_API, or a UserFacingError saying how to give one."""
    if getattr(args, "api", None):
        return args.api.rstrip("/")
    if getattr(args, "data_dir", None):
        return url_from_data_dir(Path(args.data_dir))
    if os.environ.get("SWARM_API"):
        return os.environ["SWARM_API"].rstrip("/")
    raise UserFacingError("which node? give --api URL (e.g. http://127.0.0.1:9100) or --data-dir DIR")


def url_from_data_dir(data_dir: Path) -> str:
    port_file = data_dir / "api.port"
    try:
        port = int(port_file.read_text().strip())
    except (OSError, ValueError):
        raise UserFacingError(f"no running node found in {data_dir} ({port_file} is missing or unreadable)") from None
    return f"http://127.0.0.1:{port}"


def fetch_json(base: str, path: str, token: str | None = None, timeout: float = TIMEOUT_S) -> Any:
    """GET base+path as JSON; every failure becomes one UserFacingError naming the node."""
    try:
        return http_json.fetch_json(base + path, timeout, token)
    except http_json.ApiError as exc:
        if exc.status == 401:
            raise UserFacingError(f"the node at {base} refused the request: missing or wrong --token") from None
        if exc.kind == http_json.STATUS:
            raise UserFacingError(f"the node at {base} answered {exc.status} to {path}") from None
        if exc.kind == http_json.UNREACHABLE:
            raise UserFacingError(f"cannot reach the node at {base} ({exc.detail}); is it running?") from None
        raise UserFacingError(f"the node at {base} sent something that is not JSON for {path}") from None


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def node_json(args, path: str, offline_view: Callable[[Any], Any]) -> Any:
    """``path`` from the node's API; with --data-dir and no node answering there, the same view computed from the
    stopped node's store (swarm/ops/offline.py), with a note on stderr saying so."""
    try:
        return fetch_json(api_url(args), path, args.token)
    except UserFacingError:
        if not getattr(args, "data_dir", None):
            raise
    from swarm.ops.offline import open_offline  # torch and the store: only when a node is not running

    data_dir = Path(args.data_dir)
    try:
        node = open_offline(data_dir, Path(args.genesis) if getattr(args, "genesis", None) else None)
    except (FileNotFoundError, ValueError) as exc:
        raise UserFacingError(f"no running node answers for {data_dir}, and its store cannot be read: {exc}") from None
    try:
        value = offline_view(node)
    finally:
        node.close()
    as_of = "its newest state" if node.exact else f"its newest certified snapshot (round {node.state.round})"
    print(f"node not running: read from its store in {data_dir}, as of {as_of}", file=sys.stderr)
    return value

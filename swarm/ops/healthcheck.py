"""`python -m swarm.ops.healthcheck NODE.yaml`: exit 0 when that node's API answers /status, it has committed a
round and it has not diverged.

For container health checks: it reads the API address and bearer token from the node's own config, so the
compose file never repeats a port or a secret.
"""
from __future__ import annotations

import sys

from swarm.config import ConfigError, load_node_config
from swarm.ops.http_json import get_json


def check(config_path: str, timeout: float = 3.0) -> str | None:
    """None when healthy, else why not."""
    try:
        config = load_node_config(config_path)
    except ConfigError as exc:
        return str(exc)
    host = "127.0.0.1" if config.api.host in ("0.0.0.0", "localhost") else config.api.host
    status = get_json(f"http://{host}:{config.api.port}/status", timeout, config.api.token)
    if status is None:
        return "the API does not answer /status"
    if status.get("diverged"):
        return f"diverged: {status['diverged']}"
    if not isinstance(status.get("round"), int) or status["round"] < 1:
        return "no round committed yet"  # a node that only answers is not yet a working member
    return None


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m swarm.ops.healthcheck NODE.yaml", file=sys.stderr)
        return 2
    problem = check(argv[0])
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

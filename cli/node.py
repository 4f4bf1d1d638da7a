"""`swarm node --config FILE`: run one node until SIGINT or SIGTERM, then shut down cleanly (exit code 0)."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

from cli.errors import UserFacingError
from crypto.keys import KeyFileError, load_key
from swarm.config import ConfigError, load_genesis, load_node_config


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("node", help="run a node")
    parser.add_argument("--config", required=True, help="the node's YAML config")
    parser.set_defaults(run=run)


def run(args) -> int:
    try:
        config = load_node_config(args.config)
        genesis = load_genesis(config.genesis)
        key = load_key(config.identity)
    except (ConfigError, KeyFileError) as exc:
        raise UserFacingError(str(exc)) from None
    logging.basicConfig(level=getattr(logging, config.log_level),
                        format=f"%(asctime)s {config.name or ''} %(levelname)s %(name)s: %(message)s")
    logging.getLogger("libp2p").setLevel(logging.WARNING)
    logging.getLogger("libp2p").propagate = True
    if config.torch_threads is not None:
        import torch
        torch.set_num_threads(config.torch_threads)
    return asyncio.run(serve(config, genesis, key))


async def serve(config, genesis, key) -> int:
    from swarm.node.node import Node
    from swarm.ops.api import start_api

    try:
        node = Node(config, genesis, key)
    except ValueError as exc:
        raise UserFacingError(str(exc)) from None
    loop = asyncio.get_running_loop()
    received = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        if len(received) == 1:
            node.stop()  # clean: streams closed, store flushed, exit 0
        else:
            logging.getLogger("swarm.node").warning("second signal: exiting at once")
            os._exit(128 + signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    runner, port = await start_api(node, config.api.host, config.api.port, config.api.token, config.api)
    port_file = Path(config.data_dir) / "api.port"
    port_file.write_text(f"{port}\n")
    logging.getLogger("swarm.node").info("API on http://%s:%d", config.api.host, port)
    try:
        await node.run()
    finally:
        await runner.cleanup()
        port_file.unlink(missing_ok=True)
    return 0

"""Fixtures shared by several test files."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def five(tmp_path_factory):
    """A genesis of four members (node0..node3) and a fifth key, as after a membership change that added it:
    (genesis, the five keys)."""
    from crypto.keys import NodeKey, save_key
    from swarm.config import load_genesis, load_node_config
    from swarm.ops.cluster import ClusterOptions, init_cluster

    folder = tmp_path_factory.mktemp("five")
    keys = [NodeKey.from_seed(bytes([i + 1]) * 32) for i in range(5)]
    for i, key in enumerate(keys[:4]):
        save_key(key, folder / "keys" / f"node{i}.pem")
    specs = init_cluster(folder, ClusterOptions(nodes=4, swarm_id="five", local_steps=1))
    genesis = load_genesis(load_node_config(specs[0].config_path).genesis)
    assert genesis.peer_ids == [k.peer_id for k in keys[:4]]
    return genesis, keys

"""Limits that follow the genesis (issue 17): the payload limit grows with the model when left at its default,
a configured one that cannot hold the model is refused at start with the numbers, the fetch deadline scales
with the limit instead of a fixed 5 s, and so does the cap on consensus timeouts instead of a fixed 120 s."""
from __future__ import annotations

import pytest

from swarm.config import ConfigError, ConsensusConfig, TransportConfig
from swarm.node.limits import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    MIN_TIMEOUT_CAP_S,
    fetch_timeout_s,
    needed_payload_bytes,
    settle_payload_limit,
    timeout_cap_s,
)


def test_a_model_past_8m_parameters_raises_the_default_limit_instead_of_hitting_it():
    dim = 20_000_000  # an 80 MB gradient uncompressed, a 160 MB snapshot: over the 64 MiB default
    limit = settle_payload_limit(TransportConfig(), dim, members=64)
    assert limit == needed_payload_bytes(dim, 64) > max(8 * dim, DEFAULT_MAX_PAYLOAD_BYTES)


def test_a_small_model_keeps_the_default_and_a_generous_setting_is_kept():
    assert settle_payload_limit(TransportConfig(), 100_000, 4) == DEFAULT_MAX_PAYLOAD_BYTES
    assert settle_payload_limit(TransportConfig(max_payload_bytes=1 << 30), 20_000_000, 4) == 1 << 30


def test_a_configured_limit_that_cannot_hold_the_model_is_refused_with_the_numbers():
    with pytest.raises(ConfigError, match=r"transport.max_payload_bytes.*at least \d+ bytes.*20000000 parameters"):
        settle_payload_limit(TransportConfig(max_payload_bytes=32 << 20), 20_000_000, 4)


def test_the_fetch_deadline_grows_with_the_limit():
    assert fetch_timeout_s(DEFAULT_MAX_PAYLOAD_BYTES) > 5.0
    assert fetch_timeout_s(1 << 30) > 200  # a GiB at a slow link rate, not the same 5 s as a kilobyte


def test_the_timeout_cap_grows_with_the_model_and_a_short_configured_one_is_refused():
    small = settle_payload_limit(TransportConfig(), 100_000, 4)
    assert timeout_cap_s(ConsensusConfig(), 100_000, small) == MIN_TIMEOUT_CAP_S
    big = settle_payload_limit(TransportConfig(), 100_000_000, 4)  # an 800 MB snapshot: 190 s at the slow rate
    assert timeout_cap_s(ConsensusConfig(), 100_000_000, big) >= 2 * fetch_timeout_s(big) > 2 * MIN_TIMEOUT_CAP_S
    assert timeout_cap_s(ConsensusConfig(max_timeout_s=30.0), 100_000, small) == 30.0  # an operator's choice holds
    with pytest.raises(ConfigError, match=r"consensus.max_timeout_s.*at least \d+ s.*100000000 parameters.*got 60"):
        timeout_cap_s(ConsensusConfig(max_timeout_s=60.0), 100_000_000, big)


def test_the_consensus_core_runs_with_the_derived_cap(tmp_path):
    from crypto.keys import load_key
    from swarm.config import load_genesis, load_node_config
    from swarm.node.node import Node
    from swarm.ops.cluster import ClusterOptions, init_cluster

    specs = init_cluster(tmp_path, ClusterOptions(nodes=4, node_overrides={"consensus": {"max_timeout_s": 45.0}}))
    config = load_node_config(specs[0].config_path)
    node = Node(config, load_genesis(config.genesis), load_key(config.identity))
    try:
        assert node.core.timing.cfg.max_timeout == 45.0
    finally:
        node.store.close()


def test_a_node_refuses_to_start_with_a_limit_below_its_model(tmp_path):
    from crypto.keys import load_key
    from swarm.config import load_genesis, load_node_config
    from swarm.node.node import Node
    from swarm.ops.cluster import ClusterOptions, init_cluster

    specs = init_cluster(tmp_path, ClusterOptions(nodes=4, node_overrides={"transport": {"max_payload_bytes": 4096}}))
    config = load_node_config(specs[0].config_path)
    with pytest.raises(ConfigError, match="max_payload_bytes"):
        Node(config, load_genesis(config.genesis), load_key(config.identity))
    assert not (tmp_path / "data" / "node0" / "node.sqlite").exists()  # refused before anything was opened

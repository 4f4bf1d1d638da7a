"""The bench prose names the settings that ran, read from the genesis and options written, not typed in."""
from __future__ import annotations

from pathlib import Path

from bench import compression_bench
from bench.live import describe
from bench.robustness import default_variant
from swarm.config import load_genesis
from swarm.ops.cluster import DEFAULT_RULE, ClusterOptions, init_cluster


def test_describe_reads_the_rule_its_options_and_the_training_settings(tmp_path: Path):
    options = ClusterOptions(nodes=4, local_steps=7, batch_size=32, compression="int8")
    init_cluster(tmp_path, options)
    text = describe(tmp_path / "genesis.yaml", options)
    assert text.startswith(DEFAULT_RULE)
    assert "int8 updates" in text and "K=7 local steps of batch 32" in text
    assert "reputation floor 0.6" in text and "unweighted" in text


def test_describe_changes_with_the_genesis(tmp_path: Path):
    init_cluster(tmp_path / "a", ClusterOptions(nodes=4, rule="nnm+trimmed_mean"))
    text = describe(tmp_path / "a" / "genesis.yaml", ClusterOptions())
    assert text.startswith("nnm+trimmed_mean, unweighted")
    genesis = load_genesis(tmp_path / "a" / "genesis.yaml")
    assert genesis.aggregation.nnm and genesis.aggregation.rule == "trimmed_mean"


def test_compression_compares_the_genesis_default_first():
    (rule, options, weighted), label = compression_bench.rules()[0]
    default = default_variant()
    assert rule == DEFAULT_RULE and weighted == default.weighted
    assert label.startswith(default.rule) and label.endswith("default")
    assert compression_bench.rules()[1][0] == ("mean", (), True)

"""The aggregation a new genesis gets, and why it never changes an existing one.

`swarm cluster init` writes DEFAULT_RULE (or --rule) explicitly (rule and nnm); the reading defaults of
AggregationSpec are median without NNM, so a genesis file that leaves the aggregation out keeps its meaning and its
hash."""
import yaml

from crypto.keys import NodeKey
from swarm.config import load_genesis
from swarm.ledger.entry_rules import genesis_hash, rules_of
from swarm.ops.cluster import DEFAULT_RULE, ClusterOptions, init_cluster

# A genesis as an operator could have written it before DEFAULT_RULE existed: no aggregation section at all.
BARE = {"swarm_id": "old", "members": [{"name": f"node{i}", "peer_id": NodeKey.from_seed(bytes([i + 1]) * 32).peer_id}
                                       for i in range(4)]}
BARE_HASH = "eb2259da6a4f4386a33deceb4c1749e7596460f68866503e0c553ee1157efb58"  # computed before DEFAULT_RULE


def test_a_new_genesis_gets_centered_clipping_with_its_radius_from_the_round(tmp_path):
    """Centered clipping, tau "auto": as good as the mean on label-skewed shards without attack, no worse than the
    median under attack, and clean 1000-round runs keep every honest member over the floor (swarm/ops/cluster.py).
    The options are written out, so the genesis says everything that decides the aggregate."""
    assert DEFAULT_RULE == "centered_clipping"
    init_cluster(tmp_path, ClusterOptions(nodes=4))
    written = yaml.safe_load((tmp_path / "genesis.yaml").read_text())["aggregation"]
    assert (written["rule"], written["nnm"], written["reputation_weighted"]) == ("centered_clipping", False, False)
    assert written["options"] == {"tau": "auto"}
    rules = rules_of(load_genesis(tmp_path / "genesis.yaml"))
    assert (rules.rule, rules.options) == ("centered_clipping", {"tau": "auto"})


def test_another_rule_gets_no_options(tmp_path):
    init_cluster(tmp_path, ClusterOptions(nodes=4, rule="median"))
    written = yaml.safe_load((tmp_path / "genesis.yaml").read_text())["aggregation"]
    assert (written["rule"], written.get("options", {})) == ("median", {})


def test_nnm_then_trimmed_mean_is_written_with_nnm(tmp_path):
    init_cluster(tmp_path, ClusterOptions(nodes=4, rule="nnm+trimmed_mean"))
    written = yaml.safe_load((tmp_path / "genesis.yaml").read_text())["aggregation"]
    assert (written["rule"], written["nnm"], written["reputation_weighted"]) == ("trimmed_mean", True, False)
    rules = rules_of(load_genesis(tmp_path / "genesis.yaml"))
    assert (rules.rule, rules.nnm, rules.reputation_weighted) == ("trimmed_mean", True, False)


def test_a_rule_without_prefix_is_written_without_nnm(tmp_path):
    init_cluster(tmp_path, ClusterOptions(nodes=4, rule="median"))
    written = yaml.safe_load((tmp_path / "genesis.yaml").read_text())["aggregation"]
    assert (written["rule"], written["nnm"]) == ("median", False)


def test_a_genesis_without_aggregation_keeps_the_median_and_its_hash(tmp_path):
    path = tmp_path / "genesis.yaml"
    path.write_text(yaml.safe_dump(BARE))
    genesis = load_genesis(path)
    assert (genesis.aggregation.rule, genesis.aggregation.nnm) == ("median", False)
    assert genesis_hash(genesis).hex() == BARE_HASH

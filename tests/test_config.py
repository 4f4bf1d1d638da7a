"""Config and genesis validation: errors name the file, the key and what is expected."""
import pytest

from crypto.keys import NodeKey
from swarm.config import ConfigError, load_genesis, load_node_config


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def genesis_text(n=4, swarm="demo"):
    members = "".join(f"  - name: n{i}\n    peer_id: {NodeKey.generate().peer_id}\n" for i in range(n))
    return f"swarm_id: {swarm}\nmembers:\n{members}"


def test_short_config_gets_defaults_and_resolves_paths(tmp_path):
    path = write(tmp_path, "node.yaml", "identity: key.pem\ngenesis: genesis.yaml\n")
    config = load_node_config(path)
    assert config.identity == str(tmp_path / "key.pem")
    assert config.genesis == str(tmp_path / "genesis.yaml")
    assert config.api.host == "127.0.0.1"
    assert config.dataset.name == "mnist5k"


@pytest.mark.parametrize("text, key, expected", [
    ("identity: k\ngenesis: g\ncolour: red\n", "colour", "unknown key"),
    ("identity: k\n", "genesis", "required"),
    ("identity: k\ngenesis: g\ntraining: {lr: fast}\n", "training.lr", "expected a number"),
    ("identity: k\ngenesis: g\ntraining: {batch_size: 0}\n", "training.batch_size", ">= 1"),
    ("identity: k\ngenesis: g\ntraining: {batch_size: true}\n", "training.batch_size", "integer"),
    ("identity: k\ngenesis: g\ndataset: {name: imagenet}\n", "dataset.name", "one of"),
    ("identity: k\ngenesis: g\napi: {port: 70000}\n", "api.port", "<= 65535"),
    ("identity: k\ngenesis: g\napi: {host: 0.0.0.0}\n", "api.token", "required"),
    ("identity: k\ngenesis: g\nbootstrap: [/ip4/1.2.3.4/tcp/1]\n", "bootstrap[0]", "/p2p/"),
    ("identity: k\ngenesis: g\nlisten: localhost:9000\n", "listen", "multiaddr"),
    ("[1, 2]", "", "mapping"),
    ("identity: [k\n", "", "not valid YAML"),
])
def test_bad_node_configs_name_file_key_and_expectation(tmp_path, text, key, expected):
    path = write(tmp_path, "node.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_node_config(path)
    message = str(info.value)
    assert str(path) in message and expected in message
    assert info.value.key == key


def test_genesis_derives_f_and_quorum_as_the_consensus_core_does(tmp_path):
    from consensus.quorum import Membership
    for n, f, quorum in [(1, 0, 1), (2, 0, 2), (3, 0, 2), (4, 1, 3), (5, 1, 4), (6, 1, 4), (7, 2, 5), (10, 3, 7)]:
        genesis = load_genesis(write(tmp_path, f"g{n}.yaml", genesis_text(n)))
        assert (genesis.n, genesis.f, genesis.quorum) == (n, f, quorum)
        assert Membership(genesis.peer_ids).quorum == genesis.quorum
        if n == 3 * f + 1:
            assert quorum == 2 * f + 1


@pytest.mark.parametrize("mutate, key", [
    (lambda t: t.replace("peer_id: 12D3KooW", "peer_id: 12D3KooX", 1), "members[0].peer_id"),
    (lambda t: t.replace("name: n1", "name: n0"), "members[1].name"),
    (lambda t: t + "aggregation: {rule: average}\n", "aggregation.rule"),
    (lambda t: t.replace("swarm_id: demo", "swarm_id: ''"), "swarm_id"),
    # the rule's options: an unknown key, or a value the rule refuses, would fail every round on every member
    (lambda t: t + "aggregation: {rule: centered_clipping, options: {radius: 2}}\n",
     "aggregation.options.radius"),
    (lambda t: t + "aggregation: {rule: centered_clipping, options: {tau: -1}}\n", "aggregation.options"),
    (lambda t: t + "aggregation: {rule: centered_clipping, options: {tau: automatic}}\n", "aggregation.options"),
    (lambda t: t + "aggregation: {rule: median, options: {tau: 1}}\n", "aggregation.options.tau"),
    (lambda t: t + "aggregation: {rule: multikrum, options: {m: 0}}\n", "aggregation.options"),
])
def test_bad_genesis_is_refused(tmp_path, mutate, key):
    path = write(tmp_path, "genesis.yaml", mutate(genesis_text()))
    with pytest.raises(ConfigError) as info:
        load_genesis(path)
    assert info.value.key == key


def test_duplicate_member_is_refused(tmp_path):
    pid = NodeKey.generate().peer_id
    text = f"swarm_id: d\nmembers:\n  - {{name: a, peer_id: {pid}}}\n  - {{name: b, peer_id: {pid}}}\n"
    with pytest.raises(ConfigError, match="duplicate peer id"):
        load_genesis(write(tmp_path, "g.yaml", text))


@pytest.mark.parametrize("aggregation", ["{rule: centered_clipping, options: {tau: auto, iterations: 2}}",
                                         "{rule: centered_clipping, options: {tau: 0.5}}",
                                         "{rule: multikrum, options: {m: 2}}", "{rule: trimmed_mean, nnm: true}"])
def test_good_rule_options_are_accepted(tmp_path, aggregation):
    genesis = load_genesis(write(tmp_path, "genesis.yaml", genesis_text() + f"aggregation: {aggregation}\n"))
    assert genesis.aggregation.rule in aggregation

"""The API's token check, the dashboard's static files and the CLI's behaviour against live and dead endpoints."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from cli.main import main
from swarm.ops.api import build_app
from swarm.ops.cluster import free_port
from tests.test_inspect_support import fake_node, serving


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def guarded():
    with serving(build_app(fake_node(), token="s3cret")) as url:
        yield url


@pytest.mark.parametrize("path", ["/status", "/peers", "/log", "/history", "/metrics"])
def test_data_routes_need_the_bearer_token(guarded, path):
    assert _get(guarded + path)[0] == 401
    assert _get(guarded + path, token="wrong")[0] == 401
    code, body = _get(guarded + path, token="s3cret")
    assert code == 200 and body


def test_dashboard_files_load_without_the_token_and_hold_no_data(guarded):
    code, page = _get(guarded + "/")
    assert code == 200 and b'id="chart-loss"' in page
    for asset in ("/dashboard/dashboard.js", "/dashboard/dashboard.css"):
        assert _get(guarded + asset)[0] == 200
    assert b"http://" not in page and b"https://" not in page  # nothing from a CDN: works offline


def test_cli_reads_a_guarded_node_with_the_token_and_explains_a_refusal(guarded, capsys):
    assert main(["status", "--api", guarded, "--token", "s3cret", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["name"] == "a" and status["term"] == 3 and status["role"] == "leader"
    assert main(["peers", "--api", guarded, "--json"]) == 1
    assert "token" in capsys.readouterr().err


def test_peers_and_top_render_as_tables(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    node = fake_node()
    with serving(build_app(node)) as url:
        assert main(["peers", "--api", url]) == 0
        out = capsys.readouterr().out
        assert "reputation" in out and out.count("1.000") == 4  # four members at full reputation
        assert main(["top", "--api", url, "--once"]) == 0
        out = capsys.readouterr().out
        assert "committed reputation" in out and "█" in out


@pytest.mark.parametrize("command", ["status", "peers", "log"])
def test_unreachable_node_gives_one_clear_line_and_exit_code_1(command, capsys):
    dead = f"http://127.0.0.1:{free_port()}"
    assert main([command, "--api", dead]) == 1
    err = capsys.readouterr().err
    assert "cannot reach the node" in err and dead in err
    assert "Traceback" not in err


def test_top_marks_an_unreachable_node_down_and_fails(capsys):
    assert main(["top", "--api", f"http://127.0.0.1:{free_port()}", "--once"]) == 1
    assert "down" in capsys.readouterr().out


def test_no_endpoint_given_asks_for_one(capsys, monkeypatch):
    monkeypatch.delenv("SWARM_API", raising=False)
    assert main(["status"]) == 1
    assert "--api" in capsys.readouterr().err


def test_the_api_reads_a_node_through_the_typed_view_and_the_stand_in_provides_it(tmp_path):
    from crypto.keys import load_key
    from swarm.config import load_genesis, load_node_config
    from swarm.node.node import Node
    from swarm.ops.cluster import ClusterOptions, init_cluster
    from swarm.ops.view import NodeView
    from tests.test_inspect_support import fake_node

    assert isinstance(fake_node(), NodeView)
    specs = init_cluster(tmp_path, ClusterOptions(nodes=4))
    config = load_node_config(specs[0].config_path)
    node = Node(config, load_genesis(config.genesis), load_key(config.identity))
    try:
        assert isinstance(node, NodeView)  # every name the API and the metrics read is on the node
        assert not isinstance(object(), NodeView)
    finally:
        node.close()

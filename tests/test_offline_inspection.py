"""A stopped node can still be inspected (issue 18): `swarm status`, `swarm peers` and `swarm log` with --data-dir
read its store when no node answers, through the same views the API serves, and say so."""
from __future__ import annotations

import json

from cli.main import main
from swarm.ops.api import log_view, peers_view, status_view
from swarm.ops.offline import open_offline
from swarm.ops.view import NodeView
from tests.test_ledger_replay import ROUNDS, chain  # noqa: F401 (a fixture: four certified rounds in a store)


def test_a_stopped_nodes_store_gives_its_newest_state_through_the_api_views(chain):  # noqa: F811
    node = open_offline(chain.data_dir)
    try:
        assert isinstance(node, NodeView)
        assert node.exact and node.state.round == ROUNDS and node.state.hash == chain.hashes[-1]
        status = status_view(node)
        assert status["round"] == ROUNDS and status["role"] == "stopped" and status["peers"] == []
        peers = peers_view(node)
        assert sorted(p["name"] for p in peers) == [f"node{i}" for i in range(4)]
        assert all(p["rounds_included"] == ROUNDS for p in peers)
        rows = log_view(node, 1, 100)
        assert [r["round"] for r in rows] == list(range(1, ROUNDS + 1))
        assert all(len(r["certificate_signers"]) == 4 for r in rows)
    finally:
        node.close()


def test_the_cli_falls_back_to_the_store_and_says_so(chain, capsys):  # noqa: F811
    assert main(["status", "--data-dir", str(chain.data_dir), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["round"] == ROUNDS
    assert "node not running" in captured.err
    assert main(["log", "--data-dir", str(chain.data_dir), "--json", "--from", "2", "--limit", "2"]) == 0
    assert [r["round"] for r in json.loads(capsys.readouterr().out)] == [2, 3]
    assert main(["peers", "--data-dir", str(chain.data_dir), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 4


def test_a_folder_without_a_store_is_a_clear_error(tmp_path, capsys):
    assert main(["status", "--data-dir", str(tmp_path)]) != 0
    assert "cannot be read" in capsys.readouterr().err

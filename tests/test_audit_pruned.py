"""`swarm verify` on a node that ran past its payload retention (issue 18): after 305 rounds with the default
keep_payload_rounds it printed "FAIL round 1: replay: gradient ... is not in the store" and exited 1. A real node
runs past a short retention window here; the audit replays from its oldest kept certified snapshot, reports the
earlier rounds as certificate-checked only, and still fails on a real fault after that point."""
from __future__ import annotations

import asyncio
import json

from cli.main import main
from crypto.keys import load_key
from swarm.config import load_genesis, load_node_config
from swarm.ledger.audit import audit_store
from swarm.ledger.store import Store
from swarm.node.node import Node
from swarm.ops.cluster import ClusterOptions, init_cluster
from tests.test_node_shutdown import _run_until_round

ROUNDS = 16


def test_a_store_past_its_payload_retention_is_audited_from_its_oldest_kept_snapshot(tmp_path, capsys):
    retention = {"consensus": {"snapshot_every": 3, "keep_snapshots": 2, "keep_payload_rounds": 4}}
    (spec,) = init_cluster(tmp_path, ClusterOptions(nodes=1, node_overrides=retention))
    config = load_node_config(spec.config_path)
    genesis = load_genesis(config.genesis)

    async def run() -> None:
        node = Node(config, genesis, load_key(config.identity))
        task = await _run_until_round(node, ROUNDS, 120)
        node.stop()
        await asyncio.wait_for(task, 30)

    asyncio.run(run())
    store = Store(spec.data_dir, read_only=True)
    pruned = store.get_meta("payloads_pruned_through", 0)
    store.close()
    assert pruned > 0  # the node did delete old payloads

    report = audit_store(spec.data_dir, genesis, config)
    assert report.ok, [str(f) for f in report.findings]
    assert report.pruned_through == pruned and report.from_snapshot and report.replayed > 0
    assert report.certificate_only == list(range(1, report.from_snapshot[0]))
    assert main(["verify", "--data-dir", str(spec.data_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pruned_through"] == pruned

    # Not a blanket pass: a kept payload after the snapshot that does not match its digest is still a fault.
    store = Store(spec.data_dir)
    last = store.row(store.last_round())
    damaged = store.payload_path(last.entry["gradients"][0])
    store.close()
    data = damaged.read_bytes()
    damaged.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # always a change (a zero byte set to zero was not)
    assert not audit_store(spec.data_dir, genesis, config).ok

"""Helpers for tests that run real node processes on 127.0.0.1 (via swarm.ops.cluster, as `swarm cluster up` does)."""
from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

from swarm.ops.cluster import Cluster, ClusterOptions, init_cluster
from swarm.ops.http_json import get_json


@contextmanager
def running_cluster(folder: Path, **options):
    specs = init_cluster(folder, ClusterOptions(**options))
    cluster = Cluster(folder, specs)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def status(cluster: Cluster, name: str) -> dict | None:
    return get_json(f"{cluster.spec(name).api}/status", 2.0)


def api(cluster: Cluster, name: str, path: str):
    return get_json(f"{cluster.spec(name).api}{path}", 5.0)


def metrics(cluster: Cluster, name: str) -> dict[str, float]:
    """One node's /metrics parsed with Prometheus's own parser: sample name (+ JSON labels) -> value."""
    import json
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen(f"{cluster.spec(name).api}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name + json.dumps(sample.labels, sort_keys=True) if sample.labels else sample.name
            samples[key] = sample.value
    return samples


def wait_until(predicate, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def wait_for_round(cluster: Cluster, names: list[str], round_: int, timeout: float) -> dict[str, dict]:
    def reached():
        statuses = {name: status(cluster, name) for name in names}
        if all(s is not None and s["round"] >= round_ for s in statuses.values()):
            return statuses
        return None
    return wait_until(reached, timeout, f"{names} to reach round {round_}")


def logs_tail(cluster: Cluster, name: str, lines: int = 40) -> str:
    path = cluster.folder / "logs" / f"{name}.log"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

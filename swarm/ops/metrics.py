"""The node's metrics in the Prometheus text exposition format (version 0.0.4), rendered on each scrape.

Written by hand rather than with prometheus_client so the node needs no extra runtime dependency: the format is a
few lines per family. Everything is read from what the node already keeps (Node.metrics, its consensus core, its
committed reputation table); rendering never changes the node.
"""
from __future__ import annotations

import math
from typing import Iterable

from swarm.ledger import reputation
from swarm.ops.view import NodeView

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Exposition:
    """Accumulates metric families and renders them as Prometheus text."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str,
               samples: Iterable[tuple[dict[str, str], float]]) -> None:
        self._lines.append(f"# HELP {name} {_escape_help(help_text)}")
        self._lines.append(f"# TYPE {name} {kind}")
        suffix = "_total" if kind == "counter" else ""
        for labels, value in samples:
            self._lines.append(f"{name}{suffix}{_labels(labels)} {_number(value)}")

    def histogram(self, name: str, help_text: str, values: Iterable[float],
                  buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        values = sorted(values)
        self._lines.append(f"# HELP {name} {_escape_help(help_text)}")
        self._lines.append(f"# TYPE {name} histogram")
        for bound in buckets:
            count = sum(1 for v in values if v <= bound)
            self._lines.append(f"{name}_bucket{_labels({'le': _number(bound)})} {count}")
        self._lines.append(f'{name}_bucket{{le="+Inf"}} {len(values)}')
        self._lines.append(f"{name}_sum {_number(sum(values))}")
        self._lines.append(f"{name}_count {len(values)}")

    def render(self) -> str:
        return "\n".join(self._lines) + "\n"


def render_node_metrics(node: NodeView) -> str:
    """Every metric of one node, as the text a Prometheus server scrapes from /metrics."""
    m = node.metrics
    names = node.genesis.name_of
    out = Exposition()
    out.family("swarm_rounds_committed", "counter", "Rounds this node committed and applied.",
               [({}, m.rounds_committed)])
    out.histogram("swarm_round_seconds", "Seconds from the start of a round to its commit "
                  f"(the node keeps the last {m.round_seconds.maxlen} rounds).", m.round_seconds)
    out.histogram("swarm_commit_seconds", "Seconds from a round's proposal to its commit "
                  f"(the node keeps the last {m.commit_seconds.maxlen} rounds).", m.commit_seconds)
    out.family("swarm_bytes_out", "counter", "Gradient bytes pushed to peers.", [({}, m.bytes_out)])
    out.family("swarm_bytes_in", "counter", "Gradient bytes received from peers.", [({}, m.bytes_in)])
    out.family("swarm_messages_rejected", "counter", "Messages rejected, by reason.",
               [({"reason": reason}, count) for reason, count in sorted(m.rejected.items())])
    out.family("swarm_leader_changes", "counter", "Times this node saw a new leader.", [({}, m.leader_changes)])
    out.family("swarm_divergence_events", "counter", "Times this node computed another state hash than the "
               "certified one.", [({}, m.divergences)])
    out.family("swarm_snapshot_resyncs", "counter", "Times this node replaced its state by a certified snapshot "
               "fetched from a peer.", [({}, m.snapshot_resyncs)])
    out.family("swarm_rounds_trained_ahead", "counter", "Rounds whose local update was trained while the previous "
               "round was being agreed on (training.train_ahead).", [({}, m.trained_ahead)])
    out.family("swarm_duplicate_pushes", "counter", "Pushes of payloads this node already held, dropped before "
               "verification.", [({}, m.duplicate_pushes)])
    out.family("swarm_payload_handovers", "counter", "Rounds whose payloads this node pushed to a leader that had not "
               "proposed them in time.", [({}, m.payload_handovers)])
    out.family("swarm_catchup_entries_from_store", "counter", "Committed entries older than the in-memory window "
               "read back from the store to serve a lagging peer.", [({}, m.catchup_entries_from_store)])
    out.family("swarm_store_write_errors", "counter", "Writes after a commit (payload files, snapshots) that failed "
               "and were retried.", [({}, m.store_write_errors)])
    out.family("swarm_store_write_failing", "gauge", "1 while a write after a commit keeps failing (the round waits "
               "for it).", [({}, float(m.store_write_failing is not None))])
    floor = node.rules.reputation_floor
    table = list(node.state.reputation)
    out.family("swarm_peer_reputation", "gauge", "Committed reputation score per member (0..1).",
               [({"peer": peer, "name": names(peer)}, reputation.score(rep)) for peer, rep in table])
    out.family("swarm_peer_quarantined", "gauge", f"1 when a member's reputation is under the floor {floor}.",
               [({"peer": peer, "name": names(peer)}, float(reputation.score(rep) < floor)) for peer, rep in table])
    out.family("swarm_round", "gauge", "Last committed round.", [({}, node.state.round)])
    out.family("swarm_term", "gauge", "Current consensus term.", [({}, node.core.term)])
    out.family("swarm_is_leader", "gauge", "1 when this node leads the current term.",
               [({}, float(node.core.leader == node.id))])
    privacy = m.privacy
    if privacy is not None:
        out.family("swarm_privacy_epsilon", "gauge", f"Differential privacy spent on this node's records: epsilon at "
                   f"delta {privacy.delta:g} (budget {privacy.budget:g}).", [({}, privacy.epsilon)])
        out.family("swarm_privacy_budget_exhausted", "gauge", "1 once this node stopped contributing because one more "
                   "update would exceed its epsilon budget.", [({}, float(privacy.exhausted))])
        out.family("swarm_privacy_rounds", "gauge", "Rounds whose update this node released with noise (accounted).",
                   [({}, privacy.rounds)])
    if node.last_eval is not None:
        out.family("swarm_test_loss", "gauge", "Test loss of the committed model.", [({}, node.last_eval[0])])
        out.family("swarm_test_accuracy", "gauge", "Test accuracy of the committed model.", [({}, node.last_eval[1])])
    return out.render()


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{key}="{_escape_label(str(value))}"' for key, value in labels.items())
    return "{" + inner + "}"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if value.is_integer() and abs(value) < 2 ** 53 else repr(value)

"""/metrics text: parses as Prometheus exposition and carries the node's counters, histograms and gauges."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from swarm.ops.metrics import Exposition, render_node_metrics
from tests.test_inspect_support import fake_node


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_node_metrics_parse_and_report_what_the_node_counted():
    node = fake_node()
    node.metrics.rounds_committed = 7
    node.metrics.bytes_in, node.metrics.bytes_out = 1234, 5678
    node.metrics.rejected.update({"bad_signature": 3, "wrong_round": 1})
    node.metrics.round_seconds.extend([0.2, 0.7, 3.0])
    node.metrics.leader_changes, node.metrics.divergences = 2, 1
    samples = _samples(render_node_metrics(node))
    assert samples[("swarm_rounds_committed_total", ())] == 7
    assert samples[("swarm_bytes_in_total", ())] == 1234
    assert samples[("swarm_bytes_out_total", ())] == 5678
    assert samples[("swarm_messages_rejected_total", (("reason", "bad_signature"),))] == 3
    assert samples[("swarm_leader_changes_total", ())] == 2
    assert samples[("swarm_divergence_events_total", ())] == 1
    assert samples[("swarm_round_seconds_count", ())] == 3
    assert samples[("swarm_round_seconds_bucket", (("le", "0.5"),))] == 1
    assert samples[("swarm_round_seconds_bucket", (("le", "+Inf"),))] == 3
    assert abs(samples[("swarm_round_seconds_sum", ())] - 3.9) < 1e-9
    assert samples[("swarm_term", ())] == 3
    assert samples[("swarm_round", ())] == 0
    reputations = {dict(k[1])["name"]: v for k, v in samples.items() if k[0] == "swarm_peer_reputation"}
    assert reputations == {"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0}


def test_label_values_are_escaped_so_the_text_still_parses():
    out = Exposition()
    out.family("odd", "gauge", "help with \\ and\nnewline", [({"reason": 'quote " back\\ new\nline'}, 1.5)])
    family = next(text_string_to_metric_families(out.render()))
    assert family.samples[0].labels == {"reason": 'quote " back\\ new\nline'}
    assert family.samples[0].value == 1.5

"""Issue 23's attacks against real node processes on loopback, short (bench/adversarial/ runs the full set with
30 s windows and writes the table in SECURITY.md).

A 4-member cluster runs node0..node2; the attacker holds node3's key. After a baseline window, two attacks in
turn, each from its own process: NewTerms whose votes carry locks packed with 1024 junk (member, signature) pairs
at 40 messages/s to node0 (finding 1), and 500 half-sent HTTP requests held open on node0's API (finding 3).
Rounds must keep committing at no less than MIN_FRACTION of the baseline rate, the attacker's local score on
node0 must drop, and afterwards every store must pass `swarm verify`, with one chain and no payload file missing.

MIN_FRACTION: on 2 shared cores (other work running beside it), 10 s windows gave 83% (packed NewTerms) and 69%
(half-open) of the baseline; the findings before the fixes were 2% (packed NewTerms) and lost data (half-open).
30% leaves room for a noisy machine and still fails a stall.
"""
from __future__ import annotations

import pytest

from bench.adversarial import Bench

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
MIN_FRACTION = 0.30
WINDOW_S = 12.0


def test_rounds_keep_committing_and_nothing_is_lost_under_attack(tmp_path):
    lines: list[str] = []
    bench = Bench(tmp_path, window_s=WINDOW_S, log=lines.append)
    try:
        bench.start()
        outcome = bench.run(["packed_newterm", "half_open"], baseline_after=False)
    finally:
        bench.stop()  # the attackers and every node, whatever happened
    assert all(proc.poll() is not None for proc in [*bench.attackers, *bench.cluster.procs.values()])
    report = "\n".join(lines)

    baseline, packed, half_open = outcome.windows
    assert baseline.committed >= 5, report
    for window in (packed, half_open):
        rate, base = window.committed / window.seconds, baseline.committed / baseline.seconds
        assert rate >= MIN_FRACTION * base, (window.name, report)
        assert window.resumed_after_s is not None, (window.name, report)

    # The packed NewTerms cost their sender: penalised (invalid certificate, flooding), then banned and dropped.
    assert packed.attacker.get("sent", 0) >= 0.8 * 40 * WINDOW_S, packed.attacker
    assert packed.local_score is not None and packed.local_score < 1.0, report
    assert set(packed.rejected_by_reason) & {"invalid_certificate", "flooding", "banned"}, report
    assert (packed.target_term[1] or 0) < 1000, report  # the junk terms (1000 and up) never became node0's view
    # The half-open requests were held, and the node let go of them (cap, then header timeout).
    assert half_open.attacker.get("peak_open", 0) >= 64, half_open.attacker
    assert (half_open.attacker.get("max_held_s") or 0) < 10, half_open.attacker

    # Nothing lost: every store verifies, one chain, every payload a committed entry names is on disk.
    for name, verdict in outcome.verify.items():
        assert verdict.get("ok") and verdict["rc"] == 0, (name, verdict)
    assert outcome.chains_agree, outcome.chain_lengths
    assert max(outcome.chain_lengths.values()) - min(outcome.chain_lengths.values()) <= 2, outcome.chain_lengths
    assert not any(outcome.missing_payloads.values()), outcome.missing_payloads


def test_a_connection_refused_at_the_cap_logs_nothing():
    """Found by the bench: every connection refused at api.max_connections logs 'Task exception was never
    retrieved' with an AssertionError traceback, so API clients still grow the node's log without bound and make
    its event loop format tracebacks."""
    import gc
    import logging
    import socket
    import time

    from swarm.config import ApiConfig
    from tests.test_api_hardening import _port, api_server
    from tests.test_inspect_support import fake_node

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logging.getLogger("asyncio").addHandler(handler)
    try:
        with api_server(fake_node(), limits=ApiConfig(max_connections=4, header_timeout_s=30.0)) as (url, _runner):
            held = []
            for _ in range(30):
                sock = socket.create_connection(("127.0.0.1", _port(url)), timeout=10)
                sock.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n")
                held.append(sock)
            time.sleep(0.5)
            gc.collect()
            time.sleep(0.2)
            for sock in held:
                sock.close()
    finally:
        logging.getLogger("asyncio").removeHandler(handler)
    errors = [r for r in records if r.levelno >= logging.ERROR]
    assert not errors, f"{len(errors)} errors logged for 26 refused connections: {errors[0].getMessage()[:200]}"

"""bench/consensus.py drives the simulator's World by wrapping its feed; the World's signature changed (a message's
source) and the bench broke unnoticed. A short run keeps it honest: messages and signatures per committed round are
counted, and grow with n as PBFT's all-to-all phases make them."""
from __future__ import annotations

from bench.consensus import measure


def test_the_consensus_bench_counts_messages_and_signatures_per_round():
    small, large = measure(4, 3), measure(7, 3)
    for result in (small, large):
        assert result["messages"] > 0 and result["verified"] > 0 and result["cpu_ms"] > 0
    assert large["messages"] > 2 * small["messages"]  # all-to-all prepare and commit: about n^2

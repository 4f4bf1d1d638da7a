"""The value-of-collaboration part (bench/collaboration.py): its accuracies agree with the Trainer's own
evaluation, and a tiny run writes its table (fast: one simulated round)."""
from pathlib import Path

import torch

from bench import collaboration, report
from bench.__main__ import main
from bench.sim import SimConfig


def test_global_accuracy_is_the_trainers_and_own_labels_favour_a_skewed_members_model():
    cfg = SimConfig(nodes=4, partition="dirichlet", alpha=0.1, rounds=2)
    trainer, params = collaboration.alone(cfg, 0)
    overall, own = collaboration.accuracies(trainer, params)
    _loss, accuracy = trainer.evaluate(params)
    assert abs(overall - accuracy) < 1e-9
    # trained on its own skewed labels only, the member's model does better on them than on the whole test set
    assert own > overall + 0.2
    weights = collaboration.own_distribution(trainer, 10)
    assert abs(float(weights.sum()) - 1.0) < 1e-12 and float(weights.max()) > 0.3
    assert torch.equal(params, collaboration.alone(cfg, 0)[1])  # deterministic


def test_tiny_collaboration_run_writes_its_section(tmp_path: Path):
    out = tmp_path / "BENCHMARKS.md"
    assert main(["collaboration", "--rounds", "1", "--seeds", "1", "--sizes", "4", "--alphas", "0.1",
                 "--output", str(out)]) == 0
    text = out.read_text()
    section = text[text.index(report.start_marker("collaboration")):text.index(report.end_marker("collaboration"))]
    assert "python -m bench collaboration --rounds 1" in section
    assert "| n=4, iid |" in section and "| n=4, Dirichlet α=0.1 |" in section
    assert " of 4 |" in section

"""`python -m bench lm` (issue 16): a tiny grid runs end to end and its section is computed from that run."""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import torch

from bench import lm_bench, report
from bench.__main__ import main
from bench.compression_bench import envelope_overhead
from swarm.round import compression

TINY = ["--model", "layers=1", "width=16", "heads=2", "context=16", "corpus_bytes=40000", "validation_bytes=1024",
        "--steps", "2", "--h", "1", "2", "--schemes", "int8", "--batch-size", "2", "--attack", "sign_flip"]


def _section(path: Path) -> str:
    text = path.read_text()
    return text[text.index(report.start_marker("lm")):text.index(report.end_marker("lm"))]


def test_tiny_lm_grid_writes_its_section_from_that_run(tmp_path: Path, monkeypatch):
    runs = []
    real = lm_bench.run_cells
    monkeypatch.setattr(lm_bench, "run_cells", lambda todo, workers: runs.append(real(todo, workers)) or runs[-1])
    out = tmp_path / "BENCHMARKS.md"
    assert main(["lm", *TINY, "--output", str(out)]) == 0
    section = _section(out)
    assert "python -m bench lm --model layers=1" in section
    assert "| H | scheme | rounds |" in section and "1 of 4 sign_flip" in section
    d = int(re.search(r"d=([\d,]+)\)", section).group(1).replace(",", ""))
    payload = len(compression.Compressor("int8").compress(torch.randn(d)))  # the real encoding's size
    sent = 3 * (payload + envelope_overhead())
    for h in (1, 2):
        row = next(line for line in section.splitlines() if line.startswith(f"| {h} | int8 |"))
        assert f"| {payload / 1024:,.1f} KiB | {sent / 1024:,.1f} KiB |" in row
        assert f"| {lm_bench.dp_bytes_per_round(4, d, h) / sent:.1f}x |" in row
    assert re.search(r"Targets met in \d+ of 4 checks", section)

    # The numbers and verdicts are the run's: its measured losses are printed, and moving the reference moves them.
    (outcomes,) = runs
    base, rest = outcomes[0], outcomes[1:]
    assert base.cell.single and len(rest) == 4 and {o.cell.attack for o in rest} == {"none", "sign_flip"}
    assert all(o.rounds == 2 // o.cell.h for o in rest)
    text = lm_bench.report(base, rest, envelope_overhead(), 1.0)
    assert f"**{base.metrics['loss']:.4f}**" in text
    for o in rest:
        assert f"{o.metrics['loss']:.4f} ({o.metrics['bits_per_byte']:.3f})" in text
    worse = max(o.metrics["loss"] for o in rest)
    better = min(o.metrics["loss"] for o in rest)
    # A single process far better than every swarm run: every loss check is missed; far worse: every one met
    # (the 100x communication check stays missed at H <= 2, so the unattacked rows stay missed).
    strong = replace(base, metrics={**base.metrics, "loss": better / 2})
    weak = replace(base, metrics={**base.metrics, "loss": worse * 2})
    assert "Targets met in 0 of 4 checks" in lm_bench.report(strong, rest, envelope_overhead(), 1.0)
    assert "Targets met in 2 of 4 checks" in lm_bench.report(weak, rest, envelope_overhead(), 1.0)


def test_compare_outer_adds_a_second_table_computed_from_its_own_cells(tmp_path: Path, monkeypatch):
    runs = []
    real = lm_bench.run_cells
    monkeypatch.setattr(lm_bench, "run_cells", lambda todo, workers: runs.append(real(todo, workers)) or runs[-1])
    out = tmp_path / "BENCHMARKS.md"
    assert main(["lm", *TINY, "--compare-outer", "0.7", "0.9", "--compare-h", "2", "--output", str(out)]) == 0
    section = _section(out)
    assert "(7 runs," in section and "`--compare-outer 0.7 0.9`" in section
    assert "lr 0.7, momentum 0.9, Nesterov on" in section
    assert re.search(r"Targets met in \d+ of 4 checks", section)            # the main grid's checks only
    assert re.search(r"loss targets met in \d+ of 2 checks", section)
    (outcomes,) = runs
    base, rest = outcomes[0], outcomes[1:]
    compared = [o for o in rest if o.cell.outer != base.cell.outer]
    assert len(compared) == 2 and {o.cell.h for o in compared} == {2}
    assert dict(compared[0].cell.outer) == {"lr": 0.7, "momentum": 0.9, "nesterov": True}
    text = lm_bench.report(base, rest, envelope_overhead(), 1.0)
    second = text[text.index("Outer step compared"):]
    for o in compared:
        assert f"{o.metrics['loss']:.4f} ({o.metrics['bits_per_byte']:.3f})" in second
    # Its numbers are its cells': change one compared loss and that row changes.
    moved = [replace(o, metrics={**o.metrics, "loss": o.metrics["loss"] * 3}) if o is compared[0] else o
             for o in rest]
    assert lm_bench.report(base, moved, envelope_overhead(), 1.0) != text
    assert f"{compared[0].metrics['loss'] * 3:.4f}" in lm_bench.report(base, moved, envelope_overhead(), 1.0)

"""The benchmark report writer and a tiny robustness run (fast: no node processes, two simulated rounds)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from bench import report
from bench.__main__ import main


def test_section_replaced_in_place_and_others_kept(tmp_path: Path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nhand-written intro\n")
    report.write_section("alpha", "first alpha", "python -m bench alpha --one", path, "## Alpha")
    report.write_section("beta", "beta body", "python -m bench beta", path, "## Beta")
    report.write_section("alpha", "second alpha", "python -m bench alpha --two", path, "## Alpha")
    text = path.read_text()
    assert "hand-written intro" in text
    assert "first alpha" not in text and "--one" not in text
    assert "second alpha" in text and "`python -m bench alpha --two`" in text
    assert "beta body" in text and "`python -m bench beta`" in text
    assert text.count("## Alpha") == 1 and text.count(report.start_marker("alpha")) == 1
    assert text.index("second alpha") < text.index("beta body")  # rewritten where it was, not appended
    assert "cores" in text and ("no GPU" in text or "GPU:" in text)


def test_unterminated_section_is_an_error(tmp_path: Path):
    text = f"{report.start_marker('alpha')}\nold\n"
    try:
        report.replace_section(text, "alpha", "new")
    except ValueError:
        return
    raise AssertionError("a start marker without an end must not be silently overwritten")


def test_command_line_names_the_suite():
    assert report.command_line(["/x/bench/__main__.py", "robustness", "--seeds", "3"]) == \
        "python -m bench robustness --seeds 3"


def test_tiny_robustness_run_writes_a_table(tmp_path: Path):
    out = tmp_path / "BENCHMARKS.md"
    argv = ["robustness", "--rounds", "2", "--seeds", "1", "--sizes", "4", "--partitions", "iid",
            "--attacks", "none", "sign_flip", "--rules", "mean", "krum", "--workers", "1", "--output", str(out)]
    assert main(argv) == 0
    text = out.read_text()
    section = text[text.index(report.start_marker("robustness")):text.index(report.end_marker("robustness"))]
    assert "python -m bench robustness --rounds 2" in section
    assert "| rule (n=4, f=1, iid) | none | sign_flip |" in section
    assert "| mean, no reputation |" in section and "| mean + rep. weights |" in section
    assert "krum (→median)" in section  # Krum needs n >= 2f+3: apply() fell back, and the table says so
    assert (tmp_path / "bench" / "plots" / "robustness.png").stat().st_size > 0
    # The prose is read from what ran (issue 22), not typed in: the model, data, floor, rounds and the Krum text.
    from bench.robustness import FLOOR
    from bench.sim import DATASET, SimConfig
    from swarm.config import AggregationSpec
    c = SimConfig()
    assert FLOOR == AggregationSpec().reputation_floor
    assert f"({c.model} on {DATASET}, K={c.local_steps} local steps of batch {c.batch_size}, lr {c.lr})" in section
    assert f"quarantine (floor {FLOOR:g})" in section and "2 rounds, seeds 0..0, no compression" in section
    assert "Krum needs n >= 2f+3" in section and "Bulyan" not in section and "of 7" not in section
    assert "see the honest updates" not in section  # sign_flip does not look at the others' updates
    # The honest-only ceiling: one run per seed (attackers absent), shown beside every attack and in the summary.
    assert "1 honest-only ceiling runs" in section
    assert "| honest members only, mean (ceiling) |" in section and "honest-only ceiling" in section
    worst = section[section.index("### Worst attack per rule"):]
    assert "| krum | " in worst and "(→median)" in worst  # the fallback is said per setting, in the cell


def test_the_honest_only_ceiling_leaves_the_attackers_out_whatever_their_attack():
    """The ceiling run trains only the honest members on their own shards: the attack named does not change it,
    and it differs from the same swarm with its attacker in (a plain mean dragged by a gaussian attacker)."""
    from bench.sim import SimConfig, simulate

    base = SimConfig(nodes=4, f=1, byzantine=1, rule="mean", weighted=False, reputation_floor=0.0, rounds=2,
                     local_steps=2, partition="dirichlet")
    ceiling = simulate(replace(base, attack="gaussian", honest_only=True))
    assert simulate(replace(base, attack="sign_flip", honest_only=True)).accuracy == ceiling.accuracy
    assert simulate(replace(base, attack="gaussian")).accuracy != ceiling.accuracy
    assert ceiling.rules_used == ["mean", "mean"] and ceiling.quarantined_at == {}

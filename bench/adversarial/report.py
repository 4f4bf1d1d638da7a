"""The table of a run, and writing it into SECURITY.md's adversarial section."""
from __future__ import annotations

from pathlib import Path

from bench.adversarial.common import LABEL_STREAMS, RATE
from bench.adversarial.run import Outcome


def table(outcome: Outcome) -> str:
    from bench.report import table as md_table
    base = outcome.baseline.per_30s()
    # One audit after every window, of every round committed in any of them: the same verdict for each row.
    data_lost = ("none" if all(v.get("ok") for v in outcome.verify.values()) and outcome.chains_agree
                 and not any(outcome.missing_payloads.values()) else "SEE BELOW")
    rows = []
    for w in outcome.windows:
        rate = "none" if w.name.startswith("baseline") else RATE[w.name].format(n=LABEL_STREAMS)
        achieved = ""
        if w.name == "packed_newterm" and "achieved_per_s" in w.attacker:
            achieved = f" ({w.attacker['achieved_per_s']}/s sent)"
        elif w.name == "label_streams" and "opened" in w.attacker:
            achieved = f" ({w.attacker['opened']} opened)"
        elif w.name in ("api_log", "api_status") and "requests" in w.attacker:
            achieved = f" ({w.attacker['requests']} answered: {_statuses(w.attacker)})"
        elif w.name == "half_open" and "opened" in w.attacker:
            achieved = (f" ({w.attacker['opened']} opened, peak {w.attacker['peak_open']} held, median "
                        f"{w.attacker['median_held_s']} s)")
        score = "—"
        if w.name in ("packed_newterm", "label_streams") and w.local_score is not None:
            score = f"{w.local_score:.2f}{' (banned)' if w.banned else ''} on {w.target}"
        elif w.target is not None:
            score = "n/a (no key used)"
        metrics = (f"{w.metrics_before / 1024:.1f} → {w.metrics_after / 1024:.1f} KB"
                   if w.metrics_before and w.metrics_after else "—")
        probes = f"{w.api_probes[0]}/{w.api_probes[1]}" if w.target else "—"
        cpu = (f"{w.target_cpu_s} / {w.attacker_cpu_s}" if w.target_cpu_s is not None and w.attacker_cpu_s is not None
               else "—")
        extra = (f"{w.peak_fds} fds, log +{(w.target_log_bytes or 0) / 1024:.0f} KB" if w.target else "—")
        rows.append([w.name, rate + achieved, f"{w.per_30s():.0f}", f"{100 * w.per_30s() / base:.0f}%" if base else "—",
                     data_lost, "—" if w.resumed_after_s is None and w.target is None else f"{w.resumed_after_s} s",
                     score, metrics, probes, cpu, extra])
    head = md_table(["attack", "rate", "rounds / 30 s", "vs baseline", "data lost", "commits resumed after",
                     "attacker's local score", "target /metrics", "target /status answered",
                     "CPU s: target / attacker", "target peak fds, log growth"], rows)
    verify = "; ".join(f"{name}: {'ok' if v.get('ok') else 'FAILED'}, {v.get('rounds')} rounds, "
                       f"{v.get('replayed')} replayed" for name, v in outcome.verify.items())
    return (f"{head}\n\nData lost: **{data_lost}** (one audit after all windows, the nodes stopped). `swarm verify`: {verify}. Chains agree: "
            f"{outcome.chains_agree} (lengths {outcome.chain_lengths}). Payload files named by committed entries "
            f"and missing: {outcome.missing_payloads}.\n")


def _statuses(stats: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(stats.get("by_status", {}).items())) or "none"


def write(path: Path, body: str, command: str, when=None) -> None:
    """Rewrite only the adversarial section of ``path`` (the prose around it is hand-written)."""
    from bench import report
    text = path.read_text() if path.exists() else "# Security\n"
    path.write_text(report.replace_section(text, "adversarial", report.section("adversarial", body, command, when)))
    print(f"wrote {path}")



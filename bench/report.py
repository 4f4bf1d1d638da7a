"""Writes benchmark results into BENCHMARKS.md, one section per part, between markers the suite owns.

Why markers: each part can be rerun alone and rewrite only its own section, so a slow part never has to be
repeated to refresh a fast one, and the prose around the sections stays hand-written. Every section records the
date, the machine (cores, CPU model, GPU or "no GPU") and the exact command that produced it, so a number can
always be traced back to a run.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PATH = REPO / "BENCHMARKS.md"
TITLE = ("# Benchmarks\n\n"
         "Every section below is written by the suite (`bench/__main__.py`): `python -m bench all` reruns them all "
         "(`--quick` for a smoke run), `python -m bench PART` one of them; each records its date, machine and "
         "command. Do not edit between the markers.\n")


def start_marker(part: str) -> str:
    return f"<!-- bench:{part}:start -->"


def end_marker(part: str) -> str:
    return f"<!-- bench:{part}:end -->"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def gpu_name() -> str:
    """The GPU torch sees, or "no GPU"."""
    try:
        import torch
        if torch.cuda.is_available():
            return f"GPU: {torch.cuda.get_device_name(0)} (x{torch.cuda.device_count()})"
    except Exception:  # a broken CUDA install must not stop the report
        pass
    return "no GPU"


def machine() -> str:
    mem = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        mem = f", {pages / (1 << 30):.0f} GiB RAM"
    except (ValueError, OSError):
        pass
    return (f"{os.cpu_count()} cores ({cpu_model()}){mem}, {gpu_name()}, Python {platform.python_version()}"
            f"{_load()}")


def _load() -> str:
    """The machine's load when the section is written: on a shared box wall-clock numbers depend on it (the
    15-minute average roughly covers a run of that length)."""
    try:
        one, _, fifteen = os.getloadavg()
    except OSError:
        return ""
    return f", load average {one:.1f} (1 min) / {fifteen:.1f} (15 min) when written"


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed: `python -m bench ...` for the suite runner, else the script and its arguments."""
    argv = list(sys.argv if argv is None else argv)
    if argv and argv[0].endswith(("bench/__main__.py", "-m")):
        argv = ["python", "-m", "bench", *argv[1:]]
    return shlex.join(argv)


def section(part: str, body: str, command: str, when: _dt.datetime | None = None,
            machine_line: str | None = None) -> str:
    """The marked block for one part: header line with date, machine and command, then the body."""
    when = when or _dt.datetime.now().astimezone()
    header = (f"_Generated {when.strftime('%Y-%m-%d %H:%M %Z')} on {machine_line or machine()}._  \n"
              f"_Command:_ `{command}`\n")
    return f"{start_marker(part)}\n{header}\n{body.rstrip()}\n{end_marker(part)}"


def replace_section(text: str, part: str, block: str) -> str:
    """``text`` with the part's marked block replaced in place, or appended when the part has no block yet."""
    start, end = start_marker(part), end_marker(part)
    i = text.find(start)
    if i >= 0:
        j = text.find(end, i)
        if j < 0:
            raise ValueError(f"{start} has no matching {end}")
        return text[:i] + block + text[j + len(end):]
    if not text.strip():
        text = TITLE
    return text.rstrip("\n") + "\n\n" + block + "\n"


def write_section(part: str, body: str, command: str | None = None, path: Path = DEFAULT_PATH,
                  heading: str | None = None) -> Path:
    """Rewrite only ``part``'s section of ``path`` (created with a title if missing). A new section gets
    ``heading`` (a `## ...` line) above its markers so later rewrites keep it."""
    path = Path(path)
    text = path.read_text() if path.exists() else ""
    block = section(part, body, command or command_line())
    if start_marker(part) not in text and heading:
        block = f"{heading}\n\n{block}"
    path.write_text(replace_section(text, part, block))
    return path


def rule_text(rule: str, options: dict, nnm: bool = False) -> str:
    """A genesis aggregation rule as bench prose names it: "centered_clipping (tau auto)", "nnm+median"."""
    text = ("nnm+" if nnm else "") + rule
    if options:
        text += " (" + ", ".join(f"{k} {v}" for k, v in sorted(options.items())) + ")"
    return text


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A GitHub markdown table; floats are printed as given (format them before)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)

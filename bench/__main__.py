"""The benchmark suite: `python -m bench all` or `python -m bench PART`, each part rewriting its own BENCHMARKS.md
section (bench/report.py), with the date, the machine and the command line that produced it.

    python -m bench all [--quick] [--seeds N] [--rounds R] [--device cpu|cuda] [--skip soak ...]
    python -m bench robustness --seeds 3 --rounds 25          # one part, with its own options (--help)
    python -m bench aggregation -- --n 8 --d 1e5 --repeat 1   # an existing script: arguments after -- go to it

Parts written here return markdown. The older scripts (aggregation, transport, round, consensus, soak) are run
as subprocesses and their printed tables are captured as they are, so they stay usable on their own.
"""
from __future__ import annotations

import argparse
import importlib
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench import report

NATIVE = {  # part -> module with PART, HEADING, add_arguments(parser), run(args) -> markdown
    "robustness": "bench.robustness",
    "collaboration": "bench.collaboration",
    "compression": "bench.compression_bench",
    "time_to_accuracy": "bench.time_to_accuracy",
    "scaling": "bench.scaling",
    "scale": "bench.scale",
    "stragglers": "bench.stragglers",
    "lm": "bench.lm_bench",
    "large": "bench.large_model",
    "gpu": "bench.gpu",
}
WRAPPED = {  # part -> (module, arguments for a full run, arguments for --quick, heading)
    "aggregation": ("bench.aggregation", ["--n", "8", "16", "--d", "1e6", "--repeat", "3"],
                    ["--n", "8", "--d", "1e5", "--repeat", "1"], "## Aggregation rules: ms per call"),
    "transport": ("bench.transport", [], ["--repeats", "1", "--pings", "100"], "## Transport: libp2p vs plain TCP"),
    "round": ("bench.round", ["--rounds", "10"], ["--rounds", "4", "--compression", "fp16"],
              "## Round: swarm vs plain averaging over the same transport"),
    "consensus": ("bench.consensus", [], [], "## Consensus"),
    "soak": ("bench.soak", ["--minutes", "2"], ["--minutes", "1", "--interval", "2"], "## Soak"),
}
ORDER = ["robustness", "collaboration", "compression", "time_to_accuracy", "scaling", "scale", "stragglers", "lm", "large", "gpu", "aggregation", "transport",
         "round", "consensus", "soak"]
WRAPPED_TIMEOUT_S = 1800


def common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="small grids and few rounds (minutes, not tens)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per cell (simulated parts)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per run")
    parser.add_argument("--output", type=Path, default=report.DEFAULT_PATH, help="the markdown file to update")


def part_parser(part: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m bench {part}")
    common_arguments(parser)
    if part in NATIVE:
        importlib.import_module(NATIVE[part]).add_arguments(parser)
    return parser


def run_native(part: str, args, command: str) -> None:
    module = importlib.import_module(NATIVE[part])
    body = module.run(args)
    report.write_section(part, body, command, args.output, module.HEADING)


def run_wrapped(part: str, args, extra: list[str], command: str) -> bool:
    """Run an existing bench script and capture its stdout into the part's section; False when it is absent."""
    module, full, quick, heading = WRAPPED[part]
    if not (report.REPO / (module.replace(".", "/") + ".py")).exists():
        print(f"  {part}: {module} does not exist yet, skipped", file=sys.stderr)
        return False
    argv = [sys.executable, "-m", module, *(extra or (quick if args.quick else full))]
    done = subprocess.run(argv, cwd=report.REPO, capture_output=True, text=True, timeout=WRAPPED_TIMEOUT_S)
    script = "python -m " + module + "".join(f" {a}" for a in argv[3:])
    body = f"Output of `{script}`:\n\n```text\n{done.stdout.rstrip()}\n```"
    if done.returncode != 0:  # keep what it measured, and say that its own check failed
        sys.stderr.write(done.stderr[-4000:])
        body += f"\n\n**Exited with code {done.returncode}** (stderr tail):\n\n```text\n{done.stderr[-1500:].rstrip()}\n```"
    report.write_section(part, body, command, args.output, heading)
    return True


def run_part(part: str, args, extra: list[str], command: str) -> None:
    started = time.monotonic()
    print(f"bench {part} ...", file=sys.stderr, flush=True)
    if part in NATIVE:
        run_native(part, args, command)
    else:
        run_wrapped(part, args, extra, command)
    print(f"bench {part}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # SIGTERM unwinds like Ctrl-C, so `finally` blocks stop clusters and worker pools instead of orphaning them.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    command = report.command_line(["python", "-m", "bench", *argv])
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__ + "\nparts: all, " + ", ".join(ORDER))
        return 0
    part, rest = argv[0], argv[1:]
    extra = rest[rest.index("--") + 1:] if "--" in rest else []
    rest = rest[:rest.index("--")] if "--" in rest else rest
    if part == "all":
        parser = argparse.ArgumentParser(prog="python -m bench all")
        common_arguments(parser)
        parser.add_argument("--device", default="cpu")
        parser.add_argument("--workers", type=int, default=None)
        parser.add_argument("--skip", nargs="+", default=[], choices=ORDER)
        suite = parser.parse_args(rest)
        for name in ORDER:
            if name in suite.skip:
                continue
            args = part_parser(name).parse_args([])
            for key in ("quick", "seeds", "rounds", "output", "device", "workers"):
                if hasattr(args, key):
                    setattr(args, key, getattr(suite, key))
            run_part(name, args, [], command)
        return 0
    if part not in ORDER:
        print(f"unknown part {part!r}; parts: all, {', '.join(ORDER)}", file=sys.stderr)
        return 2
    run_part(part, part_parser(part).parse_args(rest), extra, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())

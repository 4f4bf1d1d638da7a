"""`python -m bench.adversarial`: see the package docstring."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.adversarial import __doc__ as DOC
from bench.adversarial.attackers import attack_main
from bench.adversarial.common import ATTACK_NAMES
from bench.adversarial.report import table, write
from bench.adversarial.run import Bench, Outcome, Window


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "attack":
        attack_main(argv[1:])
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.adversarial", description=DOC.split("\n\n")[0])
    parser.add_argument("--window", type=float, default=30.0, help="seconds per window (default 30)")
    parser.add_argument("--attacks", default=",".join(ATTACK_NAMES),
                        help=f"comma-separated, in order (default {','.join(ATTACK_NAMES)})")
    parser.add_argument("--local-steps", type=int, default=3)
    parser.add_argument("--node-fd-limit", type=int, default=512,
                        help="descriptors each node may open (finding 3 ran out at 512; 0: this process's limit)")
    parser.add_argument("--dir", help="cluster folder to use (default: a temporary one, removed after)")
    parser.add_argument("--render", metavar="JSON", help="only print (and --write) the table of a saved run "
                        "(DIR/adversarial.json), with that run's command and date")
    parser.add_argument("--write", metavar="FILE", help="write the table into FILE's adversarial section")
    args = parser.parse_args(argv)
    attacks = [a for a in args.attacks.split(",") if a]
    unknown = set(attacks) - set(ATTACK_NAMES)
    if unknown:
        parser.error(f"unknown attacks {sorted(unknown)}")
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        windows = [Window(**{**w, "api_probes": tuple(w["api_probes"]), "target_term": tuple(w["target_term"])})
                   for w in saved["windows"]]
        outcome = Outcome(windows, saved["verify"], saved["chains_agree"], saved["chain_lengths"],
                          saved["missing_payloads"])
        body = table(outcome)
        print(body)
        if args.write:
            import datetime as dt
            write(Path(args.write), body, saved["command"], dt.datetime.fromtimestamp(saved["when"]).astimezone())
        return 0
    holder = None if args.dir else tempfile.TemporaryDirectory(prefix="swarm-adversarial-")
    folder = Path(args.dir or holder.name)
    bench = Bench(folder, args.window, args.local_steps, node_fd_limit=args.node_fd_limit or None)
    try:
        bench.start()
        outcome = bench.run(attacks)
    finally:
        bench.stop()
    body = table(outcome)
    command = "python -m bench.adversarial " + " ".join(argv)
    (folder / "adversarial.json").write_text(json.dumps(
        {"command": command, "when": time.time(), "windows": [dataclasses.asdict(w) for w in outcome.windows],
         "verify": outcome.verify, "chains_agree": outcome.chains_agree, "chain_lengths": outcome.chain_lengths,
         "missing_payloads": outcome.missing_payloads}, indent=1))
    print(body)
    if args.write:
        write(Path(args.write), body, command)
    if holder is not None:
        holder.cleanup()
    ok = all(v.get("ok") for v in outcome.verify.values()) and outcome.chains_agree
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

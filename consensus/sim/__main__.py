"""``python -m consensus.sim --seeds N --nodes N --byzantine F --scenario NAME``: exit 1 on any violation."""
from __future__ import annotations

import argparse
import sys
import time

from .runner import run_many
from .scenarios import ALL_SCENARIOS


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m consensus.sim", description=__doc__)
    p.add_argument("--seeds", type=int, default=100, help="how many seeds per scenario and size")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--nodes", type=int, nargs="+", default=[4], help="swarm sizes, e.g. 4 7 10")
    p.add_argument("--byzantine", type=int, default=None, help="faulty nodes (default: f for Byzantine scenarios)")
    p.add_argument("--scenario", nargs="+", default=["all"], help=f"one or more of: all {' '.join(ALL_SCENARIOS)}")
    p.add_argument("--quorum", type=int, default=None, help="override the quorum size (to plant a bug)")
    args = p.parse_args(argv)
    scenarios = ALL_SCENARIOS if args.scenario == ["all"] else args.scenario
    start = time.perf_counter()
    total = failed = 0
    for res in run_many(scenarios, range(args.first_seed, args.first_seed + args.seeds), args.nodes, args.byzantine,
                        args.quorum):
        total += 1
        if res.violation:
            failed += 1
            print(f"VIOLATION [{res.scenario} n={res.n} seed={res.seed}] {res.violation}")
            print(f"  replay: {res.replay_command(args.quorum)}")
    print(f"{total} seeds, {failed} with violations, {time.perf_counter() - start:.1f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

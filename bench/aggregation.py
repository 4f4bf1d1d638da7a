"""Aggregation benchmark: ms per call and GB/s (input bytes / time) beside straightforward baselines.

    python -m bench.aggregation                     # n in {8,16,32}, d in {1e6, 1e7}
    python -m bench.aggregation --n 8 --d 100000 --repeat 1   # quick

Baselines in the same run: Krum with torch.cdist, median with torch.median(dim=0), trimmed mean with
torch.sort(dim=0), and a plain stack.sum(0) as the memory-bandwidth yardstick. The last column says which
pass decided each distance-based rule's selection over its timed calls (swarm.aggregation.certified.PATHS:
"fast" and "fast-k32"/"fast-centred" are certified float32 passes, "exact" the exact fallback), and the
summary line gives the certification hit rate.
"""
from __future__ import annotations

import argparse
import time

import torch

from swarm.aggregation import aggregate, certified


def krum_cdist(stack: torch.Tensor, f: int) -> torch.Tensor:
    dist = torch.cdist(stack, stack) ** 2
    n = stack.shape[0]
    scores = torch.sort(dist, dim=1).values[:, 1:n - f - 1].sum(dim=1)
    return stack[int(torch.argmin(scores))]


def median_torch(stack: torch.Tensor, f: int) -> torch.Tensor:
    return torch.median(stack, dim=0).values


def trimmed_sort(stack: torch.Tensor, f: int) -> torch.Tensor:
    n = stack.shape[0]
    return torch.sort(stack, dim=0).values[f:n - f].mean(dim=0)


def timed(fn, repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--d", type=float, nargs="+", default=[1e6, 1e7])
    parser.add_argument("--repeat", type=int, default=3, help="timed calls per cell (best is reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--rules", nargs="+",
                        default=["sum", "mean", "krum", "krum_cdist", "multikrum", "median", "median_torch",
                                 "trimmed_mean", "trimmed_sort", "bulyan", "centered_clipping", "nnm+mean"],
                        help="rule names; centered_clipping:auto (the genesis default) or centered_clipping:TAU")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, best of {args.repeat}")
    print(f"{'n':>3} {'d':>9} {'rule':<18} {'ms/call':>10} {'GB/s':>7} {'vs base':>8}  path")
    for d in (int(x) for x in args.d):
        for n in args.n:
            stack = torch.randn(n, d, generator=torch.Generator().manual_seed(0))
            f = max((n - 3) // 4, 1)
            gb = stack.numel() * 4 / 1e9
            calls = {
                "sum": lambda: stack.sum(0),
                "krum_cdist": lambda: krum_cdist(stack, f),
                "median_torch": lambda: median_torch(stack, f),
                "trimmed_sort": lambda: trimmed_sort(stack, f),
            }
            for rule in args.rules:
                if rule not in calls:
                    name, options = _rule_and_options(rule)
                    calls[rule] = (lambda r, o: lambda: aggregate(r, stack, f, **o))(name, options)
            times, paths = {}, {}
            for rule in args.rules:
                before = dict(certified.PATHS)
                times[rule] = timed(calls[rule], args.repeat)
                used = {k: v - before.get(k, 0) for k, v in certified.PATHS.items() if v > before.get(k, 0)}
                paths[rule] = " ".join(f"{k}x{v}" for k, v in sorted(used.items()))
            baseline = {"krum": "krum_cdist", "median": "median_torch", "trimmed_mean": "trimmed_sort",
                        "mean": "sum"}
            for rule in args.rules:
                t = times[rule]
                base = baseline.get(rule)
                ratio = f"{times[base] / t:7.1f}x" if base in times else ""
                print(f"{n:>3} {d:>9} {rule:<18} {t * 1e3:>10.1f} {gb / t:>7.2f} {ratio:>8}  {paths[rule]}", flush=True)
            del stack
    decided = sum(certified.PATHS.values())
    if decided:
        fast = decided - certified.PATHS.get("exact", 0)
        print(f"certified fast decisions: {fast}/{decided} ({100.0 * fast / decided:.0f}%): {dict(certified.PATHS)}")


def _rule_and_options(rule: str) -> tuple[str, dict]:
    """"centered_clipping:auto" -> ("centered_clipping", {"tau": "auto"}) (the genesis default), ":2.5" a fixed
    tau; any other name as it is."""
    name, _, tau = rule.partition(":")
    if not tau:
        return name, {}
    if name != "centered_clipping":
        raise SystemExit(f"{rule}: only centered_clipping takes an option here (its tau)")
    return name, {"tau": tau if tau == "auto" else float(tau)}


if __name__ == "__main__":
    main()

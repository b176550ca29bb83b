#!/usr/bin/env python3
"""Compare two pytest-benchmark JSON files and fail on a regression.

    python bench/compare.py BASE.json NEW.json [--threshold 10] [--stat median]

For every benchmark present in both files it prints the base and new time of
the chosen statistic and the ratio new / base (above 1.00 is slower).  The exit
status is 1 when any benchmark got slower by more than the threshold (percent),
2 on a usage error, and 0 otherwise.  Benchmarks found in only one file are
listed and do not fail the comparison unless ``--strict`` is given.

Both files should come from the same machine, close in time (for example
``make bench-ci`` on main, then on a change): timings from different machines
are not comparable.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, List, Optional, Sequence, Tuple

STATS = ("min", "median", "mean", "max", "iqr", "stddev")


def load(path: str, stat: str) -> Tuple[Dict[str, float], Dict[str, object]]:
    """{benchmark fullname: statistic in seconds}, and the file's machine info."""
    with open(path) as fh:
        data = json.load(fh)
    if not isinstance(data, dict) or "benchmarks" not in data:
        raise ValueError(f"{path} is not a pytest-benchmark JSON file (no 'benchmarks' key)")
    out: Dict[str, float] = {}
    for bench in data["benchmarks"]:
        stats = bench.get("stats") or {}
        if stat not in stats:
            raise ValueError(f"{path}: benchmark {bench.get('fullname')} has no statistic {stat!r}")
        out[bench.get("fullname") or bench["name"]] = float(stats[stat])
    return out, data.get("machine_info") or {}


def _time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds * 1e6:.2f} us"


def compare(
    base: Dict[str, float], new: Dict[str, float], threshold: float
) -> Tuple[List[Tuple[str, float, float, float, str]], List[str], List[str]]:
    """Rows (name, base, new, ratio, verdict), names only in base, names only in new."""
    rows = []
    limit = 1 + threshold / 100
    for name in sorted(set(base) & set(new)):
        b, n = base[name], new[name]
        ratio = n / b if b > 0 else float("inf")
        if ratio > limit:
            verdict = "REGRESSION"
        elif ratio < 1 / limit:
            verdict = "faster"
        else:
            verdict = "same"
        rows.append((name, b, n, ratio, verdict))
    return rows, sorted(set(base) - set(new)), sorted(set(new) - set(base))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description="Compare two pytest-benchmark JSON files; exit 1 on a regression beyond the threshold."
    )
    parser.add_argument("base", help="the reference run (e.g. main)")
    parser.add_argument("new", help="the run to check (e.g. a change)")
    parser.add_argument("--threshold", type=float, default=10.0,
                        help="percent slowdown that counts as a regression (default 10)")
    parser.add_argument("--stat", choices=STATS, default="median",
                        help="statistic to compare (default median; min is steadier on a noisy machine)")
    parser.add_argument("--strict", action="store_true",
                        help="also fail when a benchmark exists in only one of the files")
    args = parser.parse_args(argv)
    if args.threshold < 0:
        parser.error("--threshold must not be negative")
    try:
        base, base_machine = load(args.base, args.stat)
        new, new_machine = load(args.new, args.stat)
    except (OSError, ValueError) as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 2

    rows, only_base, only_new = compare(base, new, args.threshold)
    width = max([len(r[0]) for r in rows] + [9])
    print(f"{'benchmark':<{width}}  {'base':>12}  {'new':>12}  {'new/base':>8}  ({args.stat}, threshold {args.threshold:g}%)")
    for name, b, n, ratio, verdict in rows:
        mark = "" if verdict == "same" else f"  {verdict}"
        print(f"{name:<{width}}  {_time(b):>12}  {_time(n):>12}  {ratio:>8.2f}{mark}")
    for name in only_base:
        print(f"{name:<{width}}  only in {args.base}")
    for name in only_new:
        print(f"{name:<{width}}  only in {args.new}")
    for key in ("node", "cpu"):
        a, b = base_machine.get(key), new_machine.get(key)
        if a and b and a != b:
            print(f"warning: the runs come from different machines ({key}: {a!r} vs {b!r})", file=sys.stderr)
            break

    regressions = [r for r in rows if r[4] == "REGRESSION"]
    if regressions:
        print(f"{len(regressions)} of {len(rows)} benchmarks regressed by more than {args.threshold:g}%")
        return 1
    if args.strict and (only_base or only_new):
        print("benchmarks differ between the files (--strict)")
        return 1
    print(f"no regression beyond {args.threshold:g}% in {len(rows)} benchmarks")
    return 0


if __name__ == "__main__":
    sys.exit(main())

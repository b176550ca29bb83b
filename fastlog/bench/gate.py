"""A performance gate for CI: fastlog's speed RATIOS against references measured in the same run.

``python -m fastlog.bench.gate`` (``make perf-gate``) reads a gate file
(default ``bench/gate.json``), measures every ratio it lists and fails when one
has dropped below its threshold::

    {"format": "fastlog-perf-gate/1",
     "config": {"entries": 20000, "repeat": 7, ...},        # BenchConfig fields
     "ratios": {"append-steady/raw": {"workload": "append-steady", "against": "raw",
                                      "recorded": 1.4, "threshold": 0.93}, ...}}

A ratio is fastlog's figure over the reference's (``raw`` is the plain-file
baseline, any other name an engine of :mod:`fastlog.engines`), oriented so
that above 1 means fastlog is better.  Absolute speeds move with the machine;
ratios taken in the same run mostly do not, so the gate compares ratios.

Why it holds on a noisy two-core machine:

* the engines are interleaved (repetition 1 of every engine, then repetition
  2, ...) and each ratio is the median over the repetitions of the ratio
  *within* one repetition, so a burst of load hits both sides of a ratio;
* the workloads chosen are CPU- and page-cache-bound (appends to a log that
  has been flushed before, and 10,000-entry range reads): no fsync, whose cost
  depends on the disk and on what other processes are writing;
* the threshold sits a third below the recorded ratio; a ratio below it is
  measured once more, and the gate fails only when it is below in both runs.

``--record`` measures and rewrites the file (recorded value, threshold =
recorded x (1 - --margin)).  Exit status: 0 pass, 1 a ratio dropped, 2 the gate
could not measure (bad file, engine missing, the compiled core not built).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, TextIO

from .runner import BenchConfig, BenchResults, run_bench
from .subjects import BASELINE, REFERENCE
from .workloads import WORKLOADS

__all__ = ["GateError", "DEFAULT_GATE_FILE", "load_gate", "measure", "check", "record", "main"]

FORMAT = "fastlog-perf-gate/1"
#: The gate file of this repository, relative to the working directory.
DEFAULT_GATE_FILE = os.path.join("bench", "gate.json")
#: How a ratio is taken from the repetitions: "best" = each side's best figure
#: over the repetitions, one over the other; "median" = the median of the ratios
#: within each repetition.
STATISTICS = ("best", "median")
#: How far below the recorded ratio the threshold sits.
DEFAULT_MARGIN = 1 / 3


class GateError(Exception):
    """The gate could not measure (exit status 2)."""


def load_gate(path: str) -> Dict[str, Any]:
    try:
        with open(path) as fh:
            gate = json.load(fh)
    except (OSError, ValueError) as exc:
        raise GateError(f"cannot read gate file {path}: {exc}") from None
    if gate.get("format") != FORMAT or not isinstance(gate.get("ratios"), dict) or not gate["ratios"]:
        raise GateError(f"{path} is not a {FORMAT} file with at least one ratio")
    for name, spec in gate["ratios"].items():
        if spec.get("workload") not in WORKLOADS:
            raise GateError(f"{path}: ratio {name} names an unknown workload {spec.get('workload')!r}")
        if not spec.get("against"):
            raise GateError(f"{path}: ratio {name} has no 'against'")
    return gate


def _config(gate: Dict[str, Any], workdir: Optional[str]) -> BenchConfig:
    ratios = gate["ratios"].values()
    others = list(dict.fromkeys(spec["against"] for spec in ratios))
    workloads = list(dict.fromkeys(spec["workload"] for spec in ratios))
    values = dict(gate.get("config", {}))
    values.update(engines=[REFERENCE] + [o for o in others if o != REFERENCE], workloads=workloads,
                  baseline=BASELINE in others, workdir=workdir)
    try:
        return BenchConfig(**values)
    except TypeError as exc:
        raise GateError(f"bad gate config: {exc}") from None


def _require_compiled_core() -> None:
    """The gate is about the compiled core; measuring the pure-Python one would pass or fail for nothing."""
    from ..engines.fastlog_engines import default_implementation

    if default_implementation() != "c":
        raise GateError("the fastlog engine is the pure-Python core here (FASTLOG_NO_EXTENSIONS is set)")
    try:
        import fastlog_ext._core  # noqa: F401
    except ImportError as exc:
        raise GateError(f"the compiled extension is not built ({exc}); run `make build`") from None


def _ratio_per_repetition(results: BenchResults, workload_id: str, other: str) -> List[float]:
    workload = WORKLOADS[workload_id]
    mine, theirs = results.get(REFERENCE, workload_id), results.get(other, workload_id)
    for name, result in ((REFERENCE, mine), (other, theirs)):
        if result is None or result.status != "ok":
            why = "not run" if result is None else (result.wrong or result.errors or [result.unavailable or result.status])[0]
            raise GateError(f"{name}/{workload_id} has no valid result: {why}")
    assert mine is not None and theirs is not None
    if len(mine.samples) != len(theirs.samples):
        raise GateError(f"{workload_id}: {len(mine.samples)} samples of {REFERENCE}, {len(theirs.samples)} of {other}")
    return [workload.speedup(a, b) for a, b in zip(mine.samples, theirs.samples)]


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def measure(gate: Dict[str, Any], *, workdir: Optional[str] = None,
            progress: Optional[TextIO] = None, require_compiled: bool = True) -> Dict[str, Dict[str, Any]]:
    """One run of every engine the gate names; per ratio: the median and the per-repetition ratios."""
    if require_compiled:
        _require_compiled_core()
    config = _config(gate, workdir)
    try:
        results = run_bench(config, progress=progress)
    except ValueError as exc:
        raise GateError(str(exc)) from None
    if results.skipped:
        name, reason = next(iter(results.skipped.items()))
        raise GateError(f"engine {name} is not available: {reason}")
    statistic = gate.get("statistic", "median")
    if statistic not in STATISTICS:
        raise GateError(f"unknown statistic {statistic!r}; choose from {', '.join(STATISTICS)}")
    out: Dict[str, Dict[str, Any]] = {}
    for name, spec in gate["ratios"].items():
        workload = WORKLOADS[spec["workload"]]
        per_rep = _ratio_per_repetition(results, spec["workload"], spec["against"])
        mine = results.get(REFERENCE, spec["workload"]).samples  # type: ignore[union-attr]
        theirs = results.get(spec["against"], spec["workload"]).samples  # type: ignore[union-attr]
        pick = max if workload.higher_is_better else min
        best = workload.speedup(pick(mine), pick(theirs))
        out[name] = {"ratio": best if statistic == "best" else _median(per_rep), "statistic": statistic,
                     "ratio_of_bests": best, "median_of_ratios": _median(per_rep),
                     "per_repetition": per_rep, "fastlog_samples": mine, "other_samples": theirs}
    return out


def check(gate: Dict[str, Any], *, workdir: Optional[str] = None, retries: int = 1,
          progress: Optional[TextIO] = None, require_compiled: bool = True) -> Dict[str, Any]:
    """Measure and compare with the thresholds; a ratio below is measured again ``retries`` times.

    Returns {"passed": bool, "runs": [...], "ratios": {name: {..., "passed": bool}}}.
    A ratio fails only when it is below its threshold in every run.
    """
    runs = [measure(gate, workdir=workdir, progress=progress, require_compiled=require_compiled)]

    def below(name: str, run: Dict[str, Dict[str, Any]]) -> bool:
        return run[name]["ratio"] < gate["ratios"][name]["threshold"]

    failing = [name for name in gate["ratios"] if below(name, runs[0])]
    for _ in range(retries):
        if not failing:
            break
        if progress is not None:
            progress.write(f"perf gate: below threshold ({', '.join(failing)}); measuring again\n")
        runs.append(measure(gate, workdir=workdir, progress=progress, require_compiled=require_compiled))
        failing = [name for name in failing if below(name, runs[-1])]
    ratios: Dict[str, Any] = {}
    for name, spec in gate["ratios"].items():
        best = max(run[name]["ratio"] for run in runs)
        ratios[name] = {**spec, "measured": [run[name]["ratio"] for run in runs], "best": best,
                        "passed": name not in failing}
    return {"passed": not failing, "runs": runs, "ratios": ratios}


def record(gate: Dict[str, Any], *, margin: float = DEFAULT_MARGIN, workdir: Optional[str] = None,
           progress: Optional[TextIO] = None, require_compiled: bool = True) -> Dict[str, Any]:
    """Measure and return the gate with every ratio's recorded value and threshold replaced."""
    if not 0 < margin < 1:
        raise GateError("the margin must be between 0 and 1")
    run = measure(gate, workdir=workdir, progress=progress, require_compiled=require_compiled)
    new = dict(gate)
    new["ratios"] = {}
    for name, spec in gate["ratios"].items():
        value = run[name]["ratio"]
        new["ratios"][name] = {**spec, "recorded": round(value, 3), "threshold": round(value * (1 - margin), 3)}
    new["recorded_on"] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "margin": round(margin, 4),
    }
    return new


def format_check(gate_path: str, gate: Dict[str, Any], outcome: Dict[str, Any]) -> str:
    cfg = gate.get("config", {})
    lines = [
        f"perf gate ({gate_path}): {cfg.get('repeat', '?')} interleaved repetitions per run, "
        f"{len(outcome['runs'])} run{'s' if len(outcome['runs']) != 1 else ''}; ratio = fastlog / reference "
        "(above 1: fastlog faster)",
        f"  {'ratio':<24} {'measured':>17} {'recorded':>9} {'threshold':>10}",
    ]
    for name, row in outcome["ratios"].items():
        measured = " / ".join(f"{v:.2f}x" for v in row["measured"])
        recorded = f"{row['recorded']:.2f}x" if isinstance(row.get("recorded"), (int, float)) else "-"
        lines.append(f"  {name:<24} {measured:>17} {recorded:>9} {row['threshold']:>9.2f}x  "
                     f"{'ok' if row['passed'] else 'DROPPED'}")
    lines.append("perf gate: " + ("passed" if outcome["passed"] else
                                  "FAILED: a ratio fell more than the margin below the recorded one"))
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastlog.bench.gate",
                                     description="Fail when fastlog's speed ratios drop below the gate file's thresholds.")
    parser.add_argument("gate", nargs="?", default=DEFAULT_GATE_FILE, help=f"gate file (default {DEFAULT_GATE_FILE})")
    parser.add_argument("--record", action="store_true",
                        help="measure and rewrite the gate file (threshold = measured x (1 - margin))")
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN, help="for --record (default 1/3)")
    parser.add_argument("--retries", type=int, default=1, help="re-measurements of a ratio found below (default 1)")
    parser.add_argument("--workdir", help="where the engines write (default: the system temporary directory)")
    parser.add_argument("--json", metavar="FILE", help="write the measurements as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    progress = None if args.quiet else sys.stderr
    try:
        gate = load_gate(args.gate)
        if args.record:
            new = record(gate, margin=args.margin, workdir=args.workdir, progress=progress)
            Path(args.gate).write_text(json.dumps(new, indent=1) + "\n")
            for name, spec in new["ratios"].items():
                print(f"  {name:<24} recorded {spec['recorded']:.2f}x, threshold {spec['threshold']:.2f}x")
            print(f"perf gate: wrote {args.gate}")
            outcome: Dict[str, Any] = {"recorded": new}
            status = 0
        else:
            t0 = time.perf_counter()
            outcome = check(gate, workdir=args.workdir, retries=args.retries, progress=progress)
            print(format_check(args.gate, gate, outcome))
            passed = sum(1 for row in outcome["ratios"].values() if row["passed"])
            print(f"perf gate: {time.perf_counter() - t0:.1f} s")
            # The last line in the plain form test logs are read for: one per ratio.
            print(f"perf-gate: {passed} passed, {len(outcome['ratios']) - passed} failed")
            status = 0 if outcome["passed"] else 1
    except GateError as exc:
        print(f"perf gate: cannot measure: {exc}", file=sys.stderr)
        return 2
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(outcome, indent=1, default=str) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())

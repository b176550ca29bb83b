"""``fastlog bench``: compare log-store engines on the same workloads."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Dict, List, Optional

from .workloads import TARGETS, WORKLOADS, parse_workloads

__all__ = ["register", "run_command", "parse_sizes"]


def parse_sizes(spec: str) -> List[int]:
    """``"100k,1M,10M"`` -> [100000, 1000000, 10000000] (a plain number counts entries too)."""
    sizes = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        factor = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000}.get(part[-1].lower(), 1)
        digits = part[:-1] if factor != 1 else part
        try:
            value = int(float(digits) * factor)
        except ValueError:
            raise ValueError(f"bad size {part!r} (use e.g. 100k, 1M, 10M)") from None
        if value <= 0:
            raise ValueError(f"bad size {part!r}: must be positive")
        sizes.append(value)
    if not sizes:
        raise ValueError("no size given")
    return sizes

# option name -> (BenchConfig field, help)
_SIZES = {
    "entry-size": ("entry_size", "payload bytes per entry (default 256)"),
    "batch-size": ("batch_size", "entries per batch for appends; also entries per truncate/purge call (default 1000)"),
    "entries": ("entries", "entries in the log the append, read, truncate and purge workloads use; also what "
                "append-steady times and snapshot appends (default 100000)"),
    "range-size": ("range_size", "entries per range read (default 10000)"),
    "range-reads": ("range_reads", "range reads per repetition (default 30)"),
    "single-reads": ("single_reads", "random single reads per repetition (default 50000)"),
    "durable-batch": ("durable_batch", "entries per durable batch (default 64)"),
    "durable-batches": ("durable_batches", "durable batches per repetition (default 200)"),
    "writers": ("writers", "concurrent writer coroutines (default 64)"),
    "writes-per-writer": ("writes_per_writer", "entries each concurrent writer appends (default 25)"),
    "truncate-ops": ("truncate_ops", "truncate calls per repetition (default 10)"),
    "purge-ops": ("purge_ops", "purge calls per repetition (default 10)"),
    "steady-warmup": ("steady_warmup", "append-steady: flushed batches written before the clock starts (default 10)"),
    "leader-batches": ("leader_batches", "leader: durable batches per repetition (default 200, 40 with --quick)"),
    "follower-rounds": ("follower_rounds", "follower: append + replace rounds per repetition (default 200, 50 with --quick)"),
    "follower-suffix": ("follower_suffix", "follower: conflicting entries replaced per round (default 16)"),
    "snapshot-every": ("snapshot_every", "snapshot: entries between purges (default 10000, 5000 with --quick)"),
    "repeat": ("repeat", "repetitions; every figure is their median (default 5, 3 with --quick)"),
    "seed": ("seed", "seed of the generated payloads and read positions"),
}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="compare log-store engines (throughput, latency, disk, memory)",
        description=(
            "Run the same workloads on every chosen engine and print a table of medians with each "
            "engine's ratio to fastlog. Every engine's log is read back and checked against a "
            "digest of what was written. Progress goes to stderr, the table to stdout."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="workloads:\n" + "\n".join(f"  {w.id:<12} {w.title}" for w in WORKLOADS.values())
        + "\n\nexit status:\n  0  done\n  1  some results are not valid (wrong data or an error, or fastlog lost an "
        "acknowledged entry under --power-cuts)\n"
        "  2  bad options (e.g. an unknown engine or workload)\n  3  a speed target was missed (--fail-on-miss)",
    )
    parser.add_argument("--engines", help="comma-separated engines (default: all available, plus 'raw', the "
                        "plain file baseline); see --list")
    parser.add_argument("--workloads", help="comma-separated workloads (default: all)")
    for option, (_field, text) in _SIZES.items():
        parser.add_argument(f"--{option}", type=int, default=None, help=text)
    parser.add_argument("--scale", metavar="SIZES",
                        help="recovery-scale log sizes, e.g. 100k,1M,10M (default 100k,1M; 10k,100k with --quick)")
    parser.add_argument("--recovery-budget", type=float, metavar="SECONDS",
                        help="recovery-scale: seconds one engine may spend on all sizes; a size that would "
                        "exceed it is skipped and said so (default 120; 0: no limit)")
    parser.add_argument("--filesystems", metavar="LIST",
                        help="run everything once per file system, each on a fresh loop-mounted image (or tmpfs), "
                        "e.g. ext4,xfs,btrfs,tmpfs; needs root (a file system that cannot be mounted is skipped)")
    parser.add_argument("--fs-size", metavar="SIZE",
                        help="size of each file system image, e.g. 8G (default: 4G, more for a large --scale); "
                        "images are sparse files")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and 3 repetitions (a smoke run); explicit sizes still apply")
    parser.add_argument("--no-baseline", action="store_true", help="leave out the raw file baseline")
    parser.add_argument("--workdir", help="where to create the engines' directories (default: the system "
                        "temporary directory; use a real disk for durable figures)")
    parser.add_argument("--json", metavar="FILE", help="write every raw sample and the summary as JSON")
    parser.add_argument("--chart", metavar="FILE", help="write a PNG bar chart (needs matplotlib)")
    parser.add_argument("--fail-on-miss", action="store_true",
                        help="exit with status 3 when a speed target is missed")
    parser.add_argument("--headline", action="store_true",
                        help="also print the README's summary table (steady-state appends first) as Markdown")
    parser.add_argument("--power-cuts", type=int, metavar="N",
                        help="also cut the power N times under every chosen engine (on LazyFS; root and "
                        "/dev/fuse needed, else skipped with one line) and report acknowledged entries lost, "
                        "logs that did not reopen and recovery times; '--workloads none' runs only this")
    parser.add_argument("--list", action="store_true", help="list engines and workloads, then exit")
    parser.set_defaults(handler=run_command)


def _speed_engines(args: argparse.Namespace) -> List[str]:
    """``--engines`` without the names only the power cuts know (PySyncObj's journal)."""
    names = [e.strip() for e in args.engines.split(",") if e.strip()]
    if args.power_cuts is None:
        return names
    from .powercut import JOURNAL_ENGINE

    return [name for name in names if name != JOURNAL_ENGINE]


def _config_from(args: argparse.Namespace) -> Any:
    from .runner import BenchConfig

    values: Dict[str, Any] = {}
    for option, (field, _text) in _SIZES.items():
        value = getattr(args, option.replace("-", "_"))
        if value is not None:
            values[field] = value
    if args.engines:
        values["engines"] = _speed_engines(args)
    values["workloads"] = parse_workloads(args.workloads)
    if args.scale:
        values["scales"] = parse_sizes(args.scale)
    if args.recovery_budget is not None:
        values["recovery_budget"] = args.recovery_budget
    values["baseline"] = not args.no_baseline
    if args.workdir:
        values["workdir"] = args.workdir
    return BenchConfig.quick(**values) if args.quick else BenchConfig(**values)


def _list() -> int:
    from .subjects import BASELINE, load_subjects

    subjects, missing = load_subjects(None)
    print("engines:")
    for s in subjects:
        if s.name == BASELINE:
            print(f"  {s.name:<15} {s.description}")
        else:
            role = "peer" if s.is_peer else "fastlog/reference"
            print(f"  {s.name:<15} [{role}] {s.description}")
    for name, reason in missing.items():
        print(f"  {name:<15} unavailable: {reason}")
    from .powercut import JOURNAL_ENGINE, journal_missing

    journal_reason = journal_missing()
    print(f"  {JOURNAL_ENGINE:<15} " + ("[--power-cuts only] PySyncObj's FileJournal" if journal_reason is None
                                          else f"unavailable: {journal_reason}"))
    print("workloads:")
    for w in WORKLOADS.values():
        print(f"  {w.id:<15} {w.title} [{w.unit}]: {w.description}")
    print("targets:")
    for t in TARGETS:
        print(f"  {t.text}")
    return 0


def _invalid(results: Any) -> List[str]:
    """``engine/workload (why)`` for every result with wrong data or an error."""
    failed: List[str] = []
    for engine, per in results.results.items():
        for workload, result in per.items():
            if result.status in ("wrong", "error"):
                failed.append(f"{engine}/{workload} ({'wrong data' if result.status == 'wrong' else 'error'})")
    return failed


def _missed_target(results: Any) -> bool:
    from .report import evaluate_targets

    return any(row["met"] is False for row in evaluate_targets(results))


def _run_filesystems(args: argparse.Namespace, config: Any) -> int:
    from . import loopfs
    from .filesystems import parse_filesystems, run_on_filesystems
    from .report import format_filesystems, write_filesystem_chart

    try:
        names = parse_filesystems(args.filesystems)
        size = loopfs.parse_size(args.fs_size) if args.fs_size else None
    except ValueError as exc:
        print(f"fastlog bench: {exc}", file=sys.stderr)
        return 2
    try:
        run = run_on_filesystems(config, names, image_size=size, parent=args.workdir, progress=sys.stderr)
    except ValueError as exc:
        print(f"fastlog bench: {exc}", file=sys.stderr)
        return 2
    print(format_filesystems(run))
    _write_files(args, run, write_filesystem_chart)
    failed = [f"{fs}: {item}" for fs, results in run.results.items() for item in _invalid(results)]
    if failed:
        print("fastlog bench: these results are not valid: " + ", ".join(failed), file=sys.stderr)
        return 1
    if not run.results:
        print("fastlog bench: no file system could be mounted", file=sys.stderr)
        return 1
    if args.fail_on_miss and any(_missed_target(r) for r in run.results.values()):
        return 3
    return 0


def _write_files(args: argparse.Namespace, results: Any, write_chart: Callable[[Any, str], Optional[str]]) -> None:
    """--json and --chart, after the table is out: stderr says where each went, or why
    the chart was not drawn."""
    sys.stdout.flush()
    if args.json:
        results.write_json(args.json)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.chart:
        problem = write_chart(results, args.chart)
        print(problem if problem else f"wrote {args.chart}", file=sys.stderr)


def _power_cuts(args: argparse.Namespace) -> Any:
    """The power-cut run of ``--power-cuts N`` (ValueError for an unknown engine)."""
    from .powercut import PAYLOAD_SIZE, run_power_cuts

    names = [e.strip() for e in args.engines.split(",") if e.strip()] if args.engines else None
    return run_power_cuts(
        names,
        args.power_cuts,
        seed=args.seed if args.seed is not None else 1,
        payload_size=args.entry_size if args.entry_size is not None else PAYLOAD_SIZE,
        progress=sys.stderr,
    )


def _fastlog_lost(run: Any) -> List[str]:
    """fastlog engines that lost an acknowledged entry or did not reopen: a bug, never a figure."""
    return [
        f"{name} ({t.lost} acknowledged entries lost, {t.failed_reopens} failed reopens, "
        f"{t.stray} wrong entries{', the run stopped' if t.stopped else ''})"
        for name, t in run.tallies.items()
        if name.startswith("fastlog") and (t.lost or t.failed_reopens or t.stray or t.stopped)
    ]


def _only_power_cuts(args: argparse.Namespace) -> int:
    """``--power-cuts N --workloads none``: the power-cut section alone."""
    from .powercut import select_engines
    from .report import format_power_cuts
    from .runner import write_json_document

    try:
        select_engines([e.strip() for e in args.engines.split(",") if e.strip()] if args.engines else None)
    except ValueError as exc:
        print(f"fastlog bench: {exc}", file=sys.stderr)
        return 2
    run = _power_cuts(args)
    print(format_power_cuts(run))
    sys.stdout.flush()
    if args.json:
        write_json_document(args.json, {"format": "fastlog-bench/1", "power_cuts": run.to_json()})
        print(f"wrote {args.json}", file=sys.stderr)
    lost = _fastlog_lost(run)
    if lost:
        print("fastlog bench: power cuts: " + ", ".join(lost), file=sys.stderr)
        return 1
    return 0


def run_command(args: argparse.Namespace) -> int:
    if args.list:
        return _list()
    from .report import format_table, format_targets, write_chart
    from .runner import run_bench

    if args.power_cuts is not None:
        if args.power_cuts < 1:
            print("fastlog bench: --power-cuts must be at least 1", file=sys.stderr)
            return 2
        if args.filesystems:
            print("fastlog bench: --power-cuts runs on its own LazyFS mount, not with --filesystems", file=sys.stderr)
            return 2
        if (args.workloads or "").strip() == "none" or (args.engines and not _speed_engines(args)):
            return _only_power_cuts(args)
    try:
        config = _config_from(args)
        config.validate()
        if args.power_cuts is not None:
            from .powercut import select_engines

            select_engines([e.strip() for e in args.engines.split(",") if e.strip()] if args.engines else None)
    except ValueError as exc:
        print(f"fastlog bench: {exc}", file=sys.stderr)
        return 2
    if args.filesystems:
        return _run_filesystems(args, config)
    try:
        results = run_bench(config, progress=sys.stderr)
    except ValueError as exc:  # e.g. an unknown engine name
        print(f"fastlog bench: {exc}", file=sys.stderr)
        return 2
    if args.power_cuts is not None:
        results.power_cuts = _power_cuts(args)
    print(format_table(results))
    if results.power_cuts is not None:
        from .report import format_power_cuts

        print()
        print(format_power_cuts(results.power_cuts))
    targets = format_targets(results)
    if targets:
        print()
        print(targets)
    if args.headline:
        from .report import format_headline

        print()
        print(format_headline(results))
    _write_files(args, results, write_chart)
    failed = _invalid(results)
    if results.power_cuts is not None:
        failed += [f"power cuts: {item}" for item in _fastlog_lost(results.power_cuts)]
    if failed:
        print("fastlog bench: these results are not valid: " + ", ".join(failed), file=sys.stderr)
        return 1
    if args.fail_on_miss and _missed_target(results):
        return 3
    return 0

"""The workloads of ``fastlog bench``: what each one measures and in which unit.

The measuring code lives in :mod:`fastlog.bench.runner`; this module only
describes the workloads and the speed targets, so the table, the JSON and the
chart agree on names, units and on which direction is better.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

__all__ = ["Workload", "WORKLOADS", "WORKLOAD_IDS", "Target", "TARGETS", "parse_workloads"]


@dataclass(frozen=True)
class Workload:
    id: str
    title: str
    #: Unit of a sample's ``value``: "entries/s", "ops/s", "s", "B/entry" or "B".
    unit: str
    higher_is_better: bool
    description: str

    def speedup(self, value: float, reference: float) -> float:
        """How many times better ``value`` is than ``reference`` (>1: better)."""
        if self.higher_is_better:
            return value / reference if reference else float("inf")
        return reference / value if value else float("inf")


_ALL: List[Workload] = [
    Workload(
        "append", "batched appends", "entries/s", True,
        "persist_entries() of pre-built batches of --batch-size entries of --entry-size bytes "
        "into a brand-new, never-flushed log, no flush and no fsync, until it holds --entries "
        "entries (append-steady is the same on a log that has been flushed).",
    ),
    Workload(
        "append-steady", "batched appends, steady state", "entries/s", True,
        "the append workload's batches into a log that was first filled with "
        "--steady-warmup batches, each followed by flush() (untimed); then --entries entries "
        "are appended in batches of --batch-size, timed, with no flush and no fsync.",
    ),
    Workload(
        "durable", "durable batches", "entries/s", True,
        "persist_entries() of a batch of --durable-batch entries, then flush(), which returns "
        "only once the batch is durable; one writer.",
    ),
    Workload(
        "leader", "leader: durable batches while 2 followers read", "entries/s", True,
        "--leader-batches batches of --durable-batch entries, each persisted and then awaited "
        "with flush_async(), while 2 follower tasks stream the new entries with get_entries(); "
        "the figure is the writer's rate, the notes give its flush latency (median, p99).",
    ),
    Workload(
        "concurrent", "concurrent writers, group commit", "entries/s", True,
        "--writers coroutines, each appending one entry at a time and then awaiting "
        "flush_async(); one fsync may serve many writers.",
    ),
    Workload(
        "follower", "follower: conflicting suffixes replaced", "entries/s", True,
        "--follower-rounds rounds of: persist --durable-batch entries whose last --follower-suffix "
        "are stale, then replace_range() of those last entries with the leader's; net entries/s.",
    ),
    Workload(
        "snapshot", "snapshot: appends, a purge every --snapshot-every entries", "entries/s", True,
        "appends --entries entries in batches of --batch-size; each time another --snapshot-every "
        "entries are in, purge() everything up to the previous such point.",
    ),
    Workload(
        "range", "range reads", "entries/s", True,
        "get_entries(start, start + --range-size - 1) at random starts in the populated log.",
    ),
    Workload(
        "single", "random single reads, async entry()", "ops/s", True,
        "await entry(i) at random indexes of the populated log, from one coroutine.",
    ),
    Workload(
        "single-sync", "random single reads, sync path", "ops/s", True,
        "a synchronous single-entry read at random indexes, for engines whose log store has one.",
    ),
    Workload(
        "truncate", "truncate a suffix", "ops/s", True,
        "truncate() calls, each removing the last --batch-size entries of the populated log.",
    ),
    Workload(
        "purge", "purge a prefix", "ops/s", True,
        "purge() calls, each removing the first --batch-size entries of the populated log.",
    ),
    Workload(
        "reopen", "reopen (recovery)", "s", False,
        "close a flushed log of --entries entries, then open it again and call last_index().",
    ),
    Workload(
        "recovery-scale", "recovery time at scale", "s", False,
        "for each --scale (default 100k and 1M entries): fill a log, flush and close it, then in a "
        "fresh child process time open() + last_index() and measure the resident memory it adds; "
        "the median is the time at the largest scale, the notes give every scale.",
    ),
    Workload(
        "disk", "disk bytes per entry", "B/entry", False,
        "allocated bytes (st_blocks x 512) of every file under the engine's directory after "
        "appending --entries entries, flushing and closing, divided by the number of entries.",
    ),
    Workload(
        "memory", "peak memory", "B", False,
        "in a fresh child process per engine: the highest private (anonymous) memory seen after "
        "each operation while appending --entries entries and reading them all back in ranges, "
        "above the process's size just before opening the engine.",
    ),
]

WORKLOADS: Dict[str, Workload] = {w.id: w for w in _ALL}
WORKLOAD_IDS: List[str] = [w.id for w in _ALL]


@dataclass(frozen=True)
class Target:
    """A speed goal for fastlog checked on every run.

    ``against`` is "peer" (ratio fastlog / best third-party peer), "baseline"
    (ratio fastlog / the raw file baseline of the same workload) or "absolute"
    (fastlog's own median in the workload's unit).  With ``seconds_per_call`` the
    absolute goal is instead an upper bound on the time of one call (a range
    read of --range-size entries).  ``fallback_workload`` is used when fastlog
    has no result for ``workload`` (e.g. no synchronous read path).
    """

    workload: str
    against: str
    minimum: float
    text: str
    fallback_workload: Optional[str] = None
    seconds_per_call: bool = False


TARGETS: List[Target] = [
    Target("append", "peer", 5.0, "batched appends >= 5x the best peer"),
    Target("range", "peer", 5.0, "10,000-entry range reads >= 5x the best peer"),
    Target("single", "peer", 3.0, "random single reads (async entry()) >= 3x the best peer"),
    Target("durable", "peer", 1.0, "durable batches >= 1x the best peer"),
    Target("durable", "baseline", 0.9, "durable batches >= 0.9x raw os.write+fdatasync"),
    Target("concurrent", "baseline", 10.0, "group commit >= 10x raw single-entry os.write+fdatasync"),
    Target("append", "absolute", 5e6, "batched appends >= 5M entries/s"),
    Target("range", "absolute", 1e-3, "a 10,000-entry range read < 1 ms", seconds_per_call=True),
    Target("single-sync", "absolute", 3e6, "single reads >= 3M/s", fallback_workload="single"),
]


def parse_workloads(spec: "str | Sequence[str] | None") -> List[str]:
    """``"append,range"`` -> ["append", "range"] in canonical order; None or "all" -> all."""
    if spec is None:
        return list(WORKLOAD_IDS)
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [n.strip() for n in names if n.strip()]
    if not names or names == ["all"]:
        return list(WORKLOAD_IDS)
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        raise ValueError(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOAD_IDS)}")
    return [w for w in WORKLOAD_IDS if w in names]

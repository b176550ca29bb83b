"""Runs the workloads of ``fastlog bench`` over engines and collects raw samples.

Method
------
* Every engine runs the same workloads on the same pre-built entries, in a
  fresh directory each time.  Timed loops only call the engine: batches,
  indexes and range starts are prepared before the clock starts, and
  ``gc.collect()`` runs just before each timed loop.
* Repetitions are interleaved: repetition 1 of every engine, then repetition 2
  of every engine, and so on, so a burst of load on the machine hits every
  engine rather than one.  A figure is the median of its repetitions.
* After each workload the log is read back and its xxh3-128 digest (over
  index, term, kind and payload) is compared with the digest of what was
  written; a mismatch marks the engine's result as wrong data.
* Peak memory is measured in a fresh child process per engine (see
  :mod:`fastlog.bench.memprobe`), so memory held by C libraries counts and
  nothing left over from other engines does.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Dict, List, Optional, Sequence, TextIO

from .._types import LogId
from .data import Dataset, PayloadPool, digest_entries, term_of
from .report import format_value
from .subjects import (
    REFERENCE,
    Subject,
    describe_sync_reader,
    entry_class_of,
    load_subjects,
    sync_entry_reader,
)
from .workloads import WORKLOAD_IDS, WORKLOADS

__all__ = ["BenchConfig", "BenchResults", "WorkloadResult", "run_bench"]

#: Entries the raw baseline of the concurrent workload writes (one fdatasync each).
_RAW_SINGLE_SYNCS = 400
_LOG_GROUP = ("append", "disk", "reopen", "range", "single", "single-sync", "truncate", "purge")
#: Log sizes of the recovery-scale workload: the default run, --quick, and what --scale 10M adds.
DEFAULT_SCALES = (100_000, 1_000_000)
QUICK_SCALES = (10_000, 100_000)
#: Follower tasks reading while the leader workload writes.
_LEADER_FOLLOWERS = 2
#: Entries a follower asks for at most per get_entries() (one AppendEntries message).
_FOLLOWER_CHUNK = 256


@dataclass
class BenchConfig:
    """Sizes and choices of one benchmark run (the defaults are ``make bench``'s)."""

    engines: Optional[List[str]] = None  # None: every available engine
    workloads: List[str] = field(default_factory=lambda: list(WORKLOAD_IDS))
    entry_size: int = 256
    batch_size: int = 1000
    entries: int = 100_000  # size of the log the append/read/truncate/purge workloads use
    range_size: int = 10_000
    range_reads: int = 30
    single_reads: int = 50_000
    durable_batch: int = 64
    durable_batches: int = 200
    writers: int = 64
    writes_per_writer: int = 25
    truncate_ops: int = 10
    purge_ops: int = 10
    steady_warmup: int = 10  # flushed batches written before append-steady's clock starts
    leader_batches: int = 200  # durable batches the leader writes while followers read
    follower_rounds: int = 200
    follower_suffix: int = 16  # stale entries replaced per follower round
    snapshot_every: int = 10_000  # entries between two purges in the snapshot workload
    scales: List[int] = field(default_factory=lambda: list(DEFAULT_SCALES))  # recovery-scale log sizes
    recovery_budget: float = 120.0  # seconds per engine for recovery-scale; 0: no limit
    repeat: int = 5
    baseline: bool = True  # include the raw file baseline when engines is None
    seed: int = 20240601
    workdir: Optional[str] = None

    @classmethod
    def quick(cls, **overrides: Any) -> "BenchConfig":
        """Small sizes and three repetitions: a smoke run in seconds per engine."""
        values: Dict[str, Any] = dict(
            entries=20_000,
            range_reads=10,
            single_reads=10_000,
            durable_batches=40,
            writes_per_writer=5,
            truncate_ops=5,
            purge_ops=5,
            leader_batches=40,
            follower_rounds=50,
            snapshot_every=5_000,
            scales=list(QUICK_SCALES),
            repeat=3,
        )
        values.update(overrides)
        return cls(**values)

    def validate(self) -> None:
        positive = (
            "entry_size", "batch_size", "entries", "range_size", "range_reads", "single_reads",
            "durable_batch", "durable_batches", "writers", "writes_per_writer", "repeat",
            "steady_warmup", "leader_batches", "follower_rounds", "follower_suffix", "snapshot_every",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name.replace('_', '-')} must be positive")
        if "follower" in self.workloads and self.follower_suffix > self.durable_batch:
            raise ValueError(
                f"follower-suffix {self.follower_suffix} is larger than a batch ({self.durable_batch} entries)"
            )
        if self.recovery_budget < 0:
            raise ValueError("recovery-budget must not be negative")
        if not self.scales or any(n <= 0 for n in self.scales):
            raise ValueError("every --scale must be a positive number of entries")
        if self.truncate_ops < 0 or self.purge_ops < 0:
            raise ValueError("truncate-ops and purge-ops must not be negative")
        if self.range_size > self.entries:
            raise ValueError(f"range-size {self.range_size} is larger than the log ({self.entries} entries)")
        removed = (self.truncate_ops + self.purge_ops) * self.batch_size
        if removed >= self.entries:
            raise ValueError(
                f"truncate-ops and purge-ops of {self.batch_size} entries each would remove the whole "
                f"log of {self.entries} entries"
            )

    @property
    def dataset_size(self) -> int:
        return max(
            self.entries + self.steady_warmup * self.batch_size,
            self.durable_batch * max(self.durable_batches, self.leader_batches, self.follower_rounds + 1),
            self.writers * self.writes_per_writer,
        )


@dataclass
class WorkloadResult:
    """Every repetition of one workload on one engine."""

    samples: List[float] = field(default_factory=list)  # the workload's unit, one per repetition
    details: List[Dict[str, Any]] = field(default_factory=list)
    wrong: List[str] = field(default_factory=list)  # digest / content mismatches
    errors: List[str] = field(default_factory=list)
    unavailable: Optional[str] = None  # why this engine cannot run the workload

    @property
    def median(self) -> Optional[float]:
        if not self.samples:
            return None
        ordered = sorted(self.samples)
        mid = len(ordered) // 2
        return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2

    @property
    def status(self) -> str:
        if self.wrong:
            return "wrong"
        if self.errors:
            return "error"
        if self.samples:
            return "ok"
        return "n/a"

    def to_json(self) -> Dict[str, Any]:
        return {
            "status": self.status,
            "median": self.median,
            "samples": self.samples,
            "details": self.details,
            "wrong_data": self.wrong,
            "errors": self.errors,
            "unavailable": self.unavailable,
        }


def write_json_document(path: str, document: Dict[str, Any]) -> None:
    """``document`` as indented JSON at ``path`` (its folder made first); what JSON cannot
    hold (paths, enums) is written as its str()."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        json.dump(document, fh, indent=1, default=str)
        fh.write("\n")


@dataclass
class BenchResults:
    config: BenchConfig
    environment: Dict[str, Any]
    subjects: List[Subject]
    skipped: Dict[str, str]
    results: Dict[str, Dict[str, WorkloadResult]]
    elapsed: float = 0.0
    #: ``--power-cuts``: a :class:`fastlog.bench.powercut.PowerCutRun`, or None when not asked for
    power_cuts: Optional[Any] = None

    def get(self, engine: str, workload: str) -> Optional[WorkloadResult]:
        return self.results.get(engine, {}).get(workload)

    @property
    def wrong_data(self) -> List[str]:
        """``engine/workload`` pairs whose data read back differed from what was written."""
        return [
            f"{engine}/{workload}"
            for engine, per in self.results.items()
            for workload, result in per.items()
            if result.wrong
        ]

    def to_json(self) -> Dict[str, Any]:
        from .report import evaluate_targets

        return {
            "format": "fastlog-bench/1",
            "config": asdict(self.config),
            "environment": self.environment,
            "elapsed_seconds": self.elapsed,
            "workloads": {
                wid: {
                    "title": w.title,
                    "unit": w.unit,
                    "higher_is_better": w.higher_is_better,
                    "description": w.description,
                }
                for wid, w in WORKLOADS.items()
                if wid in self.config.workloads
            },
            "engines": {
                s.name: {"kind": s.kind, "peer": s.is_peer, "description": s.description, **s.extra}
                for s in self.subjects
            },
            "skipped_engines": self.skipped,
            "results": {
                engine: {workload: result.to_json() for workload, result in per.items()}
                for engine, per in self.results.items()
            },
            "targets": evaluate_targets(self),
            **({"power_cuts": self.power_cuts.to_json()} if self.power_cuts is not None else {}),
        }

    def write_json(self, path: str) -> None:
        write_json_document(path, self.to_json())


class _Progress:
    """One line per engine and repetition on a text stream (stderr)."""

    def __init__(self, stream: Optional[TextIO]):
        self.stream = stream

    def write(self, text: str) -> None:
        if self.stream is not None:
            self.stream.write(text)
            self.stream.flush()


class _Recorder:
    """Collects the samples of one engine's repetition into the shared results."""

    def __init__(self, per_workload: Dict[str, WorkloadResult], wanted: List[str], rep: int):
        self.per = per_workload
        self.wanted = set(wanted)
        self.rep = rep
        self.done: Dict[str, str] = {}  # workload -> short text for the progress line

    def wants(self, workload: str) -> bool:
        return workload in self.wanted

    def sample(self, workload: str, value: float, **details: Any) -> None:
        if workload not in self.wanted:
            return
        result = self.per[workload]
        result.samples.append(value)
        result.details.append({"repetition": self.rep, "value": value, **details})
        from .report import format_value

        self.done[workload] = format_value(WORKLOADS[workload], value)

    def wrong(self, workload: str, message: str) -> None:
        if workload in self.wanted:
            self.per[workload].wrong.append(f"repetition {self.rep}: {message}")
            self.done[workload] = "WRONG DATA"

    def error(self, workload: str, message: str) -> None:
        if workload in self.wanted:
            self.per[workload].errors.append(f"repetition {self.rep}: {message}")
            self.done[workload] = "error"

    def unavailable(self, workload: str, reason: str) -> None:
        if workload in self.wanted:
            self.per[workload].unavailable = reason


def _sync_count(store: Any) -> Optional[int]:
    """How many syncs the store's group commit has run, when it tells."""
    commit = getattr(store, "group_commit", None)  # fastlog's FileLogStore
    if commit is not None and isinstance(getattr(commit, "flushes", None), int):
        return commit.flushes
    flusher = getattr(store, "group_flush", None)  # the adapters of fastlog.engines
    if flusher is not None and isinstance(getattr(flusher, "syncs", None), int):
        return flusher.syncs
    return None


def _scale_summary(details: List[Dict[str, Any]], scale: int) -> str:
    """"100,000: 24.4 ms" from the recovery-scale details of one size."""
    from .report import _seconds

    times = sorted(d["seconds"] for d in details if d.get("scale") == scale)
    if not times:
        return f"{scale:,}: -"
    return f"{scale:,}: {_seconds(times[len(times) // 2])}"


def _disk_usage(path: str) -> Dict[str, int]:
    allocated = apparent = files = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            try:
                st = os.stat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            allocated += st.st_blocks * 512
            apparent += st.st_size
            files += 1
    return {"allocated_bytes": allocated, "apparent_bytes": apparent, "files": files}


def _filesystem_of(path: str) -> str:
    """The file system type holding ``path`` (from /proc/mounts), or "unknown"."""
    try:
        real = os.path.realpath(path)
        best, fstype = "", "unknown"
        with open("/proc/mounts") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mount = parts[1].replace("\\040", " ")
                if (real == mount or real.startswith(mount.rstrip("/") + "/")) and len(mount) > len(best):
                    best, fstype = mount, parts[2]
        return fstype
    except OSError:
        return "unknown"


def _environment(workdir: str) -> Dict[str, Any]:
    from importlib import metadata

    env: Dict[str, Any] = {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "workdir": workdir,
        "filesystem": _filesystem_of(workdir),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        from .._impl import IMPLEMENTATION

        env["fastlog_default_implementation"] = IMPLEMENTATION
    except Exception as exc:  # informative only
        env["fastlog_default_implementation"] = f"unavailable ({exc})"
    versions: Dict[str, str] = {}
    for dist in ("fastlog", "lmdb", "rocksdict", "plyvel", "xxhash", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    import sqlite3

    versions["sqlite"] = sqlite3.sqlite_version
    env["versions"] = versions
    return env


def _last_line(text: str) -> str:
    """The last line of a child's output (stripped), or "(no output)" for none."""
    return (text.strip().splitlines() or ["(no output)"])[-1]


class _Runner:
    def __init__(self, config: BenchConfig, progress: _Progress):
        self.config = config
        self.progress = progress
        self.dataset = Dataset(config.dataset_size, config.entry_size, config.seed)
        rng = random.Random(config.seed + 1)
        n, r = config.entries, config.range_size
        self.range_starts = [rng.randint(1, n - r + 1) for _ in range(config.range_reads)]
        self.single_indexes = [rng.randint(1, n) for _ in range(config.single_reads)]
        self._batch_cache: Dict[tuple, List[List[Any]]] = {}
        self.last_probe_error = ""

    # -- helpers ---------------------------------------------------------------
    def batches(self, cls: type, size: int, count: int) -> List[List[Any]]:
        """The first ``count`` entries of the dataset as batches of ``size`` (cached)."""
        key = (cls, size, count)
        cached = self._batch_cache.get(key)
        if cached is None:
            entries = self.dataset.entries(cls)[:count]
            cached = [entries[i:i + size] for i in range(0, len(entries), size)]
            self._batch_cache[key] = cached
        return cached

    def check_log(self, store: Any, lo: int, hi: int, boundary: Optional[LogId] = None) -> Optional[str]:
        """None when the store holds exactly entries lo..hi of the dataset, else what differs."""
        last = store.last_index()
        if last != hi:
            return f"last_index() is {last}, expected {hi}"
        if boundary is not None:
            got = store.load_purge_boundary()
            if got != boundary:
                return f"load_purge_boundary() is {got}, expected {boundary}"
        entries = store.get_entries(lo, hi)
        if len(entries) != hi - lo + 1:
            return f"get_entries({lo}, {hi}) returned {len(entries)} entries, expected {hi - lo + 1}"
        if lo > 1 and store.get_entries(1, lo - 1):
            return f"entries below {lo} are still readable"
        got_digest = digest_entries(entries)
        want = self.dataset.digest(lo, hi)
        if got_digest != want:
            return f"digest of entries {lo}..{hi} is {got_digest}, expected {want}"
        return None

    def verify(self, rec: _Recorder, workload: str, store: Any, lo: int, hi: int,
               boundary: Optional[LogId] = None) -> Optional[str]:
        """check_log(), and the workload marked wrong when it finds a difference (returned too)."""
        problem = self.check_log(store, lo, hi, boundary=boundary)
        if problem:
            rec.wrong(workload, problem)
        return problem

    @contextlib.asynccontextmanager
    async def opened_store(self, subject: Subject, path: str) -> AsyncIterator[Any]:
        """The engine's log store, the engine closed on the way out whatever happened."""
        engine = subject.open(path)
        try:
            yield engine.log_store()
        finally:
            await engine.close()

    def check_entries(self, got: List[Any], indexes: List[int]) -> Optional[str]:
        if any(e is None for e in got):
            missing = next(i for i, e in zip(indexes, got) if e is None)
            return f"entry {missing} read as None"
        want = digest_entries(self.dataset.pick(indexes))
        have = digest_entries(got)
        if have != want:
            return f"digest of {len(indexes)} entries read is {have}, expected {want}"
        return None

    # -- engine groups -----------------------------------------------------------
    async def log_group(self, subject: Subject, path: str, rec: _Recorder) -> None:
        """append -> disk -> reopen -> range -> single -> single-sync -> truncate -> purge.

        For an engine that keeps nothing across a reopen (the in-memory
        reference) the log stays open after the appends, and disk and reopen
        are not applicable.
        """
        cfg, n = self.config, self.config.entries
        persistent = subject.extra.get("persistent", True)
        engine = subject.open(path)
        try:
            store = engine.log_store()
            cls = entry_class_of(store)
            batches = self.batches(cls, cfg.batch_size, n)
            persist = store.persist_entries
            gc.collect()
            t0 = time.perf_counter()
            await persist(batches[0])
            t_first = time.perf_counter()
            for batch in batches[1:]:
                await persist(batch)
            dt = time.perf_counter() - t0
            # The first batch also pays for creating files; shown apart so a
            # costly first write is visible (it stays in the figure).
            rest = len(batches[0])
            rec.sample("append", n / dt, seconds=dt, entries=n, batches=len(batches),
                       first_batch_seconds=t_first - t0,
                       rate_after_first_batch=(n - rest) / (dt - (t_first - t0)) if n > rest else None)
            problem = self.check_log(store, 1, n)
            if problem:
                rec.wrong("append", problem)
                rec.wrong("disk", f"the log written was wrong: {problem}")
            store.flush()
            if persistent:
                await engine.close()
                usage = _disk_usage(path)
                rec.sample("disk", usage["allocated_bytes"] / n, entries=n, **usage)
                gc.collect()
                t0 = time.perf_counter()
                engine = subject.open(path)
                store = engine.log_store()
                store.last_index()  # an engine that recovers lazily does it inside the timing
                dt = time.perf_counter() - t0
                rec.sample("reopen", dt, entries=n)
                if rec.wants("reopen"):
                    problem = self.check_log(store, 1, n)
                    if problem:
                        rec.wrong("reopen", f"after reopen: {problem}")
            else:
                for workload in ("disk", "reopen"):
                    rec.unavailable(workload, "the engine keeps nothing across a reopen")
            if rec.wants("range"):
                await self.range_reads(store, rec)
            if rec.wants("single"):
                await self.single_reads(store, rec)
            if rec.wants("single-sync"):
                self.single_reads_sync(store, rec)
            hi = n
            if rec.wants("truncate") and cfg.truncate_ops:
                hi = await self.truncates(store, rec)
            if rec.wants("purge") and cfg.purge_ops:
                await self.purges(store, rec, hi)
        finally:
            await engine.close()

    async def range_reads(self, store: Any, rec: _Recorder) -> None:
        size = self.config.range_size
        starts = self.range_starts
        get = store.get_entries
        gc.collect()
        t0 = time.perf_counter()
        for start in starts:
            get(start, start + size - 1)
        dt = time.perf_counter() - t0
        rec.sample("range", len(starts) * size / dt, seconds=dt, calls=len(starts),
                   seconds_per_call=dt / len(starts), range_size=size)
        start = starts[0]
        got = get(start, start + size - 1)
        want = self.dataset.digest(start, start + size - 1)
        if len(got) != size or digest_entries(got) != want:
            rec.wrong("range", f"get_entries({start}, {start + size - 1}) returned other data")

    async def single_reads(self, store: Any, rec: _Recorder) -> None:
        indexes = self.single_indexes
        entry = store.entry
        gc.collect()
        t0 = time.perf_counter()
        for index in indexes:
            await entry(index)
        dt = time.perf_counter() - t0
        rec.sample("single", len(indexes) / dt, seconds=dt, calls=len(indexes), path="await LogStore.entry")
        sample = indexes[:2000]
        problem = self.check_entries([await entry(i) for i in sample], sample)
        if problem:
            rec.wrong("single", problem)

    def single_reads_sync(self, store: Any, rec: _Recorder) -> None:
        entry = sync_entry_reader(store)
        if entry is None:
            rec.unavailable("single-sync", "the log store has no synchronous single-entry read")
            return
        indexes = self.single_indexes
        gc.collect()
        t0 = time.perf_counter()
        for index in indexes:
            entry(index)
        dt = time.perf_counter() - t0
        rec.sample("single-sync", len(indexes) / dt, seconds=dt, calls=len(indexes), path=describe_sync_reader(store))
        sample = indexes[:2000]
        problem = self.check_entries([entry(i) for i in sample], sample)
        if problem:
            rec.wrong("single-sync", problem)

    async def truncates(self, store: Any, rec: _Recorder) -> int:
        cfg = self.config
        step, ops = cfg.batch_size, cfg.truncate_ops
        cuts = [cfg.entries - step * (k + 1) + 1 for k in range(ops)]
        truncate = store.truncate
        gc.collect()
        t0 = time.perf_counter()
        for cut in cuts:
            await truncate(cut)
        dt = time.perf_counter() - t0
        hi = cuts[-1] - 1
        rec.sample("truncate", ops / dt, seconds=dt, calls=ops, entries_removed=ops * step)
        self.verify(rec, "truncate", store, 1, hi)
        return hi

    async def purges(self, store: Any, rec: _Recorder, hi: int) -> None:
        cfg = self.config
        step, ops = cfg.batch_size, cfg.purge_ops
        cutoffs = [LogId(index=step * (k + 1), term=term_of(step * (k + 1))) for k in range(ops)]
        purge = store.purge
        gc.collect()
        t0 = time.perf_counter()
        for cutoff in cutoffs:
            await purge(cutoff)
        dt = time.perf_counter() - t0
        rec.sample("purge", ops / dt, seconds=dt, calls=ops, entries_removed=ops * step)
        self.verify(rec, "purge", store, cutoffs[-1].index + 1, hi, boundary=cutoffs[-1])

    async def durable_group(self, subject: Subject, path: str, rec: _Recorder) -> None:
        cfg = self.config
        total = cfg.durable_batch * cfg.durable_batches
        async with self.opened_store(subject, path) as store:
            batches = self.batches(entry_class_of(store), cfg.durable_batch, total)
            persist, flush = store.persist_entries, store.flush
            gc.collect()
            t0 = time.perf_counter()
            await persist(batches[0])
            flush()
            t_first = time.perf_counter()
            for batch in batches[1:]:
                await persist(batch)
                flush()
            dt = time.perf_counter() - t0
            rest = total - len(batches[0])
            rec.sample("durable", total / dt, seconds=dt, entries=total, batches=len(batches),
                       batch_size=cfg.durable_batch, first_batch_seconds=t_first - t0,
                       rate_after_first_batch=rest / (dt - (t_first - t0)) if rest else None)
            self.verify(rec, "durable", store, 1, total)

    async def concurrent_group(self, subject: Subject, path: str, rec: _Recorder) -> None:
        cfg = self.config
        writers, each = cfg.writers, cfg.writes_per_writer
        total = writers * each
        async with self.opened_store(subject, path) as store:
            singles = self.batches(entry_class_of(store), 1, total)
            persist, flush_async = store.persist_entries, store.flush_async
            # The lock keeps indexes consecutive for engines whose persist awaits
            # before writing; it is uncontended when persist does not yield.
            lock = asyncio.Lock()
            position = 0

            first_ack: List[float] = []

            async def writer() -> None:
                nonlocal position
                for _ in range(each):
                    async with lock:
                        batch = singles[position]
                        position += 1
                        await persist(batch)
                    await flush_async()
                    if not first_ack:
                        first_ack.append(time.perf_counter())

            syncs_before = _sync_count(store)
            gc.collect()
            t0 = time.perf_counter()
            await asyncio.gather(*(writer() for _ in range(writers)))
            dt = time.perf_counter() - t0
            details: Dict[str, Any] = {"seconds": dt, "entries": total, "writers": writers,
                                       "first_ack_seconds": first_ack[0] - t0}
            syncs_after = _sync_count(store)
            if syncs_before is not None and syncs_after is not None:
                details["fsync_rounds"] = syncs_after - syncs_before
            rec.sample("concurrent", total / dt, **details)
            self.verify(rec, "concurrent", store, 1, total)

    # -- steady-state appends, Raft-shaped workloads, recovery at scale -------------
    async def steady_group(self, subject: Subject, path: str, rec: _Recorder) -> None:
        """append-steady: the append workload on a log that has been flushed many times.

        Before the clock: --steady-warmup batches, each followed by flush(), so
        every engine is past whatever it does for a brand-new log (fastlog:
        framing into freshly zeroed pages before the first flush).  Timed: the
        next --entries entries in the same batches, no flush, no fsync.
        """
        cfg = self.config
        warm = cfg.steady_warmup * cfg.batch_size
        total = warm + cfg.entries
        async with self.opened_store(subject, path) as store:
            batches = self.batches(entry_class_of(store), cfg.batch_size, total)
            persist, flush = store.persist_entries, store.flush
            for batch in batches[:cfg.steady_warmup]:
                await persist(batch)
                flush()
            timed = batches[cfg.steady_warmup:]
            gc.collect()
            t0 = time.perf_counter()
            for batch in timed:
                await persist(batch)
            dt = time.perf_counter() - t0
            rec.sample("append-steady", cfg.entries / dt, seconds=dt, entries=cfg.entries,
                       batches=len(timed), flushed_batches_before=cfg.steady_warmup)
            self.verify(rec, "append-steady", store, 1, total)

    async def leader_group(self, subject: Subject, path: str, rec: _Recorder) -> None:
        """leader: durable batches while follower tasks stream the new entries.

        The writer persists a batch, wakes the followers, then awaits
        flush_async(); every engine's flush_async() runs its sync off the event
        loop, so the followers read while the leader waits for the disk, as a
        Raft leader replicates while its own fsync runs.  The writer yields once
        per batch (as it would to send messages), which also lets the followers
        run on engines whose flush does not yield.
        """
        cfg = self.config
        total = cfg.durable_batch * cfg.leader_batches
        async with self.opened_store(subject, path) as store:
            batches = self.batches(entry_class_of(store), cfg.durable_batch, total)
            persist, flush_async, get = store.persist_entries, store.flush_async, store.get_entries
            wake = [asyncio.Event() for _ in range(_LEADER_FOLLOWERS)]
            received: List[List[List[Any]]] = [[] for _ in range(_LEADER_FOLLOWERS)]
            written = 0
            done = False

            async def follower(k: int) -> None:
                event, chunks, next_index = wake[k], received[k], 1
                while True:
                    await event.wait()
                    event.clear()
                    while next_index <= written:
                        got = get(next_index, min(written, next_index + _FOLLOWER_CHUNK - 1))
                        if not got:
                            raise AssertionError(f"get_entries({next_index}, ...) returned nothing")
                        chunks.append(got)
                        next_index += len(got)
                        await asyncio.sleep(0)
                    if done and next_index > written:
                        return

            latencies: List[float] = []
            gc.collect()
            tasks = [asyncio.ensure_future(follower(k)) for k in range(_LEADER_FOLLOWERS)]
            perf = time.perf_counter
            try:
                t0 = perf()
                for batch in batches:
                    await persist(batch)
                    written = batch[-1].index
                    for event in wake:
                        event.set()
                    t1 = perf()
                    await flush_async()
                    latencies.append(perf() - t1)
                    await asyncio.sleep(0)
                dt = perf() - t0
                done = True
                for event in wake:
                    event.set()
                await asyncio.gather(*tasks)
                t_readers = perf() - t0
            finally:
                for task in tasks:
                    task.cancel()
            latencies.sort()
            rec.sample("leader", total / dt, seconds=dt, entries=total, batches=len(batches),
                       followers=_LEADER_FOLLOWERS,
                       flush_median_seconds=latencies[len(latencies) // 2],
                       flush_p99_seconds=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
                       follower_entries_per_second=_LEADER_FOLLOWERS * total / t_readers)
            want = self.dataset.digest(1, total)
            for k, chunks in enumerate(received):
                flat = [e for chunk in chunks for e in chunk]
                if len(flat) != total or digest_entries(flat) != want:
                    rec.wrong("leader", f"follower {k + 1} read {len(flat)} entries that differ from the {total} written")
                    return
            self.verify(rec, "leader", store, 1, total)

    async def follower_group(self, subject: Subject, path: str, rec: _Recorder) -> None:
        """follower: appends whose last entries conflict, each fixed with replace_range().

        A round persists --durable-batch entries whose last --follower-suffix
        carry a stale payload (the same index, term and kind, the payload's bytes
        reversed), then replace_range() puts the leader's entries there.  The log
        is flushed once before the clock starts (one untimed round), so every
        engine is past its first-write path; the timed rounds do not fsync.
        The read-back digest proves every stale entry was replaced.
        """
        cfg = self.config
        size, k, rounds = cfg.durable_batch, cfg.follower_suffix, cfg.follower_rounds
        total = size * (rounds + 1)
        async with self.opened_store(subject, path) as store:
            cls = entry_class_of(store)
            good = self.batches(cls, size, total)
            plan = []
            for batch in good:
                stale = [cls(e.index, e.term, e.payload[::-1], e.kind) for e in batch[size - k:]]
                plan.append((batch[:size - k] + stale, batch[size - k].index, batch[size - k:]))
            persist, replace = store.persist_entries, store.replace_range
            appended, cut, fixed = plan[0]
            await persist(appended)
            await replace(cut, fixed)
            store.flush()
            gc.collect()
            t0 = time.perf_counter()
            for appended, cut, fixed in plan[1:]:
                await persist(appended)
                await replace(cut, fixed)
            dt = time.perf_counter() - t0
            timed = size * rounds
            rec.sample("follower", timed / dt, seconds=dt, entries=timed, rounds=rounds,
                       replaced_per_round=k, seconds_per_round=dt / rounds)
            self.verify(rec, "follower", store, 1, total)

    async def snapshot_group(self, subject: Subject, path: str, rec: _Recorder) -> None:
        """snapshot: appends with a purge of the prefix every --snapshot-every entries.

        Each time the log has taken in another --snapshot-every entries, purge()
        removes everything up to the previous such point, so the log keeps one
        to two snapshot intervals, as a node that snapshots and lets its
        followers catch up from the log does.
        """
        cfg = self.config
        n, every = cfg.entries, cfg.snapshot_every
        async with self.opened_store(subject, path) as store:
            batches = self.batches(entry_class_of(store), cfg.batch_size, n)
            persist, purge = store.persist_entries, store.purge
            plan: List[tuple] = []  # (batch, purge cutoff after it or None)
            next_point, previous = every, 0
            for batch in batches:
                cutoff = None
                if batch[-1].index >= next_point:
                    if previous:
                        cutoff = LogId(index=previous, term=term_of(previous))
                    previous, next_point = next_point, next_point + every
                plan.append((batch, cutoff))
            purge_seconds: List[float] = []
            perf = time.perf_counter
            gc.collect()
            t0 = perf()
            for batch, cutoff in plan:
                await persist(batch)
                if cutoff is not None:
                    t1 = perf()
                    await purge(cutoff)
                    purge_seconds.append(perf() - t1)
            dt = perf() - t0
            purge_seconds.sort()
            details: Dict[str, Any] = {"seconds": dt, "entries": n, "purges": len(purge_seconds),
                                       "snapshot_every": every}
            if purge_seconds:
                details["purge_median_seconds"] = purge_seconds[len(purge_seconds) // 2]
            rec.sample("snapshot", n / dt, **details)
            last_cutoff = next((c for _, c in reversed(plan) if c is not None), None)
            lo = last_cutoff.index + 1 if last_cutoff else 1
            self.verify(rec, "snapshot", store, lo, n, boundary=last_cutoff)

    def recovery_scale(self, loop: asyncio.AbstractEventLoop, subject: Subject, path: str, rec: _Recorder) -> None:
        """recovery-scale: every repetition at once, one scale after the other.

        A log of each size is written once (batches of --batch-size built on the
        fly from :class:`~fastlog.bench.data.PayloadPool`, one flush at the end),
        closed, and reopened --repeat times, each time in a fresh child process
        (``memprobe --reopen``) so the resident-memory figure is the reopen's
        alone.  The log is deleted before the next scale, so the disk only ever
        holds one.  Reopens follow the writes, so the page cache is warm.
        """
        cfg = self.config
        pool = PayloadPool(cfg.entry_size, cfg.seed)
        largest = max(cfg.scales)
        scales = sorted(cfg.scales)
        started = time.perf_counter()
        last_scale_seconds = 0.0
        for position, scale in enumerate(scales):
            if position and cfg.recovery_budget:
                # Writing and reopening grow about linearly with the log: skip a
                # size that would take the engine past its time budget.
                previous = scales[position - 1]
                spent = time.perf_counter() - started
                projected = last_scale_seconds * scale / previous
                if spent + projected > cfg.recovery_budget:
                    done = ", ".join(_scale_summary(rec.per["recovery-scale"].details, s) for s in scales[:position])
                    rec.unavailable(
                        "recovery-scale",
                        f"{scale:,} entries skipped: about {projected:.0f} s more, over the "
                        f"{cfg.recovery_budget:.0f} s budget (--recovery-budget); measured {done}")
                    return
            where = os.path.join(path, f"scale-{scale}")
            scale_started = time.perf_counter()
            try:
                fill_seconds = loop.run_until_complete(self._fill(subject, where, scale, pool))
                runs = []
                for _ in range(cfg.repeat):
                    report = self._child_probe(subject, where, scale, "--reopen")
                    if report is None:
                        rec.error("recovery-scale", f"reopen probe of {scale:,} entries failed: {self.last_probe_error}")
                        return
                    if report.get("problem"):
                        rec.wrong("recovery-scale", f"{scale:,} entries: {report['problem']}")
                    runs.append(report)
                for run in runs:
                    run["scale"] = scale
                    run["fill_seconds"] = fill_seconds
                    run["disk_bytes"] = _disk_usage(where)["allocated_bytes"]
                    rec.per["recovery-scale"].details.append({"repetition": None, "value": run["seconds"], **run})
                if scale == largest:
                    rec.per["recovery-scale"].samples.extend(run["seconds"] for run in runs)
                    rec.done["recovery-scale"] = format_value(WORKLOADS["recovery-scale"],
                                                              rec.per["recovery-scale"].median)
            finally:
                shutil.rmtree(where, ignore_errors=True)
            last_scale_seconds = time.perf_counter() - scale_started

    async def _fill(self, subject: Subject, path: str, count: int, pool: PayloadPool) -> float:
        step = self.config.batch_size
        t0 = time.perf_counter()
        async with self.opened_store(subject, path) as store:
            cls = entry_class_of(store)
            persist = store.persist_entries
            for first in range(1, count + 1, step):
                await persist(pool.batch(cls, first, min(step, count - first + 1)))
            store.flush()
        return time.perf_counter() - t0

    def _run_memprobe(self, subject: Subject, path: str, entries: int, *extra: str) -> subprocess.CompletedProcess:
        """``python -m fastlog.bench.memprobe`` on one engine, in a fresh child process."""
        cfg = self.config
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        cmd = [
            sys.executable, "-m", "fastlog.bench.memprobe",
            "--engine", subject.name, "--dir", path,
            "--entries", str(entries), "--entry-size", str(cfg.entry_size),
            "--batch-size", str(cfg.batch_size), "--range-size", str(cfg.range_size),
            "--seed", str(cfg.seed), *extra,
        ]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)

    def _child_probe(self, subject: Subject, path: str, entries: int, *extra: str) -> Optional[Dict[str, Any]]:
        """The memprobe's JSON report, or None on failure (why in ``last_probe_error``)."""
        proc = self._run_memprobe(subject, path, entries, *extra)
        if proc.returncode != 0:
            self.last_probe_error = _last_line(proc.stderr)
            return None
        return json.loads(proc.stdout.strip().splitlines()[-1])

    # -- the raw file baseline -----------------------------------------------------
    def baseline(self, path: str, rec: _Recorder) -> None:
        from .._impl import core

        cfg, n, size = self.config, self.config.entries, self.config.entry_size
        os.makedirs(path, exist_ok=True)
        cls = core.Entry
        write, pread, fdatasync = os.write, os.pread, os.fdatasync
        join = b"".join
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        data_file = os.path.join(path, "log.bin")
        if any(rec.wants(w) for w in ("append", "range", "single", "single-sync")):
            batches = self.batches(cls, cfg.batch_size, n)
            fd = os.open(data_file, flags, 0o644)
            try:
                gc.collect()
                t0 = time.perf_counter()
                for batch in batches:
                    write(fd, join([e.payload for e in batch]))
                dt = time.perf_counter() - t0
            finally:
                os.close(fd)
            rec.sample("append", n / dt, seconds=dt, entries=n, what="os.write of the joined payloads of each batch")
        if rec.wants("range") or rec.wants("single"):
            fd = os.open(data_file, os.O_RDONLY)
            try:
                if rec.wants("range"):
                    length = cfg.range_size * size
                    gc.collect()
                    t0 = time.perf_counter()
                    for start in self.range_starts:
                        pread(fd, length, (start - 1) * size)
                    dt = time.perf_counter() - t0
                    calls = len(self.range_starts)
                    rec.sample("range", calls * cfg.range_size / dt, seconds=dt, calls=calls,
                               seconds_per_call=dt / calls, what="one os.pread of the range's bytes")
                if rec.wants("single"):
                    gc.collect()
                    t0 = time.perf_counter()
                    for index in self.single_indexes:
                        pread(fd, size, (index - 1) * size)
                    dt = time.perf_counter() - t0
                    rec.sample("single", len(self.single_indexes) / dt, seconds=dt, what="os.pread of one payload")
            finally:
                os.close(fd)
        if rec.wants("append-steady"):
            # The same file state as an engine's: earlier batches written and
            # fdatasync'd, then the timed batches appended without a sync.
            warm = cfg.steady_warmup * cfg.batch_size
            batches = self.batches(cls, cfg.batch_size, warm + n)
            fd = os.open(os.path.join(path, "steady.bin"), flags, 0o644)
            try:
                for batch in batches[:cfg.steady_warmup]:
                    write(fd, join([e.payload for e in batch]))
                    fdatasync(fd)
                timed = batches[cfg.steady_warmup:]
                gc.collect()
                t0 = time.perf_counter()
                for batch in timed:
                    write(fd, join([e.payload for e in batch]))
                dt = time.perf_counter() - t0
            finally:
                os.close(fd)
            rec.sample("append-steady", n / dt, seconds=dt, entries=n,
                       what="os.write of the joined payloads of each batch, after fdatasync'd ones")
        if rec.wants("durable"):
            total = cfg.durable_batch * cfg.durable_batches
            batches = self.batches(cls, cfg.durable_batch, total)
            fd = os.open(os.path.join(path, "durable.bin"), flags, 0o644)
            try:
                gc.collect()
                t0 = time.perf_counter()
                for batch in batches:
                    write(fd, join([e.payload for e in batch]))
                    fdatasync(fd)
                dt = time.perf_counter() - t0
            finally:
                os.close(fd)
            rec.sample("durable", total / dt, seconds=dt, entries=total, what="os.write + os.fdatasync per batch")
        if rec.wants("concurrent"):
            # A rate: a few hundred fsyncs measure it as well as thousands would.
            total = min(cfg.writers * cfg.writes_per_writer, _RAW_SINGLE_SYNCS)
            entries = self.dataset.entries(cls)[:total]
            fd = os.open(os.path.join(path, "single.bin"), flags, 0o644)
            try:
                gc.collect()
                t0 = time.perf_counter()
                for e in entries:
                    write(fd, e.payload)
                    fdatasync(fd)
                dt = time.perf_counter() - t0
            finally:
                os.close(fd)
            rec.sample("concurrent", total / dt, seconds=dt, entries=total,
                       what="one writer: os.write + os.fdatasync per entry")
        for workload in ("single-sync", "truncate", "purge", "reopen", "disk", "memory", "leader", "follower",
                         "snapshot", "recovery-scale"):
            rec.unavailable(workload, "not measured for the raw file baseline")

    # -- peak memory, in a child process -------------------------------------------
    def memory_probe(self, subject: Subject, path: str, rec: _Recorder) -> None:
        proc = self._run_memprobe(subject, path, self.config.entries)
        if proc.returncode != 0:
            rec.error("memory", f"probe exited with {proc.returncode}: {_last_line(proc.stderr)}")
            return
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        if report.get("problem"):
            rec.wrong("memory", report["problem"])
        rec.sample("memory", float(report["peak_anon_delta"]), **report)

    # -- the whole run ---------------------------------------------------------------
    def run_subject(self, loop: asyncio.AbstractEventLoop, subject: Subject, rep: int,
                    base: str, results: Dict[str, WorkloadResult]) -> _Recorder:
        wanted = self.config.workloads
        rec = _Recorder(results, wanted, rep)
        root = os.path.join(base, f"{subject.name}-{rep}")
        try:
            if subject.is_baseline:
                self._guard(rec, list(wanted), lambda: self.baseline(root, rec))
                return rec
            groups: List[tuple] = []
            log_wanted = [w for w in _LOG_GROUP if w in wanted]
            if log_wanted:
                groups.append((log_wanted, lambda: loop.run_until_complete(
                    self.log_group(subject, os.path.join(root, "log"), rec))))
            if "append-steady" in wanted:
                groups.append((["append-steady"], lambda: loop.run_until_complete(
                    self.steady_group(subject, os.path.join(root, "steady"), rec))))
            if "durable" in wanted:
                groups.append((["durable"], lambda: loop.run_until_complete(
                    self.durable_group(subject, os.path.join(root, "durable"), rec))))
            if "leader" in wanted:
                groups.append((["leader"], lambda: loop.run_until_complete(
                    self.leader_group(subject, os.path.join(root, "leader"), rec))))
            if "concurrent" in wanted:
                groups.append((["concurrent"], lambda: loop.run_until_complete(
                    self.concurrent_group(subject, os.path.join(root, "concurrent"), rec))))
            if "follower" in wanted:
                groups.append((["follower"], lambda: loop.run_until_complete(
                    self.follower_group(subject, os.path.join(root, "follower"), rec))))
            if "snapshot" in wanted:
                groups.append((["snapshot"], lambda: loop.run_until_complete(
                    self.snapshot_group(subject, os.path.join(root, "snapshot"), rec))))
            if "recovery-scale" in wanted:
                if not subject.extra.get("persistent", True):
                    rec.unavailable("recovery-scale", "the engine keeps nothing across a reopen")
                elif not subject.opener_is_registered:
                    rec.unavailable("recovery-scale", "measured for engines of fastlog.engines only "
                                    "(reopened by name in a child process)")
                elif rep == 1:  # every repetition at once: see recovery_scale()
                    groups.append((["recovery-scale"], lambda: self.recovery_scale(
                        loop, subject, os.path.join(root, "recovery"), rec)))
            if "memory" in wanted:
                if subject.opener_is_registered:
                    groups.append((["memory"], lambda: self.memory_probe(subject, os.path.join(root, "memory"), rec)))
                else:
                    rec.unavailable("memory", "measured for engines of fastlog.engines only (opened by name in a child process)")
            for names, fn in groups:
                self._guard(rec, names, fn)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        return rec

    @staticmethod
    def _guard(rec: _Recorder, names: List[str], fn: Callable[[], Any]) -> None:
        """Run one group; an exception becomes an error of the group's unfinished workloads."""
        before = {w: len(rec.per[w].samples) for w in names if w in rec.per}
        try:
            fn()
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            for workload in names:
                if workload in rec.per and len(rec.per[workload].samples) == before.get(workload, 0):
                    if rec.per[workload].unavailable is None:
                        rec.error(workload, message)


def run_bench(
    config: BenchConfig,
    progress: Optional[TextIO] = sys.stderr,
    extra_subjects: Sequence[Subject] = (),
) -> BenchResults:
    """Run every chosen workload on every chosen engine and return the raw results.

    ``extra_subjects`` adds engines that are not in :mod:`fastlog.engines`, e.g.
    ``Subject("mine", "engine", opener=lambda path: MyEngine(path))``; their
    results are checked and tabulated like everyone else's.  (The peak-memory
    workload runs registry engines only: it opens the engine by name in a child
    process.)
    """
    config.validate()
    out = _Progress(progress)
    subjects, skipped = load_subjects(config.engines, baseline=config.baseline)
    subjects = list(subjects) + list(extra_subjects)
    base = tempfile.mkdtemp(prefix="fastlog-bench-", dir=config.workdir)
    environment = _environment(base)
    results: Dict[str, Dict[str, WorkloadResult]] = {
        s.name: {w: WorkloadResult() for w in config.workloads} for s in subjects
    }
    names = ", ".join(s.name for s in subjects) or "(none)"
    out.write(f"fastlog bench: {names}; workloads: {', '.join(config.workloads)}\n")
    for name, reason in skipped.items():
        out.write(f"  skipping engine {name}: {reason}\n")
    out.write(f"  work directory {base} ({environment['filesystem']}), {config.repeat} repetitions\n")
    if environment["filesystem"] in ("tmpfs", "ramfs"):
        out.write("  warning: the work directory is in memory, so fsync costs nothing; "
                  "use --workdir on a disk for durable figures\n")
    if REFERENCE not in results:
        out.write(f"  note: {REFERENCE} is not among the engines, so no ratios can be shown\n")
    start = time.perf_counter()
    runner = _Runner(config, out)
    loop = asyncio.new_event_loop()
    try:
        for rep in range(1, config.repeat + 1):
            for subject in subjects:
                out.write(f"[{rep}/{config.repeat}] {subject.name:<11}")
                t0 = time.perf_counter()
                rec = runner.run_subject(loop, subject, rep, base, results[subject.name])
                summary = ", ".join(f"{w} {v}" for w, v in rec.done.items()) or "nothing measured"
                out.write(f" {summary}  ({time.perf_counter() - t0:.1f} s)\n")
    finally:
        loop.close()
        shutil.rmtree(base, ignore_errors=True)
    elapsed = time.perf_counter() - start
    for subject in subjects:
        if subject.is_baseline:
            continue
        for workload, result in results[subject.name].items():
            if workload == "single-sync" and result.unavailable is None and not result.samples and not result.errors:
                result.unavailable = "the log store has no synchronous single-entry read"
    return BenchResults(config, environment, subjects, skipped, results, elapsed)

"""Durable writes against a raw ``os.write`` + ``fdatasync`` loop.

Three comparisons, all on the same filesystem:

(a) raw durable batches: one ``os.write`` of 64 x 256-byte entries, then
    ``os.fdatasync``, in a loop (the file grows, as a log does);
(b) fastlog durable batches: ``persist_entries`` of 64 entries, then ``flush()``
    (also with ``await flush_async()``); target >= 0.9x the raw loop's entries/s;
(c) raw single-entry ``os.write`` + ``fdatasync`` against 64 concurrent
    coroutines, each persisting one entry and awaiting ``flush_async()`` (group
    commit); target >= 10x the raw single-entry rate.

Disk speed on a shared machine swings widely from one second to the next, so
:func:`measure_durable` interleaves short slices of the raw loop and of fastlog
and compares their totals (and the median of the per-slice ratios) rather than
timing one after the other.

Run ``python bench/bench_durable.py [--seconds S] [--dir DIR]`` for a report;
under pytest the ``test_*`` functions are pytest-benchmark benchmarks (a quick
single pass with ``--benchmark-disable``).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest

try:  # the shared sizes of the benchmark suite, when run under pytest
    from conftest import DURABLE_BATCH, ENTRY_SIZE, WRITERS
except ImportError:  # run as a script from elsewhere
    ENTRY_SIZE, DURABLE_BATCH, WRITERS = 256, 64, 64

import fastlog
from fastlog._types import EntryKind

#: Raw files are rotated at this size, like a segment (outside the timing).
RAW_FILE_LIMIT = 64 << 20
TARGET_BATCH_RATIO = 0.9
TARGET_GROUP_RATIO = 10.0


# -- the raw loops ---------------------------------------------------------------------


class RawLog:
    """Appends to a plain file with os.write and makes each write durable with fdatasync."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.fd = -1
        self.size = 0
        self.files = 0
        self._open_next()

    def _open_next(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            os.unlink(os.path.join(self.directory, f"raw-{self.files - 1}.log"))
        path = os.path.join(self.directory, f"raw-{self.files}.log")
        self.files += 1
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.fsync(self.fd)
        self.size = 0

    def rotate_if_full(self) -> None:
        if self.size >= RAW_FILE_LIMIT:
            self._open_next()

    def write_durably(self, data: bytes) -> None:
        os.write(self.fd, data)
        os.fdatasync(self.fd)
        self.size += len(data)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# -- fastlog ------------------------------------------------------------------------------


def _payload(i: int) -> bytes:
    return (b"%08d" % i) * (ENTRY_SIZE // 8)


class DurableWriter:
    """fastlog side of the comparisons: one engine, entries appended at the end."""

    def __init__(self, directory: str, loop: asyncio.AbstractEventLoop, implementation: Optional[str] = None) -> None:
        options: Dict[str, Any] = {}
        if implementation is not None:
            options["implementation"] = implementation
        self.loop = loop
        self.engine = fastlog.open(directory, **options)
        self.store = self.engine.log_store()
        self.entry_class = self.store.Entry
        self.payload = _payload(7)

    def batch(self, count: int) -> list:
        first = self.store.last_index() + 1
        cls, payload = self.entry_class, self.payload
        return [cls(first + k, 1, payload, EntryKind.COMMAND) for k in range(count)]

    def persist_and_flush(self, batch: list) -> None:
        """From synchronous code: persist the batch, then the blocking flush()."""
        self.loop.run_until_complete(self.store.persist_entries(batch))
        self.store.flush()

    async def persist_then_flush(self, batch: list) -> None:
        """What a coroutine does for a durable batch with the blocking flush()."""
        await self.store.persist_entries(batch)
        self.store.flush()

    async def persist_then_flush_async(self, batch: list) -> None:
        await self.store.persist_entries(batch)
        await self.store.flush_async()

    async def log_append_then_flush(self, batch: list) -> None:
        """The synchronous Log under the engine, for comparison (no engine bookkeeping)."""
        self.store.log.append(batch)
        self.store.log.flush()

    async def concurrent_writers(self, writers: int, seconds: float = 0.0, per_writer: int = 0) -> int:
        """``writers`` coroutines appending one entry each and awaiting flush_async, for
        ``seconds`` (or ``per_writer`` entries each); returns the entries acknowledged."""
        store, cls, payload = self.store, self.entry_class, self.payload
        deadline = time.perf_counter() + seconds
        done = 0

        async def writer() -> None:
            nonlocal done
            n = 0
            while (n < per_writer) if per_writer else (time.perf_counter() < deadline):
                # No await between choosing the index and appending it.
                await store.persist_entries([cls(store.last_index() + 1, 1, payload, EntryKind.COMMAND)])
                await store.flush_async()
                n += 1
            done += n

        await asyncio.gather(*(writer() for _ in range(writers)))
        return done

    def close(self) -> None:
        self.loop.run_until_complete(self.engine.close())


# -- the interleaved measurement -----------------------------------------------------------


def _filesystem_of(path: str) -> str:
    """The filesystem type holding ``path`` (from /proc/mounts), for the report."""
    best, fstype = "", "unknown"
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                parts = line.split()
                if len(parts) >= 3 and os.path.realpath(path).startswith(parts[1]) and len(parts[1]) > len(best):
                    best, fstype = parts[1], parts[2]
    except OSError:
        pass
    return fstype


def _timed_slice(op: Callable[..., Any], seconds: float, arg: Optional[Callable[[], Any]] = None) -> Tuple[int, float]:
    """Call ``op()`` (or ``op(arg())``) for about ``seconds``; time only ``op``. Returns (calls, time)."""
    calls, spent = 0, 0.0
    end = time.perf_counter() + seconds
    while True:
        args = () if arg is None else (arg(),)
        t0 = time.perf_counter()
        op(*args)
        t1 = time.perf_counter()
        spent += t1 - t0
        calls += 1
        if t1 >= end:
            return calls, spent


async def _timed_slice_async(op: Callable[[Any], Any], seconds: float, arg: Callable[[], Any]) -> Tuple[int, float]:
    """The coroutine version of :func:`_timed_slice`: ``await op(arg())`` for about ``seconds``."""
    calls, spent = 0, 0.0
    end = time.perf_counter() + seconds
    while True:
        value = arg()
        t0 = time.perf_counter()
        await op(value)
        t1 = time.perf_counter()
        spent += t1 - t0
        calls += 1
        if t1 >= end:
            return calls, spent


def measure_durable(
    directory: Optional[str] = None,
    seconds: float = 4.0,
    slices: int = 16,
    writers: int = WRITERS,
    batch: int = DURABLE_BATCH,
    implementation: Optional[str] = None,
) -> Dict[str, Any]:
    """Measure (a), (b) and (c) in interleaved slices; return a dict of results.

    ``seconds`` is the total measuring time: half for the batch comparison,
    half for the group commit one, each cut into ``slices`` rounds in which
    every contender runs for an equal share.
    """
    base = tempfile.mkdtemp(prefix="fastlog-durable-", dir=directory)
    raw_dir, log_dir = os.path.join(base, "raw"), os.path.join(base, "log")
    os.makedirs(raw_dir)
    loop = asyncio.new_event_loop()
    raw = RawLog(raw_dir)
    fl = DurableWriter(log_dir, loop, implementation)
    raw_batch = b"".join(_payload(i) for i in range(batch))
    raw_one = _payload(1)
    out: Dict[str, Any] = {
        "filesystem": _filesystem_of(base),
        "implementation": fl.store.log.implementation,
        "entry_size": ENTRY_SIZE,
        "batch": batch,
        "writers": writers,
        "seconds": seconds,
    }
    make_batch = lambda: fl.batch(batch)  # noqa: E731
    try:
        # Warm up both sides (first segment, first file blocks).
        raw.write_durably(raw_batch)
        fl.persist_and_flush(fl.batch(batch))

        # (a) / (b): durable batches of `batch` entries.
        sides: Dict[str, Callable[[float], Tuple[int, float]]] = {
            "raw": lambda sl: _timed_slice(raw.write_durably, sl, lambda: raw_batch),
            "flush": lambda sl: loop.run_until_complete(_timed_slice_async(fl.persist_then_flush, sl, make_batch)),
            "flush_async": lambda sl: loop.run_until_complete(
                _timed_slice_async(fl.persist_then_flush_async, sl, make_batch)
            ),
            "log": lambda sl: loop.run_until_complete(_timed_slice_async(fl.log_append_then_flush, sl, make_batch)),
        }
        slice_s = seconds / 2 / slices / len(sides)
        totals = {name: [0, 0.0] for name in sides}
        per_slice: Dict[str, List[float]] = {name: [] for name in sides}
        names = list(sides)
        for k in range(slices):
            raw.rotate_if_full()
            for name in names if k % 2 == 0 else names[::-1]:
                n, t = sides[name](slice_s)
                totals[name][0] += n
                totals[name][1] += t
                per_slice[name].append(n * batch / t)
        rate = {name: n * batch / t for name, (n, t) in totals.items()}
        out["raw_batch_entries_per_s"] = rate["raw"]
        out["fastlog_batch_entries_per_s"] = rate["flush"]
        out["fastlog_batch_async_entries_per_s"] = rate["flush_async"]
        out["log_batch_entries_per_s"] = rate["log"]
        out["batch_ratio"] = rate["flush"] / rate["raw"]
        out["batch_ratio_async"] = rate["flush_async"] / rate["raw"]
        out["batch_ratio_log"] = rate["log"] / rate["raw"]
        out["batch_ratio_median"] = statistics.median(a / b for a, b in zip(per_slice["flush"], per_slice["raw"]))

        # (c): single-entry fsyncs against `writers` concurrent writers with group commit.
        slice_s = seconds / 2 / slices / 2
        raw_ops, raw_t, fl_entries, fl_t = 0, 0.0, 0, 0.0
        commit = fl.store.group_commit
        flushes_before = commit.flushes
        ratios = []
        for _ in range(slices):
            raw.rotate_if_full()
            n, t_raw = _timed_slice(raw.write_durably, slice_s, lambda: raw_one)
            t0 = time.perf_counter()
            got = loop.run_until_complete(fl.concurrent_writers(writers, seconds=slice_s))
            t_fl = time.perf_counter() - t0
            raw_ops, raw_t, fl_entries, fl_t = raw_ops + n, raw_t + t_raw, fl_entries + got, fl_t + t_fl
            ratios.append((got / t_fl) / (n / t_raw))
        out["raw_single_fsyncs_per_s"] = raw_ops / raw_t
        out["group_commit_entries_per_s"] = fl_entries / fl_t
        out["group_ratio"] = out["group_commit_entries_per_s"] / out["raw_single_fsyncs_per_s"]
        out["group_ratio_median"] = statistics.median(ratios)
        flushes = commit.flushes - flushes_before
        out["group_commit_entries_per_fsync"] = fl_entries / flushes if flushes else float("nan")
        out["targets"] = {
            "batch": {"want": TARGET_BATCH_RATIO, "got": out["batch_ratio"], "met": out["batch_ratio"] >= TARGET_BATCH_RATIO},
            "group": {"want": TARGET_GROUP_RATIO, "got": out["group_ratio"], "met": out["group_ratio"] >= TARGET_GROUP_RATIO},
        }
    finally:
        raw.close()
        fl.close()
        loop.close()
        shutil.rmtree(base, ignore_errors=True)
    return out


def format_report(r: Dict[str, Any]) -> str:
    """The results of :func:`measure_durable` as a few readable lines."""
    t = r["targets"]
    return "\n".join(
        [
            f"durable writes on {r['filesystem']}, {r['implementation']} core, "
            f"{r['entry_size']}-byte entries",
            f"(a) raw os.write+fdatasync, {r['batch']}-entry batches: {r['raw_batch_entries_per_s']:>12,.0f} entries/s",
            f"(b) fastlog persist+flush():                 {r['fastlog_batch_entries_per_s']:>12,.0f} entries/s"
            f"  = {r['batch_ratio']:.2f}x raw (median slice {r['batch_ratio_median']:.2f}x; "
            f"target {t['batch']['want']}x: {'met' if t['batch']['met'] else 'MISSED'})",
            f"    fastlog persist+await flush_async():     {r['fastlog_batch_async_entries_per_s']:>12,.0f} entries/s"
            f"  = {r['batch_ratio_async']:.2f}x raw",
            f"    (sync Log.append+Log.flush underneath:   {r['log_batch_entries_per_s']:>12,.0f} entries/s"
            f"  = {r['batch_ratio_log']:.2f}x raw)",
            f"(c) raw single-entry write+fdatasync:        {r['raw_single_fsyncs_per_s']:>12,.0f} entries/s",
            f"    {r['writers']} writers, group commit:               {r['group_commit_entries_per_s']:>12,.0f} entries/s"
            f"  = {r['group_ratio']:.1f}x raw (median slice {r['group_ratio_median']:.1f}x; "
            f"target {t['group']['want']}x: {'met' if t['group']['met'] else 'MISSED'}), "
            f"{r['group_commit_entries_per_fsync']:.1f} entries per flush",
        ]
    )


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="total measuring time (default 4)")
    parser.add_argument("--slices", type=int, default=16, help="interleaved slices per comparison")
    parser.add_argument("--dir", default=None, help="directory on the disk to measure (default: the temp dir)")
    parser.add_argument("--implementation", choices=("c", "python"), default=None)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    results = measure_durable(args.dir, args.seconds, args.slices, implementation=args.implementation)
    print(json.dumps(results, indent=2) if args.json else format_report(results))
    return 0


# -- pytest-benchmark ------------------------------------------------------------------------


@pytest.fixture
def raw_log(tmp_path):
    raw = RawLog(str(tmp_path))
    yield raw
    raw.close()


@pytest.fixture
def writer(tmp_path, loop):
    w = DurableWriter(str(tmp_path / "log"), loop)
    yield w
    w.close()


def test_raw_durable_batch(benchmark, raw_log):
    data = b"".join(_payload(i) for i in range(DURABLE_BATCH))
    benchmark.extra_info["entries_per_call"] = DURABLE_BATCH
    benchmark.pedantic(raw_log.write_durably, args=(data,), setup=raw_log.rotate_if_full, rounds=200, warmup_rounds=5)


def test_fastlog_durable_batch(benchmark, writer):
    benchmark.extra_info["entries_per_call"] = DURABLE_BATCH
    benchmark.pedantic(
        writer.persist_and_flush, setup=lambda: ((writer.batch(DURABLE_BATCH),), {}), rounds=200, warmup_rounds=5
    )
    assert writer.store.durable_index() == writer.store.last_index()


def test_fastlog_durable_batch_async(benchmark, writer, loop):
    benchmark.extra_info["entries_per_call"] = DURABLE_BATCH

    def persist(batch):
        loop.run_until_complete(writer.persist_then_flush_async(batch))

    benchmark.pedantic(persist, setup=lambda: ((writer.batch(DURABLE_BATCH),), {}), rounds=200, warmup_rounds=5)
    assert writer.store.durable_index() == writer.store.last_index()


def test_raw_single_entry_fsync(benchmark, raw_log):
    data = _payload(1)
    benchmark.extra_info["entries_per_call"] = 1
    benchmark.pedantic(raw_log.write_durably, args=(data,), setup=raw_log.rotate_if_full, rounds=200, warmup_rounds=5)


def test_group_commit_concurrent_writers(benchmark, writer, loop):
    per_writer = 4
    benchmark.extra_info["entries_per_call"] = WRITERS * per_writer

    def round_of_writers():
        return loop.run_until_complete(writer.concurrent_writers(WRITERS, per_writer=per_writer))

    got = benchmark.pedantic(round_of_writers, rounds=20, warmup_rounds=1)
    assert got == WRITERS * per_writer
    assert writer.store.durable_index() == writer.store.last_index()


def test_durable_targets_report(benchmark, request, tmp_path):
    """All three comparisons in one interleaved run; the numbers go to the output and
    to the benchmark's extra_info (a short run with --benchmark-disable)."""
    quick = request.config.getoption("benchmark_disable", default=False)
    seconds, slices = (0.4, 2) if quick else (4.0, 16)
    results = benchmark.pedantic(
        measure_durable, args=(str(tmp_path), seconds, slices), rounds=1, iterations=1, warmup_rounds=0
    )
    benchmark.extra_info.update({k: v for k, v in results.items() if not isinstance(v, dict)})
    benchmark.extra_info["targets_met"] = {name: t["met"] for name, t in results["targets"].items()}
    report = format_report(results)
    print("\n" + report)
    assert results["raw_batch_entries_per_s"] > 0 and results["group_commit_entries_per_s"] > 0
    if os.environ.get("FASTLOG_BENCH_ENFORCE") == "1" and not quick:
        assert results["targets"]["batch"]["met"], report
        assert results["targets"]["group"]["met"], report


if __name__ == "__main__":
    sys.exit(main())

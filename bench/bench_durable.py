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
from typing import Any, Callable, Dict, List, Optional

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
        self.loop.run_until_complete(self.store.persist_entries(batch))
        self.store.flush()

    async def persist_and_flush_async(self, batch: list) -> None:
        await self.store.persist_entries(batch)
        await self.store.flush_async()

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


def _timed_slice(op: Callable[[], Any], seconds: float, before: Optional[Callable[[], Any]] = None) -> tuple:
    """Run ``op`` repeatedly for about ``seconds``; time only ``op`` itself. Returns (ops, time)."""
    ops, spent = 0, 0.0
    end = time.perf_counter() + seconds
    while True:
        args = before() if before is not None else None
        t0 = time.perf_counter()
        op() if args is None else op(args)
        t1 = time.perf_counter()
        spent += t1 - t0
        ops += 1
        if t1 >= end:
            return ops, spent


def measure_durable(
    directory: Optional[str] = None,
    seconds: float = 4.0,
    slices: int = 8,
    writers: int = WRITERS,
    batch: int = DURABLE_BATCH,
    implementation: Optional[str] = None,
) -> Dict[str, Any]:
    """Measure (a), (b) and (c) in interleaved slices; return a dict of results.

    ``seconds`` is the time spent measuring in total, split evenly between the
    two comparisons and, within each, between the raw loop and fastlog.
    """
    own_dir = directory is None
    base = tempfile.mkdtemp(prefix="fastlog-durable-", dir=None if own_dir else directory)
    raw_dir, log_dir = os.path.join(base, "raw"), os.path.join(base, "log")
    os.makedirs(raw_dir)
    loop = asyncio.new_event_loop()
    raw = RawLog(raw_dir)
    fl = DurableWriter(log_dir, loop, implementation)
    slice_s = seconds / 4 / slices
    raw_batch = b"".join(_payload(i) for i in range(batch))
    raw_one = _payload(1)
    out: Dict[str, Any] = {
        "filesystem": _filesystem_of(base),
        "implementation": fl.store.log.implementation,
        "entry_size": ENTRY_SIZE,
        "batch": batch,
        "writers": writers,
    }
    try:
        # Warm up both sides (first segment, first file blocks).
        raw.write_durably(raw_batch)
        fl.persist_and_flush(fl.batch(batch))

        # (a) / (b): durable batches.
        totals = {"raw": [0, 0.0], "sync": [0, 0.0], "async": [0, 0.0]}
        ratios = []
        for k in range(slices):
            order = ["raw", "sync", "async"] if k % 2 == 0 else ["async", "sync", "raw"]
            rates = {}
            for side in order:
                if side == "raw":
                    raw.rotate_if_full()
                    n, t = _timed_slice(lambda: raw.write_durably(raw_batch), slice_s)
                elif side == "sync":
                    n, t = _timed_slice(fl.persist_and_flush, slice_s / 2, lambda: fl.batch(batch))
                else:
                    n, t = _timed_slice(
                        lambda b: loop.run_until_complete(fl.persist_and_flush_async(b)),
                        slice_s / 2,
                        lambda: fl.batch(batch),
                    )
                totals[side][0] += n
                totals[side][1] += t
                rates[side] = n * batch / t
            ratios.append(rates["sync"] / rates["raw"])
        raw_rate = totals["raw"][0] * batch / totals["raw"][1]
        out["raw_batch_entries_per_s"] = raw_rate
        out["fastlog_batch_entries_per_s"] = totals["sync"][0] * batch / totals["sync"][1]
        out["fastlog_batch_async_entries_per_s"] = totals["async"][0] * batch / totals["async"][1]
        out["batch_ratio"] = out["fastlog_batch_entries_per_s"] / raw_rate
        out["batch_ratio_async"] = out["fastlog_batch_async_entries_per_s"] / raw_rate
        out["batch_ratio_median"] = statistics.median(ratios)

        # (c): single-entry fsyncs against group commit.
        raw_ops, raw_t, fl_entries, fl_t = 0, 0.0, 0, 0.0
        commit = fl.store.group_commit
        flushes_before = commit.flushes
        ratios = []
        for k in range(slices):
            raw.rotate_if_full()
            n, t_raw = _timed_slice(lambda: raw.write_durably(raw_one), slice_s)
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
    parser.add_argument("--slices", type=int, default=8, help="interleaved slices per comparison")
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
        loop.run_until_complete(writer.persist_and_flush_async(batch))

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


def test_durable_targets_report(request, tmp_path):
    """All three comparisons in one interleaved run; prints the numbers (short when disabled)."""
    quick = request.config.getoption("benchmark_disable", default=False)
    results = measure_durable(str(tmp_path), seconds=0.4 if quick else 4.0, slices=2 if quick else 8)
    report = format_report(results)
    print("\n" + report)
    assert results["raw_batch_entries_per_s"] > 0 and results["group_commit_entries_per_s"] > 0
    if os.environ.get("FASTLOG_BENCH_ENFORCE") == "1" and not quick:
        assert results["targets"]["batch"]["met"], report
        assert results["targets"]["group"]["met"], report


if __name__ == "__main__":
    sys.exit(main())

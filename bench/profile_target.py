#!/usr/bin/env python3
"""A steady workload over fastlog's append and read paths, for a sampling profiler.

``make profile`` runs it under ``py-spy record --native`` and writes a flame
graph (profile/append-read.svg) that opens in any web browser.  Each phase is
its own function, so the flame graph splits into:

* ``phase_append``: ``Log.append`` of batches of 1,000 entries of 256 bytes,
  built before the phase starts (the log is reset, untimed, every 200,000
  entries, so it never rolls over into a huge directory);
* ``phase_range_reads``: ``Log.get_entries`` of 10,000 entries at random starts;
* ``phase_single_reads``: ``Log.entry`` at random indexes;
* ``phase_async_engine``: ``persist_entries`` / ``await entry()`` through the
  asyncio engine, to show what the coroutine layer adds.

Run it alone to see the throughput of each phase:
``python bench/profile_target.py --seconds 2``.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from typing import List

try:
    import fastlog  # noqa: F401
except ImportError:  # run from a checkout without an install: use the checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ENTRY_SIZE = 256
BATCH_SIZE = 1000
RANGE_SIZE = 10_000
LOG_ENTRIES = 200_000


def build_batches(entry_class: type, count: int) -> List[list]:
    blob = random.Random(3).randbytes(count * ENTRY_SIZE)
    entries = [entry_class(i + 1, 1, blob[i * ENTRY_SIZE:(i + 1) * ENTRY_SIZE]) for i in range(count)]
    return [entries[i:i + BATCH_SIZE] for i in range(0, count, BATCH_SIZE)]


def phase_append(log, batches: List[list], seconds: float) -> float:
    appended = 0
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < deadline:
        log.reset()
        for batch in batches:
            log.append(batch)
        appended += len(batches) * BATCH_SIZE
    return appended / (time.perf_counter() - start)


def phase_range_reads(log, last: int, seconds: float) -> float:
    rng = random.Random(5)
    starts = [rng.randint(1, last - RANGE_SIZE + 1) for _ in range(1000)]
    get = log.get_entries
    read = 0
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < deadline:
        for s in starts[:50]:
            get(s, s + RANGE_SIZE - 1)
        read += 50 * RANGE_SIZE
        starts = starts[50:] + starts[:50]
    return read / (time.perf_counter() - start)


def phase_single_reads(log, last: int, seconds: float) -> float:
    rng = random.Random(7)
    indexes = [rng.randint(1, last) for _ in range(100_000)]
    entry = log.entry
    read = 0
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < deadline:
        for i in indexes:
            entry(i)
        read += len(indexes)
    return read / (time.perf_counter() - start)


def phase_async_engine(path: str, implementation: str, seconds: float) -> float:
    import fastlog

    async def run() -> float:
        engine = fastlog.open(path, implementation=implementation)
        try:
            store = engine.log_store()
            batches = build_batches(store.Entry, 50_000)
            rng = random.Random(9)
            indexes = [rng.randint(1, 50_000) for _ in range(50_000)]
            done = 0
            deadline = time.perf_counter() + seconds
            start = time.perf_counter()
            while time.perf_counter() < deadline:
                await store.reset()
                for batch in batches:
                    await store.persist_entries(batch)
                for i in indexes:
                    await store.entry(i)
                done += 100_000
            return done / (time.perf_counter() - start)
        finally:
            await engine.close()

    return asyncio.run(run())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each phase (default 3)")
    parser.add_argument("--implementation", choices=("c", "python"), default="c")
    parser.add_argument("--dir", help="where to put the log (default: a temporary directory)")
    args = parser.parse_args(argv)

    import fastlog

    base = tempfile.mkdtemp(prefix="fastlog-profile-", dir=args.dir)
    try:
        with fastlog.Log(os.path.join(base, "log"), implementation=args.implementation) as log:
            batches = build_batches(log.Entry, LOG_ENTRIES)
            rate = phase_append(log, batches, args.seconds)
            print(f"append:       {rate / 1e6:6.2f} M entries/s", file=sys.stderr)
            log.reset()
            for batch in batches:
                log.append(batch)
            rate = phase_range_reads(log, LOG_ENTRIES, args.seconds)
            print(f"range reads:  {rate / 1e6:6.2f} M entries/s", file=sys.stderr)
            rate = phase_single_reads(log, LOG_ENTRIES, args.seconds)
            print(f"single reads: {rate / 1e6:6.2f} M reads/s", file=sys.stderr)
        rate = phase_async_engine(os.path.join(base, "engine"), args.implementation, args.seconds)
        print(f"async engine: {rate / 1e6:6.2f} M operations/s (appends + awaited reads)", file=sys.stderr)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

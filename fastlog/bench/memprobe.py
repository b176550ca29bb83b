"""Peak memory of one engine, measured in a process of its own.

``python -m fastlog.bench.memprobe --engine NAME --dir DIR ...`` opens the
engine, appends ``--entries`` entries in batches (each batch built just before
it is written and dropped after, so the probe itself holds almost nothing),
flushes, reads every entry back in ranges, and prints one JSON line.

What is measured (Linux ``/proc``):

* ``peak_anon_delta``: the highest private memory (resident pages that are not
  file-backed or shared: the heap, malloc arenas, the engine's caches) sampled
  after every operation, minus the same figure just before the engine was
  opened.  This is the memory the engine costs the process.
* ``peak_rss_delta``: the kernel's high-water mark of the resident set
  (``VmHWM``, reset just before the engine is opened) minus the resident set at
  that moment.  It also counts file pages an engine has memory-mapped (fastlog
  segments, LMDB), which the kernel can drop or write back at any time: an
  engine that writes with ``write()`` keeps the same data in the page cache,
  where no process's RSS shows it.

``tracemalloc`` is not used: it sees only Python's allocator, not memory a C
library allocates.

With ``--reopen`` it instead reopens an existing log of ``--entries`` entries
(written from :class:`fastlog.bench.data.PayloadPool`), timing ``open()`` +
``last_index()`` and reporting the resident memory the reopen added; the
recovery-scale workload runs it once per repetition and size.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import sys
from typing import Dict, Optional

from .data import kind_of, term_of
from .subjects import entry_class_of, load_subjects

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _status() -> Dict[str, int]:
    """Fields of /proc/self/status in bytes (VmRSS, VmHWM, RssAnon, RssFile, ...)."""
    values: Dict[str, int] = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            name, _, rest = line.partition(":")
            parts = rest.split()
            if len(parts) == 2 and parts[1] == "kB":
                values[name] = int(parts[0]) * 1024
    return values


class _AnonSampler:
    """Private resident memory from /proc/self/statm: resident minus file-backed/shared pages."""

    def __init__(self) -> None:
        self.fd = os.open("/proc/self/statm", os.O_RDONLY)
        self.peak = 0

    def sample(self) -> int:
        fields = os.pread(self.fd, 256, 0).split()
        anon = (int(fields[1]) - int(fields[2])) * _PAGE
        if anon > self.peak:
            self.peak = anon
        return anon

    def close(self) -> None:
        os.close(self.fd)


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False when not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


async def _probe(args: argparse.Namespace) -> Dict[str, object]:
    subjects, skipped = load_subjects([args.engine])
    if not subjects:
        raise SystemExit(f"engine {args.engine} is not available: {skipped.get(args.engine, 'unknown')}")
    subject = subjects[0]
    size, n, batch_size = args.entry_size, args.entries, args.batch_size
    rng = random.Random(args.seed)
    sampler = _AnonSampler()
    gc.collect()
    reset = _reset_peak()
    before = _status()
    base_anon = sampler.sample()
    sampler.peak = base_anon

    engine = subject.open(args.dir)
    problem: Optional[str] = None
    try:
        store = engine.log_store()
        cls = entry_class_of(store)
        sampler.sample()
        index = 1
        last_payload = b""
        while index <= n:
            count = min(batch_size, n - index + 1)
            blob = rng.randbytes(count * size)
            batch = [
                cls(i, term_of(i), blob[(i - index) * size:(i - index + 1) * size], kind_of(i))
                for i in range(index, index + count)
            ]
            await store.persist_entries(batch)
            last_payload = batch[-1].payload
            del batch, blob
            sampler.sample()
            index += count
        store.flush()
        sampler.sample()
        read = 0
        for start in range(1, n + 1, args.range_size):
            got = store.get_entries(start, min(n, start + args.range_size - 1))
            read += len(got)
            sampler.sample()
            del got
        if read != n:
            problem = f"read back {read} entries, expected {n}"
        # The content is checked by the timed workloads; here a cheap spot check.
        last = store.get_entries(n, n)
        if len(last) != 1 or (last[0].index, last[0].term, last[0].payload) != (n, term_of(n), last_payload):
            problem = problem or f"entry {n} did not read back as written"
        after = _status()
        end_anon = sampler.sample()
    finally:
        await engine.close()
    sampler.close()
    return {
        "engine": subject.name,
        "entries": n,
        "peak_anon_delta": sampler.peak - base_anon,
        "end_anon_delta": end_anon - base_anon,
        "peak_rss_delta": after.get("VmHWM", 0) - before.get("VmRSS", 0),
        "peak_reset": reset,
        "base_rss": before.get("VmRSS", 0),
        "base_anon": base_anon,
        "end_rss_file": after.get("RssFile", 0),
        "problem": problem,
    }


async def _reopen_probe(args: argparse.Namespace) -> Dict[str, object]:
    """Time ``open()`` + ``last_index()`` of an existing log and the memory the reopen adds.

    The engine's modules are imported before the clock starts, so the figure
    is the engine's recovery, not Python importing it.  Afterwards (untimed)
    windows at the start, middle and end of the log are compared with the
    entries :class:`fastlog.bench.data.PayloadPool` generates.
    """
    import importlib
    import time

    from ..engines import get_engine
    from .data import PayloadPool

    spec = get_engine(args.engine)
    if not spec.available:
        raise SystemExit(f"engine {args.engine} is not available: {spec.missing_reason}")
    importlib.import_module(spec.module)
    # A throwaway engine in an empty directory first: whatever an engine
    # imports or sets up lazily on its first open is then not in the figures.
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fastlog-probe-", dir=os.path.dirname(os.path.abspath(args.dir))) as scratch:
        warm = spec.open(scratch, durable=False)
        warm.log_store().last_index()
        await warm.close()
    n = args.entries
    sampler = _AnonSampler()
    gc.collect()
    reset = _reset_peak()
    before = _status()
    base_anon = sampler.sample()
    t0 = time.perf_counter()
    engine = spec.open(args.dir, durable=False)
    problem: Optional[str] = None
    try:
        store = engine.log_store()
        last = store.last_index()
        seconds = time.perf_counter() - t0
        after = _status()
        end_anon = sampler.sample()
        if last != n:
            problem = f"last_index() after reopen is {last}, expected {n}"
        else:
            pool = PayloadPool(args.entry_size, args.seed)
            cls = entry_class_of(store)
            width = min(1000, n)
            for lo in sorted({1, max(1, n // 2 - width // 2), n - width + 1}):
                hi = lo + width - 1
                got = store.get_entries(lo, hi)
                want = pool.batch(cls, lo, width)
                if [(e.index, e.term, e.payload) for e in got] != [(e.index, e.term, e.payload) for e in want]:
                    problem = f"entries {lo}..{hi} did not read back as written"
                    break
    finally:
        await engine.close()
    sampler.close()
    return {
        "engine": args.engine,
        "entries": n,
        "seconds": seconds,
        "rss_delta": after.get("VmRSS", 0) - before.get("VmRSS", 0),
        "peak_rss_delta": after.get("VmHWM", 0) - before.get("VmRSS", 0),
        "anon_delta": end_anon - base_anon,
        "rss_file_after": after.get("RssFile", 0),
        "peak_reset": reset,
        "problem": problem,
    }


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastlog.bench.memprobe", description=__doc__.splitlines()[0])
    parser.add_argument("--engine", required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--entry-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--range-size", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--reopen", action="store_true",
                        help="instead: time the reopen of an existing log of --entries entries "
                        "(written with fastlog.bench.data.PayloadPool) and the memory it adds")
    args = parser.parse_args(argv)
    result = asyncio.run(_reopen_probe(args) if args.reopen else _probe(args))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

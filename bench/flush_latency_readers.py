"""Flush latency of a writer with busy reader threads beside it, and without.

Prints the median and the maximum of ``Log.flush()`` (after a small append)
with 0 and with N reader threads looping ``get_entries`` / ``entry`` on the
same log.  A measurement, not a test: numbers depend on the machine.

    python bench/flush_latency_readers.py [--readers 4] [--flushes 200] [--impl c]
"""
from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from typing import List

import fastlog


def measure(path: str, readers: int, flushes: int, impl: str) -> List[float]:
    log = fastlog.Log(path, segment_size=16 << 20, implementation=impl)
    log.append([log.Entry(index=i, term=1, payload=b"x" * 256) for i in range(1, 20001)])
    log.flush()
    stop = threading.Event()

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            last = log.last_index()
            lo = rng.randint(1, last - 200)
            log.get_entries(lo, lo + 100)
            log.entry(rng.randint(1, last))

    threads = [threading.Thread(target=reader, args=(k,), daemon=True) for k in range(readers)]
    for t in threads:
        t.start()
    times = []
    try:
        nxt = log.last_index() + 1
        for _ in range(flushes):
            log.append([log.Entry(index=i, term=1, payload=b"y" * 256) for i in range(nxt, nxt + 10)])
            nxt += 10
            t0 = time.perf_counter()
            log.flush()
            times.append(time.perf_counter() - t0)
    finally:
        stop.set()
        for t in threads:
            t.join()
        log.close()
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readers", type=int, default=4)
    ap.add_argument("--flushes", type=int, default=200)
    ap.add_argument("--impl", default="c")
    args = ap.parse_args()
    for n in (0, args.readers, 0, args.readers):
        with tempfile.TemporaryDirectory(prefix="fastlog-flush-lat-") as d:
            t = measure(d, n, args.flushes, args.impl)
        print(f"{n} readers: flush median {statistics.median(t) * 1e3:.2f} ms, max {max(t) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()

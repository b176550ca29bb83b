"""Copying a log with read_frames + append_frames, against the floors under it.

Fills a log with ``--entries`` entries of ``--size`` bytes, flushes it, then
times, interleaved for ``--rounds`` rounds:

* ``frames``: ``read_frames`` of ``--chunk`` entries at a time, each passed to
  ``append_frames`` of a fresh log (the replication path: every frame checked);
* ``file copy``: ``os.pread`` of the same number of bytes from the source's
  segment files and ``os.write`` to one fresh file (what any copy from one file
  to another costs here, with no checks at all);
* ``memcpy``: copying the same batches in memory (``bytearray(batch)``).

A measurement, not a test: numbers depend on the machine and its load.

    python bench/frames_copy.py [--entries 1000000] [--chunk 10000] [--rounds 5]
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import time
from typing import Dict, List

import fastlog

_SEGMENT_HEADER = 4096  # records start here in every segment file (docs/format.md)


def fill(path: str, entries: int, size: int) -> fastlog.Log:
    log = fastlog.Log(path, implementation="c")
    pool = [random.Random(k).randbytes(size) for k in range(1024)]
    E = log.Entry
    for first in range(1, entries + 1, 1000):
        last = min(first + 999, entries)
        log.append([E(i, 1, pool[i % 1024]) for i in range(first, last + 1)])
    log.flush()
    return log


def time_frames(src: fastlog.Log, path: str, entries: int, chunk: int) -> float:
    with fastlog.Log(path, implementation="c") as dst:
        t0 = time.perf_counter()
        for start in range(1, entries + 1, chunk):
            dst.append_frames(src.read_frames(start, min(start + chunk - 1, entries)))
        return entries / (time.perf_counter() - t0)


def time_file_copy(src_dir: str, path: str, entries: int, chunk_bytes: int, record_bytes: int) -> float:
    """pread + write of the source's record bytes, ``chunk_bytes`` at a time."""
    want = entries * record_bytes
    names = sorted(n for n in os.listdir(src_dir) if n.endswith(".seg"))
    fds = [os.open(os.path.join(src_dir, n), os.O_RDONLY) for n in names]
    out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        copied = 0
        t0 = time.perf_counter()
        for fd in fds:
            off, end = _SEGMENT_HEADER, os.fstat(fd).st_size
            while copied < want and off < end:
                n = min(chunk_bytes, end - off, want - copied)
                buf = os.pread(fd, n, off)
                if not buf:
                    break
                os.write(out, buf)
                off += len(buf)
                copied += len(buf)
        dt = time.perf_counter() - t0
    finally:
        os.close(out)
        for fd in fds:
            os.close(fd)
    return copied / record_bytes / dt


def time_memcpy(src: fastlog.Log, entries: int, chunk: int) -> float:
    count = min(entries, 20 * chunk)
    batches = [src.read_frames(s, min(s + chunk - 1, count)) for s in range(1, count + 1, chunk)]
    t0 = time.perf_counter()
    for _ in range(5):
        for batch in batches:
            bytearray(batch)
    return 5 * count / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--chunk", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="fastlog-frames-copy-", dir=args.workdir)
    try:
        src_dir = os.path.join(root, "source")
        src = fill(src_dir, args.entries, args.size)
        record_bytes = 32 + ((args.size + 7) & ~7)  # header + payload padded to 8 (docs/format.md)
        rates: Dict[str, List[float]] = {"frames": [], "file copy": [], "memcpy": []}
        for r in range(args.rounds):
            rates["frames"].append(time_frames(src, os.path.join(root, f"frames-{r}"), args.entries, args.chunk))
            shutil.rmtree(os.path.join(root, f"frames-{r}"))
            copy_path = os.path.join(root, f"copy-{r}")
            rates["file copy"].append(time_file_copy(src_dir, copy_path, args.entries, args.chunk * record_bytes,
                                                     record_bytes))
            os.unlink(copy_path)
            rates["memcpy"].append(time_memcpy(src, args.entries, args.chunk))
        src.close()
        med = {k: statistics.median(v) for k, v in rates.items()}
        for k, v in rates.items():
            print(f"{k:10s} median {med[k] / 1e6:6.2f}M entries/s  (runs: "
                  + ", ".join(f"{x / 1e6:.2f}M" for x in v) + ")")
        print(f"frames / file copy = {med['frames'] / med['file copy']:.2f}x, "
              f"frames / memcpy = {med['frames'] / med['memcpy']:.2f}x")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

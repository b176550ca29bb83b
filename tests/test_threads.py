"""Reads in any thread beside a writer: nothing but fastlog errors, never a poisoned log.

``Log`` promises that reads may run from any thread at any time.  Here reader
threads loop ``verify()``, ``get_entries()``, ``entry()`` and the other reads
while the main thread appends, replaces, truncates, purges, resets and
flushes, on both cores, for a bounded time.  Every exception a reader or the
writer sees is collected: none may be foreign (not a ``FastlogError``), the
writer must never see one, and the log must never end up poisoned.

Seen failing on the earlier code, where ``verify()`` ran a segment's check
with the core marked busy and no lock: appends and truncates beside it raised
a bare RuntimeError from the core's busy guard and poisoned the log.
"""
from __future__ import annotations

import random
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Dict, List

import pytest

import fastlog
from fastlog import LogId
from fastlog.errors import ClosedError, FastlogError

SEG = 128 << 10
DURATION = 4.0  # seconds of writing per core
PRELOAD = 6000


def _impl(core_module: ModuleType) -> str:
    return "c" if core_module.IMPLEMENTATION == "c" else "python"


def _reader_loops(log: fastlog.Log, rng: random.Random) -> Dict[str, Callable[[], None]]:
    def verify() -> None:
        damage = log.verify()
        assert not damage, f"verify() beside a writer reported damage: {damage[0]}"

    def ranges() -> None:
        first, last = log.first_index(), log.last_index()
        if first and last >= first:
            lo = rng.randint(first, last)
            got = log.get_entries(lo, lo + rng.randint(0, 500))
            for a, b in zip(got, got[1:]):
                assert b.index == a.index + 1, "a range skipped an index"

    def singles() -> None:
        first, last = log.first_index(), log.last_index()
        if first and last >= first:
            i = rng.randint(first, last)
            e = log.entry(i)
            assert e is None or e.index == i
            log.term_at(i)
        log.durable_index()
        log.purge_boundary()
        for s in log.segments():
            assert s["count"] >= 0

    return {"verify": verify, "ranges": ranges, "singles": singles}


def test_reads_in_other_threads_never_break_the_writer(core_module: ModuleType, tmp_path: Path) -> None:
    log = fastlog.Log(tmp_path, segment_size=SEG, implementation=_impl(core_module))
    batch = [log.Entry(index=i, term=1, payload=b"p" * 100) for i in range(1, PRELOAD + 1)]
    log.append(batch)
    log.flush()

    stop = threading.Event()
    foreign: List[BaseException] = []  # anything not a FastlogError
    refused: List[BaseException] = []  # FastlogErrors raised by reads (none expected)
    reads: Dict[str, int] = {}

    def reader(name: str, seed: int) -> None:
        loop = _reader_loops(log, random.Random(seed))[name]
        n = 0
        try:
            while not stop.is_set():
                try:
                    loop()
                    n += 1
                except ClosedError:
                    return
                except FastlogError as exc:
                    refused.append(exc)
                except BaseException as exc:  # noqa: BLE001 - the test reports it
                    foreign.append(exc)
                    return
        finally:
            reads[name] = n

    threads = [threading.Thread(target=reader, args=(name, k)) for k, name in enumerate(["verify", "ranges", "singles"])]
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)  # readers hold the GIL in short calls: let the writer in often
    for t in threads:
        t.start()
    rng = random.Random(11)
    ops = 0
    term = 1
    writer_errors: List[BaseException] = []
    try:
        deadline = time.monotonic() + DURATION
        while time.monotonic() < deadline and not foreign:
            ops += 1
            last, first = log.last_index(), log.first_index()
            b = log.purge_boundary()
            low = (b.index if b else 0) + 1
            r = rng.random()
            try:
                if r < 0.55 or not first:
                    n = rng.randint(1, 40)
                    log.append([log.Entry(index=last + 1 + k, term=term, payload=b"a" * rng.choice([10, 300, 3000]))
                                for k in range(n)])
                elif r < 0.65 and last > low:
                    term += 1
                    start = rng.randint(max(low, first), last)
                    log.append([log.Entry(index=start + k, term=term, payload=b"r" * 200) for k in range(rng.randint(1, 5))])
                elif r < 0.75 and last > low:
                    log.truncate(rng.randint(max(low, first) + 1, last) if last > max(low, first) else last)
                elif r < 0.82 and first and last > first + 100:
                    idx = rng.randint(first, first + 100)
                    log.purge(LogId(index=idx, term=log.term_at(idx) or 0))
                elif r < 0.83:
                    log.reset()
                else:
                    log.flush()
            except BaseException as exc:  # noqa: BLE001 - the test reports it
                writer_errors.append(exc)
                break
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
        sys.setswitchinterval(old_interval)
        poisoned = log._poisoned
        log.close()
    assert not any(t.is_alive() for t in threads), "a reader hung"
    assert not foreign, f"a read raised a foreign exception: {foreign[0]!r}"
    assert not writer_errors, f"the writer failed beside readers: {writer_errors[0]!r}"
    assert poisoned is None, f"the log was poisoned: {poisoned!r}"
    assert not refused, f"{len(refused)} reads failed; first: {refused[0]!r}"
    assert ops > 20 and all(reads.get(name, 0) > 0 for name in ("verify", "ranges", "singles")), (ops, reads)

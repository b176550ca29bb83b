"""Group commit: concurrent flushes share fsyncs, and nobody is told "durable" too early."""
from __future__ import annotations

import asyncio
import errno
import threading

import pytest

import fastlog
from fastlog import Entry, _osio
from fastlog.engine import GroupCommit
from fastlog.errors import PoisonedError

WRITERS = 64
ROUNDS = 8
ENTRIES_PER_PERSIST = 2


def test_64_concurrent_writers_share_fsyncs(tmp_path, monkeypatch):
    fsyncs = []
    real_fdatasync = _osio.fdatasync

    def counting_fdatasync(fd):
        fsyncs.append(fd)
        real_fdatasync(fd)

    monkeypatch.setattr(_osio, "fdatasync", counting_fdatasync)

    # What each completed Log.flush covered: the last index that existed when it began.
    covered = []
    real_flush = fastlog.Log.flush

    def recording_flush(self):
        last = self.last_index()
        result = real_flush(self)
        covered.append(last)
        return result

    monkeypatch.setattr(fastlog.Log, "flush", recording_flush)

    acknowledged = {}  # index -> payload, recorded once flush_async returned
    flush_calls = 0

    async def main():
        nonlocal flush_calls
        async with fastlog.open(tmp_path, segment_size=256 << 10) as engine:
            log = engine.log_store()

            async def writer(n):
                nonlocal flush_calls
                for r in range(ROUNDS):
                    first = log.last_index() + 1  # no await between choosing and appending
                    batch = [
                        Entry(index=first + k, term=1, payload=b"writer %d round %d #%d" % (n, r, k))
                        for k in range(ENTRIES_PER_PERSIST)
                    ]
                    await log.persist_entries(batch)
                    flush_calls += 1
                    await log.flush_async()
                    # Durable means: a flush that began after these appends has completed.
                    assert max(covered) >= batch[-1].index
                    assert log.durable_index() >= batch[-1].index
                    for e in batch:
                        acknowledged[e.index] = e.payload

            await asyncio.gather(*(writer(n) for n in range(WRITERS)))
            stats = log.group_commit.stats()
            assert stats["flushes"] == len(covered)
            return stats

    stats = asyncio.run(main())
    total = WRITERS * ROUNDS * ENTRIES_PER_PERSIST
    assert flush_calls == WRITERS * ROUNDS
    assert len(acknowledged) == total
    # Far fewer fsyncs than flush calls: each round of 64 writers needs ~2.
    assert len(fsyncs) <= flush_calls // 8, (len(fsyncs), stats)
    assert stats["flushes"] <= flush_calls // 8

    monkeypatch.undo()
    with fastlog.Log(tmp_path) as reopened:
        assert reopened.last_index() == total
        for index, payload in acknowledged.items():
            got = reopened.entry(index)
            assert got is not None and got.payload == payload


# -- GroupCommit on its own, with a flush function the test controls -------------------


class ControlledFlush:
    """A flush function that blocks until released and records how often it ran."""

    def __init__(self):
        self.started = 0
        self.entered = threading.Event()
        self.release = threading.Semaphore(0)
        self.fail_with = None

    def __call__(self):
        self.started += 1
        self.entered.set()
        if not self.release.acquire(timeout=30):
            raise OSError(errno.ETIMEDOUT, "test never released the flush")
        if self.fail_with is not None:
            raise self.fail_with


async def _until(predicate):
    for _ in range(10_000):
        if predicate():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition never became true")


def test_one_flush_in_flight_and_late_writers_get_the_next_one():
    async def main():
        flush = ControlledFlush()
        gc = GroupCommit(flush)
        gc.note_write()
        early = [asyncio.ensure_future(gc.wait_durable()) for _ in range(3)]
        await _until(flush.entered.is_set)
        gc.note_write()  # written while the first flush runs: not covered by it
        late = [asyncio.ensure_future(gc.wait_durable()) for _ in range(3)]
        await asyncio.sleep(0.01)
        assert flush.started == 1  # never two at once
        flush.release.release()
        await asyncio.gather(*early)
        assert not any(f.done() for f in late)
        await _until(lambda: flush.started == 2)  # started at once for the late writers
        flush.release.release()
        await asyncio.gather(*late)
        assert gc.stats()["flushes"] == 2
        await gc.wait_durable()  # nothing new: returns at once
        assert flush.started == 2
        gc.close()

    asyncio.run(main())


def test_failure_goes_to_covered_waiters_and_poisons():
    async def main():
        flush = ControlledFlush()
        gc = GroupCommit(flush)
        gc.note_write()
        covered = asyncio.ensure_future(gc.wait_durable())
        await _until(flush.entered.is_set)
        gc.note_write()
        late = asyncio.ensure_future(gc.wait_durable())
        await asyncio.sleep(0)
        flush.fail_with = OSError(errno.EIO, "disk gone")
        flush.release.release()
        with pytest.raises(OSError, match="disk gone"):
            await covered
        with pytest.raises(PoisonedError) as info:
            await late
        assert isinstance(info.value.__cause__, OSError)
        with pytest.raises(PoisonedError):
            await gc.wait_durable()
        with pytest.raises(PoisonedError):
            gc.check()
        assert flush.started == 1  # no flush after the failure
        gc.close()

    asyncio.run(main())


def test_sync_flush_on_the_worker_and_counts():
    async def main():
        calls = []
        gc = GroupCommit(lambda: calls.append(threading.current_thread().name))
        gc.note_write()
        await gc.wait_durable()
        gc.note_write()
        gc.flush_sync(on_worker=True)
        gc.flush_sync(on_worker=True)  # nothing new
        gc.note_write()
        gc.flush_sync()  # on this thread
        assert len(calls) == 3
        here = threading.current_thread().name
        assert calls[0] == calls[1] != here
        assert calls[2] == here
        assert gc.stats()["durable"] == 3
        gc.close()

    asyncio.run(main())

"""Benchmarks of fastlog's own hot paths, next to raw file baselines.

Synchronous core (``fastlog.Log``): batched appends of 1,000 entries of 256
bytes, 10,000-entry range reads, random single reads, durable 64-entry batches.
Async engine (``fastlog.open``): the same appends through ``persist_entries``,
``await entry()``, and 64 concurrent writers sharing fsyncs (group commit).
Baselines: ``os.write`` of the same bytes, with ``os.fdatasync`` for the
durable cases.

Compare benchmarks within one run (same machine, same moment); ``bench/compare.py``
compares two runs.  Each benchmark's ``extra_info`` says how many entries one
call handles, so entries/s = entries_per_call / time per call.
"""
from __future__ import annotations

import asyncio
import os
from typing import Iterator, List

import pytest

import fastlog
from benchutil import (
    BATCH_SIZE,
    DURABLE_BATCH,
    RANGE_SIZE,
    READS_PER_CALL,
    RESET_AFTER,
    WRITERS,
    Appender,
    make_entries,
    random_indexes,
)

pytestmark = pytest.mark.benchmark(group="core")


# -- fixtures ---------------------------------------------------------------------


@pytest.fixture
def log(tmp_path) -> Iterator[fastlog.Log]:
    with fastlog.Log(str(tmp_path / "log")) as opened:
        yield opened


@pytest.fixture(scope="module")
def populated(tmp_path_factory, loop, payloads, log_entries):
    """An async engine holding ``log_entries`` entries (its ``.log`` serves the sync benchmarks)."""
    engine = fastlog.open(str(tmp_path_factory.mktemp("populated") / "log"))
    store = engine.log_store()
    for first in range(1, log_entries + 1, BATCH_SIZE):
        count = min(BATCH_SIZE, log_entries - first + 1)
        loop.run_until_complete(store.persist_entries(make_entries(store.Entry, first, count, payloads)))
    store.flush()
    yield store
    loop.run_until_complete(engine.close())


@pytest.fixture
def raw_fd(tmp_path) -> Iterator[int]:
    fd = os.open(str(tmp_path / "raw.bin"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    yield fd
    os.close(fd)


# -- batched appends, no fsync -------------------------------------------------------


def test_log_append_batch(benchmark, log, payloads):
    feeder = Appender(log.Entry, payloads, BATCH_SIZE, log.reset)
    benchmark.extra_info["entries_per_call"] = BATCH_SIZE
    benchmark.pedantic(log.append, setup=feeder.setup, rounds=150, warmup_rounds=5)
    assert log.last_index() >= BATCH_SIZE


def test_raw_os_write_batch(benchmark, raw_fd, payloads):
    """Baseline: os.write of the joined payloads of a 1,000-entry batch."""
    batch = make_entries(fastlog.Entry, 1, BATCH_SIZE, payloads)
    write, join = os.write, b"".join
    calls = {"n": 0}

    def setup():
        # Start the file over now and then (untimed), as the log benchmarks reset the log.
        calls["n"] += 1
        if calls["n"] * BATCH_SIZE > RESET_AFTER:
            calls["n"] = 0
            os.ftruncate(raw_fd, 0)
            os.lseek(raw_fd, 0, os.SEEK_SET)
        return (batch,), {}

    def append_raw(entries: List[fastlog.Entry]) -> None:
        write(raw_fd, join([e.payload for e in entries]))

    benchmark.extra_info["entries_per_call"] = BATCH_SIZE
    benchmark.pedantic(append_raw, setup=setup, rounds=300, warmup_rounds=5)


def test_engine_persist_batches(benchmark, tmp_path, loop, payloads):
    """persist_entries of 10 batches of 1,000 per call (one run_until_complete per 10 batches)."""
    engine = fastlog.open(str(tmp_path / "log"))
    store = engine.log_store()
    per_call = 10

    def reset() -> None:
        loop.run_until_complete(store.reset())

    feeder = Appender(store.Entry, payloads, BATCH_SIZE * per_call, reset)

    def setup():
        (big,), _ = feeder.setup()
        return ([big[i:i + BATCH_SIZE] for i in range(0, len(big), BATCH_SIZE)],), {}

    async def persist_all(batches) -> None:
        persist = store.persist_entries
        for batch in batches:
            await persist(batch)

    try:
        benchmark.extra_info["entries_per_call"] = BATCH_SIZE * per_call
        benchmark.pedantic(lambda batches: loop.run_until_complete(persist_all(batches)),
                           setup=setup, rounds=20, warmup_rounds=2)
        assert store.last_index() >= BATCH_SIZE * per_call
    finally:
        loop.run_until_complete(engine.close())


# -- reads ---------------------------------------------------------------------------


def test_log_get_entries_10k(benchmark, populated, log_entries):
    log = populated.log
    start = max(1, log_entries // 2 - RANGE_SIZE // 2)
    benchmark.extra_info["entries_per_call"] = RANGE_SIZE
    result = benchmark(log.get_entries, start, start + RANGE_SIZE - 1)
    assert len(result) == RANGE_SIZE and result[0].index == start


def test_log_entry_random(benchmark, populated, log_entries):
    """1,000 random single reads per call through the synchronous Log.entry."""
    entry = populated.log.entry
    indexes = random_indexes(READS_PER_CALL, log_entries)

    def read_all() -> None:
        for index in indexes:
            entry(index)

    benchmark.extra_info["entries_per_call"] = READS_PER_CALL
    benchmark(read_all)
    assert entry(indexes[0]).index == indexes[0]


def test_engine_entry_random_async(benchmark, populated, loop, log_entries):
    """1,000 random ``await store.entry(i)`` per call, in one coroutine."""
    indexes = random_indexes(READS_PER_CALL, log_entries)

    async def read_all() -> None:
        entry = populated.entry
        for index in indexes:
            await entry(index)

    benchmark.extra_info["entries_per_call"] = READS_PER_CALL
    benchmark(lambda: loop.run_until_complete(read_all()))


# -- durability ------------------------------------------------------------------------


def test_log_durable_batch_64(benchmark, log, payloads):
    """append of 64 entries, then flush() (fdatasync)."""
    feeder = Appender(log.Entry, payloads, DURABLE_BATCH, log.reset)

    def append_durably(batch) -> None:
        log.append(batch)
        log.flush()

    benchmark.extra_info["entries_per_call"] = DURABLE_BATCH
    benchmark.pedantic(append_durably, setup=feeder.setup, rounds=100, warmup_rounds=3)
    assert log.durable_index() == log.last_index()


def test_raw_os_write_fdatasync_64(benchmark, raw_fd, payloads):
    """Baseline: os.write of 64 entries' payloads, then os.fdatasync."""
    data = b"".join(payloads[:DURABLE_BATCH])

    def write_durably() -> None:
        os.write(raw_fd, data)
        os.fdatasync(raw_fd)

    benchmark.extra_info["entries_per_call"] = DURABLE_BATCH
    benchmark.pedantic(write_durably, rounds=100, warmup_rounds=3)


def test_engine_group_commit_64_writers(benchmark, tmp_path, loop, payloads):
    """64 coroutines each persist one entry and await flush_async(); one call = 64 durable entries."""
    engine = fastlog.open(str(tmp_path / "log"))
    store = engine.log_store()
    state = {"next": 1}

    def setup():
        first = state["next"]
        state["next"] += WRITERS
        return ([[e] for e in make_entries(store.Entry, first, WRITERS, payloads)],), {}

    async def writer(batch) -> None:
        await store.persist_entries(batch)
        await store.flush_async()

    async def round_of_writers(batches) -> None:
        await asyncio.gather(*(writer(b) for b in batches))

    try:
        benchmark.extra_info["entries_per_call"] = WRITERS
        benchmark.pedantic(lambda batches: loop.run_until_complete(round_of_writers(batches)),
                           setup=setup, rounds=50, warmup_rounds=2)
        benchmark.extra_info["fsyncs"] = store.group_commit.flushes
        assert store.durable_index() == store.last_index() == state["next"] - 1
    finally:
        loop.run_until_complete(engine.close())


def test_raw_os_write_fdatasync_single(benchmark, raw_fd, payloads):
    """Baseline: one entry's os.write + os.fdatasync (the rate group commit is measured against)."""
    data = payloads[0]

    def write_durably() -> None:
        os.write(raw_fd, data)
        os.fdatasync(raw_fd)

    benchmark.extra_info["entries_per_call"] = 1
    benchmark.pedantic(write_durably, rounds=200, warmup_rounds=5)

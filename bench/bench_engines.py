"""The same hot paths on every engine of :mod:`fastlog.engines`, through the async protocol.

One benchmark group per workload, one benchmark per engine, so
``pytest bench/bench_engines.py --benchmark-only`` prints each workload's
engines side by side.  ``fastlog bench`` is the fuller comparison (more
workloads, data checks, a table with ratios); these exist so CI can track
every engine's hot paths with ``bench/compare.py``.
"""
from __future__ import annotations

import asyncio
from typing import Any, List

import pytest
from benchutil import (
    BATCH_SIZE,
    DURABLE_BATCH,
    RANGE_SIZE,
    READS_PER_CALL,
    WRITERS,
    Appender,
    make_entries,
    random_indexes,
)

from fastlog.bench.subjects import entry_class_of
from fastlog.engines import engines

ENGINE_NAMES = [spec.name for spec in engines()]
#: Batches per timed call of the append benchmark (amortises run_until_complete).
BATCHES_PER_CALL = 10


def _open(name: str, path: str) -> Any:
    from fastlog.engines import get_engine

    spec = get_engine(name)
    if not spec.available:
        pytest.skip(f"engine {name} is not available: {spec.missing_reason}")
    return spec.open(path, durable=False)


@pytest.fixture(params=ENGINE_NAMES, scope="module")
def engine_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def fresh_store(engine_name, tmp_path, loop):
    engine = _open(engine_name, str(tmp_path / engine_name))
    yield engine.log_store()
    loop.run_until_complete(engine.close())


@pytest.fixture(scope="module")
def populated_store(engine_name, tmp_path_factory, loop, payloads, log_entries):
    engine = _open(engine_name, str(tmp_path_factory.mktemp("populated") / engine_name))
    store = engine.log_store()
    cls = entry_class_of(store)
    for first in range(1, log_entries + 1, BATCH_SIZE):
        count = min(BATCH_SIZE, log_entries - first + 1)
        loop.run_until_complete(store.persist_entries(make_entries(cls, first, count, payloads)))
    store.flush()
    yield store
    loop.run_until_complete(engine.close())


@pytest.mark.benchmark(group="engines: append 10 x 1000 x 256 B, no fsync")
def test_append_batches(benchmark, fresh_store, loop, payloads):
    store = fresh_store
    feeder = Appender(entry_class_of(store), payloads, BATCH_SIZE * BATCHES_PER_CALL,
                      lambda: loop.run_until_complete(store.reset()))

    def setup():
        (big,), _ = feeder.setup()
        return ([big[i:i + BATCH_SIZE] for i in range(0, len(big), BATCH_SIZE)],), {}

    async def persist_all(batches: List[list]) -> None:
        persist = store.persist_entries
        for batch in batches:
            await persist(batch)

    benchmark.extra_info["entries_per_call"] = BATCH_SIZE * BATCHES_PER_CALL
    benchmark.pedantic(lambda b: loop.run_until_complete(persist_all(b)), setup=setup, rounds=15, warmup_rounds=1)
    assert store.last_index() >= BATCH_SIZE * BATCHES_PER_CALL


@pytest.mark.benchmark(group="engines: get_entries of 10,000")
def test_get_entries_10k(benchmark, populated_store, log_entries):
    start = max(1, log_entries // 2 - RANGE_SIZE // 2)
    benchmark.extra_info["entries_per_call"] = RANGE_SIZE
    result = benchmark(populated_store.get_entries, start, start + RANGE_SIZE - 1)
    assert len(result) == RANGE_SIZE and result[0].index == start and result[-1].index == start + RANGE_SIZE - 1


@pytest.mark.benchmark(group="engines: 1,000 random await entry()")
def test_entry_random(benchmark, populated_store, loop, log_entries):
    indexes = random_indexes(READS_PER_CALL, log_entries)

    async def read_all() -> None:
        entry = populated_store.entry
        for index in indexes:
            await entry(index)

    benchmark.extra_info["entries_per_call"] = READS_PER_CALL
    benchmark(lambda: loop.run_until_complete(read_all()))
    found = loop.run_until_complete(populated_store.entry(indexes[0]))
    assert found is not None and found.index == indexes[0]


@pytest.mark.benchmark(group="engines: durable batch of 64 (persist + flush)")
def test_durable_batch_64(benchmark, fresh_store, loop, payloads):
    store = fresh_store
    feeder = Appender(entry_class_of(store), payloads, DURABLE_BATCH, lambda: loop.run_until_complete(store.reset()))

    async def persist(batch: list) -> None:
        await store.persist_entries(batch)

    def append_durably(batch: list) -> None:
        loop.run_until_complete(persist(batch))
        store.flush()

    benchmark.extra_info["entries_per_call"] = DURABLE_BATCH
    benchmark.pedantic(append_durably, setup=feeder.setup, rounds=60, warmup_rounds=2)
    assert store.last_index() >= DURABLE_BATCH


@pytest.mark.benchmark(group="engines: 64 concurrent writers, group commit")
def test_group_commit(benchmark, fresh_store, loop, payloads):
    store = fresh_store
    cls = entry_class_of(store)
    state = {"next": 1}

    def setup():
        first = state["next"]
        state["next"] += WRITERS
        return ([[e] for e in make_entries(cls, first, WRITERS, payloads)],), {}

    async def writer(batch: list) -> None:
        await store.persist_entries(batch)
        await store.flush_async()

    async def round_of_writers(batches: List[list]) -> None:
        # Persist never awaits before writing in these engines, so starting the
        # writers in index order keeps the batches consecutive.
        await asyncio.gather(*(writer(b) for b in batches))

    benchmark.extra_info["entries_per_call"] = WRITERS
    benchmark.pedantic(lambda b: loop.run_until_complete(round_of_writers(b)), setup=setup, rounds=30, warmup_rounds=1)
    assert store.last_index() == state["next"] - 1

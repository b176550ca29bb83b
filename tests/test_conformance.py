"""The conformance suite (fastlog.testing) on every registered engine.

Every case runs on a fresh engine directory; persistent engines also run the
*reopen* variant (a close + reopen at every checkpoint of the case), and a
subset runs again on engines opened with ``durable=True``.  An engine whose
package is missing is skipped with the registry's reason.
"""
from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from fastlog.engines import ENGINE_NAMES, get_engine
from fastlog.testing import CASE_NAMES, ConformanceError, run_all_tests
from fastlog.testing.engine_suite import (
    pytest_generate_tests,
    test_case,
    test_persistence,
    test_power_cut,
)
from fastlog.testing.factory import EngineUnderTest

__all__ = ["pytest_generate_tests", "test_case", "test_persistence", "test_power_cut"]

pytestmark = pytest.mark.timeout(120)

#: Engine options for these tests: fastlog preallocates whole segments, so small
#: ones keep hundreds of short cases fast (and roll over more often).
TEST_OPTIONS = {"fastlog": {"segment_size": 4 << 20}, "fastlog-python": {"segment_size": 4 << 20}}


def _required(engine: str) -> bool:
    """Whether a missing engine fails the run instead of skipping (CI sets these)."""
    if os.environ.get("FASTLOG_REQUIRE_PEERS", "").strip() == "1":
        return True
    return engine == "fastlog" and os.environ.get("FASTLOG_REQUIRE_EXTENSION", "").strip() == "1"


def _opener(name: str, durable: bool) -> Any:
    def open_engine(path: str) -> Any:
        return get_engine(name).open(path, durable=durable, **TEST_OPTIONS.get(name, {}))

    open_engine.__name__ = f"open_{name.replace('-', '_')}{'_durable' if durable else ''}"
    globals()[open_engine.__name__] = open_engine  # a module:factory name for the power-cut child
    return open_engine


def _bundled(name: str) -> EngineUnderTest:
    spec = get_engine(name)
    plain = _opener(name, False)
    return EngineUnderTest(
        label=name,
        open=plain,
        spec=f"{__name__}:{plain.__name__}",
        persistent=spec.persistent,
        open_durable=_opener(name, True) if spec.supports_durable else None,
        unavailable=None if spec.available else spec.missing_reason,
        required=_required(name),
    )


#: The bundled engines, run through the same suite the pytest plugin runs on a user's engine.
FASTLOG_ENGINES = [_bundled(name) for name in ENGINE_NAMES]


def _spec(engine: str):
    spec = get_engine(engine)
    if not spec.available:
        message = f"engine {engine} is not available: {spec.missing_reason}"
        if _required(engine):
            pytest.fail(message)
        pytest.skip(message)
    return spec


@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_durability_flag_is_honest(engine: str, tmp_path) -> None:
    spec = _spec(engine)

    async def check() -> None:
        for durable in (False, True):
            engine_obj = spec.open(tmp_path / f"d{int(durable)}", durable=durable)
            try:
                expected = durable and spec.supports_durable
                assert engine_obj.log_store().is_write_durable() is expected
            finally:
                await engine_obj.close()

    asyncio.run(check())


@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_reopen_same_path(engine: str, tmp_path) -> None:
    """Persistent engines see their data after reopen; the memory engine starts empty."""
    spec = _spec(engine)

    async def check() -> None:
        from fastlog.testing import make_entries

        first = spec.open(tmp_path / "db")
        await first.log_store().persist_entries(make_entries(1, 3))
        await first.close()
        second = spec.open(tmp_path / "db")
        try:
            assert second.log_store().last_index() == (3 if spec.persistent else 0)
        finally:
            await second.close()

    asyncio.run(check())


def test_run_all_tests_reports_a_broken_engine(tmp_path) -> None:
    """The importable runner names the failing cases of an engine that breaks the protocol."""
    from fastlog.engines.memory import MemoryLogStore, open_memory

    class ForgetfulStore(MemoryLogStore):
        async def truncate(self, from_index):  # never removes anything
            return None

    def open_broken(path):
        engine = open_memory(path)
        store = ForgetfulStore()
        engine._log_store = store
        engine._meta_store._log_store = store
        return engine

    with pytest.raises(ConformanceError) as info:
        asyncio.run(run_all_tests(open_broken, persistent=False, base_dir=str(tmp_path)))
    assert "truncation[plain]" in str(info.value)
    results = asyncio.run(
        run_all_tests(open_broken, persistent=False, base_dir=str(tmp_path), raise_on_failure=False)
    )
    assert any(r.passed for r in results) and any(not r.passed for r in results)


def test_run_all_tests_passes_on_the_memory_engine(tmp_path) -> None:
    from fastlog.engines.memory import open_memory

    results = asyncio.run(run_all_tests(open_memory, persistent=False, base_dir=str(tmp_path)))
    assert len(results) == len(CASE_NAMES) and all(r.passed for r in results)
    assert os.listdir(tmp_path) == []  # case directories are cleaned up


# -- registry ----------------------------------------------------------------------


def test_registry_lists_every_engine() -> None:
    from fastlog.engines import available_engines, engines, missing_engines

    names = [spec.name for spec in engines()]
    assert names == list(ENGINE_NAMES)
    assert {"fastlog", "fastlog-python", "memory", "sqlite", "lmdb", "rocksdb", "leveldb"} <= set(names)
    available = {spec.name for spec in available_engines()}
    assert available | set(missing_engines()) == set(names)
    assert not available & set(missing_engines())
    with pytest.raises(KeyError, match="known engines"):
        get_engine("no-such-engine")


def test_missing_package_is_reported_not_raised(tmp_path) -> None:
    from fastlog.engines import EngineSpec, EngineUnavailableError, _probe_modules

    spec = EngineSpec(
        name="imaginary",
        summary="an engine whose package is not installed",
        module="fastlog.engines.memory",
        opener="open_memory",
        probe=_probe_modules("fastlog_no_such_package", hint="pip install it"),
    )
    assert not spec.available
    assert "fastlog_no_such_package" in spec.missing_reason and "pip install it" in spec.missing_reason
    with pytest.raises(EngineUnavailableError, match="imaginary"):
        spec.open(tmp_path)


# -- group flush and failed syncs (the adapters' own machinery) ---------------------


@pytest.mark.parametrize("engine", ["sqlite", "lmdb", "rocksdb", "leveldb"])
def test_concurrent_flushes_share_syncs(engine: str, tmp_path) -> None:
    from fastlog.testing import make_entries

    spec = _spec(engine)

    async def writer(store, entry) -> None:
        await store.persist_entries([entry])
        await store.flush_async()

    async def check() -> None:
        eng = spec.open(tmp_path / "db")
        try:
            store = eng.log_store()
            entries = make_entries(1, 64)
            await asyncio.gather(*(writer(store, e) for e in entries))
            syncs = store.group_flush.syncs
            assert 1 <= syncs <= 8, syncs  # 64 flushes, a handful of syncs
            assert store.durable_index() == 64
        finally:
            await eng.close()
        eng = spec.open(tmp_path / "db")
        try:
            assert eng.log_store().get_entries(1, 64) == entries
        finally:
            await eng.close()

    asyncio.run(check())


@pytest.mark.parametrize("engine", ["sqlite", "lmdb", "rocksdb", "leveldb"])
def test_failed_sync_poisons_the_store(engine: str, tmp_path) -> None:
    from fastlog.errors import PoisonedError
    from fastlog.testing import make_entries

    spec = _spec(engine)

    async def check() -> None:
        eng = spec.open(tmp_path / "db")
        store = eng.log_store()
        await store.persist_entries(make_entries(1, 3))

        def failing_sync() -> None:
            raise OSError(5, "injected I/O error")

        store.group_flush._sync = failing_sync
        results = await asyncio.gather(*(store.flush_async() for _ in range(4)), return_exceptions=True)
        assert isinstance(results[0], OSError)
        assert all(isinstance(r, (OSError, PoisonedError)) for r in results)
        with pytest.raises(PoisonedError):
            await store.persist_entries(make_entries(4, 4))
        with pytest.raises(PoisonedError):
            store.flush()
        assert store.get_entries(1, 3) == make_entries(1, 3)  # reads still work
        await eng.close()
        reopened = spec.open(tmp_path / "db")
        try:
            assert reopened.log_store().last_index() == 3
        finally:
            await reopened.close()

    asyncio.run(check())

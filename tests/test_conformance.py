"""The conformance suite (fastlog.testing) on every registered engine.

Every case runs on a fresh engine directory; persistent engines also run the
*reopen* variant (a close + reopen at every checkpoint of the case), and a
subset runs again on engines opened with ``durable=True``.  An engine whose
package is missing is skipped with the registry's reason.
"""
from __future__ import annotations

import asyncio
import os

import pytest

from fastlog.engines import ENGINE_NAMES, get_engine
from fastlog.testing import CASE_NAMES, DURABLE_CASES, ConformanceError, run_all_tests, run_case

pytestmark = pytest.mark.timeout(120)

#: Engine options for these tests: fastlog preallocates whole segments, so small
#: ones keep hundreds of short cases fast (and roll over more often).
TEST_OPTIONS = {"fastlog": {"segment_size": 4 << 20}, "fastlog-python": {"segment_size": 4 << 20}}


def _params():
    params = []
    for engine in ENGINE_NAMES:
        spec = get_engine(engine)
        variants = ["plain", "reopen"] if spec.persistent else ["plain"]
        for case in CASE_NAMES:
            for variant in variants:
                params.append(pytest.param(engine, case, variant, False, id=f"{engine}-{case}-{variant}"))
        if spec.supports_durable:
            for case in DURABLE_CASES:
                params.append(pytest.param(engine, case, "reopen", True, id=f"{engine}-{case}-durable"))
    return params


def _spec(engine: str):
    spec = get_engine(engine)
    if not spec.available:
        pytest.skip(f"engine {engine} is not available: {spec.missing_reason}")
    return spec


@pytest.mark.parametrize("engine, case, variant, durable", _params())
def test_case(engine: str, case: str, variant: str, durable: bool, tmp_path) -> None:
    spec = _spec(engine)
    asyncio.run(
        run_case(
            case,
            lambda path: spec.open(path, durable=durable, **TEST_OPTIONS.get(engine, {})),
            tmp_path / "engine",
            persistent=spec.persistent,
            reopen=variant == "reopen",
        )
    )


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

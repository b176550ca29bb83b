"""The conformance suite as pytest tests, over the engines a run names.

The pytest plugin (:mod:`fastlog.testing.pytest_plugin`) adds this file to a
run given ``--fastlog-engine=module:factory``.  A test module can also run it
on engines of its own: import the tests and ``pytest_generate_tests`` from here
and set ``FASTLOG_ENGINES`` to a list of :class:`EngineUnderTest`.

Tests, per engine:

* ``test_persistence``: whether data survives close and reopen, against what
  was declared (one clear failure or skip instead of a failure per reopen case);
* ``test_case``: every conformance case, plain and (persistent engines)
  reopened at every checkpoint, and the durable cases on ``open_durable``;
* ``test_power_cut``: the durability cases across a real power cut on LazyFS;
* ``test_model``: the hypothesis model test.
"""
from __future__ import annotations

import asyncio
import inspect
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from .conformance import (
    CASE_NAMES,
    DURABLE_CASES,
    POWER_CUT_CASES,
    make_entries,
    run_case,
)
from .factory import EngineUnderTest

__all__ = ["pytest_generate_tests", "test_case", "test_model", "test_persistence", "test_power_cut"]

_probed: Dict[int, bool] = {}


def _engines(metafunc: Any) -> List[EngineUnderTest]:
    engines = getattr(metafunc.module, "FASTLOG_ENGINES", None)
    if engines is not None:
        return list(engines)
    from .pytest_plugin import engines_from_options

    return engines_from_options(metafunc.config)


async def _open(engine: EngineUnderTest, path: str) -> Any:
    opened = engine.open(path)
    if inspect.isawaitable(opened):
        opened = await opened
    return opened


def probe_persistence(engine: EngineUnderTest) -> bool:
    """Whether the engine keeps an entry across close and reopen of its directory."""
    key = id(engine)
    if key not in _probed:

        async def probe(path: str) -> bool:
            first = await _open(engine, path)
            try:
                await first.log_store().persist_entries(make_entries(1, 1))
            finally:
                await first.close()
            second = await _open(engine, path)
            try:
                return second.log_store().last_index() == 1
            finally:
                await second.close()

        with tempfile.TemporaryDirectory(prefix="fastlog-probe-") as root:
            _probed[key] = asyncio.run(probe(os.path.join(root, "engine")))
    return _probed[key]


def _persistent(engine: EngineUnderTest) -> bool:
    """Declared, or else found out (the declared value is checked by test_persistence)."""
    return engine.persistent if engine.persistent is not None else probe_persistence(engine)


def pytest_generate_tests(metafunc: Any) -> None:
    if "fastlog_engine" not in metafunc.fixturenames:
        return
    engines = _engines(metafunc)
    name = metafunc.function.__name__
    params = []
    for engine in engines:
        if engine.unavailable is not None:
            persistent = bool(engine.persistent)
        else:
            persistent = _persistent(engine)
        if name == "test_case":
            variants = ["plain", "reopen"] if persistent else ["plain"]
            for case in CASE_NAMES:
                for variant in variants:
                    params.append(pytest.param(engine, case, variant, id=f"{engine.label}-{case}-{variant}"))
            if engine.open_durable is not None:
                for case in DURABLE_CASES:
                    params.append(pytest.param(engine, case, "durable", id=f"{engine.label}-{case}-durable"))
        elif name == "test_power_cut":
            if persistent:
                for case in POWER_CUT_CASES:
                    params.append(pytest.param(engine, case, "power-cut", id=f"{engine.label}-{case}-power-cut"))
            elif engine.persistent is None or not params:
                # one item that skips with test_persistence's reason (one summary line for both)
                params.append(pytest.param(engine, None, "power-cut", id=f"{engine.label}-power-cut"))
        else:
            params.append(pytest.param(engine, None, None, id=engine.label))
    metafunc.parametrize("fastlog_engine, fastlog_case, fastlog_variant", params)


def _available(engine: EngineUnderTest) -> None:
    if engine.unavailable is not None:
        message = f"engine {engine.label} is not available: {engine.unavailable}"
        if engine.required:
            pytest.fail(message)
        pytest.skip(message)


def _skip_not_persistent(engine: EngineUnderTest) -> None:
    pytest.skip(
        f"{engine.label} keeps nothing across close and reopen: running the plain cases only "
        "(the reopen and power-cut variants need a persistent engine; --fastlog-persistent=yes requires one)"
    )


def test_persistence(fastlog_engine: EngineUnderTest, fastlog_case: None, fastlog_variant: None) -> None:
    """The engine persists exactly when it says it does."""
    _available(fastlog_engine)
    found = probe_persistence(fastlog_engine)
    declared = fastlog_engine.persistent
    if declared is None:
        if not found:
            _skip_not_persistent(fastlog_engine)
        return
    if declared and not found:
        pytest.fail(
            f"{fastlog_engine.label} is declared persistent but an entry written, closed and reopened in the "
            "same directory is gone: fix the engine, or pass --fastlog-persistent=no for an in-memory engine "
            "(every reopen variant fails for this reason)",
            pytrace=False,
        )
    if not declared and found:
        pytest.fail(
            f"{fastlog_engine.label} is declared not persistent but keeps its data across reopen: "
            "pass --fastlog-persistent=yes (or auto) to run the reopen and power-cut variants",
            pytrace=False,
        )


def test_case(fastlog_engine: EngineUnderTest, fastlog_case: str, fastlog_variant: str, tmp_path: Path) -> None:
    """One conformance case; the failure message names the rule that broke."""
    _available(fastlog_engine)
    if fastlog_variant != "plain" and not probe_persistence(fastlog_engine):
        pytest.skip(f"{fastlog_engine.label} is not persistent (see test_persistence)")
    opener = fastlog_engine.open_durable if fastlog_variant == "durable" else fastlog_engine.open
    assert opener is not None
    asyncio.run(
        run_case(
            fastlog_case,
            opener,
            tmp_path / "engine",
            persistent=_persistent(fastlog_engine),
            reopen=fastlog_variant != "plain",
        )
    )


def test_power_cut(fastlog_engine: EngineUnderTest, fastlog_case: Optional[str], fastlog_variant: str) -> None:
    """A durability case across a power cut on LazyFS (a no-op flush fails it)."""
    from .lazyfs import unavailable_reason
    from .power_cut import run_power_cut_case
    from .pytest_plugin import lazyfs_binary_or_skip

    _available(fastlog_engine)
    if fastlog_case is None or not probe_persistence(fastlog_engine):
        _skip_not_persistent(fastlog_engine)
    if fastlog_engine.spec is None:
        pytest.skip(f"{fastlog_engine.label}: the power-cut variant needs a module:factory name")
    binary: Optional[Path] = lazyfs_binary_or_skip(unavailable_reason)
    assert binary is not None and fastlog_case is not None
    run_power_cut_case(fastlog_case, fastlog_engine.spec, fastlog_engine.open, binary)


def test_model(fastlog_engine: EngineUnderTest, fastlog_case: None, fastlog_variant: None, tmp_path: Path) -> None:
    """The hypothesis model test (FASTLOG_HYPOTHESIS_PROFILE chooses the example counts)."""
    _available(fastlog_engine)
    pytest.importorskip("hypothesis", reason="the model test needs hypothesis (pip install hypothesis)")
    from .stateful import run_model_test

    run_model_test(fastlog_engine.open, persistent=probe_persistence(fastlog_engine), base_dir=str(tmp_path))

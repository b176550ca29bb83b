"""Shared fixtures: the byte-core modules under test and hypothesis settings."""
from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import List

import pytest
from hypothesis import HealthCheck, settings

# Deterministic example generation and no per-example deadline: the suite runs
# on small shared machines, and a failing example must fail the same way twice.
settings.register_profile(
    "fastlog",
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
# FASTLOG_HYPOTHESIS_PROFILE=ci|thorough also picks the model-test profile of
# fastlog.testing, so both names must exist here too.
settings.register_profile("ci", parent=settings.get_profile("fastlog"))
settings.register_profile("thorough", parent=settings.get_profile("fastlog"), max_examples=1000, derandomize=False)
settings.load_profile(os.environ.get("FASTLOG_HYPOTHESIS_PROFILE", "fastlog"))


from core_modules import CORE_NAMES, _CORE_MODULES, _env_flag, import_core  # noqa: E402,F401


@pytest.fixture(params=CORE_NAMES, scope="session")
def core_module(request: pytest.FixtureRequest) -> ModuleType:
    """Each available byte-core module (``fastlog._pycore``, ``fastlog_ext._core``)."""
    return import_core(request.param)


@pytest.fixture(scope="session")
def all_core_modules() -> List[ModuleType]:
    """Every importable core module, pure Python first."""
    mods = [importlib.import_module(_CORE_MODULES["python"])]
    if "c" in CORE_NAMES:
        try:
            mods.append(importlib.import_module(_CORE_MODULES["c"]))
        except ImportError:
            if _env_flag("FASTLOG_REQUIRE_EXTENSION"):
                raise
    return mods


# FASTLOG_DEFAULT_CORE_ONLY=1 (the Makefile's pure-Python run): keep only the
# tests that use whichever core the package picks by default.  Tests that name
# their core (the ``core_module`` / ``all_core_modules`` fixtures) already ran
# against both cores in the compiled run, and tests marked ``core_independent``
# exercise nothing a core changes.
_PER_CORE_FIXTURES = ("core_module", "all_core_modules")


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    if not _env_flag("FASTLOG_DEFAULT_CORE_ONLY"):
        return
    keep: List[pytest.Item] = []
    dropped: List[pytest.Item] = []
    for item in items:
        names = getattr(item, "fixturenames", ())
        if item.get_closest_marker("core_independent") or any(f in names for f in _PER_CORE_FIXTURES):
            dropped.append(item)
        else:
            keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep

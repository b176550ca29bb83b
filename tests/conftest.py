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


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


_CORE_MODULES = {"python": "fastlog._pycore", "c": "fastlog_ext._core"}

# The compiled core is left out entirely when pure Python is forced.
CORE_NAMES: List[str] = ["python"] if _env_flag("FASTLOG_NO_EXTENSIONS") else ["python", "c"]


def import_core(name: str) -> ModuleType:
    """Import a core module by implementation name; skip (or fail, when the
    extension is required) if the compiled core is not built."""
    try:
        return importlib.import_module(_CORE_MODULES[name])
    except ImportError as exc:
        if name == "c" and not _env_flag("FASTLOG_REQUIRE_EXTENSION"):
            pytest.skip(f"compiled core not available: {exc}")
        raise


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

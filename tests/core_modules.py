"""Which byte-core modules the tests run against (shared by conftest and tests)."""
from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import List

import pytest


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

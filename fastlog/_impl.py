"""Chooses the implementation: the compiled core or the pure-Python one.

``FASTLOG_NO_EXTENSIONS=1`` selects pure Python; ``FASTLOG_REQUIRE_EXTENSION=1``
makes a missing or broken extension an import error instead of a silent fallback.
"""
from __future__ import annotations

import os
from types import ModuleType
from typing import Optional

__all__ = ["core", "load_core", "IMPLEMENTATION"]


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def load_core(name: Optional[str] = None) -> ModuleType:
    """Return a core module: ``"c"``, ``"python"`` or None for the default."""
    if name == "python":
        from . import _pycore

        return _pycore
    if name == "c":
        from fastlog_ext import _core

        return _core
    if name is not None:
        raise ValueError(f"unknown implementation {name!r} (expected 'c' or 'python')")
    if _env_flag("FASTLOG_NO_EXTENSIONS"):
        if _env_flag("FASTLOG_REQUIRE_EXTENSION"):
            raise ImportError("FASTLOG_NO_EXTENSIONS and FASTLOG_REQUIRE_EXTENSION are both set")
        return load_core("python")
    try:
        return load_core("c")
    except ImportError:
        if _env_flag("FASTLOG_REQUIRE_EXTENSION"):
            raise
        return load_core("python")


core = load_core()
IMPLEMENTATION: str = core.IMPLEMENTATION

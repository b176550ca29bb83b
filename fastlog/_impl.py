"""Chooses the implementation: the compiled core or the pure-Python one.

``FASTLOG_NO_EXTENSIONS=1`` selects pure Python; ``FASTLOG_REQUIRE_EXTENSION=1``
makes a missing or broken extension an import error.  Otherwise a missing
extension falls back to pure Python with one :class:`~fastlog.errors.FastlogWarning`
(the fallback is about 40x slower, which nobody should find out by profiling),
except in a pure-Python install: one built with ``FASTLOG_NO_EXTENSIONS=1``
has no ``fastlog_ext`` package at all, so that choice was made on purpose.
"""
from __future__ import annotations

import os
import warnings
from types import ModuleType
from typing import Optional

from .errors import FastlogWarning

__all__ = ["core", "load_core", "IMPLEMENTATION"]

_fallback_warned = False


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
    except ImportError as exc:
        if _env_flag("FASTLOG_REQUIRE_EXTENSION"):
            raise
        pure_install = isinstance(exc, ModuleNotFoundError) and exc.name == "fastlog_ext"
        if not pure_install:
            _warn_fallback(exc)
        return load_core("python")


def _warn_fallback(exc: ImportError) -> None:
    global _fallback_warned
    if _fallback_warned:
        return
    _fallback_warned = True
    warnings.warn(
        f"fastlog: the compiled core is not available ({exc}); using the pure-Python core, "
        "about 40x slower. In a source checkout build it with `make build`; otherwise reinstall "
        "fastlog where a C compiler is present. Set FASTLOG_NO_EXTENSIONS=1 to choose the "
        "pure-Python core and silence this warning.",
        FastlogWarning,
        stacklevel=3,
    )


core = load_core()
IMPLEMENTATION: str = core.IMPLEMENTATION

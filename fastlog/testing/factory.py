"""Naming an engine factory as ``module:factory``, and what the suite knows of it.

A factory is a callable ``factory(path)`` that opens (creating if needed) an
engine in directory ``path`` and returns it or an awaitable of it.  The
pytest plugin and the power-cut child process both find it from its name.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Optional

from .conformance import OpenEngine

__all__ = ["EngineUnderTest", "load_factory"]


def load_factory(spec: str) -> OpenEngine:
    """The callable named by ``"package.module:attribute"`` (the attribute may be dotted)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"an engine factory is named module:factory, got {spec!r}")
    target: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"{spec!r}: module {module_name!r} has no attribute {attr!r}") from None
    if not callable(target):
        raise ValueError(f"{spec!r} is a {type(target).__name__}, not a callable factory")
    return target


@dataclass
class EngineUnderTest:
    """One engine the conformance suite runs on.

    ``persistent`` None means: find out (open, write, close, reopen).
    ``spec`` (``module:factory``) lets the power-cut variant open the engine
    in a child process; without it that variant is skipped.  ``open_durable``,
    when given, also runs the durable cases on engines opened that way.
    ``unavailable`` skips every test of the engine with that reason.
    """

    label: str
    open: OpenEngine
    spec: Optional[str] = None
    persistent: Optional[bool] = None
    open_durable: Optional[Callable[[str], Any]] = None
    unavailable: Optional[str] = None
    required: bool = False

    @classmethod
    def from_spec(cls, spec: str, *, persistent: Optional[bool] = None) -> "EngineUnderTest":
        return cls(label=spec, open=load_factory(spec), spec=spec, persistent=persistent)

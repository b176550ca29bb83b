"""fastlog: a crash-safe, memory-mapped Raft log store.

Quick start::

    import fastlog
    with fastlog.Log("/tmp/raft-log") as log:
        log.append([fastlog.Entry(index=1, term=1, payload=b"set x 1")])
        log.flush()
        assert log.entry(1).payload == b"set x 1"

The asyncio StorageEngine API (d-engine's LogStore / MetaStore) is
``fastlog.open(path)`` (an async context manager) -- see :mod:`fastlog.engine`.
"""
from __future__ import annotations

from . import errors
from ._impl import IMPLEMENTATION, core as _core
from ._types import MAX_INDEX, EntryKind, HardState, LogId, VotedFor
from .errors import (
    ClosedError,
    CorruptionError,
    FastlogError,
    LockedError,
    PoisonedError,
    StorageFullError,
)
from .log import Log

#: The entry class of the active implementation (compiled or pure Python).
Entry = _core.Entry

__version__ = "0.1.0"

__all__ = [
    "Entry",
    "EntryKind",
    "LogId",
    "HardState",
    "VotedFor",
    "Log",
    "open",
    "errors",
    "FastlogError",
    "CorruptionError",
    "LockedError",
    "ClosedError",
    "PoisonedError",
    "StorageFullError",
    "IMPLEMENTATION",
    "MAX_INDEX",
]


def open(path, **options):  # noqa: A001 - mirrors the built-in on purpose: fastlog.open(path)
    """Open (creating if needed) the asyncio storage engine in directory ``path``."""
    from .engine import open_engine

    return open_engine(path, **options)


def __getattr__(name: str):
    if name in ("FileStorageEngine", "FileLogStore", "FileMetaStore"):
        from . import engine, meta

        return getattr(engine, name, None) or getattr(meta, name)
    raise AttributeError(name)

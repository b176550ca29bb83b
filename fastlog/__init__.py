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

#: The release, as in VERSION (read on first use; see _read_version).
__version__: str

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


def _read_version() -> str:
    """The version, whose one source is the VERSION file of the source tree.

    A source checkout reads that file (it is current even before a reinstall);
    an installed package reads its distribution metadata, which the build
    derived from the same file.
    """
    from pathlib import Path

    tree = Path(__file__).resolve().parent.parent
    if (tree / "pyproject.toml").is_file() and (tree / "VERSION").is_file():
        return (tree / "VERSION").read_text().strip()
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("fastlog")
    except PackageNotFoundError:
        return "0+unknown"


def __getattr__(name: str):
    if name == "__version__":
        # Computed on first use: importing fastlog stays free of file and metadata reads.
        global __version__
        __version__ = _read_version()
        return __version__
    if name in ("FileStorageEngine", "FileLogStore", "FileMetaStore"):
        from . import engine, meta

        return getattr(engine, name, None) or getattr(meta, name)
    raise AttributeError(name)

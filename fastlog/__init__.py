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

import os
from typing import TYPE_CHECKING, Any, Optional, Union

from . import errors
from ._impl import IMPLEMENTATION, core as _core
from ._types import MAX_INDEX, EntryKind, HardState, LogId, VotedFor
from .errors import (
    ClosedError,
    CorruptionError,
    EntryNotFoundError,
    FastlogError,
    LockedError,
    LogChangedError,
    PoisonedError,
    StorageFullError,
)
from .log import Log

if TYPE_CHECKING:
    from ._types import Entry as Entry
    from .engine import FileLogStore, FileStorageEngine
    from .meta import FileMetaStore
else:
    #: The entry class of the active implementation (compiled or pure Python);
    #: type checkers see one class for both (fastlog/_types.py).
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
    "EntryNotFoundError",
    "LogChangedError",
    "IMPLEMENTATION",
    "MAX_INDEX",
]


def open(  # noqa: A001 - mirrors the built-in on purpose: fastlog.open(path)
    path: Union[str, "os.PathLike[str]"],
    *,
    sync: str = "none",
    read_only: bool = False,
    segment_size: Optional[int] = None,
    max_entry_size: Optional[int] = None,
    verify_reads: bool = False,
    implementation: Optional[str] = None,
    **log_options: Any,
) -> FileStorageEngine:
    """Open (creating if needed) the asyncio storage engine in directory ``path``.

    Usable as ``async with fastlog.open(path) as engine``, ``engine = await
    fastlog.open(path)`` or a plain call; the other :class:`Log` options pass
    through ``log_options``.
    """
    from .engine import open_engine

    if segment_size is not None:
        log_options["segment_size"] = segment_size
    if max_entry_size is not None:
        log_options["max_entry_size"] = max_entry_size
    return open_engine(
        path, sync=sync, read_only=read_only, verify_reads=verify_reads, implementation=implementation, **log_options
    )


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


def __getattr__(name: str) -> Any:
    if name == "__version__":
        # Computed on first use: importing fastlog stays free of file and metadata reads.
        global __version__
        __version__ = _read_version()
        return __version__
    if name in ("FileStorageEngine", "FileLogStore", "FileMetaStore"):
        from . import engine, meta

        return getattr(engine, name, None) or getattr(meta, name)
    raise AttributeError(name)

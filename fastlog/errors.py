"""Exceptions raised by fastlog.

Every exception derives from :class:`FastlogError`.  Input errors also derive
from the matching built-in (``ValueError`` / ``TypeError``) so callers that
already catch those keep working.
"""
from __future__ import annotations

from typing import Optional

__all__ = [
    "FastlogError",
    "CorruptionError",
    "LockedError",
    "ClosedError",
    "InvalidEntryError",
    "InvalidIndexError",
    "EntryTypeError",
    "EntryTooLargeError",
    "PoisonedError",
    "StorageFullError",
    "ForkedError",
    "InvalidTermError",
    "EntryNotFoundError",
    "LogChangedError",
    "ViewChangedError",
]


class FastlogError(Exception):
    """Base class of every fastlog error."""


class CorruptionError(FastlogError):
    """Stored data failed verification.

    ``path`` and ``offset`` name the file and byte offset of the first damaged
    byte range that was found.
    """

    def __init__(self, message: str, path: Optional[str] = None, offset: Optional[int] = None):
        self.path = path
        self.offset = offset
        where = ""
        if path is not None:
            where = f" [{path}" + (f" @ offset {offset}" if offset is not None else "") + "]"
        super().__init__(message + where)


class ViewChangedError(CorruptionError):
    """A read-only view was asked for an entry that no longer reads back as it
    did when the view was opened.

    Read-only opens take no lock, so a writer in another process may truncate,
    replace, purge or reset the log while a view is open; the view's index is
    a snapshot, and a record it points at that fails its checksum or carries
    another term now raises this instead of returning other data.  In a log
    that nobody writes it means the file was damaged after the open.
    """


class LockedError(FastlogError):
    """The directory is already open, by this process or by another one."""


class ClosedError(FastlogError):
    """The store (or log) was closed."""


class ForkedError(FastlogError):
    """The store was opened by the parent of this (forked) process.

    A forked child shares the parent's open files, mappings and directory
    lock but not its threads or locks, so using them would race the parent
    (or wait forever on a lock held by a thread that no longer exists).  The
    child may drop the object; it must open the directory itself to use it,
    once the parent has closed it.
    """


class PoisonedError(FastlogError):
    """An earlier write or flush failed, so the store refuses further writes.

    Once an fsync has failed the kernel may have dropped the dirty pages, so the
    only honest answer is to stop; reopen the store to recover from disk.
    """


class StorageFullError(FastlogError, OSError):
    """No space was left to preallocate a segment (ENOSPC)."""


class InvalidEntryError(FastlogError, ValueError):
    """A value passed in is out of range or inconsistent (e.g. an index gap)."""


class InvalidIndexError(InvalidEntryError):
    """An index is negative, out of range or not contiguous."""


class EntryTooLargeError(InvalidEntryError):
    """An entry's payload exceeds the configured maximum."""


class EntryTypeError(FastlogError, TypeError):
    """A value passed in has the wrong type."""


class InvalidTermError(InvalidEntryError):
    """A batch's terms decrease, or start below the term of the entry before it."""


class EntryNotFoundError(FastlogError, IndexError):
    """``log[i]`` found no entry at Raft index ``i`` (missing, purged, truncated or negative)."""


class LogChangedError(FastlogError):
    """A streaming read found that the log was changed under it.

    Raised when the last entry handed out is no longer in the log with the
    same term (a truncation, replacement or reset cut it), so the entries that
    would follow belong to another history than those already read.
    """


class FastlogWarning(UserWarning):
    """Something works, but not as well as it should (e.g. the slow pure-Python core)."""


__all__ += ["FastlogWarning"]

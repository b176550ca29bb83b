"""The asyncio storage engine: a Raft LogStore and MetaStore over one directory.

:func:`open_engine` (exported as ``fastlog.open``) opens a directory holding a
:class:`fastlog.log.Log` (segments and ``STATE``) and the hard state file
(``HARDSTATE``).  The method names and semantics follow the storage trait in
:mod:`fastlog.protocols`.

Durability
----------
With ``sync="none"`` (the default) ``persist_entries`` writes into the
memory-mapped segment and returns; ``flush()`` / ``flush_async()`` make every
change made before them durable.  With ``sync="always"`` each write returns
only once it is durable.

Group commit
------------
Flushes run ``Log.flush()`` (which fdatasyncs) on a dedicated worker thread,
so an fsync never blocks the event loop.  At most one flush is in flight.
Every mutation gets a sequence number; a coroutine that needs durability waits
for the sequence number of the last mutation before it.  A flush covers every
mutation made before it started; when it completes, everyone it covers wakes
up, and if anyone is left waiting (they wrote while it ran) the next flush
starts at once.  So N concurrent writers share roughly one fsync per round
instead of paying one each.

A failed flush is raised to everyone it was meant to cover and poisons the
store: the kernel may have dropped the dirty pages, so no later fsync could
prove anything.  Every later write or flush raises
:class:`~fastlog.errors.PoisonedError`; reads still work; reopen to recover
from what is on disk.

Threads
-------
Everything except the flush runs on the event loop's thread.  Truncate, purge
and reset change which segment files exist, so they wait until no flush is in
flight and run while none can start.  They may fsync a small file or the
directory themselves (those are rare control operations, not the write path).
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from ._types import HardState, LogId
from .errors import ClosedError, EntryTypeError, InvalidEntryError, InvalidIndexError, PoisonedError, StorageFullError
from .meta import FileMetaStore

__all__ = ["open_engine", "FileStorageEngine", "FileLogStore", "GroupCommit"]

_SYNC_MODES = ("none", "always")

PathLike = Union[str, "os.PathLike[str]"]


def _poisoned(cause: BaseException) -> PoisonedError:
    err = PoisonedError(f"the log store is poisoned by an earlier failure ({cause!r}); reopen it")
    err.__cause__ = cause
    return err


class GroupCommit:
    """Shares one call of a flush function among every coroutine waiting for it.

    ``flush_fn`` must make durable every write made before it was called, and
    must be safe to call from a worker thread while the event loop's thread
    keeps writing.  Writers call :meth:`note_write` after each mutation and
    :meth:`wait_durable` to wait for every mutation noted so far.
    """

    def __init__(self, flush_fn: Callable[[], Any], name: str = "fastlog-flush"):
        self._flush_fn = flush_fn
        self._name = name
        self._written = 0  # sequence number of the last mutation
        self._durable = 0  # every mutation up to this one is durable
        self._waiters: List[Tuple[int, int, asyncio.Future]] = []  # heap of (needed seq, tiebreak, future)
        self._tiebreak = itertools.count()
        self._inflight: Optional[asyncio.Future] = None
        self._exclusive: List[asyncio.Future] = []
        self._executor: Optional[ThreadPoolExecutor] = None
        self._error: Optional[BaseException] = None
        self._closed = False
        # Counters, for tests and benchmarks.
        self.flushes = 0  # flush_fn calls that were started
        self.waits = 0  # wait_durable calls that had to wait

    # -- state ---------------------------------------------------------------
    @property
    def error(self) -> Optional[BaseException]:
        """The failure that poisoned this committer, if any."""
        return self._error

    def poison(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc

    def check(self) -> None:
        """Raise PoisonedError if an earlier failure poisoned the store."""
        if self._error is not None:
            raise _poisoned(self._error)

    def note_write(self) -> int:
        self._written += 1
        return self._written

    @property
    def pending(self) -> bool:
        """Whether some mutation is not yet known durable."""
        return self._written > self._durable

    @property
    def in_flight(self) -> bool:
        return self._inflight is not None

    # -- waiting for durability ------------------------------------------------
    async def wait_durable(self) -> None:
        """Return once every mutation noted before this call is durable."""
        self.check()
        needed = self._written
        if needed <= self._durable:
            return
        if self._closed:
            raise ClosedError("the log store is closed")
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        heapq.heappush(self._waiters, (needed, next(self._tiebreak), fut))
        self.waits += 1
        self._start_if_idle()
        await fut

    def _start_if_idle(self) -> None:
        if self._inflight is not None or not self._waiters or self._exclusive:
            return
        if self._error is not None:  # nobody is covered: all get PoisonedError
            self._fail_waiters(self._error, self._durable)
            return
        if self._closed:  # everybody is covered: all get ClosedError
            self._fail_waiters(ClosedError("the log store is closed"), self._written)
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._name)
        target = self._written
        loop = asyncio.get_running_loop()
        self.flushes += 1
        fut = loop.run_in_executor(self._executor, self._flush_fn)
        self._inflight = fut
        fut.add_done_callback(lambda f, target=target: self._flush_done(f, target))

    @staticmethod
    def _running_loop() -> bool:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return False
        return True

    def _flush_done(self, fut: asyncio.Future, target: int) -> None:
        self._inflight = None
        exc: Optional[BaseException]
        if fut.cancelled():
            exc = asyncio.CancelledError("flush was cancelled")
        else:
            exc = fut.exception()
        if exc is not None:
            self.poison(exc)
            self._fail_waiters(exc, target)
        else:
            if target > self._durable:
                self._durable = target
            while self._waiters and self._waiters[0][0] <= self._durable:
                _, _, waiter = heapq.heappop(self._waiters)
                if not waiter.done():
                    waiter.set_result(None)
        if self._exclusive:
            # Let the exclusive operations run before another flush starts;
            # their wake-ups are queued before this call, so they run first.
            for waiter in self._exclusive:
                if not waiter.done():
                    waiter.set_result(None)
            self._exclusive.clear()
            fut.get_loop().call_soon(self._start_if_idle)
        else:
            self._start_if_idle()

    def _fail_waiters(self, exc: BaseException, covered: int) -> None:
        """Raise ``exc`` to the waiters the failed flush covered, PoisonedError to the rest."""
        waiters, self._waiters = self._waiters, []
        for needed, _, waiter in waiters:
            if not waiter.done():
                waiter.set_exception(exc if needed <= covered else _poisoned(exc))

    async def exclusive(self) -> None:
        """Return when no flush is in flight.

        The caller must then run its operation without awaiting anything:
        flushes only start from the event loop, so none can start meanwhile.
        """
        while self._inflight is not None:
            fut = asyncio.get_running_loop().create_future()
            self._exclusive.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut in self._exclusive:
                    self._exclusive.remove(fut)
                self._start_if_idle()
                raise

    def after_exclusive(self) -> None:
        """Start a flush for waiters that queued up while an exclusive operation ran."""
        if self._running_loop():
            self._start_if_idle()

    # -- synchronous flush -----------------------------------------------------
    def flush_sync(self) -> None:
        """Flush on the calling thread (blocks it)."""
        self.check()
        target = self._written
        try:
            self._flush_fn()
        except BaseException as exc:
            self.poison(exc)
            raise
        if target > self._durable:
            self._durable = target

    # -- shutdown --------------------------------------------------------------
    async def drain(self) -> None:
        """Wait until no flush is in flight and nobody waits for one."""
        while self._inflight is not None:
            try:
                await asyncio.shield(self._inflight)
            except BaseException:
                pass  # the waiters got the error; the committer is poisoned

    def close(self) -> None:
        """Stop the worker thread (waiting for a flush still running on it)."""
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    def stats(self) -> Dict[str, int]:
        return {"flushes": self.flushes, "waits": self.waits, "written": self._written, "durable": self._durable}


class FileLogStore:
    """The Raft log of a :class:`FileStorageEngine` (see :mod:`fastlog.protocols`)."""

    def __init__(self, log: Any, *, sync: str = "none"):
        if sync not in _SYNC_MODES:
            raise InvalidEntryError(f"sync must be one of {_SYNC_MODES}, got {sync!r}")
        self._log = log
        self._always = sync == "always"
        self._commit = GroupCommit(self._flush_log)
        self._closed = False

    # -- helpers ---------------------------------------------------------------
    @property
    def log(self) -> Any:
        """The underlying synchronous :class:`fastlog.log.Log`."""
        return self._log

    @property
    def group_commit(self) -> GroupCommit:
        return self._commit

    @property
    def Entry(self) -> type:
        """The entry class of the log's implementation (the fastest one to pass in)."""
        return self._log.Entry

    def _flush_log(self) -> Any:
        return self._log.flush()

    def _check_writable(self) -> None:
        if self._closed:
            raise ClosedError("the log store is closed")
        self._commit.check()

    def _mutate(self, op: Callable[..., Any], *args: Any) -> Any:
        """Run one mutation of the log, poisoning the store if the disk failed under it."""
        try:
            result = op(*args)
        except (InvalidEntryError, EntryTypeError, ClosedError):
            raise  # refused input: nothing changed
        except BaseException as exc:
            # Part of the batch may be written: make a later flush cover it.
            self._commit.note_write()
            if isinstance(exc, OSError) and not isinstance(exc, StorageFullError):
                # An I/O error leaves the files in an unknown state.  A full disk
                # does not: it fails cleanly when a segment is created.
                self._commit.poison(exc)
            raise
        self._commit.note_write()
        return result

    async def _after_write(self) -> None:
        if self._always:
            await self._commit.wait_durable()

    # -- writes ----------------------------------------------------------------
    async def persist_entries(self, entries: Sequence[Any]) -> None:
        """Append a consecutive batch; a first index <= last_index() replaces the suffix."""
        self._check_writable()
        if not isinstance(entries, (list, tuple)):
            if isinstance(entries, (str, bytes, bytearray)) or not isinstance(entries, Sequence):
                raise EntryTypeError(f"entries must be a sequence of Entry, not {type(entries).__name__}")
            entries = list(entries)
        if not entries:
            return
        self._mutate(self._log.append, entries)
        await self._after_write()

    async def replace_range(self, from_index: int, new_entries: Sequence[Any]) -> None:
        """Remove every index >= ``from_index`` and append ``new_entries``, atomically.

        After a crash the log is either the old one or the new one.  The new
        entries must start at or below ``from_index`` unless nothing at or
        above ``from_index`` exists (then this is a plain append).
        """
        self._check_writable()
        _check_index("from_index", from_index)
        if not isinstance(new_entries, (list, tuple)):
            if isinstance(new_entries, (str, bytes, bytearray)) or not isinstance(new_entries, Sequence):
                raise EntryTypeError(f"new_entries must be a sequence of Entry, not {type(new_entries).__name__}")
            new_entries = list(new_entries)
        if not new_entries:
            await self.truncate(from_index)
            return
        boundary = self._log.purge_boundary()
        if boundary is not None and from_index <= boundary.index:
            raise InvalidIndexError(
                f"cannot replace from index {from_index}: at or below the purge boundary {boundary.index}"
            )
        first = getattr(new_entries[0], "index", None)
        if not isinstance(first, int):
            raise EntryTypeError(f"new_entries must hold Entry objects, not {type(new_entries[0]).__name__}")
        if first > from_index and from_index <= self._log.last_index():
            # Removing [from_index, first) and appending would be two steps, and
            # would leave a gap anyway unless the whole log went away.
            raise InvalidIndexError(
                f"new entries start at {first}, above from_index {from_index}: that would leave a gap"
            )
        # Log.append replaces the suffix from the batch's first index in one step.
        await self.persist_entries(new_entries)

    async def truncate(self, from_index: int) -> None:
        """Remove every index >= ``from_index`` (InvalidIndexError at or below the purge boundary)."""
        self._check_writable()
        _check_index("from_index", from_index)
        await self._commit.exclusive()
        try:
            self._check_writable()
            self._mutate(self._log.truncate, from_index)
        finally:
            self._commit.after_exclusive()
        await self._after_write()

    async def purge(self, cutoff_index: LogId) -> None:
        """Remove every index <= ``cutoff_index.index`` and persist the boundary."""
        self._check_writable()
        if not isinstance(cutoff_index, LogId):
            raise EntryTypeError(f"cutoff_index must be a LogId, not {type(cutoff_index).__name__}")
        await self._commit.exclusive()
        try:
            self._check_writable()
            self._mutate(self._log.purge, cutoff_index)
        finally:
            self._commit.after_exclusive()
        await self._after_write()

    async def reset(self) -> None:
        """Empty the log and forget the purge boundary (the hard state stays)."""
        self._check_writable()
        await self._commit.exclusive()
        try:
            self._check_writable()
            self._mutate(self._log.reset)
        finally:
            self._commit.after_exclusive()
        await self._after_write()

    # -- durability ------------------------------------------------------------
    def is_write_durable(self) -> bool:
        """True when every write is durable before it returns (``sync="always"``)."""
        return self._always

    def flush(self) -> None:
        """Make every earlier write durable, blocking the calling thread."""
        self._check_writable()
        self._commit.flush_sync()

    async def flush_async(self) -> None:
        """Make every earlier write durable; concurrent callers share one fsync."""
        self._check_writable()
        await self._commit.wait_durable()

    def durable_index(self) -> int:
        """The highest index known durable (beyond the seed trait)."""
        return self._log.durable_index()

    # -- reads -----------------------------------------------------------------
    async def entry(self, index: int) -> Optional[Any]:
        """The entry at ``index``, or None when it is missing, purged or truncated."""
        return self._log.entry(index)

    def get_entries(self, start: int, end: int) -> List[Any]:
        """The entries with ``start <= index <= end`` that exist, ascending."""
        return self._log.get_entries(start, end)

    def last_index(self) -> int:
        return self._log.last_index()

    def first_index(self) -> int:
        return self._log.first_index()

    def term_at(self, index: int) -> Optional[int]:
        return self._log.term_at(index)

    def load_purge_boundary(self) -> Optional[LogId]:
        return self._log.purge_boundary()

    # -- lifecycle -------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    async def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._commit.drain()
        self._commit.close()

    def _close_sync(self) -> None:
        self._closed = True
        self._commit.close()

    def __repr__(self) -> str:
        mode = "always" if self._always else "none"
        return f"FileLogStore({self._log.path!r}, sync={mode!r})"


def _check_index(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise EntryTypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise InvalidIndexError(f"{name} must not be negative, got {value}")


class FileStorageEngine:
    """A log directory opened as a StorageEngine: one LogStore and one MetaStore.

    The log takes the directory lock, so one engine at a time owns the
    directory (a second open raises :class:`~fastlog.errors.LockedError`).
    """

    def __init__(self, path: PathLike, *, sync: str = "none", **log_options: Any):
        from .log import Log

        if sync not in _SYNC_MODES:
            raise InvalidEntryError(f"sync must be one of {_SYNC_MODES}, got {sync!r}")
        # The engine provides the "always" guarantee itself, through group
        # commit; a log fsyncing inside every append would block the event loop.
        self._log = Log(path, sync="none", **log_options)
        try:
            self._log_store = FileLogStore(self._log, sync=sync)
            self._meta_store = FileMetaStore(self._log.path)
        except BaseException:
            self._log.close()
            raise
        self._sync = sync
        self._closed = False

    @property
    def path(self) -> str:
        return self._log.path

    @property
    def closed(self) -> bool:
        return self._closed

    def log_store(self) -> FileLogStore:
        return self._log_store

    def meta_store(self) -> FileMetaStore:
        return self._meta_store

    async def close(self) -> None:
        """Wait for flushes in flight, then close the log (which flushes) and the meta store."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._log_store._close()
        finally:
            self._finish_close()

    def close_sync(self) -> None:
        """Close from synchronous code (no flush may be awaited by then)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._log_store._close_sync()
        finally:
            self._finish_close()

    def _finish_close(self) -> None:
        self._meta_store.close()
        if self._log_store.group_commit.error is not None:
            # A failed fsync: no later flush may claim the data durable.
            abandon = getattr(self._log, "abandon", None)
            if abandon is not None:
                abandon()
                return
        self._log.close()

    async def __aenter__(self) -> "FileStorageEngine":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __enter__(self) -> "FileStorageEngine":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close_sync()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"FileStorageEngine({self.path!r}, sync={self._sync!r}, {state})"


def open_engine(path: PathLike, **options: Any) -> FileStorageEngine:
    """Open (creating if needed) the log directory ``path`` as a storage engine.

    Options: ``sync`` ("none" or "always"), and the :class:`fastlog.log.Log`
    options ``segment_size``, ``max_entry_size``, ``verify_reads``,
    ``read_only`` and ``implementation``.
    """
    return FileStorageEngine(path, **options)

"""The asyncio storage engine: a Raft LogStore and MetaStore over one directory.

:func:`open_engine` (exported as ``fastlog.open``) opens a directory holding a
:class:`fastlog.log.Log` (segments and ``STATE``) and the hard state file
(``HARDSTATE``).  Method names and semantics follow the storage trait described
in :mod:`fastlog.protocols`.

Durability
----------
With ``sync="none"`` (the default) ``persist_entries`` writes into the
memory-mapped segment and returns; ``flush()`` / ``flush_async()`` make every
change made before them durable.  With ``sync="always"`` every write returns
only once it is durable.  ``is_write_durable()`` says which mode is active.

Group commit
------------
Every mutation gets a sequence number.  A coroutine that needs durability
waits for the sequence number of the last mutation made before it.  At most
one ``Log.flush()`` (which fdatasyncs) is in flight, on a worker thread, and it
covers every mutation made before it started.  When it completes, everyone it
covers wakes up; if anyone is still waiting (they wrote while it ran), the next
flush starts at once.  N concurrent writers thus share about one fsync per
round instead of paying one each, and the event loop never waits for an fsync.

A failed flush is raised to everyone it covered and poisons the store: the
kernel may have dropped the dirty pages, so no later fsync could prove
anything.  Every later write or flush raises
:class:`~fastlog.errors.PoisonedError` (chained to the original error); reads
still work; reopen the directory to recover from what is on disk.

Threads
-------
Appends at ``last_index() + 1`` run on the event loop's thread, before the
coroutine first yields: they only copy into the file's pages.  Everything that may
fsync or delete files -- flushes, truncate, purge, reset, and appends that
replace a suffix (or start an empty log at some other index) -- runs on one
worker thread, in submission order.  While such a structural operation is
queued or running, new appends wait for it, so the log never has two writers
at once and the event loop never waits for an fsync.  (Starting a new segment
preallocates it inline; that is an allocation, not a sync.)
"""
from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncIterator,
    Callable,
    Dict,
    Generator,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from ._types import LogId
from .errors import (
    ClosedError,
    EntryTypeError,
    ForkedError,
    InvalidEntryError,
    InvalidIndexError,
    PoisonedError,
    StorageFullError,
)
from .meta import FileMetaStore

if TYPE_CHECKING:
    # (FileLogStore.Entry, a property, would shadow the name Entry in its annotations.)
    from . import _types
    from .log import Log

__all__ = ["open_engine", "FileStorageEngine", "FileLogStore", "GroupCommit"]

_SYNC_MODES = ("none", "always")

PathLike = Union[str, "os.PathLike[str]"]


def _poisoned(cause: BaseException) -> PoisonedError:
    err = PoisonedError(f"the log store is poisoned by an earlier failure ({cause!r}); reopen it")
    err.__cause__ = cause
    return err


class GroupCommit:
    """Shares one call of a flush function among every coroutine waiting for it.

    ``flush_fn`` must make durable every mutation made before it was called.
    It runs on a dedicated worker thread, which :meth:`submit` also offers to
    other blocking operations so they are serialised with the flushes.

    Writers call :meth:`note_write` after each mutation and
    :meth:`wait_durable` to wait until every mutation noted so far is durable.
    All methods except :meth:`flush_sync` must be called on the event loop's
    thread.
    """

    def __init__(self, flush_fn: Callable[[], Any], name: str = "fastlog-flush"):
        self._flush_fn = flush_fn
        self._name = name
        self._written = 0  # sequence number of the last mutation
        self._durable = 0  # every mutation up to this one is durable
        self._waiters: List[Tuple[int, int, asyncio.Future[Any]]] = []  # heap: (needed seq, tiebreak, future)
        self._tiebreak = itertools.count()
        self._inflight: Optional[asyncio.Future[Any]] = None
        self._start_scheduled = False
        self._executor: Optional[ThreadPoolExecutor] = None
        self._error: Optional[BaseException] = None
        self._closed = False
        # Counters for tests and benchmarks.
        self.flushes = 0  # flush_fn calls started
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
    def in_flight(self) -> bool:
        return self._inflight is not None

    def stats(self) -> Dict[str, int]:
        return {"flushes": self.flushes, "waits": self.waits, "written": self._written, "durable": self._durable}

    # -- the worker thread -----------------------------------------------------
    def _get_executor(self) -> ThreadPoolExecutor:
        if self._closed:
            raise ClosedError("the log store is closed")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._name)
        return self._executor

    def submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Run ``fn(*args)`` on the worker thread, after everything submitted before it."""
        return asyncio.get_running_loop().run_in_executor(self._get_executor(), fn, *args)

    # -- waiting for durability ------------------------------------------------
    async def wait_durable(self) -> None:
        """Return once every mutation noted before this call is durable."""
        fut = self.durable_future()
        if fut is not None:
            await fut

    def durable_future(self) -> Optional[asyncio.Future[None]]:
        """A future that completes once every mutation noted so far is durable;
        None when they already are.  (:meth:`wait_durable` without a coroutine:
        the engine's flush_async awaits it directly, once per writer and write.)"""
        if self._error is not None:
            raise _poisoned(self._error)
        needed = self._written
        if needed <= self._durable:
            return None
        if self._closed:
            raise ClosedError("the log store is closed")
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (needed, next(self._tiebreak), fut))
        self.waits += 1
        if self._inflight is None and not self._start_scheduled:
            # Start at the end of this turn of the event loop, so that every
            # writer that is ready to run appends first and shares this flush.
            self._start_scheduled = True
            asyncio.get_running_loop().call_soon(self._scheduled_start)
        return fut

    def _scheduled_start(self) -> None:
        self._start_scheduled = False
        self._start_if_idle()

    def _start_if_idle(self) -> None:
        if self._inflight is not None or not self._waiters:
            return
        if self._error is not None:  # none of them is covered: all get PoisonedError
            self._fail_waiters(self._error, self._durable)
            return
        if self._closed:  # all of them are covered by the answer
            self._fail_waiters(ClosedError("the log store is closed"), self._written)
            return
        target = self._written
        self.flushes += 1
        fut = self.submit(self._flush_fn)
        self._inflight = fut
        fut.add_done_callback(functools.partial(self._flush_done, target=target))

    def _flush_done(self, fut: asyncio.Future[Any], target: int) -> None:
        self._inflight = None
        exc = asyncio.CancelledError("the flush was cancelled") if fut.cancelled() else fut.exception()
        if exc is not None:
            self.poison(exc)
            self._fail_waiters(exc, target)
            return
        if target > self._durable:
            self._durable = target
        while self._waiters and self._waiters[0][0] <= self._durable:
            _, _, waiter = heapq.heappop(self._waiters)
            if not waiter.done():
                waiter.set_result(None)
        # Those still waiting wrote while this flush ran: start theirs at once,
        # so the disk stays busy while the woken writers prepare the next batch.
        self._start_if_idle()

    def _fail_waiters(self, exc: BaseException, covered: int) -> None:
        """Raise ``exc`` to the waiters the failed flush covered, PoisonedError to the rest."""
        waiters, self._waiters = self._waiters, []
        for needed, _, waiter in waiters:
            if not waiter.done():
                waiter.set_exception(exc if needed <= covered else _poisoned(exc))

    # -- synchronous flush -----------------------------------------------------
    def flush_sync(self, on_worker: bool = False) -> None:
        """Flush and block the calling thread until it is done.

        With ``on_worker`` the flush runs on the worker thread, queued behind
        whatever runs there; otherwise on the calling thread (``flush_fn``
        must allow that while a flush runs on the worker).
        """
        self.check()
        target = self._written
        if target <= self._durable:
            return
        try:
            if on_worker:
                self._get_executor().submit(self._flush_fn).result()
            else:
                if self._closed:
                    raise ClosedError("the log store is closed")
                self._flush_fn()
        except BaseException as exc:
            self.poison(exc)
            raise
        if target > self._durable:
            self._durable = target

    # -- shutdown --------------------------------------------------------------
    async def drain(self) -> None:
        """Wait until the worker thread is idle and nobody waits for a flush."""
        while True:
            self._start_if_idle()  # a flush that was about to start
            if self._executor is None:
                return  # nothing ever ran on the worker
            # Everything queued on the worker before the barrier is done after it.
            await asyncio.shield(self.submit(_nothing))
            if self._inflight is None and not self._waiters:
                return

    def close(self) -> None:
        """Stop the worker thread, waiting for anything still running on it."""
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)


def _nothing() -> None:
    return None


def _check_index(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise EntryTypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise InvalidIndexError(f"{name} must not be negative, got {value}")


def _as_batch(name: str, entries: object) -> Sequence[Any]:
    if isinstance(entries, (list, tuple)):
        return entries
    if isinstance(entries, (str, bytes, bytearray, memoryview)) or not hasattr(entries, "__iter__"):
        raise EntryTypeError(f"{name} must be a sequence of Entry, not {type(entries).__name__}")
    return list(entries)


class FileLogStore:
    """The Raft log of a :class:`FileStorageEngine` (see :mod:`fastlog.protocols`)."""

    def __init__(self, log: Log, *, sync: str = "none", read_only: bool = False):
        if sync not in _SYNC_MODES:
            raise InvalidEntryError(f"sync must be one of {_SYNC_MODES}, got {sync!r}")
        self._log = log
        self._always = sync == "always"
        self._read_only = read_only
        self._commit = GroupCommit(log.flush)
        self._closed = False
        self._pid = os.getpid()  # a forked child must not touch the parent's files or threads
        self._structural = 0  # structural operations submitted and not yet finished
        self._gate: List[asyncio.Future[Any]] = []  # appends waiting for them

    # -- helpers ---------------------------------------------------------------
    @property
    def log(self) -> Log:
        """The underlying synchronous :class:`fastlog.log.Log`."""
        return self._log

    @property
    def group_commit(self) -> GroupCommit:
        return self._commit

    @property
    def Entry(self) -> type[_types.Entry]:
        """The entry class of the log's implementation (the cheapest one to pass in)."""
        entry_class: type[_types.Entry] = self._log.Entry
        return entry_class

    def _check_open(self) -> None:
        if self._pid != os.getpid():
            raise ForkedError(f"log store {self._log.path} was opened by process {self._pid}, a parent of this one")
        if self._closed:
            raise ClosedError("the log store is closed")

    def _check_writable(self) -> None:
        if self._pid != os.getpid() or self._closed:
            self._check_open()
        if self._read_only:
            raise PermissionError(f"log store {self._log.path} is open read-only")
        self._commit.check()

    def _failed(self, exc: BaseException) -> None:
        """Account for a mutation that raised part-way."""
        if isinstance(exc, (InvalidEntryError, EntryTypeError, ClosedError, ForkedError)):
            return  # refused input: nothing changed
        # Part of a batch may have been written: a later flush must cover it.
        self._commit.note_write()
        if isinstance(exc, PoisonedError):
            self._commit.poison(exc.__cause__ or exc)
        elif isinstance(exc, OSError) and not isinstance(exc, StorageFullError):
            # An I/O error leaves the files in an unknown state.  A full disk
            # does not: it fails cleanly while a new segment is created.
            self._commit.poison(exc)

    async def _wait_gate(self) -> None:
        while self._structural:
            fut = asyncio.get_running_loop().create_future()
            self._gate.append(fut)
            await fut

    async def _run_structural(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking mutation on the worker thread, holding appends back meanwhile."""
        self._check_writable()
        self._structural += 1
        try:
            fut = self._commit.submit(fn, *args)
        except BaseException:
            self._structural_done(None)
            raise
        # Bookkeeping happens when the operation ends, even if the caller was cancelled.
        fut.add_done_callback(self._structural_done)
        return await asyncio.shield(fut)

    def _structural_done(self, fut: Optional[asyncio.Future[Any]]) -> None:
        if fut is not None:
            exc = asyncio.CancelledError() if fut.cancelled() else fut.exception()
            if exc is None:
                self._commit.note_write()
            else:
                self._failed(exc)
        self._structural -= 1
        if not self._structural:
            gate, self._gate = self._gate, []
            for waiter in gate:
                if not waiter.done():
                    waiter.set_result(None)

    async def _after_write(self) -> None:
        if self._always:
            await self._commit.wait_durable()

    # -- writes ----------------------------------------------------------------
    async def persist_entries(self, entries: Sequence[_types.Entry]) -> None:
        """Append a consecutive batch; a first index <= last_index() replaces the suffix."""
        # The common case (a list or tuple, no structural operation waiting)
        # runs with as few Python calls as possible: every concurrent writer
        # goes through here once per write.  The log checks the process id.
        if self._closed or self._read_only or self._structural:
            self._check_writable()
        self._commit.check()
        if type(entries) is not list and type(entries) is not tuple:
            entries = _as_batch("entries", entries)
        if not entries:
            self._check_writable()
            return
        if self._structural:
            await self._wait_gate()
            self._check_writable()
        log = self._log
        try:
            # The common case: a plain append, a copy into the file's pages,
            # done before this coroutine first yields (so a caller that picks
            # last_index() + 1 and persists cannot race another such caller).
            plain = log.append_next(entries)
        except BaseException as exc:
            self._failed(exc)
            raise
        if plain:
            self._commit.note_write()
        else:
            # Replacing a suffix (or starting an empty log) may sync or delete files.
            await self._run_structural(log.append, entries)
        if self._always:
            await self._commit.wait_durable()

    async def replace_range(self, from_index: int, new_entries: Sequence[_types.Entry]) -> None:
        """Remove every index >= ``from_index`` and append ``new_entries``, atomically.

        After a crash the log is a prefix of the old one or of the new one (all
        of the new one once flushed), never old entries after new ones.  The
        new entries must start at or below ``from_index`` (they normally start
        at it), unless nothing at or above ``from_index`` is stored (then this is
        a plain append).
        """
        self._check_writable()
        _check_index("from_index", from_index)
        new_entries = _as_batch("new_entries", new_entries)
        if not new_entries:
            await self.truncate(from_index)
            return
        await self._run_structural(self._replace_range, from_index, new_entries)
        await self._after_write()

    def _replace_range(self, from_index: int, new_entries: Sequence[Any]) -> None:
        # Runs on the worker thread with appends held back, so the checks below
        # see the state the append will act on.
        log = self._log
        boundary = log.purge_boundary()
        if boundary is not None and from_index <= boundary.index:
            raise InvalidIndexError(
                f"cannot replace from index {from_index}: at or below the purge boundary {boundary.index}"
            )
        first = getattr(new_entries[0], "index", None)
        if type(first) is not int:
            raise EntryTypeError(f"new_entries must hold Entry objects, not {type(new_entries[0]).__name__}")
        if first > from_index and log.first_index() and from_index <= log.last_index():
            # Entries at or above from_index exist: cutting them and appending
            # from a higher index would be two steps (not atomic) and leave a gap.
            raise InvalidIndexError(
                f"new entries start at {first}, above from_index {from_index}: that would leave a gap"
            )
        # One append: the log replaces the suffix from the batch's first index
        # (which is <= from_index) in a single crash-safe step.
        log.append(new_entries)

    async def append_frames(self, batch: Any) -> None:
        """Append a frame batch from :meth:`read_frames` (see Log.append_frames).

        Checked and written on the worker thread with appends held back, as a
        suffix replacement is: a batch may replace a suffix, and checking its
        CRCs is work best kept off the event loop.
        """
        self._check_writable()
        await self._run_structural(self._log.append_frames, batch)
        await self._after_write()

    async def read_frames(self, start: int, end: int) -> bytes:
        """The records ``start..end`` (clamped) as a frame batch (see Log.read_frames)."""
        if self._closed:
            raise ClosedError("the log store is closed")
        return self._log.read_frames(start, end)

    async def truncate(self, from_index: int) -> None:
        """Remove every index >= ``from_index`` (InvalidIndexError at or below the purge boundary)."""
        self._check_writable()
        _check_index("from_index", from_index)
        await self._run_structural(self._log.truncate, from_index)
        await self._after_write()

    async def purge(self, cutoff_index: LogId) -> None:
        """Remove every index <= ``cutoff_index.index`` and persist the boundary."""
        self._check_writable()
        if not isinstance(cutoff_index, LogId):
            raise EntryTypeError(f"cutoff_index must be a LogId, not {type(cutoff_index).__name__}")
        await self._run_structural(self._log.purge, cutoff_index)
        await self._after_write()

    async def reset(self) -> None:
        """Empty the log and forget the purge boundary (the hard state stays)."""
        self._check_writable()
        await self._run_structural(self._log.reset)
        await self._after_write()

    # -- durability ------------------------------------------------------------
    def is_write_durable(self) -> bool:
        """True when every write is durable before it returns (``sync="always"``)."""
        return self._always

    def flush(self) -> None:
        """Make every earlier write durable, blocking the calling thread."""
        self._check_open()
        if self._read_only:
            return  # nothing was written
        self._check_writable()
        # A structural operation on the worker thread holds the log's writer
        # lock while it may wait for its flush lock; a flush from here takes
        # them in the other order, so it queues behind it instead.
        self._commit.flush_sync(on_worker=bool(self._structural))

    async def flush_async(self) -> None:
        """Make every earlier write durable; concurrent callers share one fsync."""
        if self._read_only:
            self._check_open()
            return
        self._check_writable()
        fut = self._commit.durable_future()
        if fut is not None:
            await fut

    def durable_index(self) -> int:
        """Every index up to this one is known durable (beyond the seed trait)."""
        return self._log.durable_index()

    # -- reads -----------------------------------------------------------------
    async def entry(self, index: int) -> Optional[_types.Entry]:
        """The entry at ``index``, or None when it is missing, purged or truncated."""
        if self._closed:
            raise ClosedError("the log store is closed")  # (the log itself refuses in a forked child)
        return self._log.entry(index)

    def get_entries(self, start: int, end: int) -> List[_types.Entry]:
        """The entries with ``start <= index <= end`` that exist, ascending."""
        if self._closed:
            raise ClosedError("the log store is closed")
        return self._log.get_entries(start, end)

    def last_index(self) -> int:
        """max(last stored index, purge boundary index); 0 when empty."""
        return self._log.last_index()

    def first_index(self) -> int:
        """The lowest readable index, 0 when none."""
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
        if self._pid != os.getpid():
            self._closed = True  # the group commit's threads and futures belong to the parent
            return
        await self._commit.drain()
        self._closed = True
        self._commit.close()

    def _close_sync(self) -> None:
        self._closed = True
        if self._pid == os.getpid():
            self._commit.close()

    def __repr__(self) -> str:
        mode = "always" if self._always else "none"
        return f"FileLogStore({self._log.path!r}, sync={mode!r})"

    # -- streaming reads -------------------------------------------------------
    def stream_entries(
        self, start: Optional[int] = None, end: Optional[int] = None, *, chunk: int = 1024
    ) -> AsyncIterator[_types.Entry]:
        """``async for`` over the entries with ``start <= index <= end``, ascending.

        The range is read ``chunk`` entries at a time, and the event loop gets
        a turn between chunks, so a long range neither sits in memory whole
        nor holds up other coroutines.  Defaults and the behaviour when the
        log changes meanwhile are those of :meth:`fastlog.log.Log.iter_entries`
        (a truncation ends the stream, a replaced entry raises
        :class:`~fastlog.errors.LogChangedError`); closing the store ends it
        with :class:`~fastlog.errors.ClosedError`.  Bad arguments raise at once.
        """
        self._check_open()
        return self._stream(self._log.iter_chunks(start, end, chunk=chunk))

    async def _stream(self, chunks: Iterator[List[_types.Entry]]) -> AsyncIterator[_types.Entry]:
        while True:
            self._check_open()
            batch = next(chunks, None)
            if batch is None:
                return
            for entry in batch:
                yield entry
            await asyncio.sleep(0)

    def __aiter__(self) -> AsyncIterator[_types.Entry]:
        """``async for entry in store``: every entry readable now (see :meth:`stream_entries`)."""
        return self.stream_entries()


class FileStorageEngine:
    """A log directory opened as a StorageEngine: one LogStore and one MetaStore.

    The log takes the directory lock, so one engine at a time owns the
    directory (a second open raises :class:`~fastlog.errors.LockedError`).
    Close it with ``await engine.close()`` or ``async with``; ``close_sync()``
    (and a plain ``with``) serve synchronous code.
    """

    def __init__(self, path: PathLike, *, sync: str = "none", read_only: bool = False, **log_options: Any):
        from .log import Log

        if not isinstance(sync, str):
            raise EntryTypeError(f"sync must be a str, not {type(sync).__name__}")
        if sync not in _SYNC_MODES:
            raise InvalidEntryError(f"sync must be one of {_SYNC_MODES}, got {sync!r}")
        # The engine provides the "always" guarantee itself, through group
        # commit: a log fsyncing inside every append would block the event loop.
        self._log = Log(path, sync="none", read_only=read_only, **log_options)
        try:
            self._log_store = FileLogStore(self._log, sync=sync, read_only=read_only)
            self._meta_store = FileMetaStore(self._log.path, read_only=read_only)
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
        """Wait for the operations in flight, then close (the log flushes on close)."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._log_store._close()
        finally:
            self._meta_store.close()
            self._log.close()

    def close_sync(self) -> None:
        """Close from synchronous code (waits for an operation still on the worker thread)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._log_store._close_sync()
        finally:
            self._meta_store.close()
            self._log.close()

    def __await__(self) -> Generator[Any, None, "FileStorageEngine"]:
        # Lets ``engine = await fastlog.open(path)`` work as well as the plain call.
        async def ready() -> "FileStorageEngine":
            return self

        return ready().__await__()

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

    Options: ``sync`` ("none" or "always"), ``read_only``, and the
    :class:`fastlog.log.Log` options ``segment_size``, ``max_entry_size``,
    ``verify_reads`` and ``implementation``.
    """
    return FileStorageEngine(path, **options)

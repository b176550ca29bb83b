"""Shared machinery of the engine adapters.

Every adapter in :mod:`fastlog.engines` implements the storage protocol of
:mod:`fastlog.protocols` with exactly the semantics of fastlog's own engine.
The rules (suffix replacement, purge boundary, truncation limits, input
checks) live here once, in :class:`BaseLogStore`; an adapter only supplies the
primitive operations of its storage engine (one atomic batch write, a range
delete, a point read, a range scan, a sync).

Encodings shared by the key-value adapters:

* log key: the index as 8 bytes big-endian, so byte order is index order and a
  range of indexes is one ordered scan;
* log value: ``term`` (u64 little-endian), ``kind`` (u8), then the payload;
* purge boundary: ``index, term`` (two u64 little-endian);
* hard state: ``current_term u64, has_vote u8, voted_for_id u64,
  voted_for_term u64, committed u8`` (little-endian).
"""
from __future__ import annotations

import asyncio
import os
import struct
import threading
from typing import Any, Callable, List, Optional, Sequence

from .._types import MAX_INDEX, EntryKind, HardState, LogId, VotedFor
from ..errors import ClosedError, CorruptionError, InvalidEntryError, PoisonedError

# The public validators: every engine refuses the same input with the same
# error (docs/engines.md lists the rules).
from ..testing.validate import (
    check_batch,
    check_hard_state,
    check_index,
    check_log_id,
    check_replace_start,
    check_start,
    check_term_follows,
    check_truncate,
    convert_entry,
    entry_class,
)

__all__ = [
    "DEFAULT_MAX_ENTRY_SIZE",
    "KEY",
    "KINDS",
    "VALUE_HEADER",
    "BaseEngine",
    "BaseLogStore",
    "BaseMetaStore",
    "GroupFlush",
    "check_batch",
    "check_index",
    "decode_boundary",
    "decode_hard_state",
    "encode_boundary",
    "encode_hard_state",
    "convert_entry",
    "entry_class",
    "prepare_directory",
]

#: Same default limit as :class:`fastlog.log.Log`, so every engine refuses the same input.
DEFAULT_MAX_ENTRY_SIZE = 16 << 20

# Key-value engines store an entry as KEY.pack(index) -> VALUE_HEADER.pack(term, kind) + payload.
KEY = struct.Struct(">Q")
VALUE_HEADER = struct.Struct("<QB")
#: EntryKind by its stored number.
KINDS = tuple(EntryKind)
_BOUNDARY = struct.Struct("<QQ")
_HARD_STATE = struct.Struct("<QBQQB")

# ---------------------------------------------------------------------------
# Small encodings
# ---------------------------------------------------------------------------


def encode_boundary(boundary: LogId) -> bytes:
    return _BOUNDARY.pack(boundary.index, boundary.term)


def decode_boundary(raw: Optional[bytes], where: str) -> Optional[LogId]:
    if raw is None:
        return None
    raw = bytes(raw)
    if len(raw) != _BOUNDARY.size:
        raise CorruptionError(f"purge boundary record is {len(raw)} bytes, expected {_BOUNDARY.size}", where)
    index, term = _BOUNDARY.unpack(raw)
    return LogId(index=index, term=term)


def encode_hard_state(state: Any) -> bytes:
    check_hard_state(state)
    vote = state.voted_for
    if vote is None:
        return _HARD_STATE.pack(state.current_term, 0, 0, 0, 0)
    return _HARD_STATE.pack(state.current_term, 1, vote.voted_for_id, vote.voted_for_term, int(vote.committed))


def decode_hard_state(raw: Optional[bytes], where: str) -> Optional[HardState]:
    if raw is None:
        return None
    raw = bytes(raw)
    if len(raw) != _HARD_STATE.size:
        raise CorruptionError(f"hard state record is {len(raw)} bytes, expected {_HARD_STATE.size}", where)
    term, has_vote, vote_id, vote_term, committed = _HARD_STATE.unpack(raw)
    if has_vote > 1 or committed > 1:
        raise CorruptionError("hard state record has a bad flag byte", where)
    vote = VotedFor(voted_for_id=vote_id, voted_for_term=vote_term, committed=bool(committed)) if has_vote else None
    return HardState(current_term=term, voted_for=vote)


# ---------------------------------------------------------------------------
# Group flush
# ---------------------------------------------------------------------------


class GroupFlush:
    """Makes earlier writes durable; concurrent ``flush_async`` callers share one sync.

    The sync runs in a worker thread so the event loop is never blocked by it.
    Each caller takes a ticket; a sync covers every ticket taken before it
    started, so callers that arrive while one runs are served together by the
    next.  A failed sync is raised to its caller and to everyone waiting, and
    every later write or flush raises :class:`PoisonedError` (the engine may
    have lost the dirty data, so no later sync could prove anything).
    """

    def __init__(self, sync: Callable[[], None]):
        self._sync = sync
        self._thread_lock = threading.Lock()
        self._issued = 0
        self._covered = 0
        self._lock: Optional[asyncio.Lock] = None
        self._lock_loop: Optional[asyncio.AbstractEventLoop] = None
        self._error: Optional[BaseException] = None
        self.syncs = 0  # number of syncs actually run (observable by tests and benchmarks)

    @property
    def error(self) -> Optional[BaseException]:
        return self._error

    def check(self) -> None:
        if self._error is not None:
            raise PoisonedError(f"an earlier sync failed ({self._error!r}); reopen the engine") from self._error

    def _run(self) -> None:
        with self._thread_lock:
            self.check()
            try:
                self._sync()
            except BaseException as exc:
                self._error = exc
                raise
            self.syncs += 1

    def flush(self) -> None:
        """Sync now, blocking the calling thread."""
        self._run()

    def _async_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock = asyncio.Lock()
            self._lock_loop = loop
        return self._lock

    async def flush_async(self) -> None:
        self.check()
        self._issued += 1
        ticket = self._issued
        async with self._async_lock():
            if self._covered >= ticket:
                return
            self.check()
            covers = self._issued
            await asyncio.get_running_loop().run_in_executor(None, self._run)
            self._covered = covers

    async def drain(self) -> None:
        """Wait until no sync started by ``flush_async`` is running."""
        if self._lock is not None and self._lock_loop is asyncio.get_running_loop():
            async with self._lock:
                pass


# ---------------------------------------------------------------------------
# LogStore / MetaStore skeletons
# ---------------------------------------------------------------------------


class BaseLogStore:
    """The protocol's LogStore semantics over an adapter's primitive operations.

    It caches the first and last stored index and the purge boundary, so
    ``last_index()`` and out-of-range reads never touch the storage engine.

    Subclasses implement:

    * ``_write_batch(delete_from, batch)``: atomically delete every stored index
      ``>= delete_from`` (when not None) and store ``batch``;
    * ``_delete_from(index)``: delete every stored index ``>= index``;
    * ``_purge_upto(cutoff)``: atomically delete every stored index
      ``<= cutoff.index`` and store ``cutoff`` as the purge boundary;
    * ``_clear()``: atomically delete every entry and the purge boundary;
    * ``_read_one(index)`` / ``_read_range(start, end)``: reads, only called for
      indexes known to be stored;
    * ``_sync()``: make every earlier write durable (thread-safe: it runs in a
      worker thread while the event loop goes on).
    """

    #: Name of the engine, for messages.
    engine_name = "engine"

    def __init__(self, *, durable: bool, max_entry_size: int = DEFAULT_MAX_ENTRY_SIZE):
        if isinstance(max_entry_size, bool) or not isinstance(max_entry_size, int) or max_entry_size < 0:
            raise InvalidEntryError("max_entry_size must be a non-negative int")
        self._durable = bool(durable)
        self._max_payload = max_entry_size
        self._first = 0  # lowest stored index, 0 when nothing is stored
        self._last = 0  # highest stored index, 0 when nothing is stored
        self._boundary: Optional[LogId] = None
        self._durable_index = 0
        self._closed = False
        self._flusher = GroupFlush(self._sync)

    # -- primitive operations (subclasses) ----------------------------------------
    def _write_batch(self, delete_from: Optional[int], batch: List[Any]) -> None:
        raise NotImplementedError

    def _delete_from(self, index: int) -> None:
        raise NotImplementedError

    def _purge_upto(self, cutoff: LogId) -> None:
        raise NotImplementedError

    def _clear(self) -> None:
        raise NotImplementedError

    def _read_one(self, index: int) -> Optional[Any]:
        raise NotImplementedError

    def _read_range(self, start: int, end: int) -> List[Any]:
        raise NotImplementedError

    def _sync(self) -> None:
        raise NotImplementedError

    # -- state helpers ----------------------------------------------------------
    def _set_loaded_state(self, first: int, last: int, boundary: Optional[LogId]) -> None:
        """Record what an adapter found in storage when it opened."""
        self._first, self._last, self._boundary = first, last, boundary
        self._durable_index = max(last, boundary.index if boundary is not None else 0)

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"the {self.engine_name} log store is closed")

    def _check_writable(self) -> None:
        if self._closed:
            raise ClosedError(f"the {self.engine_name} log store is closed")
        self._flusher.check()

    def _wrote(self) -> None:
        if self._durable:
            self._durable_index = self.last_index()

    def _check_term_follows(self, head: Any) -> None:
        """The batch must not start below the term of the entry before it."""
        if head.index < 2:
            return
        check_term_follows(head, self.term_at(head.index - 1))

    def _check_start(self, first: int, stored_last: int) -> None:
        check_start(first, stored_last=stored_last, boundary=self._boundary)

    # -- writes -----------------------------------------------------------------
    async def persist_entries(self, entries: Sequence[Any]) -> None:
        """Append a consecutive batch; a first index <= last_index() replaces the suffix."""
        self._check_writable()
        batch = check_batch(entries, self._max_payload)
        if not batch:
            return
        first = batch[0].index
        last = self._last
        self._check_term_follows(batch[0])
        self._check_start(first, last)
        replace_all = not last or first <= self._first
        self._write_batch(first if last and first <= last else None, batch)
        if replace_all:
            self._first = first
        self._last = batch[-1].index
        if self._durable_index >= first:
            self._durable_index = first - 1
        self._wrote()

    async def replace_range(self, from_index: int, new_entries: Sequence[Any]) -> None:
        """Atomically remove every index >= ``from_index`` and append ``new_entries``.

        Equivalent to ``truncate(from_index)`` followed by
        ``persist_entries(new_entries)``, done as one atomic write: after a
        crash the log is either the old one or the new one.  When entries
        exist at or above ``from_index``, the new entries must start at or
        below it (InvalidIndexError otherwise: that would leave a gap).
        """
        from_index = check_index("from_index", from_index)
        self._check_writable()
        batch = check_batch(new_entries, self._max_payload, "new_entries")
        check_truncate(from_index, self._boundary)
        first, last = self._first, self._last
        cut: Optional[int] = None
        if last and from_index <= last:
            cut = from_index
            if from_index <= first:
                first = last = 0
            else:
                last = from_index - 1
        if batch:
            new_first = batch[0].index
            check_replace_start(from_index, new_first, cut is not None)
            self._check_term_follows(batch[0])
            self._check_start(new_first, last)
            if last and new_first <= last:
                cut = new_first
            if not last or new_first <= first:
                first = new_first
            last = batch[-1].index
            self._write_batch(cut, batch)
        elif cut is not None:
            self._delete_from(cut)
        else:
            return
        self._first, self._last = first, last
        if cut is not None and self._durable_index >= cut:
            self._durable_index = cut - 1
        self._wrote()

    async def truncate(self, from_index: int) -> None:
        """Remove every index >= ``from_index`` (InvalidIndexError at or below the purge boundary)."""
        from_index = check_index("from_index", from_index)
        self._check_writable()
        check_truncate(from_index, self._boundary)
        if not self._last or from_index > self._last:
            return
        self._delete_from(from_index)
        if from_index <= self._first:
            self._first = self._last = 0
        else:
            self._last = from_index - 1
        if self._durable_index >= from_index:
            self._durable_index = from_index - 1
        self._wrote()

    async def purge(self, cutoff_index: LogId) -> None:
        """Remove every index <= ``cutoff_index.index`` and persist the boundary."""
        check_log_id("cutoff_index", cutoff_index)
        self._check_writable()
        b = self._boundary
        if b is not None and cutoff_index.index <= b.index:
            return  # the boundary never moves back
        self._purge_upto(cutoff_index)
        self._boundary = cutoff_index
        if self._last:
            if cutoff_index.index >= self._last:
                self._first = self._last = 0
            elif cutoff_index.index >= self._first:
                self._first = cutoff_index.index + 1
        self._wrote()

    async def reset(self) -> None:
        """Empty the log and forget the purge boundary (the hard state stays)."""
        self._check_writable()
        self._clear()
        self._first = self._last = 0
        self._boundary = None
        self._durable_index = 0

    # -- durability -------------------------------------------------------------
    def is_write_durable(self) -> bool:
        return self._durable

    def flush(self) -> None:
        """Make every earlier write durable, blocking the calling thread."""
        self._check_writable()
        target = self.last_index()
        if not self._durable:
            self._flusher.flush()
        self._durable_index = max(self._durable_index, target)

    async def flush_async(self) -> None:
        """Make every earlier write durable; concurrent callers share one sync."""
        self._check_writable()
        if self._durable:
            return
        target = self.last_index()
        await self._flusher.flush_async()
        self._durable_index = max(self._durable_index, min(target, self.last_index()))

    def durable_index(self) -> int:
        """Every index up to this one is known durable."""
        return min(self._durable_index, self.last_index())

    @property
    def group_flush(self) -> GroupFlush:
        return self._flusher

    # -- reads ------------------------------------------------------------------
    async def entry(self, index: int) -> Optional[Any]:
        """The entry at ``index``, or None when it is missing, purged or truncated."""
        if type(index) is not int:
            index = check_index("index", index)
        elif index < 0 or index > MAX_INDEX:
            check_index("index", index)
        if self._closed:
            self._check_open()
        if index > self._last or index < self._first or not self._last:
            return None
        return self._read_one(index)

    def get_entries(self, start: int, end: int) -> List[Any]:
        """The entries with ``start <= index <= end`` that exist, ascending."""
        start = check_index("start", start)
        end = check_index("end", end)
        self._check_open()
        if not self._last:
            return []
        lo = start if start > self._first else self._first
        hi = end if end < self._last else self._last
        if lo > hi:
            return []
        return self._read_range(lo, hi)

    def last_index(self) -> int:
        b = self._boundary
        if b is not None and b.index > self._last:
            return b.index
        return self._last

    def first_index(self) -> int:
        """Lowest stored index, 0 when the log holds no entry."""
        return self._first

    def term_at(self, index: int) -> Optional[int]:
        """Term of the entry at ``index``; the purge boundary's term at the boundary."""
        index = check_index("index", index)
        b = self._boundary
        if b is not None and index == b.index:
            return b.term
        if not self._last or index > self._last or index < self._first:
            return None
        found = self._read_one(index)
        return None if found is None else found.term

    def load_purge_boundary(self) -> Optional[LogId]:
        return self._boundary

    @property
    def closed(self) -> bool:
        return self._closed

    # -- lifecycle --------------------------------------------------------------
    async def _shutdown(self) -> None:
        if self._closed:
            return
        await self._flusher.drain()
        self._closed = True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._first}..{self.last_index()} durable={self._durable}>"


class BaseMetaStore:
    """MetaStore over an adapter's ``_put_hard_state`` / ``_get_hard_state`` primitives.

    As in fastlog's own meta store, every save is atomic and durable before it
    returns, whatever the log's mode (Raft must never forget a vote), so
    ``flush()`` has nothing left to do.  ``_put_hard_state`` implements that
    with the engine's own sync.
    """

    engine_name = "engine"

    def __init__(self, log_store: BaseLogStore):
        self._log_store = log_store

    def _put_hard_state(self, raw: bytes) -> None:
        raise NotImplementedError

    def _get_hard_state(self) -> Optional[bytes]:
        raise NotImplementedError

    def _check_open(self) -> None:
        if self._log_store.closed:
            raise ClosedError(f"the {self.engine_name} meta store is closed")

    def save_hard_state(self, state: HardState) -> None:
        """Store the hard state atomically and durably."""
        raw = encode_hard_state(state)
        self._check_open()
        self._log_store._flusher.check()
        self._put_hard_state(raw)

    def load_hard_state(self) -> Optional[HardState]:
        self._check_open()
        return decode_hard_state(self._get_hard_state(), self.engine_name)

    def flush(self) -> None:
        """Nothing to do: a save is durable before it returns."""
        self._check_open()
        self._log_store._flusher.check()

    async def flush_async(self) -> None:
        """Nothing to do: a save is durable before it returns."""
        self._check_open()
        self._log_store._flusher.check()


class BaseEngine:
    """A StorageEngine holding one log store and one meta store over one storage engine."""

    #: Registry name of the engine.
    name = "engine"
    #: Whether data survives close + reopen of the same path.
    persistent = True

    def __init__(self, path: str, durable: bool, log_store: BaseLogStore, meta_store: BaseMetaStore):
        self._path = path
        self._durable = durable
        self._log_store = log_store
        self._meta_store = meta_store
        self._closed = False

    @property
    def path(self) -> str:
        return self._path

    @property
    def durable(self) -> bool:
        return self._durable

    @property
    def closed(self) -> bool:
        return self._closed

    def log_store(self) -> BaseLogStore:
        return self._log_store

    def meta_store(self) -> BaseMetaStore:
        return self._meta_store

    def _close_backend(self) -> None:
        raise NotImplementedError

    def _final_sync(self) -> None:
        """Make everything durable before closing (not after a failed sync)."""
        store = self._log_store
        if self.persistent and not store._durable and store._flusher.error is None:
            store._flusher.flush()

    async def close(self) -> None:
        """Wait for syncs in flight, sync what is left and close the storage engine."""
        if self._closed:
            return
        self._closed = True
        await self._log_store._shutdown()
        try:
            self._final_sync()
        finally:
            self._close_backend()

    def close_sync(self) -> None:
        """Close from synchronous code (no ``flush_async`` may be in flight)."""
        if self._closed:
            return
        self._closed = True
        self._log_store._closed = True
        try:
            self._final_sync()
        finally:
            self._close_backend()

    async def __aenter__(self) -> "BaseEngine":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __enter__(self) -> "BaseEngine":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close_sync()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} {self._path!r} durable={self._durable} {state}>"


def prepare_directory(path: Any) -> str:
    """Absolute path of an engine directory, created when missing."""
    path = os.path.abspath(os.fspath(path))
    os.makedirs(path, exist_ok=True)
    return path

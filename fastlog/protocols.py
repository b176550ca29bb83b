"""The StorageEngine / LogStore / MetaStore protocol.

It mirrors the storage trait of d-engine (method names and semantics) as an
asyncio API.  fastlog's own engine and every engine in :mod:`fastlog.engines`
implement it, and :mod:`fastlog.testing` checks any implementation against it.

Semantics (shared by every engine):

* Indexes and terms are integers in ``0 .. 2**64-1``; index 0 is reserved
  (it means "no entry"), so stored entries have ``index >= 1``.

* ``persist_entries(entries)``: a batch with consecutive indexes.  Its first
  index may be ``<= last_index() + 1``; the existing suffix from that index is
  then replaced (as in Raft).  A gap raises ``InvalidIndexError``.  An empty log
  accepts any first index above the purge boundary.
* ``entry(i)`` / ``get_entries(start, end)``: missing, purged or truncated
  indexes read as ``None`` / are left out; ``start > end`` gives ``[]``.
* ``purge(cutoff)`` removes every index ``<= cutoff.index`` and persists the
  boundary; ``last_index()`` is ``max(last stored index, boundary index)``.
* ``truncate(i)`` removes every index ``>= i``; at or below the purge boundary
  it raises ``InvalidIndexError``.
* ``reset()`` empties the log and forgets the purge boundary; the hard state stays.
"""
from __future__ import annotations

from typing import List, Optional, Protocol, Sequence, runtime_checkable

from ._types import EntryKind, HardState, LogId

__all__ = ["EntryLike", "LogStore", "MetaStore", "StorageEngine"]


class EntryLike(Protocol):
    """What the protocol reads from an entry: ``fastlog.Entry`` of either
    implementation (compiled or pure Python) has these fields."""

    @property
    def index(self) -> int: ...

    @property
    def term(self) -> int: ...

    @property
    def payload(self) -> bytes: ...

    @property
    def kind(self) -> EntryKind: ...


@runtime_checkable
class LogStore(Protocol):
    async def persist_entries(self, entries: Sequence[EntryLike]) -> None: ...

    async def entry(self, index: int) -> Optional[EntryLike]: ...

    def get_entries(self, start: int, end: int) -> List[EntryLike]: ...

    async def purge(self, cutoff_index: LogId) -> None: ...

    async def truncate(self, from_index: int) -> None: ...

    async def replace_range(self, from_index: int, new_entries: Sequence[EntryLike]) -> None: ...

    def is_write_durable(self) -> bool: ...

    def flush(self) -> None: ...

    async def flush_async(self) -> None: ...

    async def reset(self) -> None: ...

    def last_index(self) -> int: ...

    def load_purge_boundary(self) -> Optional[LogId]: ...


@runtime_checkable
class MetaStore(Protocol):
    def save_hard_state(self, state: HardState) -> None: ...

    def load_hard_state(self) -> Optional[HardState]: ...

    def flush(self) -> None: ...

    async def flush_async(self) -> None: ...


@runtime_checkable
class StorageEngine(Protocol):
    def log_store(self) -> LogStore: ...

    def meta_store(self) -> MetaStore: ...

    async def close(self) -> None: ...

"""The in-memory reference engine.

Entries live in a Python list (index ``i`` at position ``i - start``), so
appends, suffix replacement, purges and range reads are list operations.
Nothing survives ``close()``: reopening the same path gives an empty engine,
and ``is_write_durable()`` is False in every mode.  It is the baseline of the
comparison (the cost of the protocol itself) and a quick engine for tests of
code built on the protocol.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from .._types import LogId
from ._base import DEFAULT_MAX_ENTRY_SIZE, BaseEngine, BaseLogStore, BaseMetaStore

__all__ = ["MemoryEngine", "open_memory"]


class MemoryLogStore(BaseLogStore):
    engine_name = "memory"

    def __init__(self, *, max_entry_size: int = DEFAULT_MAX_ENTRY_SIZE):
        super().__init__(durable=False, max_entry_size=max_entry_size)
        self._items: List[Any] = []
        self._start = 0  # index of self._items[0]

    def _write_batch(self, delete_from: Optional[int], batch: List[Any]) -> None:
        items = self._items
        if not items or (delete_from is not None and delete_from <= self._start):
            self._items = list(batch)
            self._start = batch[0].index
            return
        if delete_from is not None:
            del items[delete_from - self._start :]
        items.extend(batch)

    def _delete_from(self, index: int) -> None:
        del self._items[max(index - self._start, 0) :]

    def _purge_upto(self, cutoff: LogId) -> None:
        if self._items:
            drop = cutoff.index - self._start + 1
            if drop > 0:
                del self._items[:drop]
                self._start += drop

    def _clear(self) -> None:
        self._items = []
        self._start = 0

    def _read_one(self, index: int) -> Optional[Any]:
        return self._items[index - self._start]

    def _read_range(self, start: int, end: int) -> List[Any]:
        base = self._start
        return self._items[start - base : end - base + 1]

    def _sync(self) -> None:
        return None


class MemoryMetaStore(BaseMetaStore):
    engine_name = "memory"

    def __init__(self, log_store: MemoryLogStore):
        super().__init__(log_store)
        self._values: Dict[str, bytes] = {}

    def _put_hard_state(self, raw: bytes) -> None:
        self._values["hard_state"] = raw

    def _get_hard_state(self) -> Optional[bytes]:
        return self._values.get("hard_state")


class MemoryEngine(BaseEngine):
    """Everything in process memory; gone after close."""

    name = "memory"
    persistent = False

    def _close_backend(self) -> None:
        store = self._log_store
        assert isinstance(store, MemoryLogStore)
        store._clear()


def open_memory(path: Any = None, *, durable: bool = False, max_entry_size: int = DEFAULT_MAX_ENTRY_SIZE) -> MemoryEngine:
    """Open an in-memory engine.  ``path`` is accepted for a uniform signature and ignored.

    ``durable=True`` is accepted, but nothing here is ever durable, and
    ``is_write_durable()`` says so.
    """
    log = MemoryLogStore(max_entry_size=max_entry_size)
    meta = MemoryMetaStore(log)
    return MemoryEngine("" if path is None else str(path), False, log, meta)

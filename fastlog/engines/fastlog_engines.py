"""fastlog's own engine, through the same uniform factory as the peers.

``open_fastlog(path, durable=..., implementation=...)`` is
:func:`fastlog.open` with ``sync="always"`` when ``durable`` (each write is
durable before it returns; concurrent writers share fsyncs through group
commit) and ``sync="none"`` otherwise (writes go to the memory-mapped segment;
``flush()`` / ``flush_async()`` make them durable).  The engine returned is
fastlog's :class:`~fastlog.engine.FileStorageEngine` itself, with nothing in
between, so the comparison measures fastlog as users call it.

The one exception: when the implementation asked for is not the one that
``fastlog.Entry`` belongs to in this process (the pure-Python engine in a
process that uses the compiled one), entries are converted on the way in and
out, so callers still pass and receive ``fastlog.Entry`` objects.
"""
from __future__ import annotations

import os
from typing import Any, List, Optional, Sequence

from ._base import convert_entry, entry_class

__all__ = ["open_fastlog", "default_implementation", "EntryConvertingEngine"]


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def default_implementation() -> str:
    """The implementation the ``fastlog`` engine uses: "c" unless FASTLOG_NO_EXTENSIONS=1."""
    return "python" if _env_flag("FASTLOG_NO_EXTENSIONS") else "c"


def open_fastlog(path: Any, *, durable: bool = False, implementation: Optional[str] = None, **options: Any) -> Any:
    """Open fastlog's asyncio engine in directory ``path``.

    ``implementation``: "c", "python" or None (the process default).  Other
    keyword arguments go to :func:`fastlog.open` (``segment_size``,
    ``max_entry_size``, ``verify_reads``).
    """
    from ..engine import open_engine

    engine = open_engine(path, sync="always" if durable else "none", implementation=implementation, **options)
    if engine.log_store().Entry is not entry_class():
        return EntryConvertingEngine(engine)
    return engine


class _ConvertingLogStore:
    """A fastlog log store whose implementation has its own Entry class."""

    def __init__(self, inner: Any):
        self._inner = inner
        self._native = inner.Entry

    def _to_native(self, entries: Sequence[Any]) -> Any:
        native = self._native
        if not isinstance(entries, (list, tuple)):
            return entries  # let the store reject it with its own error
        return [
            native(e.index, e.term, e.payload, e.kind) if type(e) is not native and hasattr(e, "payload") else e
            for e in entries
        ]

    async def persist_entries(self, entries: Sequence[Any]) -> None:
        await self._inner.persist_entries(self._to_native(entries))

    async def replace_range(self, from_index: int, new_entries: Sequence[Any]) -> None:
        await self._inner.replace_range(from_index, self._to_native(new_entries))

    async def entry(self, index: int) -> Optional[Any]:
        found = await self._inner.entry(index)
        return None if found is None else convert_entry(found)

    def get_entries(self, start: int, end: int) -> List[Any]:
        return [convert_entry(e) for e in self._inner.get_entries(start, end)]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __repr__(self) -> str:
        return f"<converting {self._inner!r}>"


class EntryConvertingEngine:
    """Wraps a fastlog engine so its log store speaks ``fastlog.Entry``."""

    persistent = True

    def __init__(self, inner: Any):
        self._inner = inner
        self._log_store = _ConvertingLogStore(inner.log_store())

    def log_store(self) -> Any:
        return self._log_store

    def meta_store(self) -> Any:
        return self._inner.meta_store()

    async def close(self) -> None:
        await self._inner.close()

    def close_sync(self) -> None:
        self._inner.close_sync()

    async def __aenter__(self) -> "EntryConvertingEngine":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __repr__(self) -> str:
        return f"<converting {self._inner!r}>"

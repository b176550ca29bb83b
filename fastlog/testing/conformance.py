"""The conformance cases every StorageEngine must pass.

A case is an ``async def case(ctx: CaseContext)``.  It drives
``ctx.log`` / ``ctx.meta`` and checks what it reads back; wherever it calls
``await ctx.checkpoint()``, the *reopen* variant closes the engine and opens the
same path again, so every check after that point also proves the state
survived a restart.  Persistent engines run every case in both variants.

The cases are d-engine's storage test suite (empty storage, single and batch
persistence, purge, truncation, reset, edge cases, purge of an empty range,
hard state persistence, reset keeps the hard state, flush, and the durability
cases as the reopen variants) plus the finer semantics of
:mod:`fastlog.protocols` (suffix replacement, gaps, the purge boundary,
``replace_range``, input errors that change nothing, extreme indexes).
"""
from __future__ import annotations

import asyncio
import functools
import inspect
import os
import shutil
import tempfile
import traceback
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Tuple, Type, Union

from .._types import MAX_INDEX, EntryKind, HardState, LogId, VotedFor
from ..errors import EntryTooLargeError, EntryTypeError, InvalidIndexError, InvalidTermError

__all__ = [
    "CASES",
    "CASE_NAMES",
    "DURABLE_CASES",
    "POWER_CUT_CASES",
    "CaseContext",
    "ConformanceError",
    "CaseResult",
    "OpenEngine",
    "run_case",
    "run_all_tests",
    "make_entries",
]

#: ``open_engine(path)``: opens (creating if needed) an engine in directory
#: ``path``; may return the engine or an awaitable of it.
OpenEngine = Callable[[str], Union[Any, Awaitable[Any]]]

#: Payload size just above fastlog's default entry limit (16 MiB).
OVERSIZED_PAYLOAD = (16 << 20) + 1


class ConformanceError(AssertionError):
    """An engine behaved differently from the protocol."""


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _entry_class() -> type:
    import fastlog

    return fastlog.Entry


def make_entries(first: int, last: int, term: Optional[int] = None, tag: bytes = b"data") -> List[Any]:
    """Entries ``first..last`` (inclusive); term defaults to the index; kinds cycle."""
    cls = _entry_class()
    kinds = (EntryKind.COMMAND, EntryKind.COMMAND, EntryKind.NOOP, EntryKind.CONFIG)
    out = []
    for i in range(first, last + 1):
        kind = kinds[i % 4]
        payload = b"" if kind is EntryKind.NOOP else tag + b"-%d" % i
        out.append(cls(i, i if term is None else term, payload, kind))
    return out


def _fields(entry: Any) -> tuple:
    return (entry.index, entry.term, int(entry.kind), bytes(entry.payload))


def _show(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def check(condition: bool, message: str) -> None:
    if not condition:
        raise ConformanceError(message)


def check_eq(actual: Any, expected: Any, what: str) -> None:
    if actual != expected:
        raise ConformanceError(f"{what}: expected {_show(expected)}, got {_show(actual)}")


def check_entry(actual: Any, expected: Any, what: str) -> None:
    """``actual`` is the entry ``expected`` (or both are None), as a ``fastlog.Entry``."""
    if expected is None:
        check(actual is None, f"{what}: expected None, got {_show(actual)}")
        return
    check(actual is not None, f"{what}: expected {_show(expected)}, got None")
    check(
        isinstance(actual, _entry_class()),
        f"{what}: expected a fastlog.Entry, got a {type(actual).__module__}.{type(actual).__name__}",
    )
    check_eq(_fields(actual), _fields(expected), what)


def check_entries(actual: Sequence[Any], expected: Sequence[Any], what: str) -> None:
    check(isinstance(actual, list), f"{what}: get_entries must return a list, got {type(actual).__name__}")
    check_eq(len(actual), len(expected), f"{what} (number of entries)")
    for a, e in zip(actual, expected):
        check_entry(a, e, f"{what} (entry {e.index})")


async def check_raises(error: Type[BaseException], action: Callable[[], Any], what: str) -> BaseException:
    """``action()`` (sync, or returning an awaitable) must raise ``error``."""
    try:
        result = action()
        if inspect.isawaitable(result):
            await result
    except error as exc:
        return exc
    except Exception as exc:  # the wrong error
        raise ConformanceError(f"{what}: expected {error.__name__}, got {type(exc).__name__}: {exc}") from exc
    raise ConformanceError(f"{what}: expected {error.__name__}, nothing was raised")


# ---------------------------------------------------------------------------
# Case context
# ---------------------------------------------------------------------------


class CaseContext:
    """One engine directory, opened through ``open_engine``; reopened at checkpoints."""

    def __init__(self, open_engine: OpenEngine, path: str, *, persistent: bool = True, reopen: bool = False):
        self._open_engine = open_engine
        self.path = path
        self.persistent = persistent
        self.reopen = reopen
        self.engine: Any = None
        self.restarts = 0

    async def open(self) -> None:
        engine = self._open_engine(self.path)
        if inspect.isawaitable(engine):
            engine = await engine
        self.engine = engine

    async def close(self) -> None:
        if self.engine is not None:
            engine, self.engine = self.engine, None
            await engine.close()

    @property
    def log(self) -> Any:
        return self.engine.log_store()

    @property
    def meta(self) -> Any:
        return self.engine.meta_store()

    async def restart(self) -> None:
        """Close the engine and open the same path again."""
        await self.close()
        await self.open()
        self.restarts += 1

    async def checkpoint(self) -> None:
        """A restart in the reopen variant, nothing otherwise."""
        if self.reopen:
            await self.restart()

    async def snapshot(self) -> tuple:
        """Everything observable: last index, boundary, every entry, hard state."""
        log = self.log
        last = log.last_index()
        return (
            last,
            log.load_purge_boundary(),
            [_fields(e) for e in log.get_entries(0, last + 1 if last < MAX_INDEX else last)],
            self.meta.load_hard_state(),
        )


# ---------------------------------------------------------------------------
# d-engine's cases
# ---------------------------------------------------------------------------


async def case_empty_storage(ctx: CaseContext) -> None:
    await ctx.checkpoint()
    log = ctx.log
    check_eq(log.last_index(), 0, "last_index() of an empty store")
    check_entry(await log.entry(1), None, "entry(1) of an empty store")
    check_entries(log.get_entries(1, 5), [], "get_entries(1, 5) of an empty store")
    check_eq(log.load_purge_boundary(), None, "load_purge_boundary() of an empty store")
    check_eq(ctx.meta.load_hard_state(), None, "load_hard_state() of an empty store")
    check(isinstance(log.is_write_durable(), bool), "is_write_durable() must return a bool")


async def case_single_entry_persistence(ctx: CaseContext) -> None:
    entries = make_entries(1, 1)
    await ctx.log.persist_entries(entries)
    await ctx.checkpoint()
    log = ctx.log
    check_eq(log.last_index(), 1, "last_index() after one entry")
    check_entry(await log.entry(1), entries[0], "entry(1)")
    check_entries(log.get_entries(1, 1), entries, "get_entries(1, 1)")


async def case_batch_persistence(ctx: CaseContext) -> None:
    entries = make_entries(1, 100)
    await ctx.log.persist_entries(entries)
    await ctx.checkpoint()
    log = ctx.log
    check_eq(log.last_index(), 100, "last_index() after 100 entries")
    for i in (1, 50, 100):
        check_entry(await log.entry(i), entries[i - 1], f"entry({i})")
    check_entries(log.get_entries(25, 75), entries[24:75], "get_entries(25, 75)")
    check_entries(log.get_entries(1, 100), entries, "get_entries(1, 100)")


async def case_purge_logs(ctx: CaseContext) -> None:
    entries = make_entries(1, 100)
    await ctx.log.persist_entries(entries)
    await ctx.log.purge(LogId(index=50, term=50))
    await ctx.checkpoint()
    log = ctx.log
    check_entry(await log.entry(1), None, "entry(1) after purge(50)")
    check_entry(await log.entry(50), None, "entry(50) after purge(50)")
    check_entry(await log.entry(51), entries[50], "entry(51) after purge(50)")
    check_eq(log.last_index(), 100, "last_index() after purge(50)")
    check_eq(log.load_purge_boundary(), LogId(index=50, term=50), "load_purge_boundary() after purge(50)")
    check_entries(log.get_entries(1, 100), entries[50:], "get_entries(1, 100) after purge(50)")


async def case_truncation(ctx: CaseContext) -> None:
    entries = make_entries(1, 100)
    await ctx.log.reset()
    await ctx.log.persist_entries(entries)
    await ctx.log.truncate(76)
    await ctx.checkpoint()
    log = ctx.log
    check_eq(log.last_index(), 75, "last_index() after truncate(76)")
    check_entry(await log.entry(76), None, "entry(76) after truncate(76)")
    check_entry(await log.entry(100), None, "entry(100) after truncate(76)")
    check_entry(await log.entry(75), entries[74], "entry(75) after truncate(76)")
    check_entries(log.get_entries(70, 100), entries[69:75], "get_entries(70, 100) after truncate(76)")


async def case_reset_operation(ctx: CaseContext) -> None:
    await ctx.log.persist_entries(make_entries(1, 50))
    await ctx.log.purge(LogId(index=10, term=10))
    await ctx.log.reset()
    await ctx.checkpoint()
    log = ctx.log
    check_eq(log.last_index(), 0, "last_index() after reset")
    check_entry(await log.entry(1), None, "entry(1) after reset")
    check_entry(await log.entry(20), None, "entry(20) after reset")
    check_eq(log.load_purge_boundary(), None, "load_purge_boundary() after reset")
    fresh = make_entries(1, 5, term=7)
    await log.persist_entries(fresh)
    await ctx.checkpoint()
    check_entries(ctx.log.get_entries(1, 50), fresh, "entries written after reset")


async def case_edge_cases(ctx: CaseContext) -> None:
    log = ctx.log
    await log.persist_entries([])
    check_eq(log.last_index(), 0, "last_index() after an empty batch")
    check_entries(log.get_entries(100, 200), [], "get_entries(100, 200) of an empty store")
    await log.persist_entries(make_entries(1, 10))
    await log.persist_entries(())
    await ctx.checkpoint()
    log = ctx.log
    check_eq(log.last_index(), 10, "last_index() after an empty batch on a non-empty log")
    check_entries(log.get_entries(100, 200), [], "get_entries(100, 200) past the end")
    check_entries(log.get_entries(5, 4), [], "get_entries(5, 4) (start > end)")
    check_entry(await log.entry(0), None, "entry(0)")
    check_entries(log.get_entries(0, 0), [], "get_entries(0, 0)")


async def case_purge_empty_range(ctx: CaseContext) -> None:
    log = ctx.log
    await log.purge(LogId(index=0, term=0))
    check_eq(log.last_index(), 0, "last_index() after purge(0) of an empty log")
    await ctx.checkpoint()
    log = ctx.log
    check_eq(log.last_index(), 0, "last_index() after purge(0) of an empty log")
    entries = make_entries(1, 10)
    await log.persist_entries(entries)
    await log.purge(LogId(index=0, term=0))
    await ctx.checkpoint()
    log = ctx.log
    check_entry(await log.entry(1), entries[0], "entry(1) after purge(0)")
    check_eq(log.last_index(), 10, "last_index() after purge(0)")
    check_entries(log.get_entries(1, 10), entries, "get_entries(1, 10) after purge(0)")


async def case_hard_state_persistence(ctx: CaseContext) -> None:
    state = HardState(current_term=5, voted_for=VotedFor(voted_for_id=10, voted_for_term=4, committed=True))
    ctx.meta.save_hard_state(state)
    check_eq(ctx.meta.load_hard_state(), state, "load_hard_state() after save")
    await ctx.checkpoint()
    check_eq(ctx.meta.load_hard_state(), state, "load_hard_state() after save")
    newer = HardState(current_term=42, voted_for=VotedFor(voted_for_id=7, voted_for_term=42, committed=False))
    ctx.meta.save_hard_state(newer)
    await ctx.checkpoint()
    check_eq(ctx.meta.load_hard_state(), newer, "load_hard_state() after a second save")
    no_vote = HardState(current_term=43, voted_for=None)
    ctx.meta.save_hard_state(no_vote)
    await ctx.checkpoint()
    check_eq(ctx.meta.load_hard_state(), no_vote, "load_hard_state() without a vote")


async def case_reset_preserves_meta(ctx: CaseContext) -> None:
    state = HardState(current_term=3, voted_for=VotedFor(voted_for_id=5, voted_for_term=3, committed=False))
    ctx.meta.save_hard_state(state)
    await ctx.log.persist_entries(make_entries(1, 20))
    await ctx.log.reset()
    await ctx.checkpoint()
    check_eq(ctx.meta.load_hard_state(), state, "load_hard_state() after reset")
    check_eq(ctx.log.last_index(), 0, "last_index() after reset")


_FLUSHED_STATE = HardState(current_term=2, voted_for=VotedFor(voted_for_id=1, voted_for_term=2, committed=True))


async def write_flushed_data(ctx: CaseContext) -> None:
    """Writes, each followed by a flush (sync, async, and concurrent async ones)."""
    await ctx.log.persist_entries(make_entries(1, 5))
    ctx.meta.save_hard_state(_FLUSHED_STATE)
    ctx.log.flush()
    ctx.meta.flush()
    await ctx.log.persist_entries(make_entries(6, 30))
    await ctx.log.flush_async()
    await ctx.meta.flush_async()
    await asyncio.gather(*(ctx.log.flush_async() for _ in range(8)))


async def verify_flushed_data(ctx: CaseContext) -> None:
    check_entries(ctx.log.get_entries(1, 30), make_entries(1, 30), "entries after flush")
    check_eq(ctx.meta.load_hard_state(), _FLUSHED_STATE, "hard state after flush")


async def case_flush_persists_all_data(ctx: CaseContext) -> None:
    await write_flushed_data(ctx)
    await ctx.checkpoint()
    await verify_flushed_data(ctx)


_SAVED_STATE = HardState(current_term=42, voted_for=VotedFor(voted_for_id=7, voted_for_term=42, committed=False))


async def write_saved_hard_state(ctx: CaseContext) -> None:
    """``save_hard_state`` is durable before it returns: no flush follows it."""
    ctx.meta.save_hard_state(HardState(current_term=41, voted_for=None))
    ctx.meta.save_hard_state(_SAVED_STATE)


async def verify_saved_hard_state(ctx: CaseContext) -> None:
    check_eq(ctx.meta.load_hard_state(), _SAVED_STATE, "load_hard_state() after a save without flush")


#: Cases that hold across a power cut, split at the cut: ``(write, verify)``.
#: The power-cut variant (:mod:`fastlog.testing.powercut`) runs ``write`` in a
#: child process on LazyFS, drops every byte not fsynced, kills the child, and
#: runs ``verify`` on the engine reopened over what is left.
POWER_CUT_CASES: Dict[str, Tuple[Callable[[CaseContext], Awaitable[None]], Callable[[CaseContext], Awaitable[None]]]] = {
    "flush_persists_all_data": (write_flushed_data, verify_flushed_data),
    "save_hard_state_is_durable": (write_saved_hard_state, verify_saved_hard_state),
}


# ---------------------------------------------------------------------------
# The finer semantics of fastlog.protocols
# ---------------------------------------------------------------------------


async def case_suffix_replacement(ctx: CaseContext) -> None:
    old = make_entries(1, 10, term=1)
    await ctx.log.persist_entries(old)
    new = make_entries(6, 8, term=2, tag=b"new")
    await ctx.log.persist_entries(new)
    await ctx.checkpoint()
    log = ctx.log
    check_eq(log.last_index(), 8, "last_index() after replacing 6..10 with 6..8")
    check_entries(log.get_entries(1, 10), old[:5] + new, "log after suffix replacement")
    check_entry(await log.entry(9), None, "entry(9) after suffix replacement")
    tail = make_entries(9, 12, term=2, tag=b"tail")
    await log.persist_entries(tail)
    same = make_entries(12, 12, term=3, tag=b"last")
    await log.persist_entries(same)  # replaces exactly the last entry
    await ctx.checkpoint()
    check_entries(ctx.log.get_entries(1, 20), old[:5] + new + tail[:3] + same, "log after more appends")
    whole = make_entries(1, 3, term=4, tag=b"whole")
    await ctx.log.persist_entries(whole)  # replaces everything
    await ctx.checkpoint()
    check_entries(ctx.log.get_entries(1, 20), whole, "log after replacing from index 1")
    check_eq(ctx.log.last_index(), 3, "last_index() after replacing from index 1")


async def case_gap_rejected(ctx: CaseContext) -> None:
    await ctx.log.persist_entries(make_entries(1, 10))
    before = await ctx.snapshot()
    await check_raises(InvalidIndexError, lambda: ctx.log.persist_entries(make_entries(12, 14)), "a batch after a gap")
    await ctx.checkpoint()
    check_eq(await ctx.snapshot(), before, "state after a refused gap")
    await ctx.log.persist_entries(make_entries(11, 12))
    check_eq(ctx.log.last_index(), 12, "last_index() after appending at last_index() + 1")


async def case_empty_log_accepts_any_first_index(ctx: CaseContext) -> None:
    entries = make_entries(100, 105)
    await ctx.log.persist_entries(entries)
    await ctx.checkpoint()
    log = ctx.log
    check_eq(log.last_index(), 105, "last_index() of a log started at 100")
    check_entry(await log.entry(99), None, "entry(99) of a log started at 100")
    check_entry(await log.entry(1), None, "entry(1) of a log started at 100")
    check_entries(log.get_entries(1, 200), entries, "get_entries(1, 200) of a log started at 100")
    await check_raises(InvalidIndexError, lambda: log.persist_entries(make_entries(107, 108)), "a gap after 105")
    await ctx.log.reset()
    await ctx.log.persist_entries(make_entries(7, 8))
    await ctx.checkpoint()
    check_entries(ctx.log.get_entries(1, 200), make_entries(7, 8), "a log restarted at 7 after reset")


async def case_purge_beyond_last(ctx: CaseContext) -> None:
    await ctx.log.persist_entries(make_entries(1, 10))
    await ctx.log.purge(LogId(index=20, term=3))
    await ctx.checkpoint()
    log = ctx.log
    check_eq(log.last_index(), 20, "last_index() after purging beyond the end")
    check_eq(log.load_purge_boundary(), LogId(index=20, term=3), "boundary after purging beyond the end")
    check_entries(log.get_entries(0, 30), [], "entries after purging beyond the end")
    await check_raises(
        InvalidIndexError, lambda: log.persist_entries(make_entries(20, 21)), "an entry at the purge boundary"
    )
    await check_raises(InvalidIndexError, lambda: log.persist_entries(make_entries(11, 12)), "an entry below the boundary")
    entries = make_entries(25, 27)
    await log.persist_entries(entries)  # an empty log accepts any index above the boundary
    await ctx.checkpoint()
    check_entries(ctx.log.get_entries(0, 30), entries, "entries written after the boundary")
    check_eq(ctx.log.last_index(), 27, "last_index() after appending past the boundary")


async def case_purge_everything_then_append(ctx: CaseContext) -> None:
    await ctx.log.persist_entries(make_entries(1, 10))
    await ctx.log.purge(LogId(index=10, term=10))
    await ctx.checkpoint()
    check_eq(ctx.log.last_index(), 10, "last_index() after purging every entry")
    entries = make_entries(11, 15)
    await ctx.log.persist_entries(entries)
    await ctx.checkpoint()
    check_entries(ctx.log.get_entries(0, 20), entries, "entries appended after purging every entry")


async def case_writes_at_or_below_boundary_rejected(ctx: CaseContext) -> None:
    entries = make_entries(1, 10)
    await ctx.log.persist_entries(entries)
    await ctx.log.purge(LogId(index=5, term=5))
    before = await ctx.snapshot()
    for first in (5, 3, 1):
        await check_raises(
            InvalidIndexError,
            functools.partial(ctx.log.persist_entries, make_entries(first, 7, tag=b"x")),
            f"a batch starting at {first} with the purge boundary at 5",
        )
    await ctx.checkpoint()
    check_eq(await ctx.snapshot(), before, "state after refused writes below the boundary")
    replacement = make_entries(6, 12, term=9, tag=b"r")
    await ctx.log.persist_entries(replacement)  # just above the boundary: replaces 6..10
    await ctx.checkpoint()
    check_entries(ctx.log.get_entries(0, 20), replacement, "log after replacing from just above the boundary")


async def case_truncate_at_or_below_boundary_rejected(ctx: CaseContext) -> None:
    await ctx.log.persist_entries(make_entries(1, 10))
    await ctx.log.purge(LogId(index=5, term=5))
    before = await ctx.snapshot()
    for index in (5, 3, 0):
        await check_raises(
            InvalidIndexError, functools.partial(ctx.log.truncate, index), f"truncate({index}) with the boundary at 5"
        )
    await ctx.checkpoint()
    check_eq(await ctx.snapshot(), before, "state after refused truncations")
    await ctx.log.truncate(6)
    await ctx.checkpoint()
    log = ctx.log
    check_eq(log.last_index(), 5, "last_index() after truncating everything above the boundary")
    check_entries(log.get_entries(0, 20), [], "entries after truncating everything above the boundary")
    await log.persist_entries(make_entries(6, 7))
    check_eq(log.last_index(), 7, "last_index() after appending after the truncation")


async def case_truncate_edges(ctx: CaseContext) -> None:
    entries = make_entries(1, 10)
    await ctx.log.persist_entries(entries)
    await ctx.log.truncate(11)  # nothing at or above 11: no change
    await ctx.log.truncate(1000)
    await ctx.checkpoint()
    check_entries(ctx.log.get_entries(1, 20), entries, "log after truncating past the end")
    await ctx.log.truncate(10)  # just the last entry
    await ctx.checkpoint()
    check_eq(ctx.log.last_index(), 9, "last_index() after truncate(10)")
    await ctx.log.truncate(1)  # everything
    await ctx.checkpoint()
    check_eq(ctx.log.last_index(), 0, "last_index() after truncate(1)")
    check_entries(ctx.log.get_entries(0, 20), [], "entries after truncate(1)")
    fresh = make_entries(1, 3, term=2)
    await ctx.log.persist_entries(fresh)
    await ctx.checkpoint()
    check_entries(ctx.log.get_entries(0, 20), fresh, "entries after truncate(1) and new appends")


async def case_purge_never_moves_back(ctx: CaseContext) -> None:
    entries = make_entries(1, 100)
    await ctx.log.persist_entries(entries)
    await ctx.log.purge(LogId(index=50, term=50))
    await ctx.log.purge(LogId(index=30, term=30))
    await ctx.log.purge(LogId(index=50, term=49))
    await ctx.checkpoint()
    log = ctx.log
    check_eq(log.load_purge_boundary(), LogId(index=50, term=50), "boundary after purging below it")
    check_entries(log.get_entries(1, 100), entries[50:], "entries after purging below the boundary")
    await log.purge(LogId(index=60, term=60))
    await ctx.checkpoint()
    check_eq(ctx.log.load_purge_boundary(), LogId(index=60, term=60), "boundary after a second purge")
    check_entries(ctx.log.get_entries(1, 100), entries[60:], "entries after a second purge")


async def case_replace_range(ctx: CaseContext) -> None:
    old = make_entries(1, 10, term=1)
    await ctx.log.persist_entries(old)
    new = make_entries(6, 8, term=2, tag=b"new")
    await ctx.log.replace_range(6, new)
    await ctx.checkpoint()
    check_entries(ctx.log.get_entries(1, 20), old[:5] + new, "log after replace_range(6, 6..8)")
    check_eq(ctx.log.last_index(), 8, "last_index() after replace_range(6, 6..8)")
    await ctx.log.replace_range(20, [])  # nothing at or above 20: no change
    await ctx.log.replace_range(7, [])  # a plain truncation
    await ctx.checkpoint()
    check_entries(ctx.log.get_entries(1, 20), old[:5] + new[:1], "log after replace_range(7, [])")
    lower = make_entries(4, 9, term=3, tag=b"low")
    await ctx.log.replace_range(6, lower)  # new entries start below from_index
    await ctx.checkpoint()
    check_entries(ctx.log.get_entries(1, 20), old[:3] + lower, "log after replace_range(6, 4..9)")
    appended = make_entries(10, 11, term=3, tag=b"app")
    await ctx.log.replace_range(10, appended)  # nothing to remove: a plain append
    await ctx.checkpoint()
    check_entries(ctx.log.get_entries(1, 20), old[:3] + lower + appended, "log after replace_range(10, 10..11)")


async def case_replace_range_on_empty_log(ctx: CaseContext) -> None:
    first = make_entries(1, 3)
    await ctx.log.replace_range(0, first)  # nothing at or above 0 is stored: a plain append
    await ctx.checkpoint()
    check_entries(ctx.log.get_entries(0, 10), first, "log after replace_range(0, 1..3) on an empty log")
    await ctx.log.reset()
    later = make_entries(5, 6)
    await ctx.log.replace_range(1, later)  # an empty log accepts any first index
    await ctx.checkpoint()
    check_entries(ctx.log.get_entries(0, 10), later, "log after replace_range(1, 5..6) on an empty log")


async def case_replace_range_rejections(ctx: CaseContext) -> None:
    await ctx.log.persist_entries(make_entries(1, 10))
    await ctx.log.purge(LogId(index=3, term=3))
    before = await ctx.snapshot()
    log = ctx.log
    await check_raises(
        InvalidIndexError, lambda: log.replace_range(3, make_entries(4, 5)), "replace_range at the purge boundary"
    )
    await check_raises(
        InvalidIndexError, lambda: log.replace_range(2, []), "replace_range(2, []) below the purge boundary"
    )
    await check_raises(
        InvalidIndexError, lambda: log.replace_range(5, make_entries(7, 8)), "replace_range leaving a gap"
    )
    await check_raises(
        InvalidIndexError, lambda: log.replace_range(11, make_entries(13, 14)), "replace_range appending after a gap"
    )
    await check_raises(
        InvalidIndexError,
        lambda: log.replace_range(4, make_entries(6, 7)),
        "replace_range from the first stored index with entries starting higher",
    )
    await check_raises(
        EntryTypeError, lambda: log.replace_range(5, [object()]), "replace_range with a non-Entry"
    )
    await check_raises(
        InvalidIndexError,
        lambda: log.replace_range(6, make_entries(6, 7) + make_entries(9, 9)),
        "replace_range with a non-consecutive batch",
    )
    await ctx.checkpoint()
    check_eq(await ctx.snapshot(), before, "state after refused replace_range calls")


async def case_bad_input_changes_nothing(ctx: CaseContext) -> None:
    cls = _entry_class()
    await ctx.log.persist_entries(make_entries(1, 10))
    ctx.meta.save_hard_state(HardState(current_term=1, voted_for=None))
    before = await ctx.snapshot()
    log, meta = ctx.log, ctx.meta
    attempts = [
        (EntryTypeError, lambda: log.persist_entries(42), "persist_entries(42)"),
        (EntryTypeError, lambda: log.persist_entries(b"bytes"), "persist_entries(b'bytes')"),
        (EntryTypeError, lambda: log.persist_entries([object()]), "persist_entries([object()])"),
        (
            EntryTypeError,
            lambda: log.persist_entries(make_entries(11, 12) + ["not an entry"]),
            "a batch ending with a non-Entry",
        ),
        (
            InvalidIndexError,
            lambda: log.persist_entries(make_entries(11, 12) + make_entries(14, 15)),
            "a non-consecutive batch",
        ),
        (InvalidIndexError, lambda: log.persist_entries(make_entries(11, 12)[::-1]), "a descending batch"),
        (
            EntryTooLargeError,
            lambda: log.persist_entries(make_entries(11, 11) + [cls(12, 12, b"\0" * OVERSIZED_PAYLOAD)]),
            "an entry above 16 MiB",
        ),
        (InvalidIndexError, lambda: log.entry(-1), "entry(-1)"),
        (InvalidIndexError, lambda: log.entry(1 << 64), "entry(2**64)"),
        (EntryTypeError, lambda: log.entry("1"), "entry('1')"),
        (EntryTypeError, lambda: log.entry(1.0), "entry(1.0)"),
        (InvalidIndexError, lambda: log.get_entries(-1, 5), "get_entries(-1, 5)"),
        (EntryTypeError, lambda: log.get_entries(1, None), "get_entries(1, None)"),
        (EntryTypeError, lambda: log.truncate("5"), "truncate('5')"),
        (InvalidIndexError, lambda: log.truncate(-1), "truncate(-1)"),
        (EntryTypeError, lambda: log.purge(5), "purge(5)"),
        (EntryTypeError, lambda: log.purge((5, 5)), "purge((5, 5))"),
        (EntryTypeError, lambda: log.replace_range("1", []), "replace_range('1', [])"),
        (EntryTypeError, lambda: meta.save_hard_state("term 5"), "save_hard_state('term 5')"),
        (EntryTypeError, lambda: meta.save_hard_state(None), "save_hard_state(None)"),
    ]
    for error, action, what in attempts:
        exc = await check_raises(error, action, what)
        # Input errors are also the matching built-in exceptions.
        builtin = TypeError if error is EntryTypeError else ValueError
        check(isinstance(exc, builtin), f"{what}: {type(exc).__name__} is not a {builtin.__name__}")
        check_eq(await ctx.snapshot(), before, f"state after {what}")
    await ctx.checkpoint()
    check_eq(await ctx.snapshot(), before, "state after refused input")


async def case_index_zero_rejected(ctx: CaseContext) -> None:
    cls = _entry_class()
    log = ctx.log
    await check_raises(InvalidIndexError, lambda: log.persist_entries([cls(0, 1, b"zero")]), "an entry at index 0")
    await check_raises(
        InvalidIndexError, lambda: log.persist_entries([cls(0, 1, b"a"), cls(1, 1, b"b")]), "a batch from index 0"
    )
    await ctx.checkpoint()
    check_eq(ctx.log.last_index(), 0, "last_index() after refused index 0")
    check_entries(ctx.log.get_entries(0, 5), [], "entries after refused index 0")


async def case_huge_indexes(ctx: CaseContext) -> None:
    cls = _entry_class()
    top = MAX_INDEX
    entries = [cls(top - 2, 1, b"a"), cls(top - 1, 2, b"b"), cls(top, top, b"c", EntryKind.CONFIG)]
    await ctx.log.persist_entries(entries)
    await ctx.checkpoint()
    log = ctx.log
    check_eq(log.last_index(), top, "last_index() with an entry at 2**64-1")
    check_entry(await log.entry(top), entries[2], "entry(2**64-1)")
    check_entries(log.get_entries(top - 10, top), entries, "get_entries up to 2**64-1")
    await log.truncate(top)
    await log.purge(LogId(index=top - 2, term=1))
    await ctx.checkpoint()
    log = ctx.log
    check_eq(log.last_index(), top - 1, "last_index() after truncate(2**64-1)")
    check_eq(log.load_purge_boundary(), LogId(index=top - 2, term=1), "boundary near 2**64")
    check_entries(log.get_entries(0, top), entries[1:2], "entries near 2**64 after truncate and purge")
    middle = [cls((1 << 63) - 1, 5, b"below"), cls(1 << 63, 5, b"at"), cls((1 << 63) + 1, 5, b"above")]
    await log.reset()
    await log.persist_entries(middle)  # across 2**63 (signed 64-bit storage must keep the order)
    await ctx.checkpoint()
    check_entries(ctx.log.get_entries((1 << 63) - 5, (1 << 63) + 5), middle, "entries across 2**63")
    await ctx.log.truncate(1 << 63)
    await ctx.checkpoint()
    check_entries(ctx.log.get_entries(0, top), middle[:1], "entries after truncating at 2**63")


async def case_kinds_and_payloads(ctx: CaseContext) -> None:
    cls = _entry_class()
    entries = [  # terms never decrease along a log
        cls(1, 0, b"term zero", EntryKind.NOOP),
        cls(2, 1, b"", EntryKind.NOOP),
        cls(3, 1, b"set x 1", EntryKind.COMMAND),
        cls(4, 1, b"\x00\x01\x02\xff" * 3, EntryKind.CONFIG),
        cls(5, 2, b"", EntryKind.COMMAND),
        cls(6, 2, bytes(range(256)) * 4096, EntryKind.COMMAND),  # 1 MiB
        cls(7, (1 << 64) - 1, b"max term", EntryKind.COMMAND),
    ]
    await ctx.log.persist_entries(entries)
    await ctx.checkpoint()
    log = ctx.log
    check_entries(log.get_entries(1, 7), entries, "entries of every kind and payload shape")
    for e in entries:
        check_entry(await log.entry(e.index), e, f"entry({e.index})")


async def case_range_reads(ctx: CaseContext) -> None:
    entries = make_entries(1, 200)
    for lo in range(1, 201, 20):  # many batches
        await ctx.log.persist_entries(entries[lo - 1 : lo + 19])
    await ctx.log.purge(LogId(index=30, term=30))
    await ctx.checkpoint()
    log = ctx.log
    check_entries(log.get_entries(1, 40), entries[30:40], "a range across the purge boundary")
    check_entries(log.get_entries(190, 400), entries[189:], "a range across the end")
    check_entries(log.get_entries(31, 31), entries[30:31], "a one-entry range")
    check_entries(log.get_entries(39, 61), entries[38:61], "a range across batches")
    check_entries(log.get_entries(0, MAX_INDEX), entries[30:], "the widest range")
    check_entries(log.get_entries(201, 300), [], "a range past the end")
    check_entries(log.get_entries(30, 30), [], "the boundary index")
    check_entries(log.get_entries(60, 50), [], "start > end")


async def case_restart_keeps_everything(ctx: CaseContext) -> None:
    entries = make_entries(1, 300)
    await ctx.log.persist_entries(entries[:150])
    await ctx.log.persist_entries(entries[150:])
    await ctx.log.purge(LogId(index=40, term=40))
    await ctx.log.truncate(251)
    state = HardState(current_term=9, voted_for=VotedFor(voted_for_id=2, voted_for_term=9, committed=True))
    ctx.meta.save_hard_state(state)
    before = await ctx.snapshot()
    await ctx.checkpoint()
    check_eq(await ctx.snapshot(), before, "everything observable across a restart")
    await ctx.checkpoint()
    check_eq(await ctx.snapshot(), before, "everything observable across a second restart")
    await ctx.log.persist_entries(make_entries(251, 260, term=300))
    await ctx.checkpoint()
    check_eq(ctx.log.last_index(), 260, "last_index() after appending following restarts")


async def case_terms_never_decrease(ctx: CaseContext) -> None:
    """Raft terms never decrease along a log: within a batch, and from the entry
    before a batch (the purge boundary right after a purge) to the batch."""
    cls = _entry_class()
    await ctx.log.persist_entries(make_entries(1, 5, term=3))
    before = await ctx.snapshot()
    refused = [
        (lambda: ctx.log.persist_entries([cls(6, 5, b"a"), cls(7, 2, b"b")]), "a batch whose terms go from 5 to 2"),
        (lambda: ctx.log.persist_entries(make_entries(6, 7, term=2)), "a batch below the last entry's term"),
        (lambda: ctx.log.persist_entries(make_entries(4, 5, term=2)), "a replacing batch below the term before it"),
        (lambda: ctx.log.replace_range(4, make_entries(4, 5, term=2)), "replace_range below the term before it"),
        (lambda: ctx.log.replace_range(2, [cls(2, 4, b"a"), cls(3, 3, b"b")]), "replace_range with decreasing terms"),
    ]
    for action, what in refused:
        await check_raises(InvalidTermError, action, what)
        check_eq(await ctx.snapshot(), before, f"state after refusing {what}")
    await ctx.checkpoint()
    check_eq(await ctx.snapshot(), before, "state after the refused batches")
    await ctx.log.persist_entries(make_entries(3, 4, term=4))  # a higher term replaces a suffix
    await ctx.log.persist_entries(make_entries(5, 6, term=4))  # the same term continues it
    await ctx.log.purge(LogId(index=6, term=4))
    await check_raises(
        InvalidTermError, lambda: ctx.log.persist_entries(make_entries(7, 7, term=3)), "a batch below the boundary's term"
    )
    await ctx.log.persist_entries(make_entries(7, 8, term=5))
    await ctx.checkpoint()
    check_entries(ctx.log.get_entries(1, 10), make_entries(7, 8, term=5), "entries after the purge")


#: Every case, by name, in the order they run.
CASES: Dict[str, Callable[[CaseContext], Awaitable[None]]] = {
    name[len("case_") :]: fn for name, fn in list(globals().items()) if name.startswith("case_") and callable(fn)
}
CASE_NAMES = tuple(CASES)

#: Cases that the test suite also runs on engines opened with ``durable=True``.
DURABLE_CASES = (
    "batch_persistence",
    "suffix_replacement",
    "purge_logs",
    "truncation",
    "reset_operation",
    "replace_range",
    "hard_state_persistence",
    "flush_persists_all_data",
)


# ---------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------


async def run_case(
    name: str,
    open_engine: OpenEngine,
    path: Union[str, "os.PathLike[str]"],
    *,
    persistent: bool = True,
    reopen: bool = False,
) -> None:
    """Run case ``name`` on a fresh engine in directory ``path`` (raises ConformanceError on failure).

    ``reopen=True`` (persistent engines only) restarts the engine at every
    checkpoint of the case.
    """
    try:
        case = CASES[name]
    except KeyError:
        raise KeyError(f"unknown conformance case {name!r}") from None
    if reopen and not persistent:
        raise ValueError("the reopen variant needs a persistent engine")
    ctx = CaseContext(open_engine, os.fspath(path), persistent=persistent, reopen=reopen)
    await ctx.open()
    try:
        await case(ctx)
    finally:
        await ctx.close()


@dataclass
class CaseResult:
    name: str
    reopen: bool
    error: Optional[BaseException] = None
    details: str = ""

    @property
    def passed(self) -> bool:
        return self.error is None

    @property
    def label(self) -> str:
        return f"{self.name}[{'reopen' if self.reopen else 'plain'}]"


async def run_all_tests(
    open_engine: OpenEngine,
    *,
    persistent: bool = True,
    base_dir: Optional[str] = None,
    cases: Optional[Sequence[str]] = None,
    raise_on_failure: bool = True,
) -> List[CaseResult]:
    """Run every conformance case (and, for persistent engines, every reopen variant).

    ``open_engine(path)`` opens (creating if needed) your engine in directory
    ``path``; each case gets a fresh directory under ``base_dir`` (a temporary
    directory by default), removed afterwards.  Returns one :class:`CaseResult`
    per run; with ``raise_on_failure`` (the default) a failure raises
    :class:`ConformanceError` listing every failed case.

    Example::

        from fastlog.testing import run_all_tests
        await run_all_tests(lambda path: MyEngine(path))
    """
    names = list(cases) if cases is not None else list(CASE_NAMES)
    results: List[CaseResult] = []
    root = tempfile.mkdtemp(prefix="fastlog-conformance-", dir=base_dir)
    try:
        for n, name in enumerate(names):
            for reopen in (False, True) if persistent else (False,):
                path = os.path.join(root, f"{n:03d}-{name}-{'reopen' if reopen else 'plain'}")
                result = CaseResult(name, reopen)
                try:
                    await run_case(name, open_engine, path, persistent=persistent, reopen=reopen)
                except Exception as exc:
                    result.error = exc
                    result.details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                results.append(result)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    failed = [r for r in results if not r.passed]
    if failed and raise_on_failure:
        lines = [f"{len(failed)} of {len(results)} conformance runs failed:"]
        lines += [f"  {r.label}: {type(r.error).__name__}: {r.error}" for r in failed]
        raise ConformanceError("\n".join(lines))
    return results

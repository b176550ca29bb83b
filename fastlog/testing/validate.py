"""The input rules of the storage protocol, as functions an engine calls.

Every engine must refuse the same bad input with the same exception, and
refuse it before it changes anything.  These are the checks fastlog's bundled
adapters (:mod:`fastlog.engines._base`) run; a third-party engine calls them
at the top of each method and gets the exact behaviour the conformance suite
expects::

    from fastlog.testing.validate import check_batch, check_index, check_start

    async def persist_entries(self, entries):
        self.check_open()                              # ClosedError when closed
        batch = check_batch(entries, self.max_entry_size)
        if batch:
            check_term_follows(batch[0], self.term_at(batch[0].index - 1))
            check_start(batch[0].index, stored_last=self.last, boundary=self.boundary)
        ...

:data:`RULES` lists every (method, bad input, exception) rule; the table in
docs/engines.md is generated from it (``python -m fastlog.testing.validate``)
and a test keeps the two equal and proves each rule against these functions.
"""
from __future__ import annotations

import operator
import sys
from collections.abc import Sequence as _SequenceABC
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple, Type

from .._types import MAX_INDEX, HardState, LogId, PyEntry
from ..errors import (
    ClosedError,
    EntryTooLargeError,
    EntryTypeError,
    FastlogError,
    InvalidIndexError,
    InvalidTermError,
)

__all__ = [
    "RULES",
    "Rule",
    "check_batch",
    "check_closed",
    "check_hard_state",
    "check_index",
    "check_log_id",
    "check_replace_start",
    "check_start",
    "check_term_follows",
    "check_truncate",
    "convert_entry",
    "entry_class",
    "rules_table",
]

_entry_cls: Optional[Type[Any]] = None
_entry_types: Tuple[type, ...] = (PyEntry,)


def entry_class() -> Type[Any]:
    """``fastlog.Entry``: the Entry class of the implementation this process uses."""
    global _entry_cls, _entry_types
    if _entry_cls is None:
        import fastlog

        cls = getattr(fastlog, "Entry", None) or PyEntry
        _entry_cls = cls
        _entry_types = (cls,) if cls is PyEntry else (cls, PyEntry)
    return _entry_cls


def convert_entry(entry: Any) -> Any:
    """The same entry as a ``fastlog.Entry`` (no copy when it already is one)."""
    cls = entry_class()
    if type(entry) is cls:
        return entry
    return cls(entry.index, entry.term, entry.payload, entry.kind)


def check_closed(closed: bool, what: str = "store") -> None:
    """Any call on a closed store: :class:`ClosedError`."""
    if closed:
        raise ClosedError(f"the {what} is closed")


def check_index(name: str, value: Any) -> int:
    """An index argument: an int in 0..2**64-1.

    Not an int (``bool``, ``str``, ``float``, ``None``): :class:`EntryTypeError`
    (also a ``TypeError``).  Below 0 or above 2**64-1: :class:`InvalidIndexError`
    (also a ``ValueError``).  Objects with ``__index__`` are accepted.
    """
    if type(value) is not int:
        if isinstance(value, bool):
            raise EntryTypeError(f"{name} must be an int, not bool")
        try:
            value = operator.index(value)
        except TypeError:
            raise EntryTypeError(f"{name} must be an int, not {type(value).__name__}") from None
    if value < 0 or value > MAX_INDEX:
        raise InvalidIndexError(f"{name} must be in 0..2**64-1, got {value}")
    return value


def check_batch(entries: Any, max_payload: int, name: str = "entries") -> List[Any]:
    """Validate a batch and return it as a list of ``fastlog.Entry``.

    A sequence (not ``str`` / bytes) of Entry objects, or
    :class:`EntryTypeError`; consecutive indexes starting at 1 or above, or
    :class:`InvalidIndexError`; terms that never decrease, or
    :class:`InvalidTermError`; each payload at most ``max_payload`` bytes, or
    :class:`EntryTooLargeError`.  An empty batch gives ``[]``.  Nothing may be
    written unless this returns.
    """
    if type(entries) is not list and type(entries) is not tuple:
        if isinstance(entries, (str, bytes, bytearray, memoryview)) or not isinstance(entries, _SequenceABC):
            raise EntryTypeError(f"{name} must be a sequence of Entry, not {type(entries).__name__}")
        entries = list(entries)
    if not entries:
        return []
    cls = entry_class()
    accepted = _entry_types
    convert = False
    expected = -1
    term = 0
    for i, entry in enumerate(entries):
        if type(entry) is not cls:
            if not isinstance(entry, accepted):
                raise EntryTypeError(f"{name}[{i}] is a {type(entry).__name__}, not an Entry")
            convert = True
        index = entry.index
        if i and index != expected:
            raise InvalidIndexError(
                f"batch indexes are not consecutive: {name}[{i}].index is {index}, expected {expected}"
            )
        if i and entry.term < term:
            raise InvalidTermError(f"batch terms decrease: {name}[{i}].term is {entry.term} after {term}")
        term = entry.term
        expected = index + 1
        if len(entry.payload) > max_payload:
            raise EntryTooLargeError(
                f"entry {index}: payload of {len(entry.payload)} bytes exceeds the maximum of {max_payload}"
            )
    if entries[0].index == 0:
        raise InvalidIndexError("index 0 is reserved; entries start at 1")
    if convert:
        return [convert_entry(e) for e in entries]
    return entries if type(entries) is list else list(entries)


def check_start(first: int, *, stored_last: int, boundary: Optional[LogId]) -> None:
    """Where a batch may start: above the purge boundary (:class:`InvalidIndexError`
    otherwise) and, when entries are stored, at most ``stored_last + 1`` (a gap:
    :class:`InvalidIndexError`).  ``stored_last`` is the last stored entry, 0
    when none is stored (then any index above the boundary starts the log)."""
    if boundary is not None and first <= boundary.index:
        raise InvalidIndexError(f"index {first} is at or below the purge boundary {boundary.index}")
    if stored_last and first > stored_last + 1:
        raise InvalidIndexError(f"batch starts at {first} but the log ends at {stored_last}: a gap")


def check_term_follows(head: Any, term_before: Optional[int]) -> None:
    """A batch must not start below ``term_before``, the term of the entry at
    ``head.index - 1`` (the purge boundary's term at the boundary; None when
    there is none): :class:`InvalidTermError`."""
    if term_before is not None and head.term < term_before:
        raise InvalidTermError(
            f"entry {head.index} has term {head.term}, below the term {term_before} of the entry before it"
        )


def check_truncate(from_index: int, boundary: Optional[LogId]) -> None:
    """``truncate`` / ``replace_range`` at or below the purge boundary: :class:`InvalidIndexError`."""
    if boundary is not None and from_index <= boundary.index:
        raise InvalidIndexError(f"cannot truncate at {from_index}: at or below the purge boundary {boundary.index}")


def check_replace_start(from_index: int, new_first: int, entries_at_or_above: bool) -> None:
    """``replace_range``: when entries exist at or above ``from_index``, the new
    entries must start at or below it (a gap otherwise: :class:`InvalidIndexError`)."""
    if entries_at_or_above and new_first > from_index:
        raise InvalidIndexError(
            f"new entries start at {new_first}, above from_index {from_index}: that would leave a gap"
        )


def check_log_id(name: str, value: Any) -> LogId:
    """A ``LogId`` argument (``purge``'s cutoff); anything else, tuples included: :class:`EntryTypeError`."""
    if not isinstance(value, LogId):
        raise EntryTypeError(f"{name} must be a LogId, not {type(value).__name__}")
    return value


def check_hard_state(value: Any) -> HardState:
    """A ``HardState`` argument (``save_hard_state``); anything else, None included: :class:`EntryTypeError`."""
    if not isinstance(value, HardState):
        raise EntryTypeError(f"expected a HardState, not {type(value).__name__}")
    return value


# ---------------------------------------------------------------------------
# The rules, as data: the docs table and its test are made from this
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One refusal: ``method`` given ``bad_input`` raises ``error`` (and changes nothing).

    ``demo`` calls the validator that enforces the rule with such an input; it
    must raise ``error``.
    """

    method: str
    bad_input: str
    error: Type[FastlogError]
    demo: Callable[[], Any]


def _entries(*spec: Tuple[int, int]) -> List[Any]:
    cls = entry_class()
    return [cls(index, term, b"x") for index, term in spec]


_B10 = LogId(index=10, term=3)

#: Every input rule of the protocol, in the order of docs/engines.md.
RULES: Tuple[Rule, ...] = (
    Rule("persist_entries", "not a sequence of Entry (an int, `str`, bytes, a non-Entry item)", EntryTypeError,
         lambda: check_batch([object()], 16)),
    Rule("persist_entries", "indexes not consecutive (a hole, descending)", InvalidIndexError,
         lambda: check_batch(_entries((1, 1), (3, 1)), 16)),
    Rule("persist_entries", "first index 0", InvalidIndexError, lambda: check_batch(_entries((0, 1)), 16)),
    Rule("persist_entries", "first index above last stored + 1 (a gap)", InvalidIndexError,
         lambda: check_start(7, stored_last=5, boundary=None)),
    Rule("persist_entries", "first index at or below the purge boundary", InvalidIndexError,
         lambda: check_start(10, stored_last=0, boundary=_B10)),
    Rule("persist_entries", "terms decrease within the batch", InvalidTermError,
         lambda: check_batch(_entries((1, 2), (2, 1)), 16)),
    Rule("persist_entries", "first term below the term of the entry (or boundary) before it", InvalidTermError,
         lambda: check_term_follows(_entries((11, 2))[0], 3)),
    Rule("persist_entries", "a payload above `max_entry_size` (default 16 MiB)", EntryTooLargeError,
         lambda: check_batch(_entries((1, 1)), 0)),
    Rule("truncate", "index not an int", EntryTypeError, lambda: check_index("from_index", "5")),
    Rule("truncate", "index below 0 or above 2**64-1", InvalidIndexError, lambda: check_index("from_index", -1)),
    Rule("truncate", "index at or below the purge boundary", InvalidIndexError, lambda: check_truncate(10, _B10)),
    Rule("replace_range", "`from_index` not an int; entries as for `persist_entries`", EntryTypeError,
         lambda: check_index("from_index", 1.0)),
    Rule("replace_range", "`from_index` at or below the purge boundary", InvalidIndexError,
         lambda: check_truncate(9, _B10)),
    Rule("replace_range", "entries exist at or above `from_index` and the new ones start above it", InvalidIndexError,
         lambda: check_replace_start(5, 6, True)),
    Rule("replace_range", "terms: as for `persist_entries`", InvalidTermError,
         lambda: check_term_follows(_entries((5, 1))[0], 2)),
    Rule("purge", "cutoff not a `LogId` (an int, a tuple)", EntryTypeError, lambda: check_log_id("cutoff_index", (5, 5))),
    Rule("entry, term_at", "index not an int", EntryTypeError, lambda: check_index("index", "1")),
    Rule("entry, term_at", "index below 0 or above 2**64-1", InvalidIndexError, lambda: check_index("index", 1 << 64)),
    Rule("get_entries", "`start` / `end` not an int", EntryTypeError, lambda: check_index("end", None)),
    Rule("get_entries", "`start` / `end` below 0 or above 2**64-1", InvalidIndexError, lambda: check_index("start", -1)),
    Rule("save_hard_state", "not a `HardState` (None, a str, a tuple)", EntryTypeError, lambda: check_hard_state(None)),
    Rule("every method but `close`", "the store or engine is closed", ClosedError, lambda: check_closed(True)),
)


def rules_table() -> str:
    """The markdown table of :data:`RULES` that docs/engines.md holds."""
    lines = ["| method | bad input | raises | also a |", "| --- | --- | --- | --- |"]
    for rule in RULES:
        builtin = "TypeError" if issubclass(rule.error, TypeError) else (
            "ValueError" if issubclass(rule.error, ValueError) else "")
        methods = ", ".join(f"`{m.strip()}`" if " " not in m.strip() else m.strip() for m in rule.method.split(","))
        lines.append(f"| {methods} | {rule.bad_input} | `{rule.error.__name__}` | {builtin or '-'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(rules_table())

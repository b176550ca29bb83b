"""The specification of a LogStore / MetaStore, as a tiny in-memory model.

:class:`LogModel` is deliberately naive (a dict of index -> entry fields) so
that it can be read as the definition of the semantics in
:mod:`fastlog.protocols`.  The stateful test drives an engine and the model
with the same operations and requires identical observable behaviour.

Every operation either raises :class:`~fastlog.errors.InvalidIndexError` (or,
for a batch whose terms go down, :class:`~fastlog.errors.InvalidTermError`)
without changing anything, or applies completely.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from .._types import HardState, LogId
from ..errors import InvalidIndexError, InvalidTermError

__all__ = ["LogModel", "EntryFields", "fields_of"]

#: (index, term, kind, payload): an entry as plain values.
EntryFields = Tuple[int, int, int, bytes]


def fields_of(entry: Any) -> EntryFields:
    """The plain fields of any Entry-like object."""
    return (entry.index, entry.term, int(entry.kind), bytes(entry.payload))


class LogModel:
    """A Raft log with a purge boundary, plus a hard state."""

    def __init__(self) -> None:
        self.entries: Dict[int, EntryFields] = {}
        self.boundary: Optional[LogId] = None
        self.hard_state: Optional[HardState] = None

    # -- observations -------------------------------------------------------------
    def stored_last(self) -> int:
        return max(self.entries) if self.entries else 0

    def last_index(self) -> int:
        """The last stored index or the boundary index, whichever is higher (0 when empty)."""
        b = self.boundary.index if self.boundary is not None else 0
        return max(self.stored_last(), b)

    def top_term(self) -> int:
        """The highest term in the log (entries and purge boundary), 0 when empty."""
        terms = [fields[1] for fields in self.entries.values()]
        if self.boundary is not None:
            terms.append(self.boundary.term)
        return max(terms, default=0)

    def term_at(self, index: int) -> Optional[int]:
        """The term of the entry at ``index``, or the boundary's term at the boundary."""
        if index in self.entries:
            return self.entries[index][1]
        if self.boundary is not None and index == self.boundary.index:
            return self.boundary.term
        return None

    def entry(self, index: int) -> Optional[EntryFields]:
        return self.entries.get(index)

    def get_entries(self, start: int, end: int) -> List[EntryFields]:
        return [self.entries[i] for i in sorted(self.entries) if start <= i <= end]

    def copy(self) -> "LogModel":
        other = LogModel()
        other.entries = dict(self.entries)
        other.boundary = self.boundary
        other.hard_state = self.hard_state
        return other

    # -- operations -----------------------------------------------------------------
    def _check_above_boundary(self, index: int, what: str) -> None:
        if self.boundary is not None and index <= self.boundary.index:
            raise InvalidIndexError(f"{what} {index} is at or below the purge boundary {self.boundary.index}")

    def persist(self, batch: Sequence[EntryFields]) -> None:
        """Append a consecutive batch; its first index may replace the suffix from there.

        The first index must be above the purge boundary, at least 1, and at
        most ``stored_last() + 1`` unless nothing is stored (then any index
        above the boundary starts the log).  Terms never decrease: within the
        batch, and from the entry before the first index (the boundary when the
        batch starts right after it) to the batch.
        """
        if not batch:
            return
        first = batch[0][0]
        before = self.term_at(first - 1) if first > 1 else None
        if before is not None and batch[0][1] < before:
            raise InvalidTermError(f"entry {first} has term {batch[0][1]}, below the term {before} before it")
        for prev, fields in zip(batch, batch[1:]):
            if fields[1] < prev[1]:
                raise InvalidTermError(f"batch terms decrease: {fields[1]} after {prev[1]}")
        if first == 0:
            raise InvalidIndexError("index 0 is reserved")
        self._check_above_boundary(first, "index")
        last = self.stored_last()
        if self.entries and first > last + 1:
            raise InvalidIndexError(f"batch starts at {first} but the log ends at {last}: a gap")
        for index in [i for i in self.entries if i >= first]:
            del self.entries[index]
        for fields in batch:
            self.entries[fields[0]] = fields

    def truncate(self, from_index: int) -> None:
        """Remove every index >= ``from_index``; at or below the boundary is an error."""
        self._check_above_boundary(from_index, "truncate at")
        for index in [i for i in self.entries if i >= from_index]:
            del self.entries[index]

    def purge(self, cutoff: LogId) -> None:
        """Remove every index <= ``cutoff.index`` and remember the boundary (it never moves back)."""
        if self.boundary is not None and cutoff.index <= self.boundary.index:
            return
        for index in [i for i in self.entries if i <= cutoff.index]:
            del self.entries[index]
        self.boundary = cutoff

    def reset(self) -> None:
        """Empty the log and forget the boundary; the hard state stays."""
        self.entries.clear()
        self.boundary = None

    def replace_range(self, from_index: int, batch: Sequence[EntryFields]) -> None:
        """``truncate(from_index)`` then ``persist(batch)``, all or nothing.

        When entries exist at or above ``from_index``, the new entries must
        start at or below ``from_index``: replacing a suffix by entries that
        start higher up would leave a gap (even when the truncation would
        empty the log, so the rule does not depend on where the log starts).
        """
        if batch and batch[0][0] > from_index and any(i >= from_index for i in self.entries):
            self._check_above_boundary(from_index, "replace from")
            raise InvalidIndexError(f"new entries start at {batch[0][0]}, above from_index {from_index}: a gap")
        trial = self.copy()
        trial.truncate(from_index)
        trial.persist(batch)
        self.entries, self.boundary = trial.entries, trial.boundary

    def save_hard_state(self, state: HardState) -> None:
        self.hard_state = state

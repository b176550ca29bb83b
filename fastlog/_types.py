"""Plain-Python value types shared by every implementation.

``Entry`` lives here in its pure-Python form; the compiled extension provides a
faster ``Entry`` with the same behaviour (see :mod:`fastlog._impl`).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Tuple

__all__ = ["EntryKind", "PyEntry", "LogId", "VotedFor", "HardState", "MAX_INDEX"]

if TYPE_CHECKING:
    # The one static type of an entry, whichever core is loaded: the compiled
    # core's Entry as its stub (fastlog_ext/_core.pyi) declares it.  PyEntry
    # below has the same constructor, fields and behaviour, so type checkers
    # see ``fastlog.Entry`` as this class on both cores.
    from fastlog_ext._core import Entry as Entry

#: Largest index or term that fits the on-disk format (unsigned 64-bit).
MAX_INDEX = (1 << 64) - 1


class EntryKind(enum.IntEnum):
    """What an entry's payload holds (d-engine's EntryPayload oneof)."""

    NOOP = 0
    COMMAND = 1
    CONFIG = 2  # a membership change, stored as opaque bytes


_KINDS = tuple(EntryKind)


def _check_u64(name: str, value: object) -> int:
    from .errors import EntryTypeError, InvalidIndexError

    if type(value) is not int and not (isinstance(value, int) and not isinstance(value, bool)):
        raise EntryTypeError(f"{name} must be an int, not {type(value).__name__}")
    if isinstance(value, bool):
        raise EntryTypeError(f"{name} must be an int, not bool")
    if value < 0 or value > MAX_INDEX:
        raise InvalidIndexError(f"{name} must be in 0..2**64-1, got {value}")
    return int(value)


def _check_kind(kind: object) -> EntryKind:
    from .errors import EntryTypeError, InvalidEntryError

    if isinstance(kind, EntryKind):
        return kind
    if isinstance(kind, bool) or not isinstance(kind, int):
        raise EntryTypeError(f"kind must be an EntryKind, not {type(kind).__name__}")
    try:
        return EntryKind(kind)
    except ValueError:
        raise InvalidEntryError(f"unknown entry kind {kind}") from None


def _check_payload(payload: object) -> bytes:
    from .errors import EntryTypeError

    if type(payload) is bytes:
        return payload
    if isinstance(payload, (bytearray, memoryview)):
        return bytes(payload)
    raise EntryTypeError(f"payload must be bytes, not {type(payload).__name__}")


class PyEntry:
    """One Raft log entry: immutable, hashable, compared by value."""

    __slots__ = ("index", "term", "payload", "kind")

    index: int
    term: int
    payload: bytes
    kind: EntryKind

    def __init__(self, index: int, term: int, payload: bytes = b"", kind: EntryKind = EntryKind.COMMAND):
        set_ = object.__setattr__
        set_(self, "index", _check_u64("index", index))
        set_(self, "term", _check_u64("term", term))
        set_(self, "payload", _check_payload(payload))
        set_(self, "kind", _check_kind(kind))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Entry is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Entry is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PyEntry):
            return NotImplemented
        return (
            self.index == other.index
            and self.term == other.term
            and self.kind == other.kind
            and self.payload == other.payload
        )

    def __hash__(self) -> int:
        return hash((self.index, self.term, int(self.kind), self.payload))

    def __repr__(self) -> str:
        return f"Entry(index={self.index}, term={self.term}, payload={self.payload!r}, kind=EntryKind.{self.kind.name})"

    def __reduce__(self) -> Tuple[Any, Tuple[int, int, bytes, EntryKind]]:
        return (self.__class__, (self.index, self.term, self.payload, self.kind))

    @property
    def log_id(self) -> "LogId":
        return LogId(index=self.index, term=self.term)


@dataclass(frozen=True, slots=True)
class LogId:
    """An (index, term) pair identifying one entry."""

    index: int
    term: int

    def __post_init__(self) -> None:
        _check_u64("index", self.index)
        _check_u64("term", self.term)


@dataclass(frozen=True, slots=True)
class VotedFor:
    """Whom this node voted for, in which term, and whether the vote is committed."""

    voted_for_id: int
    voted_for_term: int
    committed: bool = False

    def __post_init__(self) -> None:
        _check_u64("voted_for_id", self.voted_for_id)
        _check_u64("voted_for_term", self.voted_for_term)
        if not isinstance(self.committed, bool):
            from .errors import EntryTypeError

            raise EntryTypeError("committed must be a bool")


@dataclass(frozen=True, slots=True)
class HardState:
    """Raft's persistent state: the current term and the vote in it."""

    current_term: int
    voted_for: Optional[VotedFor] = None

    def __post_init__(self) -> None:
        _check_u64("current_term", self.current_term)
        if self.voted_for is not None and not isinstance(self.voted_for, VotedFor):
            from .errors import EntryTypeError

            raise EntryTypeError("voted_for must be a VotedFor or None")

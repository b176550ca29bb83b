"""The contract between :class:`fastlog.log.Log` and its byte-level core.

Two modules implement it with identical behaviour and the identical on-disk
format (docs/format.md):

* ``fastlog_ext._core`` -- Cython + C, the fast path;
* ``fastlog._pycore``   -- pure Python (+ numpy), selected with ``FASTLOG_NO_EXTENSIONS=1``.

Each module exports ``Entry`` (the entry class), ``LogCore``, ``crc32c`` and
``encode_header_crc``-free helpers listed in :class:`CoreModule`.

The core keeps, per attached segment, a writable buffer (an ``mmap``), the offset
and term of every record (numpy-compatible uint64 arrays, 16 bytes per entry) and
the chain state.  It never opens, creates or deletes files: :class:`fastlog.log.Log`
owns the files and decides policy (rollover, recovery decisions, durability).
"""
from __future__ import annotations

from typing import Any, List, Optional, Protocol, Sequence, Tuple

# Scan statuses (same numbers as the C enum in fastlog_ext/fastlog_core.h).
FL_OK = 0
FL_ERR_TRUNCATED = 1
FL_ERR_RESERVED = 2
FL_ERR_INDEX = 3
FL_ERR_CRC = 4
FL_ERR_ZERO = 5

SEG_MAGIC = b"FLOGSEG1"
SEG_HEADER_SIZE = 64
SEG_DATA_START = 4096
REC_HEADER_SIZE = 32
FORMAT_VERSION = 1


class ScanResult(Protocol):
    """What ``LogCore.load_segment`` found (a tuple-like object with these fields)."""

    count: int  # number of valid records attached
    end: int  # offset just past the last valid record (== data start when none)
    last_crc: int  # crc of the last valid record (the seed passed in when none)
    status: int  # FL_ERR_* code of the frame at `end` (FL_ERR_ZERO: clean end)
    nonzero_after: bool  # some byte in [end, len(buf)) is not zero


class LogCore(Protocol):
    """Byte-level core of a segmented log.

    Segments are attached in index order; only the last one is written to.
    Every method raises ``fastlog.errors`` exceptions for bad input and never
    leaves the core half-changed on error.
    """

    def __init__(self, max_payload: int, verify_reads: bool = False, zero_helper: bool = True) -> None:
        """``zero_helper``: a core may write the zeros of ``append(prepare=...)``
        ahead of the writer on a thread of its own (the compiled core does; the
        pure-Python core writes with ``pwrite`` only and ignores it)."""

    # -- segment table ---------------------------------------------------
    def load_segment(
        self, buf: Any, first_index: int, seed: int, data_start: int, fresh: bool = False, fd: int = -1
    ) -> ScanResult:
        """Attach ``buf`` as the new last segment and scan its records.

        ``fresh=True`` says the segment was just created and is all zero past
        ``data_start``: nothing is read (count 0, status FL_ERR_ZERO).
        ``fd`` (when >= 0) is the writable file behind ``buf``: appends then
        write their frames with ``pwrite`` instead of storing them through the
        mapping (see docs/format.md, "How appends reach the file").  A
        read-only ``buf`` with an ``fd`` is never stored to: every byte goes
        with ``pwrite``, whatever the hints of ``append``.

        ``first_index`` must equal ``last_index + 1`` when the core holds
        entries.  Scanning verifies every record from ``data_start`` and stops
        at the first invalid one; the valid ones become readable.
        """

    def drop_last_segment(self) -> None:
        """Forget the last segment (releasing its buffer so it can be closed)."""

    def drop_first_segment(self) -> None:
        """Forget the first segment."""

    def segment_count(self) -> int: ...

    def segment_info(self, pos: int) -> Tuple[int, int, int, int]:
        """(first_index, count, end_offset, last_crc) of the segment at position ``pos``
        (negative positions count from the end)."""

    # -- writing ---------------------------------------------------------
    def check_batch(self, entries: Sequence[Any]) -> int:
        """Validate a batch without writing: every item is an ``Entry`` of this
        module, indexes are consecutive, terms never decrease (InvalidTermError),
        every payload <= max_payload.
        Returns the first index (the batch must not be empty)."""

    def append(
        self, entries: Sequence[Any], start: int = 0, mapped_upto: int = 0, prepare: int = 0, ahead: int = -1
    ) -> int:
        """Write ``entries[start:]`` into the last segment after its last record.

        Validates first (as ``check_batch``, and ``entries[start].index`` must be
        ``last_index + 1``, or the segment's first index when it is empty).
        Writes as many whole entries as fit and returns the position after the
        last one written (== ``start`` when not even one fits).
        ``mapped_upto`` is a hint: file blocks below it are already written, so
        a small batch ending below it may be stored through the mapping instead
        of written with ``pwrite``.  ``prepare`` (0, or a power of two up to
        2**40; anything else raises InvalidEntryError) is a hint too: a core
        may first write zeros past the last record, up to a multiple of it,
        and then store the frames through the mapping (docs/format.md, "How
        appends reach the file").  Either way the file ends up with the same
        bytes.  ``ahead`` (-1, or 0..2**40 bytes) is how far a core's helper
        thread may keep zeros written ahead of the writer: unsynced with
        ``prepare``, written and synced without it (a log being flushed); 0
        for none, -1 for the core's default (4 MiB with ``prepare`` unless
        made with ``zero_helper=False``, none without)."""

    def zero_ahead_error(self) -> int:
        """errno of the first failed sync of the zero-ahead thread (0: none); a
        flush that sees one must fail, as if its own sync had failed."""

    def note_flushed(self) -> None:
        """The log was just flushed (the compiled core keeps synced zeros ahead
        only within its zero-ahead window of the last flush)."""

    def truncate(self, index: int) -> Tuple[int, int]:
        """Forget entries ``>= index`` that lie in the *last* segment (the caller
        drops whole later segments first).  Returns ``(cut_offset, old_end)``;
        the bytes in between still hold the old records until :meth:`zero`."""

    def record_offset(self, index: int) -> int:
        """Byte offset of the record of ``index`` in its segment (where a
        truncation at ``index`` would cut); InvalidIndexError when not attached."""

    def zero(self, pos: int, start: int, end: int) -> None:
        """Zero ``buf[start:end]`` of the segment at position ``pos``.  With an
        ``fd`` the zeros are written with ``pwrite``; a read-only ``buf`` with
        an ``fd`` has its whole blocks in the range punched out instead, so
        that freeing bytes never needs new space (copy-on-write filesystems)."""

    def write_at(self, pos: int, offset: int, data: bytes) -> None:
        """Copy ``data`` into the segment at ``offset`` (header updates), with
        ``pwrite`` when the segment has an ``fd``."""

    # -- reading ---------------------------------------------------------
    def set_floor(self, index: int) -> None:
        """Indexes below ``index`` read as missing (the purge boundary + 1)."""

    def first_index(self) -> int:
        """Lowest readable index, or 0 when the core holds no readable entry."""

    def last_index(self) -> int:
        """Highest stored index, or 0 when empty (ignores the floor)."""

    def get(self, index: int) -> Optional[Any]:
        """The entry at ``index`` or None."""

    def get_range(self, start: int, end: int) -> List[Any]:
        """Entries with ``start <= index <= end`` that exist, ascending."""

    def term_at(self, index: int) -> Optional[int]: ...

    def verify_segment(self, pos: int) -> Tuple[int, int]:
        """Re-verify every record's checksum of segment ``pos`` in place.
        Returns ``(status, offset)``: FL_OK and the end offset, or the error and
        the offset of the first bad record."""

    def read_frames(self, start: int, end: int) -> bytes:
        """The records start..end (clamped) as a frame batch: header with the chain seed, frames as stored."""

    def check_frames(self, frames: Any, seed: int) -> Tuple[int, int, int, int]:
        """Check frames chained from ``seed``: (first index, count, first term, last term)."""

    def append_frames(
        self,
        frames: Any,
        start: int = 0,
        seed: Optional[int] = None,
        prepare: int = 0,
        ahead: int = -1,
        min_term: int = 0,
    ) -> int:
        """Write frames from byte ``start`` on, re-chained; the byte position reached.
        With ``seed`` the whole rest of the batch is checked first (all or nothing)."""

    def index_columns(self, start: int, end: int) -> Tuple[bytes, bytes, bytes]:
        """Copies of the index of start..end: terms, segment first indexes, offsets (uint64)."""


class CoreModule(Protocol):
    Entry: type
    LogCore: type

    @staticmethod
    def crc32c(data: bytes, seed: int = 0) -> int: ...

    IMPLEMENTATION: str  # "c" or "python"

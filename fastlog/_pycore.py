"""Pure-Python byte core of fastlog (selected with ``FASTLOG_NO_EXTENSIONS=1``).

It implements the contract of :mod:`fastlog._core_api` with the exact results,
scan statuses and exceptions of the compiled core (``fastlog_ext._core``), and
reads and writes the identical on-disk format (docs/format.md).  numpy holds
the per-segment offset and term arrays (16 bytes per entry) and speeds up the
CRC; everything else is plain Python over ``memoryview`` slices of the
segment buffers.
"""
from __future__ import annotations

import errno
import functools
import operator
import os
import threading
import struct
from bisect import bisect_right
from collections import namedtuple
from typing import Any, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from . import _osio
from ._core_api import (
    FL_ERR_CRC,
    FL_ERR_INDEX,
    FL_ERR_RESERVED,
    FL_ERR_TRUNCATED,
    FL_ERR_ZERO,
    FL_OK,
    REC_HEADER_SIZE,
)
from ._types import MAX_INDEX, EntryKind, PyEntry
from .file_extents import data_ranges
from .errors import (
    CorruptionError,
    EntryTooLargeError,
    EntryTypeError,
    FastlogError,
    InvalidEntryError,
    InvalidIndexError,
    InvalidTermError,
)

__all__ = [
    "IMPLEMENTATION",
    "Entry",
    "LogCore",
    "ScanResult",
    "crc32c",
    "crc32c_hw_available",
    "frame_size",
    "FL_MAX_PAYLOAD",
]

IMPLEMENTATION = "python"
Entry = PyEntry

#: Hard cap of the format on a payload length (engines configure lower limits).
FL_MAX_PAYLOAD = 0x7FFFFFFF
_KIND_MAX = 2
_U32 = 0xFFFFFFFF

ScanResult = namedtuple("ScanResult", ["count", "end", "last_crc", "status", "nonzero_after"])
ScanResult.__doc__ = "What LogCore.load_segment found (see fastlog._core_api.ScanResult)."

_STATUS_NAMES = {
    FL_OK: "ok",
    FL_ERR_TRUNCATED: "truncated frame",
    FL_ERR_RESERVED: "reserved bytes set or unknown kind",
    FL_ERR_INDEX: "unexpected index",
    FL_ERR_CRC: "checksum mismatch",
    FL_ERR_ZERO: "no record",
}


def frame_size(payload_len: int) -> int:
    """Bytes taken by a framed record holding ``payload_len`` payload bytes."""
    return REC_HEADER_SIZE + ((payload_len + 7) & ~7)


# ---------------------------------------------------------------------------
# CRC-32C
#
# The raw register (the bit-inverted CRC) is a linear function of the input
# bits, so the contribution of each input byte can be looked up by its value
# and its distance from the end of the message, and the contributions XORed
# together.  ``_POS[k][b]`` is the register after feeding byte ``b`` and then
# ``k`` zero bytes into a zero register.  With numpy that turns a message of up
# to ``_BLOCK`` bytes into one gather and one XOR reduction; longer messages are
# cut into blocks folded together in order.  The starting register is folded
# in by XORing it into the first four message bytes, which is exactly what the
# byte-at-a-time algorithm does with it.  Short messages use the classic
# byte-at-a-time table loop, which beats numpy's call overhead there.
# ---------------------------------------------------------------------------

_POLY = 0x82F63B78  # reflected Castagnoli polynomial


def _byte_table() -> List[int]:
    table = []
    for b in range(256):
        c = b
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _byte_table()
_SMALL = 48  # below this many bytes the plain loop is faster than numpy
_BLOCK = 4096  # bytes per numpy block (the position table is _BLOCK x 256 x 4 bytes)
_GROUP = 64  # blocks gathered at once for long messages (bounds temporary memory)

class _PositionTables(NamedTuple):
    flat: np.ndarray  # _POS flattened: index (k * 256 + b)
    rows: np.ndarray  # (_BLOCK - 1 - i) * 256: distance-from-end rows
    shifts: Tuple[List[int], List[int], List[int], List[int]]  # advance a register over one block


_position_tables: Optional[_PositionTables] = None  # built on first use


def _build_position_tables() -> _PositionTables:
    pos = np.empty((_BLOCK, 256), dtype=np.uint32)
    byte_table = np.array(_TABLE, dtype=np.uint32)
    pos[0] = byte_table
    for k in range(1, _BLOCK):
        prev = pos[k - 1]
        pos[k] = byte_table[prev & 0xFF] ^ (prev >> 8)
    rows = ((_BLOCK - 1 - np.arange(_BLOCK, dtype=np.intp)) * 256).astype(np.intp)
    # Register byte j sits at distance _BLOCK - 1 - j from the end of a block.
    s0, s1, s2, s3 = (pos[_BLOCK - 1 - j].tolist() for j in range(4))
    return _PositionTables(pos.ravel(), rows, (s0, s1, s2, s3))


def _load_position_tables() -> _PositionTables:
    global _position_tables
    tables = _position_tables = _build_position_tables()
    return tables


def _raw_loop(reg: int, data: Any) -> int:
    table = _TABLE
    for b in data:
        reg = table[(reg ^ b) & 0xFF] ^ (reg >> 8)
    return reg


def _raw_short_block(reg: int, arr: np.ndarray, tables: _PositionTables) -> int:
    """Register after feeding ``arr`` (uint8, 4 <= len <= _BLOCK) into ``reg``."""
    n = arr.shape[0]
    idx = arr.astype(np.intp)
    idx[:4] ^= np.frombuffer(reg.to_bytes(4, "little"), dtype=np.uint8)
    idx += tables.rows[_BLOCK - n :]
    return int(np.bitwise_xor.reduce(tables.flat.take(idx)))


def _raw(reg: int, data: Any) -> int:
    """Raw register after feeding the bytes-like ``data`` into ``reg``."""
    n = len(data)
    if n < _SMALL:
        return _raw_loop(reg, data)
    tables = _position_tables
    if tables is None:
        tables = _load_position_tables()
    arr = np.frombuffer(data, dtype=np.uint8)
    head = n % _BLOCK or _BLOCK
    if head < _SMALL:
        reg = _raw_loop(reg, data[:head])
    else:
        reg = _raw_short_block(reg, arr[:head], tables)
    if head == n:
        return reg
    flat, rows, (s0, s1, s2, s3) = tables
    pos = head
    while pos < n:
        blocks = min((n - pos) // _BLOCK, _GROUP)
        chunk = arr[pos : pos + blocks * _BLOCK].reshape(blocks, _BLOCK).astype(np.intp)
        chunk += rows
        per_block = np.bitwise_xor.reduce(flat.take(chunk), axis=1).tolist()
        for value in per_block:
            reg = value ^ s0[reg & 0xFF] ^ s1[(reg >> 8) & 0xFF] ^ s2[(reg >> 16) & 0xFF] ^ s3[reg >> 24]
        pos += blocks * _BLOCK
    return reg


def _crc(data: Any, seed: int) -> int:
    return _raw(seed ^ _U32, data) ^ _U32


def crc32c(data: Any, seed: int = 0) -> int:
    """CRC-32C of ``data``, continuing ``seed`` (``crc32c(b, crc32c(a)) == crc32c(a + b)``)."""
    seed = _check_u32("seed", seed)
    view = _byte_view(data, "data", copy_scattered=True)
    with view:
        return _crc(view, seed)


def crc32c_hw_available() -> bool:
    """The pure-Python core never uses a CPU instruction for the CRC."""
    return False


# ---------------------------------------------------------------------------
# Argument checks (the same errors as the compiled core)
# ---------------------------------------------------------------------------


def _as_int(name: str, value: Any) -> int:
    """``value`` as an int (anything with ``__index__`` but bool), else EntryTypeError."""
    if type(value) is int:
        return value
    if isinstance(value, bool):
        raise EntryTypeError(f"{name} must be an int, not bool")
    try:
        return operator.index(value)
    except TypeError:
        raise EntryTypeError(f"{name} must be an int, not {type(value).__name__}") from None


def _check_u64(name: str, value: Any) -> int:
    value = _as_int(name, value)
    if value < 0 or value > MAX_INDEX:
        raise InvalidIndexError(f"{name} must be in 0..2**64-1, got {value}")
    return value


def _check_u32(name: str, value: Any) -> int:
    value = _as_int(name, value)
    if value < 0 or value > _U32:
        raise InvalidEntryError(f"{name} must be in 0..2**32-1, got {value}")
    return value


def _byte_view(obj: Any, what: str, copy_scattered: bool = False) -> memoryview:
    """A flat unsigned-byte view of a contiguous bytes-like object (or of a copy
    of a non-contiguous one, when ``copy_scattered``)."""
    try:
        view = memoryview(obj)
    except TypeError:
        raise EntryTypeError(f"{what} must be a contiguous bytes-like object, not {type(obj).__name__}") from None
    if not view.c_contiguous:
        view.release()
        if not copy_scattered:
            raise EntryTypeError(f"{what} must be a contiguous bytes-like object")
        view = memoryview(memoryview(obj).tobytes())
    if view.ndim != 1 or view.format != "B":
        flat = view.cast("B")
        view.release()
        view = flat
    return view


def _as_batch(entries: Any) -> Sequence[Any]:
    """The batch as a list or tuple; anything that is not a sequence is an EntryTypeError."""
    if type(entries) is list or type(entries) is tuple:
        return entries
    if isinstance(entries, dict) or not hasattr(type(entries), "__getitem__"):
        raise EntryTypeError(f"entries must be a sequence, not {type(entries).__name__}")
    return list(entries)


# ---------------------------------------------------------------------------
# Record decoding
# ---------------------------------------------------------------------------

_HEADER = struct.Struct("<IIQQQ")  # crc, length, index, term, kind + 7 reserved bytes
_HEADER_TAIL = struct.Struct("<IQQQ")  # the header from byte 4 on (what append packs)
# Frame batch header (docs/format.md, "Frame batches"): magic, version, chain seed, reserved.
_BATCH_HEADER = struct.Struct("<4sIII")
_BATCH_MAGIC = b"FLFR"
_BATCH_VERSION = 1
_CRC_FIELD = struct.Struct("<I")
_ZERO_PAD = bytes(8)


def _decode(mv: memoryview, size: int, off: int, seed: int, expect_index: int, verify_crc: bool) -> Tuple[int, int, int, int, int, int]:
    """Decode the frame at ``off``: (status, frame end, length, term, kind, stored crc).

    The checks run in the order of ``fl_decode`` (fastlog_ext/record.c), and the
    first failing one decides the status, so both cores report the same code
    for the same bytes: short tail, all-zero header, kind and reserved bytes,
    length, index, checksum.
    """
    if off + REC_HEADER_SIZE > size:
        if off > size or any(mv[off:size]):
            return FL_ERR_TRUNCATED, off, 0, 0, 0, 0
        return FL_ERR_ZERO, off, 0, 0, 0, 0
    crc, length, index, term, kind = _HEADER.unpack_from(mv, off)
    if not (crc or length or index or term or kind):
        return FL_ERR_ZERO, off, 0, 0, 0, 0
    if kind > _KIND_MAX:  # the kind byte, or any of the 7 reserved bytes above it
        return FL_ERR_RESERVED, off, length, term, 0, crc
    end = off + REC_HEADER_SIZE + ((length + 7) & ~7)
    if length > FL_MAX_PAYLOAD or end > size:
        return FL_ERR_TRUNCATED, off, length, term, kind, crc
    if index != expect_index:
        return FL_ERR_INDEX, off, length, term, kind, crc
    if verify_crc and _crc(mv[off + 4 : off + REC_HEADER_SIZE + length], seed) != crc:
        return FL_ERR_CRC, off, length, term, kind, crc
    return FL_OK, end, length, term, kind, crc


_ZERO_CHUNK = bytes(1 << 16)


def _write_zeros(fd: int, start: int, end: int) -> None:
    while start < end:
        n = min(end - start, len(_ZERO_CHUNK))
        _osio.pwrite_all(fd, memoryview(_ZERO_CHUNK)[:n], start)
        start += n


def _zero_file_range(fd: int, start: int, end: int, punch: bool) -> None:
    """Zero ``[start, end)`` of a file (the C core's ``_zero_file``, same rules).

    With ``punch``, the whole filesystem blocks inside the range are
    deallocated (they read as zeros) and only the partial blocks at its edges
    are written: on a copy-on-write filesystem every rewritten block takes new
    space, and a full disk must still be able to cut a log short.  Where
    punching is not supported, zeros are written.
    """
    if punch:
        block = max(os.fstat(fd).st_blksize, 512)
        lo = -(-start // block) * block
        hi = end // block * block
        if lo < hi:
            try:
                _osio.punch_hole(fd, lo, hi - lo)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
            else:
                _write_zeros(fd, start, lo)
                _write_zeros(fd, hi, end)
                return
    _write_zeros(fd, start, end)


def _nonzero_in(mv: memoryview, start: int, size: int, fd: int = -1) -> bool:
    """Whether ``mv[start:size]`` holds a non-zero byte; with the file at hand,
    only the ranges the file system says may hold data are read (a sparse or
    preallocated tail costs a few lseek calls, not a read of every page)."""
    if start >= size:
        return False
    if fd < 0:
        return bool(np.frombuffer(mv, dtype=np.uint8, offset=start).any())
    for begin, stop in data_ranges(fd, start, size):
        if np.frombuffer(mv, dtype=np.uint8, count=stop - begin, offset=begin).any():
            return True
    return False


# ---------------------------------------------------------------------------
# The core
# ---------------------------------------------------------------------------

_new_entry = object.__new__
# The slot descriptors of PyEntry (its __setattr__ refuses every write).
_set_index = vars(PyEntry)["index"].__set__
_set_term = vars(PyEntry)["term"].__set__
_set_payload = vars(PyEntry)["payload"].__set__
_set_kind = vars(PyEntry)["kind"].__set__
_KINDS = tuple(EntryKind)


def _make_entry(index: int, term: int, payload: bytes, kind: int) -> PyEntry:
    # The fields come from a verified frame, so the checks of Entry.__init__ are skipped.
    entry = _new_entry(PyEntry)
    _set_index(entry, index)
    _set_term(entry, term)
    _set_payload(entry, payload)
    _set_kind(entry, _KINDS[kind])
    return entry


class _Segment:
    """One attached segment: its buffer, chain state and record arrays."""

    __slots__ = (
        "buf", "mv", "size", "first_index", "seed", "data_start", "count", "end", "last_crc", "offsets", "terms", "fd"
    )

    def __init__(self, buf: Any, mv: memoryview, first_index: int, seed: int, data_start: int, fd: int = -1) -> None:
        self.fd = fd
        self.buf = buf
        self.mv = mv
        self.size = len(mv)
        self.first_index = first_index
        self.seed = seed
        self.data_start = data_start
        self.count = 0
        self.end = data_start
        self.last_crc = seed
        self.offsets = np.zeros(16, dtype=np.uint64)
        self.terms = np.zeros(16, dtype=np.uint64)

    def reserve(self, need: int) -> None:
        cap = self.offsets.shape[0]
        if need <= cap:
            return
        while cap < need:
            cap *= 2
        offsets = np.zeros(cap, dtype=np.uint64)
        terms = np.zeros(cap, dtype=np.uint64)
        offsets[: self.count] = self.offsets[: self.count]
        terms[: self.count] = self.terms[: self.count]
        self.offsets, self.terms = offsets, terms

    def add(self, offsets: List[int], terms: List[int]) -> None:
        n = len(offsets)
        if not n:
            return
        self.reserve(self.count + n)
        self.offsets[self.count : self.count + n] = offsets
        self.terms[self.count : self.count + n] = terms
        self.count += n

    def seed_of(self, k: int) -> int:
        """Chain seed of record ``k``: the stored crc of record ``k - 1``."""
        if k == 0:
            return self.seed
        return _CRC_FIELD.unpack_from(self.mv, int(self.offsets[k - 1]))[0]


def _serialised(method):
    """Run a LogCore method under the core's lock.

    The compiled core does each call in one step under the GIL; in pure Python
    a read is many bytecodes, and a truncation or segment drop in another
    thread could otherwise land in the middle of it (a torn entry, or a read
    of a closed mapping).
    """

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return locked



class LogCore:
    """Byte-level core of a segmented log (see :class:`fastlog._core_api.LogCore`)."""

    def __init__(self, max_payload: int, verify_reads: bool = False, zero_helper: bool = True) -> None:
        # zero_helper: only a hint, like append's prepare; this core always uses pwrite.
        max_payload = _as_int("max_payload", max_payload)
        if max_payload < 0 or max_payload > FL_MAX_PAYLOAD:
            raise InvalidEntryError(f"max_payload must be in 0..{FL_MAX_PAYLOAD}, got {max_payload}")
        self._max_payload = max_payload
        self._lock = threading.RLock()
        self._verify_reads = bool(verify_reads)
        self._segs: List[_Segment] = []
        self._firsts: List[int] = []  # first index of each segment, for bisect
        self._floor = 0

    @property
    def max_payload(self) -> int:
        return self._max_payload

    @property
    def verify_reads(self) -> bool:
        return self._verify_reads

    # -- segment table ---------------------------------------------------

    @_serialised
    def load_segment(
        self, buf: Any, first_index: int, seed: int, data_start: int, fresh: bool = False, fd: int = -1
    ) -> ScanResult:
        mv = _byte_view(buf, "segment buffer")
        try:
            first_index = _check_u64("first_index", first_index)
            seed = _check_u32("seed", seed)
            if first_index == 0:
                raise InvalidIndexError("first_index must be >= 1")
            data_start = _as_int("data_start", data_start)
            if data_start < 0 or data_start > len(mv):
                raise InvalidIndexError(f"data_start {data_start} lies outside the buffer ({len(mv)} bytes)")
            if self._segs:
                last = self._segs[-1]
                if last.count and last.first_index + last.count - 1 == MAX_INDEX:
                    raise InvalidIndexError("the last segment already holds the largest possible index")
                expected = last.first_index + last.count
                if first_index != expected:
                    raise InvalidIndexError(
                        f"segment first index {first_index} does not follow the last attached index {expected - 1}"
                    )
        except BaseException:
            mv.release()
            raise
        fd = _as_int("fd", fd)
        if fd < -1 or fd > 0x7FFFFFFF:
            mv.release()
            raise InvalidEntryError(f"fd must be -1 or a file descriptor, got {fd}")
        seg = _Segment(buf, mv, first_index, seed, data_start, fd)
        try:
            status = FL_ERR_ZERO if fresh else self._scan(seg)
        except BaseException:
            mv.release()
            raise
        self._segs.append(seg)
        self._firsts.append(first_index)
        nonzero = False if fresh else _nonzero_in(mv, seg.end, seg.size, fd)
        return ScanResult(seg.count, seg.end, seg.last_crc, status, nonzero)

    @staticmethod
    def _scan(seg: _Segment) -> int:
        mv, size = seg.mv, seg.size
        off, crc, index = seg.data_start, seg.seed, seg.first_index
        offsets: List[int] = []
        terms: List[int] = []
        while True:
            status, end, _length, term, _kind, stored = _decode(mv, size, off, crc, index, True)
            if status != FL_OK:
                break
            offsets.append(off)
            terms.append(term)
            off, crc, index = end, stored, index + 1
        seg.add(offsets, terms)
        seg.end = off
        seg.last_crc = crc
        return status

    def _release(self, seg: _Segment) -> None:
        seg.offsets = seg.terms = np.zeros(0, dtype=np.uint64)
        seg.mv.release()
        seg.buf = None

    @_serialised
    def drop_last_segment(self) -> None:
        if not self._segs:
            raise InvalidIndexError("no segment to drop")
        seg = self._segs.pop()
        self._firsts.pop()
        self._release(seg)

    @_serialised
    def drop_first_segment(self) -> None:
        if not self._segs:
            raise InvalidIndexError("no segment to drop")
        seg = self._segs.pop(0)
        self._firsts.pop(0)
        self._release(seg)

    def segment_count(self) -> int:
        return len(self._segs)

    def _segment_at(self, pos: Any) -> _Segment:
        pos = _as_int("pos", pos)
        n = len(self._segs)
        if pos < -n or pos >= n:
            raise InvalidIndexError(f"segment position {pos} out of range ({n} segments)")
        return self._segs[pos]

    def segment_info(self, pos: int) -> Tuple[int, int, int, int]:
        seg = self._segment_at(pos)
        return (seg.first_index, seg.count, seg.end, seg.last_crc)

    # -- writing ---------------------------------------------------------

    def _validate(self, entries: Sequence[Any]) -> int:
        """Check a whole batch (as check_batch); returns its first index."""
        n = len(entries)
        if n == 0:
            raise InvalidEntryError("empty batch")
        max_payload = self._max_payload
        first = expected = term = 0
        for i in range(n):
            entry = entries[i]
            if not isinstance(entry, PyEntry):
                raise EntryTypeError(f"entries[{i}] is a {type(entry).__name__}, not an Entry of this implementation")
            if i == 0:
                first = expected = entry.index
            elif entry.index != expected:
                raise InvalidIndexError(
                    f"batch indexes are not consecutive: entries[{i}].index is {entry.index}, expected {expected}"
                )
            elif entry.term < term:
                raise InvalidTermError(
                    f"batch terms decrease: entries[{i}].term is {entry.term} after {term}"
                )
            term = entry.term
            if len(entry.payload) > max_payload:
                raise EntryTooLargeError(
                    f"entry {entry.index}: payload of {len(entry.payload)} bytes exceeds the maximum of {max_payload}"
                )
            expected += 1
        return first

    def check_batch(self, entries: Sequence[Any]) -> int:
        return self._validate(_as_batch(entries))

    @_serialised
    def append(
        self, entries: Sequence[Any], start: int = 0, mapped_upto: int = 0, prepare: int = 0, ahead: int = -1
    ) -> int:
        entries = _as_batch(entries)
        first = self._validate(entries)
        n = len(entries)
        start = _as_int("start", start)
        if start < 0 or start >= n:
            raise InvalidIndexError(f"start {start} outside the batch of {n} entries")
        if not self._segs:
            raise FastlogError("no segment attached")
        seg = self._segs[-1]
        if seg.mv.readonly and seg.fd < 0:
            raise FastlogError("the last segment's buffer is read-only")
        if seg.count and seg.first_index + seg.count - 1 == MAX_INDEX:
            raise InvalidIndexError("the last segment already holds the largest possible index")
        expected = seg.first_index + seg.count
        first += start
        if first != expected:
            raise InvalidIndexError(f"entry {first} does not follow the last index {expected - 1}")
        if seg.count and entries[start].term < seg.terms[seg.count - 1]:
            # As the compiled core: terms never decrease along a log.
            raise InvalidTermError(
                f"entry {first} has term {entries[start].term}, "
                f"below the term {seg.terms[seg.count - 1]} of the entry before it"
            )

        size = seg.size
        off, crc = seg.end, seg.last_crc
        _as_int("mapped_upto", mapped_upto)  # only hints: this core always uses pwrite
        prepare = _as_int("prepare", prepare)
        if prepare < 0 or prepare > 1 << 40 or prepare & (prepare - 1):
            raise InvalidEntryError(f"prepare must be 0 or a power of two up to 2**40, got {prepare}")
        ahead = _as_int("ahead", ahead)  # this core keeps no zeros ahead: no thread at all
        if ahead < -1 or ahead > 1 << 40:
            raise InvalidEntryError(f"ahead must be -1 or 0..2**40, got {ahead}")
        if seg.fd >= 0:
            # Build the frames in a buffer and pwrite them (see the compiled
            # core and docs/format.md, "How appends reach the file").
            need = 0
            for k in range(start, n):
                fs = REC_HEADER_SIZE + ((len(entries[k].payload) + 7) & ~7)
                if off + need + fs > size:
                    break
                need += fs
            base = off
            mv = memoryview(bytearray(need))
            size = off + need
        else:
            base = 0
            mv = seg.mv
        pack_tail = _HEADER_TAIL.pack_into
        pack_crc = _CRC_FIELD.pack_into
        offsets: List[int] = []
        terms: List[int] = []
        i = start
        while i < n:
            entry = entries[i]
            payload = entry.payload
            length = len(payload)
            data_end = off + REC_HEADER_SIZE + length
            end = off + REC_HEADER_SIZE + ((length + 7) & ~7)
            if end > size:
                break
            o = off - base
            pack_tail(mv, o + 4, length, entry.index, entry.term, int(entry.kind))
            mv[o + REC_HEADER_SIZE : data_end - base] = payload
            if end != data_end:
                mv[data_end - base : end - base] = _ZERO_PAD[: end - data_end]
            crc = _crc(mv[o + 4 : data_end - base], crc)
            pack_crc(mv, o, crc)
            offsets.append(off)
            terms.append(entry.term)
            off = end
            i += 1
        if seg.fd >= 0 and off > base:
            _osio.pwrite_all(seg.fd, mv[: off - base], base)
        seg.add(offsets, terms)
        seg.end = off
        seg.last_crc = crc
        return i

    @_serialised
    def truncate(self, index: int) -> Tuple[int, int]:
        index = _check_u64("index", index)
        if not self._segs:
            raise InvalidIndexError("no segment attached")
        seg = self._segs[-1]
        if index < seg.first_index:
            raise InvalidIndexError(
                f"index {index} lies before the last segment (first index {seg.first_index}); drop that segment instead"
            )
        old_end = seg.end
        keep = index - seg.first_index
        if keep >= seg.count:
            return (old_end, old_end)
        cut = int(seg.offsets[keep])
        seg.last_crc = seg.seed_of(keep)
        seg.count = keep
        seg.end = cut
        return (cut, old_end)

    @_serialised
    def record_offset(self, index: int) -> int:
        index = _check_u64("index", index)
        for seg in reversed(self._segs):
            if index >= seg.first_index:
                if index - seg.first_index < seg.count:
                    return int(seg.offsets[index - seg.first_index])
                break
        raise InvalidIndexError(f"no record {index} is attached")

    def _check_span(self, seg: _Segment, start: int, end: int) -> None:
        if start < 0 or end < start or end > seg.size:
            raise InvalidIndexError(f"byte range [{start}, {end}) outside the segment buffer (size {seg.size})")
        if seg.count and start < seg.end and end > seg.data_start:
            raise InvalidIndexError(
                f"byte range [{start}, {end}) overlaps the live records [{seg.data_start}, {seg.end}); truncate first"
            )
        if seg.mv.readonly and seg.fd < 0:
            raise FastlogError("segment buffer is read-only")

    @_serialised
    def zero(self, pos: int, start: int, end: int) -> None:
        seg = self._segment_at(pos)
        start = _as_int("start", start)
        end = _as_int("end", end)
        self._check_span(seg, start, end)
        if end <= start:
            return
        if seg.fd >= 0:
            # A read-only mapping over a writable file: nothing is stored
            # through the mapping, and freeing bytes must not take new space.
            _zero_file_range(seg.fd, start, end, punch=seg.mv.readonly)
        else:
            seg.mv[start:end] = bytes(end - start)

    @_serialised
    def write_at(self, pos: int, offset: int, data: bytes) -> None:
        seg = self._segment_at(pos)
        offset = _as_int("offset", offset)
        src = _byte_view(data, "data")
        with src:
            self._check_span(seg, offset, offset + len(src))
            if seg.fd >= 0:
                _osio.pwrite_all(seg.fd, src, offset)
            else:
                seg.mv[offset : offset + len(src)] = src

    # -- reading ---------------------------------------------------------

    @_serialised
    def set_floor(self, index: int) -> None:
        self._floor = _check_u64("index", index)

    def floor(self) -> int:
        return self._floor

    def first_index(self) -> int:
        for seg in self._segs:
            if seg.count:
                first = max(seg.first_index, self._floor)
                return first if first <= self.last_index() else 0
        return 0

    def last_index(self) -> int:
        for seg in reversed(self._segs):
            if seg.count:
                return seg.first_index + seg.count - 1
        return 0

    def _locate(self, index: int) -> Optional[Tuple[_Segment, int]]:
        if index < self._floor:
            return None
        i = bisect_right(self._firsts, index) - 1
        if i < 0:
            return None
        seg = self._segs[i]
        k = index - seg.first_index
        if k >= seg.count:
            return None
        return seg, k

    def _read(self, seg: _Segment, k: int, off: int, index: int) -> PyEntry:
        mv = seg.mv
        if self._verify_reads:
            status, _end, length, term, kind, _crc_v = _decode(mv, seg.size, off, seg.seed_of(k), index, True)
            if status != FL_OK:
                raise CorruptionError(f"entry {index} failed verification on read: {_STATUS_NAMES[status]}", offset=off)
        else:
            # Trusted read: verified when scanned or written; only make sure a
            # damaged mapping cannot produce a short or nonsensical entry.
            _crc_v, length, _index, term, kind = _HEADER.unpack_from(mv, off)
            if length > seg.size - off - REC_HEADER_SIZE or kind > _KIND_MAX:
                raise CorruptionError(f"record {index} has a damaged header", offset=off)
        return _make_entry(index, term, bytes(mv[off + REC_HEADER_SIZE : off + REC_HEADER_SIZE + length]), kind)

    @_serialised
    def get(self, index: int) -> Optional[PyEntry]:
        index = _check_u64("index", index)
        found = self._locate(index)
        if found is None:
            return None
        seg, k = found
        return self._read(seg, k, int(seg.offsets[k]), index)

    def _spans(self, start: int, end: int) -> Iterator[Tuple[_Segment, int, int]]:
        """(segment, lo, hi) for each segment holding entries of start..end:
        its positions lo..hi-1 (start at or above the floor, segments present)."""
        i = max(bisect_right(self._firsts, start) - 1, 0)
        for seg in self._segs[i:]:
            if seg.first_index > end:
                break
            lo = max(start - seg.first_index, 0)
            hi = min(end - seg.first_index + 1, seg.count)
            if lo < hi:
                yield seg, lo, hi

    @_serialised
    def get_range(self, start: int, end: int) -> List[PyEntry]:
        start = _check_u64("start", start)
        end = _check_u64("end", end)
        start = max(start, self._floor)
        out: List[PyEntry] = []
        if start > end or not self._segs:
            return out
        for seg, lo, hi in self._spans(start, end):
            read = self._read
            index = seg.first_index + lo
            for k, off in enumerate(seg.offsets[lo:hi].tolist(), lo):
                out.append(read(seg, k, off, index))
                index += 1
        return out

    @_serialised
    def term_at(self, index: int) -> Optional[int]:
        index = _check_u64("index", index)
        found = self._locate(index)
        if found is None:
            return None
        seg, k = found
        return int(seg.terms[k])

    @_serialised
    def zero_ahead_error(self) -> int:
        """Always 0: this core has no zero-ahead thread whose sync could fail."""
        return 0

    def note_flushed(self) -> None:
        """Nothing to note: this core keeps no zeros ahead."""

    def verify_segment(self, pos: int) -> Tuple[int, int]:
        seg = self._segment_at(pos)
        mv, size = seg.mv, seg.size
        crc, index = seg.seed, seg.first_index
        for off in seg.offsets[: seg.count].tolist():
            status, _end, _length, _term, _kind, stored = _decode(mv, size, off, crc, index, True)
            if status != FL_OK:
                return (status, off)
            crc, index = stored, index + 1
        return (FL_OK, seg.end)

    # -- frames: records shipped as stored bytes (docs/format.md, "Frame batches") --

    @_serialised
    def read_frames(self, start: int, end: int) -> bytes:
        """The records start..end (clamped) as a frame batch: the 16-byte batch
        header carrying the chain seed of the first record, then the frames as stored."""
        start = max(_check_u64("start", start), self._floor)
        end = _check_u64("end", end)
        parts: List[Any] = []
        seed = 0
        if start > end or not self._segs:
            return _BATCH_HEADER.pack(_BATCH_MAGIC, _BATCH_VERSION, 0, 0)
        for seg, lo, hi in self._spans(start, end):
            if not parts:
                seed = seg.seed_of(lo)
            stop = int(seg.offsets[hi]) if hi < seg.count else seg.end
            parts.append(seg.mv[int(seg.offsets[lo]) : stop])
        return b"".join([_BATCH_HEADER.pack(_BATCH_MAGIC, _BATCH_VERSION, seed, 0)] + parts)

    def check_frames(self, frames: Any, seed: int) -> Tuple[int, int, int, int]:
        """Check a run of frames chained from ``seed``: (first index, count, first term, last term).

        Every frame must decode with its CRC, kind, reserved bytes, length (at
        most max_payload) and the index after the previous frame's; terms must
        not decrease; the run must end exactly at the end of the buffer.
        """
        seed = _check_u32("seed", seed)
        src = _byte_view(frames, "frames")
        with src:
            return _check_frames(src, seed, self._max_payload)

    @_serialised
    def append_frames(
        self,
        frames: Any,
        start: int = 0,
        seed: Optional[int] = None,
        prepare: int = 0,
        ahead: int = -1,
        min_term: int = 0,
    ) -> int:
        """Write frames from byte ``start`` on after the last record.

        With ``seed`` (the batch's chain seed at ``start``) every frame from
        ``start`` to the end is checked first, as by :meth:`check_frames`, and
        then a first frame whose term is below ``min_term`` is refused: a bad
        batch raises and writes nothing.  Without it the frames must have
        passed :meth:`check_frames`.  Each is copied as it is with its CRC
        recomputed on this log's chain.  ``prepare`` and ``ahead`` are
        accepted for the compiled core's sake (this core always writes with
        ``pwrite``).  Returns the byte position after the last frame written
        (``start`` when none fits).
        """
        src = _byte_view(frames, "frames")
        with src:
            size = len(src)
            start = _as_int("start", start)
            if seed is not None:
                seed = _check_u32("seed", seed)
            min_term = _check_u64("min_term", min_term)
            _as_int("prepare", prepare)
            _as_int("ahead", ahead)
            if start < 0 or start >= size:
                raise InvalidIndexError(f"start {start} outside the frames ({size} bytes)")
            if not self._segs:
                raise FastlogError("no segment attached")
            seg = self._segs[-1]
            if seg.mv.readonly and seg.fd < 0:
                raise FastlogError("the last segment's buffer is read-only")
            if size - start < REC_HEADER_SIZE:
                raise InvalidEntryError(f"frame 0 at byte {start} is truncated")
            length, index = struct.unpack_from("<IQ", src, start + 4)
            expected = seg.first_index + seg.count
            if index != expected:
                raise InvalidIndexError(f"entry {index} does not follow the last index {expected - 1}")
            if seed is not None:
                first, _count, first_term, _last = _check_frames(src[start:], seed, self._max_payload)
                if first_term < min_term:
                    raise InvalidTermError(
                        f"entry {first} has term {first_term}, below the term {min_term} of the entry before it"
                    )
            # How many whole frames fit, and their terms and positions.
            room = seg.size - seg.end
            pos = start
            offsets: List[int] = []
            terms: List[int] = []
            while pos < size:
                if size - pos < REC_HEADER_SIZE:
                    raise InvalidEntryError(f"no whole frame at byte {pos}: frames must pass check_frames")
                length, _index, term = struct.unpack_from("<IQQ", src, pos + 4)
                fs = REC_HEADER_SIZE + ((length + 7) & ~7)
                if fs > size - pos:
                    raise InvalidEntryError(f"no whole frame at byte {pos}: frames must pass check_frames")
                if pos + fs - start > room:
                    break
                offsets.append(seg.end + pos - start)
                terms.append(term)
                pos += fs
            if pos == start:
                return start
            out = bytearray(src[start:pos])
            crc = seg.last_crc
            for off in offsets:
                o = off - seg.end
                length = _CRC_FIELD.unpack_from(out, o + 4)[0]
                crc = _crc(memoryview(out)[o + 4 : o + REC_HEADER_SIZE + length], crc)
                _CRC_FIELD.pack_into(out, o, crc)
            if seg.fd >= 0:
                _osio.pwrite_all(seg.fd, out, seg.end)
            else:
                seg.mv[seg.end : seg.end + len(out)] = out
            seg.add(offsets, terms)
            seg.end += len(out)
            seg.last_crc = crc
            return pos

    @_serialised
    def index_columns(self, start: int, end: int) -> Tuple[bytes, bytes, bytes]:
        """Copies of start..end (clamped) of the index: (terms, segment first indexes, byte offsets), uint64 each."""
        start = max(_check_u64("start", start), self._floor)
        end = _check_u64("end", end)
        terms: List[np.ndarray] = []
        segs: List[np.ndarray] = []
        offs: List[np.ndarray] = []
        if start <= end and self._segs:
            for seg, lo, hi in self._spans(start, end):
                terms.append(seg.terms[lo:hi])
                offs.append(seg.offsets[lo:hi])
                segs.append(np.full(hi - lo, seg.first_index, dtype=np.uint64))
        if not terms:
            return (b"", b"", b"")
        return (np.concatenate(terms).tobytes(), np.concatenate(segs).tobytes(), np.concatenate(offs).tobytes())


def _check_frames(src: memoryview, seed: int, max_payload: int) -> Tuple[int, int, int, int]:
    """The checks of ``fl_check_frames`` (fastlog_ext/frames.c), in its order."""
    size = len(src)
    if size == 0:
        raise InvalidEntryError("no frames")
    pos = count = 0
    first = expect = first_term = term = 0
    crc = seed
    while pos < size:
        if size - pos < REC_HEADER_SIZE:
            raise InvalidEntryError(f"frame {count} at byte {pos} is truncated")
        stored, length, index, t, kind = _HEADER.unpack_from(src, pos)
        if kind > _KIND_MAX:
            raise InvalidEntryError(f"frame {count} at byte {pos}: reserved bytes set or unknown kind")
        if length > max_payload:
            raise EntryTooLargeError(f"frame {count}: payload of {length} bytes exceeds the maximum of {max_payload}")
        fs = REC_HEADER_SIZE + ((length + 7) & ~7)
        if fs > size - pos:
            raise InvalidEntryError(f"frame {count} at byte {pos} is truncated")
        if count == 0:
            if index == 0:
                raise InvalidIndexError("index 0 is reserved; entries start at 1")
            first = expect = index
            first_term = t
        elif index != expect or expect == 0:
            raise InvalidIndexError(f"frame {count} has index {index}, expected {expect}")
        elif t < term:
            raise InvalidTermError(f"frame terms decrease: frame {count} (index {index}) has term {t} after {term}")
        if _crc(src[pos + 4 : pos + REC_HEADER_SIZE + length], crc) != stored:
            raise InvalidEntryError(f"frame {count} (index {index}) fails its checksum on the declared chain")
        if any(src[pos + REC_HEADER_SIZE + length : pos + fs]):
            raise InvalidEntryError(f"frame {count} (index {index}) has non-zero padding")
        crc = stored
        term = t
        expect = (index + 1) & MAX_INDEX if index != MAX_INDEX else 0
        count += 1
        pos += fs
    return (first, count, first_term, term)

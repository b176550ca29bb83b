# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled byte core of fastlog: the ``Entry`` type and ``LogCore``.

Implements the contract of :mod:`fastlog._core_api` with the C core of
``fastlog_core.h`` (CRC-32C, framing, scanning).  Results, scan statuses and
exceptions are those of the pure-Python core :mod:`fastlog._pycore`, which
reads and writes the same bytes.

Each attached segment keeps an exported buffer of its mapping (which also stops
the mapping from being closed underneath us) and two C arrays with the byte
offset and term of every record, so a lookup touches no Python object.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_Clear, PyErr_Occurred
from cpython.list cimport PyList_CheckExact, PyList_New, PyList_SET_ITEM
from cpython.number cimport PyNumber_Index
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF, Py_INCREF
from cpython.sequence cimport PySequence_Check, PySequence_Fast, PySequence_Fast_GET_SIZE, PySequence_Fast_ITEMS
from cpython.tuple cimport PyTuple_CheckExact
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, realloc
from libc.string cimport memcpy, memset
from libc.errno cimport errno, EINTR, EIO, ENOSYS, ENXIO, EOPNOTSUPP
from posix.types cimport off_t
from posix.unistd cimport pwrite

cdef extern from *:
    """
    /* A hint to start loading a cache line; never faults, whatever the address. */
    #define FL_PREFETCH(p) __builtin_prefetch((const void *)(p))
    """
    void FL_PREFETCH(const void *p) noexcept nogil

cdef extern from "<unistd.h>" nogil:
    off_t lseek(int fd, off_t offset, int whence)
    enum:
        SEEK_DATA
        SEEK_HOLE

cdef extern from *:
    """
    #include <fcntl.h>
    #include <sys/stat.h>
    #ifndef FALLOC_FL_KEEP_SIZE
    #define FALLOC_FL_KEEP_SIZE 0x01
    #endif
    #ifndef FALLOC_FL_PUNCH_HOLE
    #define FALLOC_FL_PUNCH_HOLE 0x02
    #endif
    /* The filesystem's block size for fd (the unit holes are punched in). */
    static size_t fl_block_size(int fd) {
        struct stat st;
        if (fstat(fd, &st) != 0 || st.st_blksize < 512)
            return 4096;
        return (size_t)st.st_blksize;
    }
    """
    int fallocate(int fd, int mode, off_t offset, off_t length) nogil
    int FALLOC_FL_KEEP_SIZE
    int FALLOC_FL_PUNCH_HOLE
    size_t fl_block_size(int fd) nogil

import os
from collections import namedtuple

# Bound before the fastlog imports below: when this module is imported before
# the fastlog package, importing fastlog runs its __init__, which imports this
# (still partial) module back and reads IMPLEMENTATION and Entry.  Extension
# types such as Entry already exist before any module-level code runs.
IMPLEMENTATION = "c"

from fastlog._types import EntryKind, LogId, PyEntry
from fastlog.errors import (
    CorruptionError,
    EntryTooLargeError,
    EntryTypeError,
    FastlogError,
    InvalidEntryError,
    InvalidIndexError,
    InvalidTermError,
)


cdef extern from "Python.h":
    # Declared here without an exception clause: the callers turn an overflow
    # into fastlog's own InvalidIndexError.
    unsigned long long _as_ull "PyLong_AsUnsignedLongLong"(object o)
    bint PyLong_Check(object o)
    bint PyLong_CheckExact(object o)
    bint PyBool_Check(object o)


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

# Hard cap of the format on a payload length (engines configure lower limits);
# bound through globals() because the name is also the C constant.
globals()["FL_MAX_PAYLOAD"] = FL_MAX_PAYLOAD

ScanResult = namedtuple("ScanResult", ["count", "end", "last_crc", "status", "nonzero_after"])
ScanResult.__doc__ = "What LogCore.load_segment found in a segment."

cdef uint64_t _U64_MAX = 0xFFFFFFFFFFFFFFFF
cdef tuple _KINDS = tuple(EntryKind)
cdef object _KIND_COMMAND = EntryKind.COMMAND

# Batches whose frames add up to at least this many bytes are encoded with the
# GIL released; below it the release costs more than it gives.
cdef size_t _NOGIL_BYTES = 64 * 1024
# Initial room of a segment's offset/term arrays when it is scanned.
cdef size_t _INITIAL_SLOTS = 1024
# Batches of frames up to this size may be stored through the mapping (see append).
cdef size_t _SMALL_STORE = 4096
# How far the zeroer's thread may write zeros ahead of a prepared append (it
# also stays within as much again as the segment holds; see fl_zeroer.h).
cdef size_t _ZERO_AHEAD = 4 << 20
# The largest zero write of the thread ahead of pwrite appends (synced mode):
# small enough that a writer catching up waits little for the write in flight.
cdef size_t _SYNCED_ZERO_CHUNK = 256 << 10
# Prepared appends (zeros ahead, then stores through the mapping) only while
# fewer record bytes than this were appended since the last flush (or since
# the core was made).  Past it the kernel starts writing the log's pages back
# under the writer: stores into mapped pages then wait for that writeback and
# zero pages may be written twice, and bulk appends fell to a fifth of a
# plain write loop (10M entries of 256 bytes); pwrite holds its pace there.
cdef size_t _PREPARED_LIMIT = 256 << 20

_STATUS_NAMES = {
    FL_OK: "ok",
    FL_ERR_TRUNCATED: "truncated frame",
    FL_ERR_RESERVED: "reserved bytes not zero or unknown kind",
    FL_ERR_INDEX: "unexpected index",
    FL_ERR_CRC: "checksum mismatch",
    FL_ERR_ZERO: "zero frame header",
}


# ---------------------------------------------------------------------------
# argument checks (same rules and messages as fastlog._types)

cdef object _as_int(object value, str name):
    """``value`` as an int (anything with ``__index__`` but bool), else EntryTypeError."""
    if PyLong_CheckExact(value):
        return value
    if PyBool_Check(value):
        raise EntryTypeError(f"{name} must be an int, not bool")
    try:
        return PyNumber_Index(value)
    except TypeError:
        raise EntryTypeError(f"{name} must be an int, not {type(value).__name__}") from None


cdef inline int _to_u64(object value, str name, uint64_t *out) except -1:
    """Index-like argument in 0..2**64-1 (InvalidIndexError outside)."""
    cdef unsigned long long r
    if not PyLong_CheckExact(value):
        value = _as_int(value, name)
    r = _as_ull(value)
    if r == <unsigned long long>-1 and PyErr_Occurred() != NULL:
        PyErr_Clear()
        raise InvalidIndexError(f"{name} must be in 0..2**64-1, got {value}")
    out[0] = r
    return 0


cdef inline int _entry_u64(object value, str name, uint64_t *out) except -1:
    """An Entry field: a real int (no __index__ conversion), as PyEntry checks it."""
    if PyLong_Check(value) and not PyBool_Check(value):
        return _to_u64(int(value) if not PyLong_CheckExact(value) else value, name, out)
    raise EntryTypeError(f"{name} must be an int, not {type(value).__name__}")


cdef inline int _to_u32(object value, str name, uint32_t *out) except -1:
    cdef uint64_t r
    value = _as_int(value, name)
    if value < 0 or value > 0xFFFFFFFF:
        raise InvalidEntryError(f"{name} must be in 0..2**32-1, got {value}")
    _to_u64(value, name, &r)
    out[0] = <uint32_t>r
    return 0


cdef int _to_span(object value, str name, size_t limit, size_t *out) except -1:
    """A byte offset inside a buffer of ``limit`` bytes (0..limit)."""
    value = _as_int(value, name)
    if value < 0 or value > limit:
        raise InvalidIndexError(f"{name} {value} lies outside the buffer ({limit} bytes)")
    out[0] = <size_t>value
    return 0


cdef inline bytes _check_payload(object payload):
    if type(payload) is bytes:
        return <bytes>payload
    if isinstance(payload, (bytearray, memoryview)):
        return bytes(payload)
    raise EntryTypeError(f"payload must be bytes, not {type(payload).__name__}")


cdef object _check_kind(object kind):
    if isinstance(kind, EntryKind):
        return kind
    if isinstance(kind, bool) or not isinstance(kind, int):
        raise EntryTypeError(f"kind must be an EntryKind, not {type(kind).__name__}")
    try:
        return EntryKind(kind)
    except ValueError:
        raise InvalidEntryError(f"unknown entry kind {kind}") from None


cdef inline uint32_t _read_u32(const uint8_t *p) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return v


cdef inline void _store_u32(uint8_t *p, uint32_t v) noexcept nogil:
    memcpy(p, &v, 4)  # little-endian hosts only, as _read_u32


cdef bint _immutable(object frames):
    """Whether nobody can change the bytes of ``frames`` (bytes, or a memoryview of bytes)."""
    if type(frames) is bytes:
        return True
    return type(frames) is memoryview and type(frames.obj) is bytes


cdef int _raise_frame_error(int rc, const fl_frame_walk *w) except -1:
    """Raise the error for status ``rc`` of a walk over frames (fastlog_ext/frames.c)."""
    cdef size_t n = w.count
    if rc == FL_FRAMES_EMPTY:
        raise InvalidEntryError("no frames")
    if rc == FL_FRAMES_TRUNCATED:
        raise InvalidEntryError(f"frame {n} at byte {w.pos} is truncated")
    if rc == FL_FRAMES_RESERVED:
        raise InvalidEntryError(f"frame {n} at byte {w.pos}: reserved bytes set or unknown kind")
    if rc == FL_FRAMES_TOO_LARGE:
        raise EntryTooLargeError(
            f"frame {n}: payload of {w.at_length} bytes exceeds the maximum of {w.max_payload}")
    if rc == FL_FRAMES_INDEX_ZERO:
        raise InvalidIndexError("index 0 is reserved; entries start at 1")
    if rc == FL_FRAMES_INDEX:
        raise InvalidIndexError(f"frame {n} has index {w.at_index}, expected {w.next_index}")
    if rc == FL_FRAMES_TERM:
        raise InvalidTermError(
            f"frame terms decrease: frame {n} (index {w.at_index}) has term {w.at_term} after {w.last_term}")
    if rc == FL_FRAMES_CRC:
        raise InvalidEntryError(f"frame {n} (index {w.at_index}) fails its checksum on the declared chain")
    if rc == FL_FRAMES_PADDING:
        raise InvalidEntryError(f"frame {n} (index {w.at_index}) has non-zero padding")
    raise InvalidEntryError(f"frame {n} at byte {w.pos}: refused (status {rc})")


cdef object _as_batch(object entries):
    """The batch as a list or tuple (PySequence_Fast), or EntryTypeError."""
    if PyList_CheckExact(entries) or PyTuple_CheckExact(entries):
        return entries
    if not PySequence_Check(entries):
        raise EntryTypeError(f"entries must be a sequence, not {type(entries).__name__}")
    return PySequence_Fast(entries, "entries must be a sequence")


cdef int _get_buffer(object obj, Py_buffer *view, str what) except -1:
    """Export a read-only view of any C-contiguous bytes-like object."""
    try:
        PyObject_GetBuffer(obj, view, PyBUF_SIMPLE)
    except (TypeError, BufferError):
        raise EntryTypeError(f"{what} must be a contiguous bytes-like object, not {type(obj).__name__}") from None
    return 0


# ---------------------------------------------------------------------------
# Entry

# A large free list: reading a range creates (and the caller later frees) one
# Entry per record, and recycling them here instead of in the object allocator
# keeps its arenas from being unmapped and faulted in again on every range
# (several times faster for 10,000-entry ranges).  At most ~1 MiB is kept.
@cython.freelist(16384)
@cython.no_gc
@cython.embedsignature(False)  # the docstring carries the signature, in the form inspect reads
cdef class Entry:
    """Entry(index, term, payload=b'', kind=EntryKind.COMMAND)
--

One Raft log entry: immutable, hashable, compared by value.
"""

    def __init__(self, index, term, payload=b"", kind=_KIND_COMMAND):
        cdef uint64_t i, t
        if self.payload is not None:
            raise AttributeError("Entry is immutable")
        _entry_u64(index, "index", &i)
        _entry_u64(term, "term", &t)
        cdef bytes p = _check_payload(payload)
        k = _check_kind(kind)
        # All checks passed: set every field at once, so an entry is never half-built.
        self.index = i
        self.term = t
        self.kind_code = <uint8_t>(<int>k)
        self.kind = k
        self.payload = p

    def __setattr__(self, name, value):
        raise AttributeError("Entry is immutable")

    def __delattr__(self, name):
        raise AttributeError("Entry is immutable")

    def __eq__(self, other):
        cdef Entry o
        if isinstance(other, Entry):
            o = <Entry>other
            return (self.index == o.index and self.term == o.term
                    and self.kind_code == o.kind_code and self.payload == o.payload)
        if isinstance(other, PyEntry):
            return (self.index == other.index and self.term == other.term
                    and self.kind == other.kind and self.payload == other.payload)
        return NotImplemented

    def __ne__(self, other):
        r = self.__eq__(other)
        if r is NotImplemented:
            return r
        return not r

    def __hash__(self):
        return hash((self.index, self.term, <int>self.kind_code, self.payload))

    def __repr__(self):
        return (f"Entry(index={self.index}, term={self.term}, payload={self.payload!r}, "
                f"kind=EntryKind.{self.kind.name})")

    def __reduce__(self):
        return (type(self), (self.index, self.term, self.payload, self.kind))

    @property
    def log_id(self):
        """The entry's ``LogId(index, term)``."""
        return LogId(index=self.index, term=self.term)


cdef inline Entry _new_entry(uint64_t index, uint64_t term, uint8_t kind, const uint8_t *data, uint32_t length):
    """Build an Entry from trusted fields without going through __init__."""
    cdef Entry e = Entry.__new__(Entry)
    e.index = index
    e.term = term
    e.kind_code = kind
    e.kind = _KINDS[kind]
    e.payload = PyBytes_FromStringAndSize(<const char *>data, length)
    return e


# ---------------------------------------------------------------------------
# CRC

def crc32c(data, seed=0):
    """CRC-32C of a bytes-like object, continuing from ``seed``.

    ``crc32c(b, crc32c(a)) == crc32c(a + b)``.
    """
    cdef uint32_t s, r
    cdef Py_buffer view
    if isinstance(data, memoryview) and not (<memoryview>data).c_contiguous:
        data = (<memoryview>data).tobytes()
    _get_buffer(data, &view, "data")
    try:
        _to_u32(seed, "seed", &s)
        if <size_t>view.len >= _NOGIL_BYTES:
            with nogil:
                r = fl_crc32c(s, view.buf, <size_t>view.len)
        else:
            r = fl_crc32c(s, view.buf, <size_t>view.len)
    finally:
        PyBuffer_Release(&view)
    return r


def crc32c_hw_available():
    """True when the CRC uses the CPU's CRC-32C instruction."""
    return fl_crc32c_hw_available() != 0


def frame_size(payload_len):
    """Bytes taken by a framed record holding ``payload_len`` payload bytes."""
    cdef size_t n
    _to_span(payload_len, "payload_len", FL_MAX_PAYLOAD, &n)
    return fl_frame_size(<uint32_t>n)


def _crc32c_portable(data, seed=0):
    """CRC-32C through the table path (lets tests compare both paths)."""
    cdef uint32_t s, r
    cdef Py_buffer view
    _get_buffer(data, &view, "data")
    try:
        _to_u32(seed, "seed", &s)
        r = fl_crc32c_portable(s, view.buf, <size_t>view.len)
    finally:
        PyBuffer_Release(&view)
    return r


# ---------------------------------------------------------------------------
# LogCore

cdef void _free_segment(Segment *seg) noexcept:
    if seg == NULL:
        return
    if seg.has_view:
        PyBuffer_Release(&seg.view)
        seg.has_view = False
    free(seg.offsets)
    free(seg.terms)
    free(seg)


cdef int _reserve(Segment *seg, size_t need) except -1:
    """Make room for ``need`` records in the offset/term arrays."""
    cdef size_t cap
    cdef void *p
    if need <= seg.cap:
        return 0
    cap = seg.cap * 2
    if cap < need:
        cap = need
    if cap < 64:
        cap = 64
    if cap > (<size_t>-1) // 8:
        raise MemoryError()
    p = realloc(seg.offsets, cap * sizeof(uint64_t))
    if p == NULL:
        raise MemoryError()
    seg.offsets = <uint64_t *>p
    p = realloc(seg.terms, cap * sizeof(uint64_t))
    if p == NULL:
        raise MemoryError()
    seg.terms = <uint64_t *>p
    seg.cap = cap
    return 0


cdef size_t _encode_run(Segment *seg, uint8_t *dst, const BatchItem *items, size_t n,
                        size_t *end, uint32_t *crc) noexcept nogil:
    """Frame items into the segment after its last record while they fit.

    Records their offsets and terms past ``seg.count`` but leaves ``count``,
    ``end`` and ``last_crc`` to the caller, so readers never see a half-written
    record.  Returns the number written.
    """
    cdef size_t off = seg.end
    cdef size_t fs
    cdef size_t i
    cdef size_t slot = seg.count
    cdef uint32_t c = seg.last_crc
    for i in range(n):
        fs = fl_frame_size(items[i].length)
        if fs > seg.size - off:
            break
        # dst holds the bytes that go to offset seg.end onwards
        c = fl_encode(dst + (off - seg.end), c, items[i].index, items[i].term, items[i].kind,
                      items[i].data, items[i].length)
        seg.offsets[slot] = off
        seg.terms[slot] = items[i].term
        slot += 1
        off += fs
    else:
        i = n
    end[0] = off
    crc[0] = c
    return i


cdef int _pwrite_all(int fd, const uint8_t *data, size_t n, size_t off) noexcept nogil:
    """Write all of data at off; 0 or the errno of the failure."""
    cdef ssize_t w
    while n > 0:
        w = pwrite(fd, data, n, <off_t>off)
        if w < 0:
            if errno == EINTR:
                continue
            return errno
        if w == 0:
            return EIO
        data += w
        n -= <size_t>w
        off += <size_t>w
    return 0


cdef uint8_t _ZEROS[65536]  # static storage: all zero


cdef int _write_zeros(int fd, size_t start, size_t end) noexcept nogil:
    """pwrite zeros over [start, end); 0 or an errno."""
    cdef size_t n
    cdef int err
    while start < end:
        n = end - start
        if n > sizeof(_ZEROS):
            n = sizeof(_ZEROS)
        err = _pwrite_all(fd, _ZEROS, n, start)
        if err:
            return err
        start += n
    return 0


cdef int _zero_file(int fd, size_t start, size_t end, bint punch) noexcept nogil:
    """Zero [start, end) of a file; 0 or an errno.

    With ``punch``, the whole filesystem blocks inside the range are
    deallocated (they read as zeros) and only the partial blocks at its edges
    are written: on a copy-on-write filesystem every rewritten block takes new
    space, and a full disk must still be able to cut a log short.  Where
    punching is not supported, zeros are written.
    """
    cdef size_t block, lo, hi
    cdef int err
    if punch:
        block = fl_block_size(fd)
        lo = (start + block - 1) // block * block
        hi = end // block * block
        if lo < hi:
            while fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, <off_t>lo, <off_t>(hi - lo)) != 0:
                err = errno
                if err == EINTR:
                    continue
                if err == EOPNOTSUPP or err == ENOSYS:
                    return _write_zeros(fd, start, end)
                return err
            err = _write_zeros(fd, start, lo)
            if err:
                return err
            return _write_zeros(fd, hi, end)
    return _write_zeros(fd, start, end)


cdef bint _tail_is_zero(const uint8_t *base, size_t off, size_t size, int fd) noexcept nogil:
    """Whether base[off:size] is all zero bytes, reading as little of it as the file allows.

    The unused end of a preallocated segment is mostly unwritten extents, which
    read as zeros; reading them through the mapping would fill the page cache
    with tens of MiB of zero pages.  With the file at hand, lseek(SEEK_DATA /
    SEEK_HOLE) names the ranges that may hold data and only those are read.
    A file system that cannot tell reports everything as data: then all is read.
    """
    cdef off_t d, h
    cdef size_t pos = off
    if fd < 0:
        return fl_all_zero(base, off, size)
    while pos < size:
        d = lseek(fd, <off_t>pos, SEEK_DATA)
        if d < 0:
            if errno == ENXIO:
                return True  # no data at or after pos
            return fl_all_zero(base, pos, size)
        if <size_t>d >= size:
            return True
        h = lseek(fd, d, SEEK_HOLE)
        if h < 0 or <size_t>h > size:
            h = <off_t>size
        if h <= d:  # a confused answer: read the rest
            return fl_all_zero(base, <size_t>d, size)
        if not fl_all_zero(base, <size_t>d, <size_t>h):
            return False
        pos = <size_t>h
    return True


cdef class LogCore:
    """Byte-level core of a segmented log (see fastlog._core_api.LogCore).

    Thread safety.  Every method runs with the GIL held, except the long byte
    loops (large appends, scans, big zeroing, verification), which release
    it.  A call that changes the segment table or the mapping first converts
    its arguments (which may run Python code), then marks the core busy for
    the rest of its work; while the core is busy, every other such call raises
    FastlogError instead of pulling a buffer away from under the byte loop
    (fastlog.Log never lets that happen: its writers and ``verify`` share one
    lock).
    Reads never wait and never see a half-written record: a record becomes
    visible only after it is complete.
    """

    def __cinit__(self, *args, **kwargs):
        if fl_zeroer_init(&self.zeroer) != 0:
            raise MemoryError()
        self.zeroer_ready = True

    def __init__(self, max_payload, verify_reads=False, zero_helper=True):
        mp = _as_int(max_payload, "max_payload")
        if mp < 0 or mp > FL_MAX_PAYLOAD:
            raise InvalidEntryError(f"max_payload must be in 0..{FL_MAX_PAYLOAD}, got {mp}")
        self._max_payload = <uint32_t>mp
        self._verify_reads = bool(verify_reads)
        self.zero_ahead = _ZERO_AHEAD if zero_helper else 0

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self.zeroer_ready:
            # Joins the helper thread first: it may be writing to a segment's file.
            with nogil:
                fl_zeroer_destroy(&self.zeroer)
            self.zeroer_ready = False
        if self.segs != NULL:
            for i in range(self.nsegs):
                _free_segment(self.segs[i])
            free(self.segs)
            self.segs = NULL
        self.nsegs = 0
        free(self.scratch)
        self.scratch = NULL
        free(self.wbuf)
        self.wbuf = NULL

    @property
    def max_payload(self):
        """Largest payload accepted by append, in bytes."""
        return self._max_payload

    @property
    def verify_reads(self):
        """Whether reads re-verify each record's checksum."""
        return self._verify_reads

    @property
    def busy(self):
        """Number of calls currently inside a section that may release the GIL."""
        return self._busy

    def _busy_enter(self):
        """Mark the core busy as a running call would (lets tests check the guard)."""
        self._busy += 1

    def _busy_exit(self):
        if self._busy <= 0:
            raise FastlogError("LogCore is not busy")
        self._busy -= 1

    def zero_ahead_error(self):
        """errno of the first failed sync of the zero-ahead thread, 0 if none.

        Kept for good: a flush that meets it must fail (the data the thread's
        sync covered may not be on disk, and Linux reports such an error once
        per open file description)."""
        if not self.zeroer_ready:
            return 0
        # With the GIL: the zeroer's thread holds its mutex only for moments
        # (never across I/O), and a flush should not give the GIL away again.
        return fl_zeroer_sync_error(&self.zeroer)

    def note_flushed(self):
        """The log was just flushed.  Appends within the zero-ahead window of
        the last flush keep synced zeros ahead of them, and prepared appends
        (``prepare``) are used for the first 256 MiB after it (or after the
        core was made); longer runs without a flush are written with pwrite
        and no zeros (see _PREPARED_LIMIT)."""
        self.unflushed = 0

    def _fail_next_zero_sync(self, err):
        """The zero-ahead thread's next sync reports ``err`` (lets tests check the reporting)."""
        cdef int e = <int>_as_int(err, "err")
        fl_zeroer_fail_next_sync(&self.zeroer, e)

    def _delay_zero_writes(self, usec):
        """The zero-ahead thread sleeps ``usec`` before each zero write it has
        taken on (lets tests widen the window a writer must wait through)."""
        cdef unsigned u = <unsigned>_as_int(usec, "usec")
        fl_zeroer_delay_writes(&self.zeroer, u)

    # -- internals ---------------------------------------------------------

    cdef int _enter(self, str what) except -1:
        """Start a change: refuse while another call is busy, then mark busy.

        No Python code may run between a caller's last argument conversion
        and this call, nor between this call and the end of its work unless
        the core is marked busy (which this does)."""
        if self._busy:
            raise FastlogError(
                f"LogCore.{what} refused: another thread is inside a call that released the GIL")
        self._busy += 1
        return 0

    cdef Py_ssize_t _pos(self, object pos) except -1:
        pos = _as_int(pos, "pos")
        n = self.nsegs
        p = pos + n if pos < 0 else pos
        if not 0 <= p < n:
            raise InvalidIndexError(f"segment position {pos} out of range ({n} segments)")
        return <Py_ssize_t>p

    cdef bint _bounds(self, uint64_t *lo, uint64_t *hi) noexcept:
        """Lowest and highest stored index (ignoring the floor); False when none."""
        cdef Segment *last
        if self.nsegs == 0:
            return False
        last = self.segs[self.nsegs - 1]
        if last.count > 0:
            hi[0] = last.first + (last.count - 1)
        elif last.first > self.segs[0].first:
            hi[0] = last.first - 1
        else:
            return False
        lo[0] = self.segs[0].first
        return True

    cdef Py_ssize_t _find(self, uint64_t index) noexcept:
        """Position of the segment holding readable ``index``, or -1."""
        cdef Py_ssize_t lo, hi, mid, n = self.nsegs
        cdef Segment *s
        if n == 0 or index < self._floor:
            return -1
        if self.last_hit < n:
            s = self.segs[self.last_hit]
            if index >= s.first and index - s.first < s.count:
                return self.last_hit
        if self.segs[0].first > index:
            return -1
        # rightmost segment whose first index is <= index
        lo = 0
        hi = n - 1
        while lo < hi:
            mid = (lo + hi + 1) >> 1
            if self.segs[mid].first <= index:
                lo = mid
            else:
                hi = mid - 1
        s = self.segs[lo]
        if index - s.first < s.count:
            self.last_hit = lo
            return lo
        return -1

    cdef Entry _read(self, Segment *s, size_t k):
        """Entry of record ``k`` of ``s``.

        Allocates only objects the cyclic GC does not track (Entry, bytes), so
        no collection, hence no Python code, can run in the middle of a read."""
        cdef size_t off = <size_t>s.offsets[k]
        cdef uint32_t seed, length
        cdef uint8_t kind
        cdef fl_record rec
        cdef int rc
        if self._verify_reads:
            seed = _read_u32(s.base + s.offsets[k - 1]) if k > 0 else s.seed
            rc = fl_decode(s.base, s.size, off, seed, s.first + k, 1, &rec)
            if rc != FL_OK:
                raise CorruptionError(
                    f"entry {s.first + k} failed verification on read: {_STATUS_NAMES.get(rc, rc)}", None, off)
            return _new_entry(rec.index, rec.term, rec.kind, rec.payload, rec.length)
        # Trusted read: the record was verified when it was scanned or written;
        # only make sure a damaged mapping can never send us out of bounds.
        if off > s.size or s.size - off < FL_REC_HEADER_SIZE:
            raise CorruptionError(f"entry {s.first + k} lies outside its segment", None, off)
        length = _read_u32(s.base + off + 4)
        kind = s.base[off + 24]
        if length > s.size - off - FL_REC_HEADER_SIZE or kind > FL_KIND_MAX:
            raise CorruptionError(f"entry {s.first + k} has a damaged record header", None, off)
        return _new_entry(s.first + k, s.terms[k], kind, s.base + off + FL_REC_HEADER_SIZE, length)

    cdef int _check_entries(self, PyObject **items, Py_ssize_t n, Py_ssize_t gather_from,
                            BatchItem *out, Py_ssize_t *gathered, uint64_t *first,
                            size_t *total) except -1:
        """Check a whole batch (as check_batch) and return its first index.

        With ``out``, also gathers ``items[gather_from:]`` into it, each with a
        new reference to its payload (counted in ``gathered``) so the bytes
        stay alive without the GIL whatever happens to the caller's list.
        Runs no Python code."""
        cdef Py_ssize_t i
        cdef uint64_t expected = 0
        cdef uint64_t term = 0
        cdef size_t plen, sum_ = 0
        cdef Entry e
        cdef PyObject *ahead
        if n == 0:
            raise InvalidEntryError("empty batch")
        for i in range(n):
            # A batch's entries and payloads are scattered objects, so this loop
            # waits on memory; ask for them a few entries early.
            if i + 32 < n:
                FL_PREFETCH(items[i + 32])
            if i + 16 < n:
                ahead = items[i + 16]
                if <type>ahead.ob_type is Entry:
                    FL_PREFETCH(<PyObject *>(<Entry>ahead).payload)
            obj = <object>items[i]
            if not isinstance(obj, Entry):
                raise EntryTypeError(
                    f"entries[{i}] is a {type(obj).__name__}, not an Entry of this implementation")
            e = <Entry>obj
            if e.payload is None:
                raise InvalidEntryError(f"entries[{i}] is an uninitialised Entry")
            if i == 0:
                first[0] = e.index
            elif e.index != expected or expected == 0:  # 0: the previous index was 2**64-1
                raise InvalidIndexError(
                    f"batch indexes are not consecutive: entries[{i}].index is {e.index}, "
                    f"expected {expected if expected else 1 << 64}")
            elif e.term < term:  # Raft terms never decrease along the log
                raise InvalidTermError(f"batch terms decrease: entries[{i}].term is {e.term} after {term}")
            term = e.term
            expected = e.index + 1
            plen = <size_t>PyBytes_GET_SIZE(e.payload)
            if plen > self._max_payload:
                raise EntryTooLargeError(
                    f"entry {e.index}: payload of {plen} bytes exceeds the maximum of {self._max_payload}")
            if out != NULL and i >= gather_from:
                out.owner = <PyObject *>e.payload
                Py_INCREF(e.payload)
                gathered[0] += 1
                out.data = <const uint8_t *>PyBytes_AS_STRING(e.payload)
                out.length = <uint32_t>plen
                out.index = e.index
                out.term = e.term
                out.kind = e.kind_code
                out += 1
                sum_ += fl_frame_size(<uint32_t>plen)
        total[0] = sum_
        return 0

    # -- segment table -----------------------------------------------------

    def load_segment(self, buf, first_index, seed, data_start, fresh=False, fd=-1):
        """Attach ``buf`` as the new last segment and scan its records.

        ``fresh=True`` says the segment was just created and is zero past
        ``data_start``: nothing is read from it (even reading its first page
        faults in file pages, and scanning its tail would touch all of them).
        ``fd``, when given, is the open file behind ``buf``: appends, ``zero``
        and ``write_at`` then write to it with ``pwrite`` (the mapping shows the
        bytes at once: it is the same page cache).  A read-only ``buf`` with an
        ``fd`` is a segment that is never stored to through its mapping at all:
        the filesystem could not promise that a store needs no new block
        (fastlog/fsinfo.py), and a store that fails to get one is SIGBUS.
        """
        cdef uint64_t fi, nxt
        cdef uint32_t sd
        cdef Segment *prev
        cdef Segment *seg
        cdef size_t off, got
        cdef int status = FL_OK
        cdef bint nonzero
        cdef bint entered = False
        cdef void *p
        cdef int fdv = -1
        seg = <Segment *>calloc(1, sizeof(Segment))
        if seg == NULL:
            raise MemoryError()
        try:
            try:
                PyObject_GetBuffer(buf, &seg.view, PyBUF_WRITABLE)
                seg.writable = True
            except (TypeError, BufferError):
                _get_buffer(buf, &seg.view, "segment buffer")
                seg.writable = False
            seg.has_view = True
            seg.base = <uint8_t *>seg.view.buf
            seg.size = <size_t>seg.view.len
            _to_u64(first_index, "first_index", &fi)
            _to_u32(seed, "seed", &sd)
            if fi == 0:
                raise InvalidIndexError("first_index must be >= 1")
            _to_span(data_start, "data_start", seg.size, &seg.data_start)
            fd = _as_int(fd, "fd")
            if fd < -1 or fd > 0x7fffffff:
                raise InvalidEntryError(f"fd must be -1 or a file descriptor, got {fd}")
            fdv = fd
            self._enter("load_segment")
            entered = True
            if self.nsegs > 0:
                prev = self.segs[self.nsegs - 1]
                if prev.count > 0 and prev.first + (prev.count - 1) == _U64_MAX:
                    raise InvalidIndexError("the last segment already holds the largest possible index")
                if fi != prev.first + prev.count:
                    raise InvalidIndexError(
                        f"segment first index {fi} does not follow the last attached index "
                        f"{prev.first + prev.count - 1}")
            if self.nsegs == self.segs_cap:
                p = realloc(self.segs, (self.segs_cap * 2 + 8) * sizeof(Segment *))
                if p == NULL:
                    raise MemoryError()
                self.segs = <Segment **>p
                self.segs_cap = self.segs_cap * 2 + 8
            seg.first = fi
            seg.seed = sd
            seg.fd = fdv
            off = seg.data_start
            nxt = fi
            _reserve(seg, _INITIAL_SLOTS)
            if fresh:
                status = FL_ERR_ZERO
            while not fresh:
                with nogil:
                    got = fl_scan(seg.base, seg.size, &off, &sd, &nxt, seg.offsets + seg.count,
                                  seg.terms + seg.count, seg.cap - seg.count, &status)
                seg.count += got
                if status != FL_OK:
                    break
                _reserve(seg, seg.cap * 2)
            nonzero = False
            if not fresh:
                with nogil:
                    nonzero = not _tail_is_zero(seg.base, off, seg.size, seg.fd)
            seg.end = off
            seg.last_crc = sd
            self.segs[self.nsegs] = seg
            self.nsegs += 1
        except BaseException:
            _free_segment(seg)
            raise
        finally:
            if entered:
                self._busy -= 1
        return ScanResult(seg.count, seg.end, seg.last_crc, status, nonzero)

    def drop_last_segment(self):
        """Forget the last segment (releasing its buffer so it can be closed)."""
        cdef Segment *seg
        self._enter("drop_last_segment")
        try:
            if self.nsegs == 0:
                raise InvalidIndexError("no segment to drop")
            seg = self.segs[self.nsegs - 1]
            with nogil:
                fl_zeroer_release(&self.zeroer, <void *>seg)  # its file may close next
            self.nsegs -= 1
            self.segs[self.nsegs] = NULL
            self.last_hit = 0
            _free_segment(seg)
        finally:
            self._busy -= 1

    def drop_first_segment(self):
        """Forget the first segment."""
        cdef Py_ssize_t i
        cdef Segment *seg
        self._enter("drop_first_segment")
        try:
            if self.nsegs == 0:
                raise InvalidIndexError("no segment to drop")
            seg = self.segs[0]
            with nogil:
                fl_zeroer_release(&self.zeroer, <void *>seg)
            for i in range(1, self.nsegs):
                self.segs[i - 1] = self.segs[i]
            self.nsegs -= 1
            self.segs[self.nsegs] = NULL
            self.last_hit = 0
            _free_segment(seg)
        finally:
            self._busy -= 1

    def segment_count(self):
        return self.nsegs

    def segment_info(self, pos):
        """(first_index, count, end_offset, last_crc) of the segment at ``pos``."""
        cdef Segment *s = self.segs[self._pos(pos)]
        return (s.first, s.count, s.end, s.last_crc)

    # -- writing -----------------------------------------------------------

    def check_batch(self, entries):
        """Validate a batch without writing; returns its first index."""
        cdef uint64_t first
        cdef size_t total
        seq = _as_batch(entries)
        self._check_entries(PySequence_Fast_ITEMS(seq), PySequence_Fast_GET_SIZE(seq), 0, NULL, NULL,
                            &first, &total)
        return first

    def append(self, entries, start=0, mapped_upto=0, prepare=0, ahead=-1):
        """Write ``entries[start:]`` after the last record of the last segment.

        Validates the whole batch first, and that its first term is not below
        the term of the record before it in this segment.  Returns the position after the last
        entry written (``start`` when not even one fits).  ``mapped_upto``: the
        caller knows the file blocks below this offset are already written (not
        just preallocated), so storing a small batch there through the mapping
        costs at most a cheap page fault -- less than a ``pwrite`` call.

        ``prepare`` (bytes, a power of two; 0 = off): when the batch runs past
        the blocks known to be written, first write zeros from there up to the
        next multiple of ``prepare`` (smaller multiples early in a segment), then
        store the frames through the mapping, whatever the batch's size.  Large
        aligned zero writes fill the page cache in large folios, and the frames
        are then copied once, straight into those pages; measured here this is
        far cheaper than one ``pwrite`` of the frames into preallocated blocks.
        The zeros reach the disk with the next fsync, so a caller that syncs
        often (and keeps synced zeros ahead itself) passes 0.  Unless the core
        was made with ``zero_helper=False``, a helper thread writes most of the
        zeros ahead of time, on another core (fastlog_ext/fl_zeroer.h).

        ``ahead`` (bytes): how far that thread may zero ahead of the writer; 0
        for no thread.  Without ``prepare`` (frames written with ``pwrite``,
        a log being flushed) it keeps that much past the records written with
        zeros *and synced*, so later fsyncs meet blocks that need no metadata
        update; a failed sync of it is kept for :meth:`zero_ahead_error`.
        The default (-1) is 4 MiB for prepared appends (none with
        ``zero_helper=False``) and none for the others.
        """
        cdef uint64_t first, expected
        cdef Py_ssize_t n, st, i
        cdef Py_ssize_t gathered = 0
        cdef size_t total, fit, written = 0, end, need
        cdef uint32_t crc
        cdef int err = 0
        cdef size_t mapped_v, prep_v = 0, win = 0
        cdef Segment *seg
        cdef void *p
        seq = _as_batch(entries)
        ahead = _as_int(ahead, "ahead")
        start = _as_int(start, "start")
        mapped_upto = _as_int(mapped_upto, "mapped_upto")
        mapped_v = <size_t>mapped_upto if mapped_upto > 0 else 0
        prepare = _as_int(prepare, "prepare")
        if prepare != 0:
            if prepare < 0 or prepare > (1 << 40) or prepare & (prepare - 1):
                raise InvalidEntryError(f"prepare must be 0 or a power of two up to 2**40, got {prepare}")
            prep_v = <size_t>prepare
        if ahead < -1 or ahead > (1 << 40):
            raise InvalidEntryError(f"ahead must be -1 or 0..2**40, got {ahead}")
        if self.zero_ahead:
            if ahead >= 0:
                win = <size_t>ahead
            elif prep_v:
                win = self.zero_ahead
        # From here on no Python code runs (see _enter).
        self._enter("append")
        try:
            n = PySequence_Fast_GET_SIZE(seq)
            if n > 0 and <size_t>n > self.scratch_cap:
                p = realloc(self.scratch, <size_t>n * sizeof(BatchItem))
                if p == NULL:
                    raise MemoryError()
                self.scratch = <BatchItem *>p
                self.scratch_cap = <size_t>n
            st = <Py_ssize_t>start if 0 <= start < n else n
            self._check_entries(PySequence_Fast_ITEMS(seq), n, st, self.scratch, &gathered, &first, &total)
            if st >= n:
                raise InvalidIndexError(f"start {start} outside the batch of {n} entries")
            if self.nsegs == 0:
                raise FastlogError("no segment attached")
            seg = self.segs[self.nsegs - 1]
            if not seg.writable and seg.fd < 0:
                raise FastlogError("the last segment's buffer is read-only")
            if seg.count > 0 and seg.first + (seg.count - 1) == _U64_MAX:
                raise InvalidIndexError("the last segment already holds the largest possible index")
            expected = seg.first + seg.count
            first += <uint64_t>st
            if first != expected:
                raise InvalidIndexError(f"entry {first} does not follow the last index {expected - 1}")
            if seg.count > 0 and self.scratch[st].term < seg.terms[seg.count - 1]:
                # Raft terms never decrease along a log; the record before
                # lies in another segment when this one is empty (the caller
                # checks that case).
                raise InvalidTermError(f"entry {first} has term {self.scratch[st].term}, "
                                       f"below the term {seg.terms[seg.count - 1]} of the entry before it")
            fit = (seg.size - seg.end) // FL_REC_HEADER_SIZE
            if fit > <size_t>gathered:
                fit = <size_t>gathered
            _reserve(seg, seg.count + fit)
            need = total if total < seg.size - seg.end else seg.size - seg.end
            if not self._ready_to_write(seg, need, mapped_v, prep_v, win, True):
                # Frames are built in a buffer and written with one pwrite: a
                # buffered write into preallocated blocks costs the kernel far
                # less than first-write page faults on the mapping (see
                # docs/format.md, "How appends reach the file").
                with nogil:
                    written = _encode_run(seg, self.wbuf, self.scratch, fit, &end, &crc)
                    err = _pwrite_all(seg.fd, self.wbuf, end - seg.end, seg.end)
                if err:
                    raise OSError(err, os.strerror(err))
            elif total >= _NOGIL_BYTES:
                with nogil:
                    written = _encode_run(seg, seg.base + seg.end, self.scratch, fit, &end, &crc)
            else:
                written = _encode_run(seg, seg.base + seg.end, self.scratch, fit, &end, &crc)
            seg.count += written
            self.unflushed += end - seg.end
            seg.end = end
            seg.last_crc = crc
        finally:
            for i in range(gathered):
                Py_DECREF(<object>self.scratch[i].owner)
            self._busy -= 1
        return st + <Py_ssize_t>written

    def truncate(self, index):
        """Forget entries >= ``index`` of the last segment; returns (cut_offset, old_end)."""
        cdef uint64_t idx
        cdef size_t k, cut, old
        cdef Segment *s
        _to_u64(index, "index", &idx)
        self._enter("truncate")
        try:
            if self.nsegs == 0:
                raise InvalidIndexError("no segment attached")
            s = self.segs[self.nsegs - 1]
            if idx < s.first:
                raise InvalidIndexError(
                    f"index {idx} lies before the last segment (first index {s.first}); drop that segment instead")
            old = s.end
            if idx - s.first >= s.count:
                return (old, old)
            k = <size_t>(idx - s.first)
            cut = <size_t>s.offsets[k]
            s.last_crc = _read_u32(s.base + s.offsets[k - 1]) if k > 0 else s.seed
            s.count = k
            s.end = cut
            return (cut, old)
        finally:
            self._busy -= 1

    def record_offset(self, index):
        """Byte offset of the record of ``index`` in its segment (the floor is
        ignored); InvalidIndexError when no attached segment holds it."""
        cdef uint64_t idx
        cdef Py_ssize_t i
        cdef Segment *s
        _to_u64(index, "index", &idx)
        i = self.nsegs - 1
        while i >= 0:
            s = self.segs[i]
            if idx >= s.first:
                if idx - s.first < s.count:
                    return s.offsets[idx - s.first]
                break
            i -= 1
        raise InvalidIndexError(f"no record {idx} is attached")

    cdef int _check_span(self, Segment *s, object start, object end) except -1:
        """A byte range a caller may overwrite: inside the buffer, clear of live records."""
        if start < 0 or end < start or end > s.size:
            raise InvalidIndexError(f"byte range [{start}, {end}) outside the segment buffer (size {s.size})")
        if s.count and start < s.end and end > s.data_start:
            raise InvalidIndexError(
                f"byte range [{start}, {end}) overlaps the live records [{s.data_start}, {s.end}); truncate first")
        if not s.writable and s.fd < 0:
            raise FastlogError("segment buffer is read-only")
        return 0

    def zero(self, pos, start, end):
        """Zero ``buf[start:end]`` of the segment at ``pos`` (never live records).

        With a file (``fd``) the zeros are written with ``pwrite``; when the
        buffer is read-only, whole blocks are punched out instead (see
        ``_zero_file``).  A failed write raises OSError."""
        cdef size_t a, b
        cdef Py_ssize_t at
        cdef Segment *s
        cdef int err = 0
        start = _as_int(start, "start")
        end = _as_int(end, "end")
        at = self._pos(pos)  # last: converting the others may run Python code
        self._enter("zero")
        try:
            s = self.segs[at]
            self._check_span(s, start, end)
            a = <size_t>start
            b = <size_t>end
            if s.fd >= 0:
                if b > a:
                    with nogil:
                        err = _zero_file(s.fd, a, b, not s.writable)
                    if err:
                        raise OSError(err, os.strerror(err))
            elif b - a >= _NOGIL_BYTES:
                with nogil:
                    memset(s.base + a, 0, b - a)
            elif b > a:
                memset(s.base + a, 0, b - a)
        finally:
            self._busy -= 1

    def write_at(self, pos, offset, data):
        """Copy ``data`` into the segment at ``offset`` (never over live records);
        with ``pwrite`` when the segment has a file.  A failed write raises OSError."""
        cdef Py_buffer view
        cdef Py_ssize_t at
        cdef Segment *s
        cdef int err = 0
        offset = _as_int(offset, "offset")
        _get_buffer(data, &view, "data")
        try:
            at = self._pos(pos)  # last: converting the others may run Python code
            self._enter("write_at")
            try:
                s = self.segs[at]
                self._check_span(s, offset, offset + view.len)
                if view.len and s.fd >= 0:
                    err = _pwrite_all(s.fd, <const uint8_t *>view.buf, <size_t>view.len, <size_t>offset)
                    if err:
                        raise OSError(err, os.strerror(err))
                elif view.len:
                    memcpy(s.base + <size_t>offset, view.buf, <size_t>view.len)
            finally:
                self._busy -= 1
        finally:
            PyBuffer_Release(&view)

    # -- reading -----------------------------------------------------------

    def set_floor(self, index):
        """Indexes below ``index`` read as missing."""
        cdef uint64_t idx
        _to_u64(index, "index", &idx)
        self._floor = idx

    def floor(self):
        """The current floor (see set_floor)."""
        return self._floor

    def first_index(self):
        """Lowest readable index, or 0 when there is none."""
        cdef uint64_t lo, hi
        if not self._bounds(&lo, &hi):
            return 0
        if lo < self._floor:
            lo = self._floor
        return lo if lo <= hi else 0

    def last_index(self):
        """Highest stored index, or 0 when empty (ignores the floor)."""
        cdef uint64_t lo, hi
        if not self._bounds(&lo, &hi):
            return 0
        return hi

    def get(self, index):
        """The entry at ``index`` or None."""
        cdef uint64_t idx
        cdef Py_ssize_t p
        cdef Segment *s
        _to_u64(index, "index", &idx)
        p = self._find(idx)
        if p < 0:
            return None
        s = self.segs[p]
        return self._read(s, <size_t>(idx - s.first))

    cdef bint _clamp(self, uint64_t *a, uint64_t *b) noexcept:
        """Narrow [a, b] to the readable indexes; False when none is left."""
        cdef uint64_t lo, hi
        if a[0] > b[0] or not self._bounds(&lo, &hi):
            return False
        if a[0] < lo:
            a[0] = lo
        if a[0] < self._floor:
            a[0] = self._floor
        if b[0] > hi:
            b[0] = hi
        return a[0] <= b[0] and b[0] - a[0] < <uint64_t>0x7FFFFFFFFFFFFFFF

    def get_range(self, start, end):
        """Entries with ``start <= index <= end`` that exist, ascending."""
        cdef uint64_t a0, b0, a, b, a2, b2, idx
        cdef Py_ssize_t p, j, n
        cdef size_t k
        cdef Segment *s
        cdef Entry e
        _to_u64(start, "start", &a0)
        _to_u64(end, "end", &b0)
        while True:
            a = a0
            b = b0
            if not self._clamp(&a, &b):
                return []
            n = <Py_ssize_t>(b - a + 1)
            out = PyList_New(n)
            # Allocating the list may run a garbage collection, hence Python
            # code that lets another thread change the log: look again.
            a2 = a0
            b2 = b0
            if self._clamp(&a2, &b2) and a2 == a and b2 == b:
                break
        p = self._find(a)
        j = 0
        idx = a
        while j < n:
            if p < 0 or p >= self.nsegs:
                raise CorruptionError(f"segment table has no entry {idx}")
            s = self.segs[p]
            k = <size_t>(idx - s.first)
            while k < s.count and j < n:
                e = self._read(s, k)
                Py_INCREF(e)
                PyList_SET_ITEM(out, j, e)
                j += 1
                k += 1
            idx = s.first + k
            p += 1
        return out

    def term_at(self, index):
        """Term of the entry at ``index``, or None."""
        cdef uint64_t idx
        cdef Py_ssize_t p
        cdef Segment *s
        _to_u64(index, "index", &idx)
        p = self._find(idx)
        if p < 0:
            return None
        s = self.segs[p]
        return s.terms[idx - s.first]

    def verify_segment(self, pos):
        """Re-verify every record of segment ``pos``: (FL_OK, end) or (status, bad offset).

        Runs alongside an append (it reads only complete records) but keeps
        the segment from being dropped meanwhile."""
        cdef Segment *s
        cdef size_t k, count, off = 0
        cdef uint32_t seed
        cdef int rc = FL_OK
        cdef fl_record rec
        s = self.segs[self._pos(pos)]
        seed = s.seed
        count = s.count
        self._busy += 1
        with nogil:
            for k in range(count):
                off = <size_t>s.offsets[k]
                rc = fl_decode(s.base, s.size, off, seed, s.first + k, 1, &rec)
                if rc != FL_OK:
                    break
                seed = rec.crc
        self._busy -= 1
        if rc != FL_OK:
            return (rc, off)
        return (FL_OK, s.end)

    # -- frames: records shipped as stored bytes (docs/format.md, "Frame batches") --

    def read_frames(self, start, end):
        """The records start..end (clamped) as a frame batch: the 16-byte batch
        header carrying the chain seed of the first record, then the frames as
        stored.  One copy per segment, straight into the returned bytes."""
        cdef uint64_t a0, b0, a, b
        cdef Py_ssize_t p0 = -1
        cdef size_t total
        cdef uint32_t seed = 0
        cdef Segment *s
        cdef size_t k
        cdef uint8_t *dst
        _to_u64(start, "start", &a0)
        _to_u64(end, "end", &b0)
        while True:
            total = self._frames_measure(a0, b0, &a, &b, &p0)
            out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>(FL_BATCH_HEADER_SIZE + total))
            # Allocating may run a garbage collection, hence Python code that
            # lets another thread change the log: measure again before copying.
            if self._frames_measure(a0, b0, &a, &b, &p0) == total:
                break
        dst = <uint8_t *>PyBytes_AS_STRING(out)
        if total:
            s = self.segs[p0]
            k = <size_t>(a - s.first)
            seed = s.seed if k == 0 else _read_u32(s.base + s.offsets[k - 1])
            # With the GIL held: a writer on another thread waits for the copy
            # (a call marked busy would make it fail instead, see _enter).
            self._frames_span(p0, a, b, dst + FL_BATCH_HEADER_SIZE)
        memcpy(dst, b"FLFR", 4)
        _store_u32(dst + 4, FL_BATCH_VERSION)
        _store_u32(dst + 8, seed)
        _store_u32(dst + 12, 0)
        return out

    cdef size_t _frames_measure(self, uint64_t a0, uint64_t b0, uint64_t *a, uint64_t *b, Py_ssize_t *p) except? 0:
        """Bytes of the records a0..b0 clamped to [a, b], from segment ``p`` on (0: none)."""
        a[0] = a0
        b[0] = b0
        if not self._clamp(a, b):
            return 0
        p[0] = self._find(a[0])
        if p[0] < 0:
            raise CorruptionError(f"segment table has no entry {a[0]}")
        return self._frames_span(p[0], a[0], b[0], NULL)

    cdef size_t _frames_span(self, Py_ssize_t p, uint64_t a, uint64_t b, uint8_t *dst) noexcept:
        """Bytes of the records a..b from segment ``p`` on; copies them to ``dst`` unless NULL."""
        cdef size_t total = 0, lo, stop
        cdef uint64_t idx = a
        cdef Segment *s
        while idx <= b and p < self.nsegs:
            s = self.segs[p]
            if idx - s.first >= s.count:  # an empty segment
                p += 1
                continue
            lo = <size_t>s.offsets[idx - s.first]
            if b - s.first + 1 < s.count:
                stop = <size_t>s.offsets[b - s.first + 1]
            else:
                stop = s.end
            if dst != NULL:
                memcpy(dst + total, s.base + lo, stop - lo)
            total += stop - lo
            idx = s.first + s.count
            p += 1
        return total

    def check_frames(self, frames, seed):
        """Check a run of frames chained from ``seed``: (first index, count, first term, last term).

        The checks and their order are those of fl_frames_check (fastlog_ext/frames.c)."""
        cdef Py_buffer view
        cdef uint32_t sd
        cdef fl_frame_walk w
        cdef int rc
        _to_u32(seed, "seed", &sd)
        _get_buffer(frames, &view, "frames")
        try:
            fl_frames_begin(&w, sd, self._max_payload)
            if <size_t>view.len >= _NOGIL_BYTES:
                with nogil:
                    rc = fl_frames_check(<const uint8_t *>view.buf, <size_t>view.len, &w)
            else:
                rc = fl_frames_check(<const uint8_t *>view.buf, <size_t>view.len, &w)
        finally:
            PyBuffer_Release(&view)
        if rc != FL_FRAMES_OK:
            _raise_frame_error(rc, &w)
        return (w.first_index, w.count, w.first_term, w.last_term)

    cdef int _ready_to_write(self, Segment *seg, size_t need, size_t mapped_v, size_t prep_v, size_t win,
                             bint buffer) except -1:
        """Make the file ready for up to ``need`` bytes of records after the
        last record of ``seg``; 1: store them through the mapping, 0: write
        them with one ``pwrite`` (from ``wbuf``, made large enough when
        ``buffer``).  ``mapped_v``: bytes the caller knows are written.

        One choice for a batch of entries (``append``) and a batch of frames
        (``append_frames``), so frames written by a follower cost what entries
        written by a leader cost: before the first flush zeros ahead and stores
        through the mapping, after it ``pwrite`` with synced zeros kept ahead
        by the zeroer.  A read-only mapping (see load_segment) gets every byte
        with pwrite and no zeros ahead (on copy-on-write filesystems they only
        make each later write a copy that needs new space).  The zeros go at
        and past the last record only: never over one."""
        cdef size_t prepared = 0
        cdef int err = 0
        cdef void *p
        if seg.fd < 0:
            return 1
        if seg.prepared > mapped_v:
            mapped_v = seg.prepared
        if not seg.writable:
            prep_v = 0
            win = 0
            mapped_v = 0
        if prep_v and self.unflushed + need > _PREPARED_LIMIT:
            prep_v = 0  # see _PREPARED_LIMIT; no zeros ahead either (win is a flushed log's)
            win = 0
        if prep_v and (seg.end + need > mapped_v or win):
            # Zeros ahead (the zeroer's thread mostly has them written
            # already), then stores through the mapping.
            if seg.end + need <= mapped_v:
                err = fl_zeroer_reserve(&self.zeroer, <void *>seg, seg.fd, seg.end, seg.end + need, mapped_v,
                                        seg.size, prep_v, win, &prepared)
            else:
                with nogil:
                    err = fl_zeroer_reserve(&self.zeroer, <void *>seg, seg.fd, seg.end, seg.end + need,
                                            mapped_v, seg.size, prep_v, win, &prepared)
            if err:
                raise OSError(err, os.strerror(err))
            seg.prepared = prepared
            mapped_v = prepared
        elif win and self.unflushed + need <= win:
            # Synced zeros ahead of pwrite appends (a flushed log), only within
            # ``win`` bytes of the last flush: they make the next flush cheaper,
            # but past that the records overwrite them before any flush and
            # the writer would only wait for the thread's writes (measured
            # here: 2.9M entries/s against 6.7M without, appending 5M entries
            # of 256 bytes in batches of 1,000 to a flushed log).  The
            # watermark goes up to the batch's end before it is written; that
            # waits only when a zero write of the thread is in flight there.
            if seg.end + need <= seg.prepared and seg.prepared - (seg.end + need) >= win // 2:
                pass  # far from the watermark: nothing to ask yet
            elif seg.end + need <= seg.prepared and self.zeroer.token == <void *>seg:
                seg.prepared = fl_zeroer_advance(&self.zeroer, <void *>seg, seg.fd, seg.end, seg.end + need,
                                                 mapped_v, seg.size, _SYNCED_ZERO_CHUNK, win)
            else:
                with nogil:
                    prepared = fl_zeroer_advance(&self.zeroer, <void *>seg, seg.fd, seg.end, seg.end + need,
                                                 mapped_v, seg.size, _SYNCED_ZERO_CHUNK, win)
                seg.prepared = prepared
        elif self.zeroer.token != NULL:
            # A pwrite append: no zero write may be in flight under it.
            with nogil:
                fl_zeroer_release(&self.zeroer, NULL)
        if seg.end + need <= mapped_v and (prep_v or need <= _SMALL_STORE):
            return 1  # blocks already written: a store costs less than a syscall
        if buffer and need > self.wbuf_cap:
            p = realloc(self.wbuf, need)
            if p == NULL:
                raise MemoryError()
            self.wbuf = <uint8_t *>p
            self.wbuf_cap = need
        return 0

    def append_frames(self, frames, start=0, seed=None, prepare=0, ahead=-1, min_term=0):
        """Write frames from byte ``start`` on after the last record; the byte
        position after the last frame written (``start`` when none fits).

        With ``seed`` (the batch's chain seed at ``start``) every frame from
        ``start`` to the end is checked as by :meth:`check_frames` in the same
        pass that copies the ones that fit, and the frames past the room left
        are checked too: a bad frame anywhere raises and writes nothing, and
        so does a first frame whose term is below ``min_term`` (checked last,
        as Log.append does after the batch's own checks).
        Without it the frames must have passed :meth:`check_frames`.  Each
        frame gets its crc on this log's chain.  ``prepare`` and ``ahead``
        are those of :meth:`append`: where the file is written the same way."""
        cdef Py_buffer view
        cdef const uint8_t *buf
        cdef size_t size, st, room, need, estimate, prep_v = 0, win = 0, fs0
        cdef uint64_t index, expected
        cdef uint32_t sd = 0
        cdef uint64_t floor_term = 0
        cdef bint verify = seed is not None
        cdef bint mapped, in_place
        cdef const uint8_t *src
        cdef Segment *seg
        cdef int rc = FL_FRAMES_OK, err = 0
        cdef fl_frame_walk w
        cdef fl_frame_sink sink
        start = _as_int(start, "start")
        if verify:
            _to_u32(seed, "seed", &sd)
        _to_u64(min_term, "min_term", &floor_term)
        prepare = _as_int(prepare, "prepare")
        if prepare != 0:
            if prepare < 0 or prepare > (1 << 40) or prepare & (prepare - 1):
                raise InvalidEntryError(f"prepare must be 0 or a power of two up to 2**40, got {prepare}")
            prep_v = <size_t>prepare
        ahead = _as_int(ahead, "ahead")
        if ahead < -1 or ahead > (1 << 40):
            raise InvalidEntryError(f"ahead must be -1 or 0..2**40, got {ahead}")
        if self.zero_ahead:
            if ahead >= 0:
                win = <size_t>ahead
            elif prep_v:
                win = self.zero_ahead
        _get_buffer(frames, &view, "frames")
        try:
            buf = <const uint8_t *>view.buf
            size = <size_t>view.len
            if start < 0 or <size_t>start >= size:
                raise InvalidIndexError(f"start {start} outside the frames ({size} bytes)")
            st = <size_t>start
            # From here on no Python code runs (see _enter).
            self._enter("append_frames")
            try:
                if self.nsegs == 0:
                    raise FastlogError("no segment attached")
                seg = self.segs[self.nsegs - 1]
                if not seg.writable and seg.fd < 0:
                    raise FastlogError("the last segment's buffer is read-only")
                if size - st < FL_REC_HEADER_SIZE:
                    raise InvalidEntryError(f"frame 0 at byte {st} is truncated")
                memcpy(&index, buf + st + 8, 8)
                expected = seg.first + seg.count
                if index != expected:
                    raise InvalidIndexError(f"entry {index} does not follow the last index {expected - 1}")
                fl_frames_begin(&w, sd, self._max_payload)
                w.pos = st
                room = seg.size - seg.end
                need = size - st if size - st < room else room
                # Room in the index for the frames that fit, judged by the first
                # one's size (the C pass asks for more when they are smaller).
                fs0 = fl_frame_size(_read_u32(buf + st + 4)) if _read_u32(buf + st + 4) <= FL_MAX_PAYLOAD else need
                estimate = need // fs0 + 1 if fs0 else 1
                _reserve(seg, seg.count + estimate)
                # A follower on the sender's chain writes the sent bytes: they
                # can go to the file with pwrite straight from the caller's
                # buffer, checked where they are, when nobody can change that
                # buffer meanwhile.  That is one copy (the kernel's) against
                # the prepared path's two (zeros, then frames through the
                # mapping): measured here, about twice the entries per second
                # before the first flush.  So no zeros ahead before the first
                # flush; after it the synced window stays, as for append.
                in_place = verify and sd == seg.last_crc and seg.fd >= 0 and _immutable(frames)
                if in_place:
                    if prep_v:
                        win = 0
                    prep_v = 0
                mapped = self._ready_to_write(seg, need, seg.prepared, prep_v, win, not in_place)
                if mapped:
                    in_place = False  # a small batch stored through the mapping
                sink.dst = seg.base + seg.end if mapped else (NULL if in_place else self.wbuf)
                sink.room = need  # what the batch can take of the segment: all made ready above
                sink.written = 0
                sink.file_off = seg.end
                sink.chain = seg.last_crc
                sink.n = 0
                while True:
                    sink.offsets = seg.offsets + seg.count
                    sink.terms = seg.terms + seg.count
                    sink.cap = seg.cap - seg.count
                    if size - st >= _NOGIL_BYTES:
                        with nogil:
                            rc = fl_frames_copy(buf, size, &w, verify, &sink)
                            if rc == FL_FRAMES_NO_ROOM and verify:
                                # The rest goes to later segments: check it now,
                                # before anything is kept.
                                rc = fl_frames_check(buf, size, &w)
                    else:
                        rc = fl_frames_copy(buf, size, &w, verify, &sink)
                        if rc == FL_FRAMES_NO_ROOM and verify:
                            rc = fl_frames_check(buf, size, &w)
                    if rc != FL_FRAMES_NO_SLOTS:
                        break
                    try:
                        _reserve(seg, seg.count + sink.n + sink.n // 2 + 64)
                    except BaseException:
                        if sink.dst != NULL:
                            memset(sink.dst, 0, sink.written)
                        raise
                if rc == FL_FRAMES_NO_ROOM:
                    rc = FL_FRAMES_OK  # not verifying: the rest is for the next segment
                if rc != FL_FRAMES_OK:
                    if rc != FL_FRAMES_EMPTY and sink.dst != NULL:
                        # fl_frames_check failed past the copied part: take it back.
                        memset(sink.dst, 0, sink.written)
                    _raise_frame_error(rc, &w)
                if verify and w.first_term < floor_term:
                    if sink.dst != NULL:
                        memset(sink.dst, 0, sink.written)
                    raise InvalidTermError(f"entry {w.first_index} has term {w.first_term}, "
                                           f"below the term {floor_term} of the entry before it")
                if sink.n == 0:
                    return start
                if not mapped:
                    src = buf + st if in_place else self.wbuf
                    with nogil:
                        err = _pwrite_all(seg.fd, src, sink.written, seg.end)
                    if err:
                        raise OSError(err, os.strerror(err))
                seg.count += sink.n
                seg.end += sink.written
                self.unflushed += sink.written
                seg.last_crc = sink.chain
            finally:
                self._busy -= 1
        finally:
            PyBuffer_Release(&view)
        return <Py_ssize_t>(st + sink.written)

    def index_columns(self, start, end):
        """Copies of start..end (clamped) of the index: (terms, segment first indexes, byte offsets).

        Each is a bytes object of native uint64 values, one per entry."""
        cdef uint64_t a, b, idx
        cdef Py_ssize_t p
        cdef size_t k, j = 0, n, take
        cdef Segment *s
        cdef uint64_t *t_out
        cdef uint64_t *s_out
        cdef uint64_t *o_out
        _to_u64(start, "start", &a)
        _to_u64(end, "end", &b)
        if not self._clamp(&a, &b):
            return (b"", b"", b"")
        n = <size_t>(b - a + 1)
        terms = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>(n * 8))
        firsts = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>(n * 8))
        offs = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>(n * 8))
        # Allocating may run a garbage collection (Python code): clamp again
        # and keep to what both clamps allow.
        if not self._clamp(&a, &b):
            return (b"", b"", b"")
        if <size_t>(b - a + 1) < n:
            n = <size_t>(b - a + 1)
        t_out = <uint64_t *>PyBytes_AS_STRING(terms)
        s_out = <uint64_t *>PyBytes_AS_STRING(firsts)
        o_out = <uint64_t *>PyBytes_AS_STRING(offs)
        p = self._find(a)
        idx = a
        while j < n and 0 <= p < self.nsegs:
            s = self.segs[p]
            k = <size_t>(idx - s.first)
            if k >= s.count:  # an empty segment
                p += 1
                continue
            take = s.count - k
            if take > n - j:
                take = n - j
            memcpy(t_out + j, s.terms + k, take * 8)
            memcpy(o_out + j, s.offsets + k, take * 8)
            for k in range(take):
                s_out[j + k] = s.first
            j += take
            idx = s.first + s.count
            p += 1
        if j * 8 != <size_t>PyBytes_GET_SIZE(terms):
            return (terms[: j * 8], firsts[: j * 8], offs[: j * 8])
        return (terms, firsts, offs)

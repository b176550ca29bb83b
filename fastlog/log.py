"""The synchronous segmented log: files, recovery and policy.

:class:`Log` owns the directory (lock, ``STATE``, segment files) and decides
everything that is policy: when to roll over to a new segment, what a scan
result means on recovery, in which order files are synced and deleted so a
crash always leaves a valid log.  The byte work (framing, checksums, the index
arrays) is done by a core module (compiled or pure Python, see
:mod:`fastlog._impl`); the hot read methods are the core's own methods, bound
onto the instance, so a read costs one C call with the compiled core.

The on-disk format and the crash ordering of every operation are described in
docs/format.md.
"""
from __future__ import annotations

import errno
import fcntl
import mmap
import os
import struct
import threading
import time
import weakref
from types import ModuleType
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from . import _osio, fsinfo
from ._core_api import REC_HEADER_SIZE, SEG_DATA_START
from ._impl import load_core
from ._types import LogId
from .errors import (
    ClosedError,
    CorruptionError,
    EntryTooLargeError,
    EntryTypeError,
    ForkedError,
    InvalidEntryError,
    InvalidIndexError,
    InvalidTermError,
    LockedError,
    PoisonedError,
    StorageFullError,
)
from .recovery import recover
from .recovery import scan_message as _scan_message
from .regular_file import open_regular
from .segment import MAX_SEGMENT_SIZE, Segment, SegmentHeader, encode_segment_header, segment_name
from .smallfile import RECORD_LOG_STATE, read_small_file, write_small_file

if TYPE_CHECKING:
    import numpy

#: Header of a frame batch (docs/format.md, "Frame batches"): magic, version,
#: chain seed of the first frame, reserved (0).
FRAME_BATCH_HEADER = struct.Struct("<4sIII")
FRAME_BATCH_MAGIC = b"FLFR"
FRAME_BATCH_VERSION = 1

__all__ = ["Log", "DEFAULT_SEGMENT_SIZE", "DEFAULT_MAX_ENTRY_SIZE"]

DEFAULT_SEGMENT_SIZE = 64 << 20
DEFAULT_MAX_ENTRY_SIZE = 16 << 20
_MIN_SEGMENT_SIZE = 2 * SEG_DATA_START
_MAX_PAYLOAD_FIELD = (1 << 32) - 1
_PAGE = 4096
STATE_FILE = "STATE"
LOCK_FILE = "LOCK"
_STATE_BODY = struct.Struct("<QBQQQ")  # generation, has_purge, purge index, purge term, reserved
# Until a log is first flushed, appends zero the file ahead of themselves in
# aligned chunks of up to this size and store their frames through the mapping
# (LogCore.append's ``prepare``); a flushed log leaves that to synced zero-ahead.
# Not 2 MiB: aligned 2 MiB writes get 2 MiB page-cache folios, and on a VM whose
# balloon reports free memory to the host those come from blocks the host took
# back, so every page faults in the host first.  Measured in a full `fastlog
# bench` run: 2 MiB chunks gave 1.5M-6.9M entries/s, 1 MiB chunks 8.5M-10.4M.
_PREPARE_CHUNK = 1 << 20


def _check_index(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise EntryTypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0 or value >= 1 << 64:
        raise InvalidIndexError(f"{name} must be in 0..2**64-1, got {value}")
    return int(value)


def _check_options(
    *,
    segment_size: object,
    max_entry_size: object,
    sync: object,
    read_only: object,
    verify_reads: object,
    stop_at_damage: object,
    implementation: object,
    claim_interval: object,
    zero_ahead: object,
) -> None:
    """Refuse bad options when the log is opened, before any file is touched."""
    for name, value in (("segment_size", segment_size), ("max_entry_size", max_entry_size)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise EntryTypeError(f"{name} must be an int, not {type(value).__name__}")
    assert isinstance(segment_size, int) and isinstance(max_entry_size, int)
    if not _MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE or segment_size % _PAGE:
        raise InvalidEntryError(
            f"segment_size must be a multiple of {_PAGE} in {_MIN_SEGMENT_SIZE}..{MAX_SEGMENT_SIZE}, got {segment_size}"
        )
    if not 0 <= max_entry_size <= _MAX_PAYLOAD_FIELD:
        # A record's length field has 32 bits.
        raise InvalidEntryError(f"max_entry_size must be in 0..{_MAX_PAYLOAD_FIELD}, got {max_entry_size}")
    if not isinstance(sync, str):
        raise EntryTypeError(f"sync must be a str, not {type(sync).__name__}")
    if sync not in ("none", "always"):
        raise InvalidEntryError(f"sync must be 'none' or 'always', got {sync!r}")
    for name, value in (
        ("read_only", read_only),
        ("verify_reads", verify_reads),
        ("stop_at_damage", stop_at_damage),
        ("zero_ahead", zero_ahead),
    ):
        if not isinstance(value, bool):
            raise EntryTypeError(f"{name} must be a bool, not {type(value).__name__}")
    if implementation is not None and not isinstance(implementation, str):
        raise EntryTypeError(f"implementation must be a str or None, not {type(implementation).__name__}")
    if isinstance(claim_interval, bool) or not isinstance(claim_interval, (int, float)):
        raise EntryTypeError(f"claim_interval must be a number of seconds, not {type(claim_interval).__name__}")
    if not 0 <= claim_interval < float("inf"):  # also refuses NaN
        raise InvalidEntryError(f"claim_interval must be a finite number of seconds >= 0, got {claim_interval}")
    if stop_at_damage and not read_only:
        raise InvalidEntryError("stop_at_damage needs read_only=True")


# Every open, writable or read-only Log of this process, so a forked child
# can disable them all (see _disable_after_fork).
_open_logs: "weakref.WeakSet[Log]" = weakref.WeakSet()


def _disable_after_fork() -> None:
    for log in list(_open_logs):
        log._forked_away()
    _open_logs.clear()


os.register_at_fork(after_in_child=_disable_after_fork)


class Log:
    """A crash-safe Raft log in a directory of memory-mapped segment files.

    Writers are serialised by an internal lock; reads may run from any thread
    at any time.  ``flush()`` may run in another thread while appends go on
    (group commit builds on that).
    """

    # The hot read methods are bound per instance to the core's methods; these
    # annotations document them.
    entry: Any
    get_entries: Any

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        max_entry_size: int = DEFAULT_MAX_ENTRY_SIZE,
        sync: str = "none",
        read_only: bool = False,
        verify_reads: bool = False,
        stop_at_damage: bool = False,
        implementation: Optional[str] = None,
        claim_interval: float = 0.05,
        zero_ahead: bool = True,
        mapped_stores: Optional[bool] = None,
    ) -> None:
        _check_options(
            segment_size=segment_size,
            max_entry_size=max_entry_size,
            sync=sync,
            read_only=read_only,
            verify_reads=verify_reads,
            stop_at_damage=stop_at_damage,
            implementation=implementation,
            claim_interval=claim_interval,
            zero_ahead=zero_ahead,
        )
        if mapped_stores is not None and not isinstance(mapped_stores, bool):
            raise EntryTypeError(f"mapped_stores must be a bool or None, not {type(mapped_stores).__name__}")

        self._path = os.path.abspath(os.fspath(path))
        self._segment_size = segment_size
        capacity = segment_size - SEG_DATA_START - REC_HEADER_SIZE
        self._max_payload = min(max_entry_size, capacity - (capacity % 8))
        self._sync_always = sync == "always"
        self._read_only = read_only
        self._stop_at_damage = stop_at_damage
        self._core_module: ModuleType = load_core(implementation)
        self._crc32c = self._core_module.crc32c
        self.Entry = self._core_module.Entry
        self._core = self._core_module.LogCore(self._max_payload, verify_reads)
        self._segments: List[Segment] = []
        # Writers (append, truncate, purge, reset) and flush snapshots hold _wlock.
        # _sync_lock serialises flushes; it is always taken before _wlock, never
        # after.  An fsync runs on duplicated descriptors with neither lock held
        # over it, so appends go on while it runs (group commit) and a segment
        # may be dropped meanwhile without pulling the descriptor away.
        self._wlock = threading.RLock()
        self._sync_lock = threading.Lock()
        self._trunc_low: Optional[int] = None  # lowest truncation point since the last flush snapshot
        # The synced_end claim in the active segment's header is refreshed at most
        # this often: each refresh dirties the header page, which costs the next
        # fsync a second page write.  close() always makes the claims exact.
        self._claim_interval = claim_interval
        self._last_claim_time = 0.0
        # How far the core's zeroer thread keeps zeros ahead of the writer:
        # unsynced before the first flush, written and synced after it
        # (LogCore.append's ``ahead``; fastlog_ext/fl_zeroer.h).
        self._zero_ahead_window = 0 if (read_only or not zero_ahead) else 4 << 20
        self._prepare = _PREPARE_CHUNK  # 0 once flushed: unsynced zeros would slow each fsync
        self._mapped_stores = False  # decided below, once the directory exists
        self._closed = True
        self._poisoned: Optional[BaseException] = None
        self._dir_dirty = False
        self._durable_index = 0
        self._generation = 1
        self._boundary: Optional[LogId] = None
        #: Set when a read-only open with ``stop_at_damage`` stopped early.
        self.damage: Optional[CorruptionError] = None
        self._lock_fd = -1
        self._pid = os.getpid()
        self._forked = False

        if read_only:
            if not os.path.isdir(self._path):
                raise FileNotFoundError(errno.ENOENT, "no such log directory", self._path)
        else:
            os.makedirs(self._path, exist_ok=True)
            # Stores through the mappings only where they can never need a new
            # block (fastlog/fsinfo.py); elsewhere every byte goes with pwrite,
            # and zeroing ahead would only make each later write a copy.
            if mapped_stores is None:
                mapped_stores = fsinfo.stores_in_place(self._path)
            self._mapped_stores = bool(mapped_stores)
            if not self._mapped_stores:
                self._zero_ahead_window = 0
                self._prepare = 0
        self._take_lock()
        try:
            self._load_state()
            recover(self)
        except OSError as exc:
            self._release_all()
            raise _storage_full(exc, "open the log (cutting a torn tail)", self._path)
        except BaseException:
            self._release_all()
            raise
        self._closed = False
        self._bind_reads()
        _open_logs.add(self)

    # ------------------------------------------------------------------ open
    def _take_lock(self) -> None:
        lock_path = os.path.join(self._path, LOCK_FILE)
        flags = os.O_RDONLY if self._read_only else os.O_RDWR | os.O_CREAT
        try:
            fd = open_regular(lock_path, flags, 0o644)
        except FileNotFoundError:
            fd = os.open(self._path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self._read_only else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockedError(f"log directory {self._path} is already open") from None
        self._lock_fd = fd

    def _load_state(self) -> None:
        body = read_small_file(self._path, STATE_FILE, RECORD_LOG_STATE)
        if body is None:
            self._generation = 1
            self._boundary = None
            if not self._read_only:
                self._save_state()
            return
        if len(body) != _STATE_BODY.size:
            raise CorruptionError("log state has the wrong size", os.path.join(self._path, STATE_FILE), 24)
        gen, has_purge, pidx, pterm, _ = _STATE_BODY.unpack(body)
        self._generation = gen
        self._boundary = LogId(index=pidx, term=pterm) if has_purge else None

    def _save_state(self) -> None:
        b = self._boundary
        body = _STATE_BODY.pack(self._generation, 1 if b else 0, b.index if b else 0, b.term if b else 0, 0)
        write_small_file(self._path, STATE_FILE, RECORD_LOG_STATE, body)

    def _remove_file(self, path: str) -> None:
        if self._read_only:
            return
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        self._dir_dirty = True

    def _bind_reads(self) -> None:
        # Bound C methods: no Python frame between the caller and the core.
        self.entry = self._core.get
        self.get_entries = self._core.get_range

    # ------------------------------------------------------------ segments
    def _last_stored(self) -> int:
        return self._core.last_index() if self._segments else 0

    def _drop_first(self) -> None:
        seg = self._segments.pop(0)
        self._core.drop_first_segment()
        seg.close()
        self._remove_file(seg.path)

    def _drop_last(self) -> None:
        seg = self._segments.pop()
        self._core.drop_last_segment()
        seg.close()
        self._remove_file(seg.path)

    def _drop_all(self) -> None:
        while self._segments:
            self._drop_last()  # last first: a crash leaves a prefix of the log

    def _new_segment(self, first_index: int, prev_crc: int) -> None:
        path = os.path.join(self._path, segment_name(first_index))
        if os.path.exists(path):
            os.unlink(path)  # cannot be live: live segments are attached
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            try:
                # Blocks zero-filled instead of reserved promise nothing on some
                # filesystems: such a segment is never stored to through its mapping.
                reserved = _osio.fallocate(fd, self._segment_size) is not False
                hdr = SegmentHeader(self._generation, first_index, prev_crc, SEG_DATA_START)
                _osio.pwrite_all(fd, encode_segment_header(hdr, self._crc32c), 0)
            except OSError as exc:
                raise _storage_full(exc, f"preallocate a {self._segment_size}-byte segment", path)
            # The header (and the file's name) are durable before any record is
            # written here, so a zero header over records is damage on recovery.
            try:
                _osio.fdatasync(fd)
                _osio.fsync_dir(self._path)
            except OSError as exc:
                self._poison(exc)
                raise
            mapped = self._mapped_stores and reserved
            mm = mmap.mmap(fd, self._segment_size, access=mmap.ACCESS_WRITE if mapped else mmap.ACCESS_READ)
        except BaseException:
            os.close(fd)
            try:
                os.unlink(path)
            except OSError:
                pass
            raise
        seg = Segment(path, fd, mm, self._segment_size, hdr)
        seg.dirty = True
        try:
            self._core.load_segment(mm, first_index, prev_crc, SEG_DATA_START, fresh=True, fd=fd)
        except BaseException:
            seg.close()
            os.unlink(path)
            raise
        self._segments.append(seg)
        self._dir_dirty = True

    def _write_claim(self, pos: int, seg: Segment, synced_end: int) -> None:
        hdr = SegmentHeader(
            seg.header.generation, seg.header.first_index, seg.header.prev_crc, synced_end, seg.header.data_start
        )
        self._core.write_at(pos, 0, encode_segment_header(hdr, self._crc32c))
        seg.header = hdr
        seg.claim_written = synced_end
        seg.header_dirty = True

    # ---------------------------------------------------------------- state
    def _check_open(self) -> None:
        if self._pid != os.getpid() and not self._forked:
            self._forked_away()  # a fork that did not run the at-fork hooks
        if self._closed:
            raise self._unusable()

    def _unusable(self) -> Exception:
        if self._forked:
            return ForkedError(
                f"log {self._path} was opened by process {self._pid}; this process ({os.getpid()}) is a fork of it"
            )
        return ClosedError(f"log {self._path} is closed")

    def _forked_away(self) -> None:
        """In a forked child: refuse every call and let go of nothing the parent uses.

        Runs in the child right after fork (os.register_at_fork), when only the
        forking thread exists: locks held by other threads stay held forever, so
        none is taken.  The child's copies of the descriptors are closed (the
        parent's lock and files are untouched by that: flock locks belong to the
        open file, which the parent still holds); the mappings go with the object.
        """
        if self._closed and not self._forked:
            return
        self._forked = True
        self._closed = True
        self._bind_closed()
        self._zero_ahead = None  # its thread does not exist here
        fds = [seg.fd for seg in self._segments] + [self._lock_fd]
        for seg in self._segments:
            seg.fd = -1
        self._lock_fd = -1
        for fd in fds:
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _check_writable(self) -> None:
        self._check_open()
        if self._read_only:
            raise PermissionError(errno.EROFS, "log is open read-only", self._path)
        if self._poisoned is not None:
            raise PoisonedError(f"an earlier write or flush failed: {self._poisoned!r}") from self._poisoned

    def _poison(self, exc: BaseException) -> None:
        if self._poisoned is None:
            self._poisoned = exc

    # ---------------------------------------------------------------- API
    @property
    def path(self) -> str:
        return self._path

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def implementation(self) -> str:
        return self._core_module.IMPLEMENTATION

    def last_index(self) -> int:
        """Highest index: the last stored one or the purge boundary, whichever is higher."""
        if self._closed:
            raise self._unusable()
        last = self._core.last_index() if self._segments else 0
        b = self._boundary
        return b.index if b is not None and b.index > last else last

    def first_index(self) -> int:
        """Lowest readable index, or 0 when no entry is readable."""
        if self._closed:
            raise self._unusable()
        return self._core.first_index() if self._segments else 0

    def term_at(self, index: int) -> Optional[int]:
        """Term of the entry at ``index``; the purge boundary's term at the boundary."""
        if self._closed:
            raise self._unusable()
        term = self._core.term_at(index)
        if term is None:
            b = self._boundary
            if b is not None and index == b.index:
                return b.term
        return term

    def purge_boundary(self) -> Optional[LogId]:
        self._check_open()
        return self._boundary

    load_purge_boundary = purge_boundary

    def durable_index(self) -> int:
        """Every entry up to this index is known durable."""
        self._check_open()
        return min(self._durable_index, self.last_index())

    def is_write_durable(self) -> bool:
        self._check_open()
        return self._sync_always

    def append(self, entries: Sequence[Any]) -> None:
        """Append a batch of consecutive entries.

        A first index at or below ``last_index()`` replaces the existing suffix
        from there (as in Raft).  Bad input raises and changes nothing.
        """
        if not isinstance(entries, (list, tuple)):
            if isinstance(entries, (str, bytes, bytearray)) or not hasattr(entries, "__iter__"):
                raise EntryTypeError(f"entries must be a sequence of Entry, not {type(entries).__name__}")
            entries = list(entries)
        if not entries:
            self._check_writable()
            return
        with self._wlock:
            self._check_writable()
            head = entries[0]
            self._check_term_follows(head)
            plain = bool(self._segments) and self._is_plain_append(head)
            try:
                self._append_locked(entries, head.index if plain else None)
            except OSError as exc:
                raise _storage_full(exc, "append", self._path)
        if self._sync_always:
            self.flush()

    def _append_locked(self, entries: Sequence[Any], plain_first: Optional[int]) -> None:
        """Append under the write lock; ``plain_first`` when known to be a plain append."""
        core = self._core
        if plain_first is not None:
            # A plain append: core.append validates the whole batch itself
            # before it writes anything.
            first = plain_first
        else:
            first = core.check_batch(entries)
            self._make_room_for(first)
        n = len(entries)
        pos = self._append_to_last(entries, 0) if self._segments else 0
        if pos < n:
            if pos:
                # This segment may not be the last one once the batch rolls over:
                # mark it now or the next flush would skip its new records.
                self._segments[-1].dirty = True
            try:
                while pos < n:
                    self._roll_over(first if not self._segments else None)
                    new_pos = self._append_to_last(entries, pos)
                    if new_pos == pos:
                        raise EntryTooLargeError(f"entry {pos} does not fit in an empty segment")
                    pos = new_pos
            except OSError:
                # A full disk, or a directory that refuses a new file (EROFS,
                # EACCES, EIO): take back the part that fitted, so the batch is
                # all or nothing.
                if pos:
                    self._truncate_locked(first)
                raise
        self._segments[-1].dirty = True

    def append_next(self, entries: Sequence[Any]) -> bool:
        """Append ``entries`` if they plainly continue the log; else do nothing.

        True when the batch (a non-empty list or tuple) starts at
        ``last_index() + 1`` of a log with readable entries: it is then
        appended (or refused with the usual errors) exactly as by
        :meth:`append`.  False when :meth:`append` would have more to do
        (replace a suffix, start an empty log afresh): nothing is changed and
        the caller decides where to run it -- the async engine keeps plain
        appends on the event loop and sends the rest to its worker thread.
        """
        if type(entries) is not list and type(entries) is not tuple or not entries:
            return False
        with self._wlock:
            self._check_writable()
            head = entries[0]
            if not self._is_plain_append(head):
                return False
            self._check_term_follows(head)
            try:
                if self._segments:
                    self._append_locked(entries, head.index)
                else:
                    self._append_locked(entries, None)  # validates, then starts the first segment
            except OSError as exc:
                raise _storage_full(exc, "append", self._path)
        if self._sync_always:
            self.flush()
        return True

    def _check_term_follows(self, head: Any) -> None:
        """A batch must not start below the term of the entry before it (Raft
        terms never decrease along a log); the core checks within the batch."""
        if type(head) is not self.Entry or head.index < 2:
            return  # the core or _make_room_for gives the error
        prev = self._core.term_at(head.index - 1)
        if prev is None:
            b = self._boundary
            if b is None or b.index != head.index - 1:
                return
            prev = b.term
        if head.term < prev:
            raise InvalidTermError(f"entry {head.index} has term {head.term}, below the term {prev} of the entry before it")

    def _is_plain_append(self, head: Any) -> bool:
        """Whether appending from ``head`` only writes: no truncation, no file deleted."""
        if type(head) is not self.Entry:
            return False
        core = self._core
        if not self._segments:  # an empty log: only a new segment file to create
            return head.index == self.last_index() + 1 and head.index > 0
        return head.index == core.last_index() + 1 and head.index > core.floor()

    def _append_to_last(self, entries: Sequence[Any], pos: int) -> int:
        seg = self._segments[-1]
        new_pos = self._core.append(entries, pos, 0, self._prepare, self._zero_ahead_window)
        seg.write_end = self._core.segment_info(-1)[2]
        return new_pos

    def _make_room_for(self, first: int) -> None:
        # Runs under _wlock, before anything is written.
        b = self._boundary
        if first == 0:
            raise InvalidIndexError("index 0 is reserved; entries start at 1")
        if b is not None and first <= b.index:
            raise InvalidIndexError(f"index {first} is at or below the purge boundary {b.index}")
        if not self._segments:
            return
        if self._core.first_index() == 0:
            self._drop_all_durably()  # only purged entries left: start afresh
            return
        last = self._core.last_index()
        if first > last + 1:
            raise InvalidIndexError(f"batch starts at {first} but the log ends at {last}: a gap")
        if first <= last:
            self._truncate_locked(first)

    def _roll_over(self, first: Optional[int]) -> None:
        """Start a new segment after the last one (or the first one at ``first``)."""
        if first is not None:
            self._new_segment(first, 0)
            return
        seg_first, count, _, last_crc = self._core.segment_info(-1)
        self._new_segment(seg_first + count, last_crc)

    def truncate(self, from_index: int) -> None:
        """Remove every entry with index >= ``from_index``."""
        from_index = _check_index("from_index", from_index)
        with self._wlock:
            self._check_writable()
            b = self._boundary
            if b is not None and from_index <= b.index:
                raise InvalidIndexError(f"cannot truncate at {from_index}: at or below the purge boundary {b.index}")
            self._truncate_locked(from_index)
        if self._sync_always:
            self.flush()

    def _note_truncation(self, from_index: int) -> None:
        if self._durable_index >= from_index:
            self._durable_index = max(0, from_index - 1)
        if self._trunc_low is None or from_index < self._trunc_low:
            self._trunc_low = from_index

    def _truncate_locked(self, from_index: int) -> None:
        if not self._segments or from_index > self._core.last_index():
            return
        first_visible = self._core.first_index()
        if first_visible == 0 or from_index <= first_visible:
            self._drop_all_durably()
            return
        # The segment that ends up last, and where it is cut.
        pos = len(self._segments) - 1
        while self._segments[pos].first_index >= from_index:
            pos -= 1
        seg = self._segments[pos]
        seg_first, count, seg_end, _ = self._core.segment_info(pos)
        cut = self._core.record_offset(from_index) if from_index < seg_first + count else seg_end
        # First of all, the header must stop claiming the bytes to be removed.
        # Lowering a claim is always safe (recovery only treats damage below a
        # claim as corruption), so a failure here has changed nothing: a full
        # disk raises StorageFullError and leaves the log usable.
        if cut < seg.claim_on_disk_at_most():
            try:
                self._write_claim(pos, seg, cut)
            except OSError as exc:
                if not _is_full(exc):
                    self._poison(exc)
                raise _storage_full(exc, "lower a segment's durable claim before a truncation", seg.path)
            try:
                _osio.fdatasync(seg.fd)
            except BaseException as exc:
                self._poison(exc)
                raise _storage_full(exc, "sync a segment header", seg.path) if isinstance(exc, OSError) else exc
            seg.claim_synced = cut
            seg.header_dirty = False
        self._note_truncation(from_index)
        try:
            dropped = False
            while len(self._segments) - 1 > pos:
                self._drop_last()
                dropped = True
            if dropped:
                # Deleted segments must be gone before the cut below can leave a gap.
                _osio.fsync_dir(self._path)
                self._dir_dirty = False
            cut, old_end = self._core.truncate(from_index)
            seg.write_end = cut
            seg.epoch += 1
            # Poisons when it fails: the removed records are still on disk, and a
            # reopen would find them again, so nothing more may be appended after
            # the cut.  Without mapped stores it frees whole blocks instead of
            # rewriting them (LogCore.zero), which needs no new space.
            self._core.zero(pos, cut, old_end)
            seg.dirty = True
        except BaseException as exc:
            self._poison(exc)
            raise _storage_full(exc, "truncate", self._path) if isinstance(exc, OSError) else exc

    def _drop_all_durably(self) -> None:
        if not self._segments:
            return
        self._note_truncation(0)
        try:
            self._drop_all()
            _osio.fsync_dir(self._path)
            self._dir_dirty = False
        except BaseException as exc:
            self._poison(exc)
            raise

    def purge(self, cutoff: LogId) -> None:
        """Remove every entry with index <= ``cutoff.index`` and persist the boundary."""
        if not isinstance(cutoff, LogId):
            raise EntryTypeError(f"cutoff must be a LogId, not {type(cutoff).__name__}")
        if cutoff.index >= (1 << 64) - 1:
            # The read floor is the boundary + 1, which must fit in 64 bits.
            raise InvalidIndexError(f"cannot purge up to index {cutoff.index}: the largest purge boundary is 2**64-2")
        b = self._boundary
        if b is None or cutoff.index > b.index:
            # The new boundary is durable as soon as STATE is written; the entries
            # it lies among must be durable first, or a crash could pair it with
            # the entries of an earlier, unflushed state (e.g. before a replace).
            self.flush()
        with self._wlock:
            self._check_writable()
            b = self._boundary
            if b is not None and cutoff.index <= b.index:
                return
            try:
                self._boundary = cutoff
                self._save_state()
            except BaseException as exc:
                self._boundary = b
                # No space for the new STATE: it was never renamed into place,
                # so nothing changed on disk and the log stays usable.
                if not isinstance(exc, StorageFullError):
                    self._poison(exc)
                raise
            if self._segments:
                self._core.set_floor(cutoff.index + 1)
                while self._segments:
                    first, count, _, _ = self._core.segment_info(0)
                    if count and first + count - 1 > cutoff.index:
                        break
                    self._drop_first()
                if self._segments and self._core.first_index() == 0:
                    self._drop_all()
            else:
                self._core.set_floor(cutoff.index + 1)

    def reset(self) -> None:
        """Empty the log and forget the purge boundary (the hard state is not touched)."""
        with self._wlock:
            self._check_writable()
            old = (self._generation, self._boundary)
            try:
                self._generation += 1
                self._boundary = None
                self._save_state()
            except BaseException as exc:
                self._generation, self._boundary = old
                if not isinstance(exc, StorageFullError):  # as in purge
                    self._poison(exc)
                raise
            self._note_truncation(0)
            self._drop_all()
            self._core.set_floor(0)
            try:
                _osio.fsync_dir(self._path)
            except BaseException as exc:
                self._poison(exc)
                raise
            self._dir_dirty = False

    def flush(self) -> int:
        """Make everything appended so far durable; return the durable index.

        Thread-safe: appends may continue in other threads while the fsync runs.
        A failed fsync poisons the log (later writes raise PoisonedError): the
        kernel may have dropped the dirty pages, so nothing can be promised.
        """
        with self._sync_lock:
            with self._wlock:
                self._check_open()
                if self._read_only:
                    return self._durable_index
                if self._poisoned is not None:
                    raise PoisonedError(f"an earlier write or flush failed: {self._poisoned!r}") from self._poisoned
                targets = []
                try:
                    for pos, seg in enumerate(self._segments):
                        if seg.dirty or seg.header_dirty:
                            _, _, end, _ = self._core.segment_info(pos)
                            targets.append((seg, os.dup(seg.fd), end, seg.claim_written, seg.epoch))
                            seg.dirty = False
                            seg.header_dirty = False
                except BaseException:
                    for t in targets:
                        os.close(t[1])
                    raise
                dir_dirty = self._dir_dirty
                self._dir_dirty = False
                last = self._last_stored()
                self._trunc_low = None
            try:
                for t in targets:
                    _osio.fdatasync(t[1])
                if dir_dirty:
                    _osio.fsync_dir(self._path)
                zero_error = self._core.zero_ahead_error()
                if zero_error:
                    # The zeroer's own sync failed: the page cache may have dropped
                    # pages of this log, so nothing can be promised any more.
                    raise OSError(zero_error, f"sync of zeros ahead failed: {os.strerror(zero_error)}")
            except BaseException as exc:
                self._poison(exc)
                raise _storage_full(exc, "sync the log", self._path) if isinstance(exc, OSError) else exc
            finally:
                for t in targets:
                    os.close(t[1])
            now = time.monotonic()
            claimed = False
            with self._wlock:
                for seg, _, end, claim, epoch in targets:
                    if seg.epoch != epoch or seg not in self._segments:
                        continue  # truncated or dropped meanwhile: its claim was handled there
                    seg.claim_synced = max(seg.claim_synced, claim)
                    if end > seg.claim_written and (
                        now - self._last_claim_time >= self._claim_interval or seg is not self._segments[-1]
                    ):
                        # Lazily durable: reaches the disk with this segment's next sync.
                        try:
                            self._write_claim(self._segments.index(seg), seg, end)
                        except OSError as exc:
                            if not _is_full(exc):
                                self._poison(exc)
                                raise
                            # No space to rewrite the header (a copy-on-write
                            # filesystem): the data is durable, and the claim
                            # is only a lower bound of it, so go without.
                            continue
                        claimed = True
                if claimed:
                    self._last_claim_time = now
                if self._trunc_low is not None:
                    last = min(last, self._trunc_low - 1)
                if last > self._durable_index:
                    self._durable_index = last
                if targets:
                    self._prepare = 0  # from now on the zeroer syncs what it writes ahead
                return self._durable_index

    def verify(self) -> List[CorruptionError]:
        """Re-verify the checksum of every stored record; return the damage found.

        Safe beside writers in other threads: each segment is verified under
        the writer lock (a writer waits for at most one segment), so a write
        never meets the core busy verifying and the segment list cannot change
        under a segment's check.  Segments dropped meanwhile are skipped."""
        found: List[CorruptionError] = []
        after = -1  # first index of the segment verified last
        while True:
            with self._wlock:
                self._check_open()
                pos = next((p for p, s in enumerate(self._segments) if s.first_index > after), None)
                if pos is None:
                    return found
                seg = self._segments[pos]
                status, offset = self._core.verify_segment(pos)
            after = seg.first_index
            if status != 0:
                found.append(CorruptionError(_scan_message(status, "record fails verification"), seg.path, offset))

    def segments(self) -> List[Dict[str, Any]]:
        """A description of every attached segment (for tools and tests)."""
        self._check_open()
        out = []
        with self._wlock:  # a consistent list, whatever writers do meanwhile
            attached = list(enumerate(self._segments))
            infos = [self._core.segment_info(pos) for pos, _ in attached]
        for (pos, seg), info in zip(attached, infos):
            first, count, end, last_crc = info
            out.append(
                {
                    "path": seg.path,
                    "first_index": first,
                    "last_index": first + count - 1 if count else None,
                    "count": count,
                    "end": end,
                    "size": seg.size,
                    "synced_end": seg.claim_written,
                    "prev_crc": seg.header.prev_crc,
                    "last_crc": last_crc,
                    "generation": seg.header.generation,
                }
            )
        return out

    @property
    def generation(self) -> int:
        self._check_open()
        return self._generation

    # ---------------------------------------------------------------- close
    def close(self) -> None:
        """Flush (unless poisoned or read-only), make the durable claims exact and close."""
        if self._closed:
            return
        try:
            if not self._read_only and self._poisoned is None:
                with self._wlock:
                    self._last_claim_time = float("-inf")
                    for pos, seg in enumerate(self._segments):
                        if self._core.segment_info(pos)[2] > seg.claim_written:
                            seg.dirty = True  # sync it so its claim can be brought up to date
                self.flush()
                if any(s.header_dirty for s in self._segments):
                    self.flush()  # the claims written by the first flush
        finally:
            with self._sync_lock, self._wlock:
                if not self._closed:
                    self._closed = True
                    self._release_all()
                    self._bind_closed()
                    _open_logs.discard(self)

    def _release_all(self) -> None:
        # Dropping a segment from the core waits for a zero write in flight to
        # its file (at most one); nothing else here can wait on the zeroer.
        while self._segments:
            seg = self._segments.pop()
            self._core.drop_last_segment()
            seg.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _bind_closed(self) -> None:
        def closed(*_args: Any, **_kw: Any) -> Any:
            raise self._unusable()

        self.entry = closed
        self.get_entries = closed

    def __enter__(self) -> "Log":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        # Never flush from a finaliser; just let go of maps, files and the lock.
        try:
            if not self._closed and self._pid == os.getpid():  # a forked child lets go of nothing
                self._closed = True
                self._release_all()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.first_index()}..{self.last_index()}"
        return f"<fastlog.Log {self._path!r} {state} ({self.implementation})>"


    # ------------------------------------------------------------ frames
    def read_frames(self, start: int, end: int) -> bytes:
        """The records ``start..end`` (clamped to what exists) as stored, in one buffer.

        The buffer is a frame batch (docs/format.md, "Frame batches"): a
        16-byte header carrying the chain seed of the first frame, then the
        frames byte for byte.  :meth:`append_frames` of any log takes it.
        """
        start = _check_index("start", start)
        end = _check_index("end", end)
        if self._closed:
            raise self._unusable()
        seed, frames = self._core.read_frames(start, end)
        return FRAME_BATCH_HEADER.pack(FRAME_BATCH_MAGIC, FRAME_BATCH_VERSION, seed, 0) + frames

    def append_frames(self, batch: Any) -> None:
        """Append a frame batch made by :meth:`read_frames` (of this or another log).

        Every frame is checked on the chain the batch declares (CRC, kind,
        reserved bytes, length, consecutive indexes, terms that never
        decrease, none below the term of the entry before the first) before
        anything is written; then each is written as it is, its CRC recomputed
        on this log's chain.  As with :meth:`append`, a first index at or below
        ``last_index()`` replaces the suffix from there, and a bad batch raises
        and changes nothing.  An empty batch (no frames) does nothing.
        """
        try:
            view = memoryview(batch).cast("B")
        except TypeError:
            raise EntryTypeError(f"a frame batch must be a bytes-like object, not {type(batch).__name__}") from None
        with view:
            if len(view) < FRAME_BATCH_HEADER.size:
                raise InvalidEntryError(f"a frame batch is at least {FRAME_BATCH_HEADER.size} bytes, got {len(view)}")
            magic, version, seed, reserved = FRAME_BATCH_HEADER.unpack_from(view, 0)
            if magic != FRAME_BATCH_MAGIC or version != FRAME_BATCH_VERSION or reserved:
                raise InvalidEntryError("not a frame batch of format version 1 (bad magic, version or reserved field)")
            frames = view[FRAME_BATCH_HEADER.size :]
            if not len(frames):
                self._check_writable()
                return
            with self._wlock:
                self._check_writable()
                core = self._core
                first, count, first_term, _last_term = core.check_frames(frames, seed)
                if first > 1:
                    prev = self.term_at(first - 1)
                    if prev is not None and first_term < prev:
                        raise InvalidTermError(
                            f"entry {first} has term {first_term}, below the term {prev} of the entry before it"
                        )
                try:
                    self._append_frames_locked(frames, first)
                except OSError as exc:
                    raise _storage_full(exc, "append", self._path)
        if self._sync_always:
            self.flush()

    def _append_frames_locked(self, frames: memoryview, first: int) -> None:
        # The frame counterpart of _append_locked: room first, then the last
        # segment, then new segments; a failure takes the written part back.
        self._make_room_for(first)
        core = self._core
        n = len(frames)
        pos = 0
        if self._segments:
            pos = core.append_frames(frames, 0)
            self._segments[-1].write_end = core.segment_info(-1)[2]
        if pos < n:
            if pos:
                self._segments[-1].dirty = True
            try:
                while pos < n:
                    self._roll_over(first if not self._segments else None)
                    new_pos = core.append_frames(frames, pos)
                    self._segments[-1].write_end = core.segment_info(-1)[2]
                    if new_pos == pos:
                        raise EntryTooLargeError(f"the frame at byte {pos} does not fit in an empty segment")
                    pos = new_pos
            except OSError:
                if pos:
                    self._truncate_locked(first)
                raise
        self._segments[-1].dirty = True

    def terms(self, start: int, end: int) -> "numpy.ndarray":
        """Terms of the entries ``start..end`` (clamped), a uint64 array (a copy).

        ``terms(a, b)[i]`` is the term of entry ``a' + i`` where ``a'`` is
        ``max(a, first_index())``; compare it with a leader's terms to find the
        first index where two logs differ.
        """
        import numpy

        return numpy.frombuffer(bytearray(self._index_columns(start, end)[0]), dtype=numpy.uint64)

    def offsets(self, start: int, end: int) -> "numpy.ndarray":
        """Where the entries ``start..end`` (clamped) are stored: an (n, 2) uint64 array (a copy).

        Row ``i`` is (first index of the segment holding the entry, which is
        also its file name, ``segment_name(row[0])``; byte offset of the
        record's frame in that file).  Offsets restart in each segment.
        """
        import numpy

        _terms, segs, offs = self._index_columns(start, end)
        out = numpy.empty((len(segs) // 8, 2), dtype=numpy.uint64)
        out[:, 0] = numpy.frombuffer(segs, dtype=numpy.uint64)
        out[:, 1] = numpy.frombuffer(offs, dtype=numpy.uint64)
        return out

    def _index_columns(self, start: int, end: int) -> Any:
        start = _check_index("start", start)
        end = _check_index("end", end)
        if self._closed:
            raise self._unusable()
        return self._core.index_columns(start, end)


def _is_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _storage_full(exc: OSError, what: str, path: str) -> OSError:
    """``exc`` as a StorageFullError when it says the disk (or a quota) is full."""
    if isinstance(exc, StorageFullError) or not _is_full(exc):
        return exc
    full = StorageFullError(exc.errno, f"no space left to {what}: {exc.strerror}", path)
    full.__cause__ = exc
    return full

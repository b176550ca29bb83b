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

import bisect
import errno
import fcntl
import mmap
import os
import struct
import threading
import time
import weakref
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union, overload

from . import _osio, fsinfo
from ._core_api import REC_HEADER_SIZE, SEG_DATA_START
from ._impl import load_core
from ._types import MAX_INDEX, LogId
from .errors import (
    ClosedError,
    CorruptionError,
    EntryNotFoundError,
    EntryTooLargeError,
    EntryTypeError,
    ForkedError,
    InvalidEntryError,
    InvalidIndexError,
    InvalidTermError,
    LockedError,
    LogChangedError,
    PoisonedError,
    StorageFullError,
    ViewChangedError,
)
from .recovery import recover
from .recovery import scan_message as _scan_message
from .regular_file import open_regular
from .segment import (
    MAX_SEGMENT_SIZE,
    Segment,
    SegmentHeader,
    decode_segment_header,
    encode_segment_header,
    segment_name,
)
from .smallfile import RECORD_LOG_STATE, read_small_file, write_small_file

if TYPE_CHECKING:
    from ._types import Entry
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
# A read-only open takes no lock, so a writer in another process may change the
# directory while it runs.  Damage it meets is reported only when it is seen
# again, the same, over a directory that did not change in between; each retry
# waits a little longer (the writer's next step is a syscall or two away).
_VIEW_ATTEMPTS = 8
_VIEW_RETRY_PAUSE = 0.002
# What a record's crc covers besides its payload: length, index, term, kind, reserved.
_FRAME_FIELDS = struct.Struct("<IQQB7x")
_CRC_FIELD = struct.Struct("<I")
_FRAME_INDEX = struct.Struct("<Q")  # the index field of a frame header, at byte 8


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
    #: ``entry(i)``: the entry at index ``i``, or None when missing, purged or truncated.
    entry: Callable[[int], Optional[Entry]]
    #: ``get_entries(start, end)``: the entries with ``start <= index <= end`` that exist, ascending.
    get_entries: Callable[[int, int], List[Entry]]

    def __init__(
        self,
        path: str | os.PathLike[str],
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
        # A read-only view verifies every read: its index is a snapshot of files
        # a live writer may change under it (see _bind_reads).
        self._verify_reads = verify_reads or read_only
        self._core = self._core_module.LogCore(self._max_payload, self._verify_reads)
        self._segments: List[Segment] = []
        self._view_firsts: List[int] = []  # a read-only view's segment first indexes
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
        # A first segment made ready at open for an empty log (see _make_spare).
        self._spare: Optional[Tuple[int, int, SegmentHeader, bool]] = None
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
            if read_only:
                self._open_view()
            else:
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
        if not read_only and not self._segments:
            self._make_spare()

    # ------------------------------------------------------------------ open
    def _take_lock(self) -> None:
        """The writer's exclusive lock on ``LOCK``; a read-only open takes none.

        Readers never lock: any lock a reader held would be one a writer
        could not take (a node could not restart while an operator inspects
        it).  Two writers still exclude each other.
        """
        if self._read_only:
            return
        lock_path = os.path.join(self._path, LOCK_FILE)
        fd = open_regular(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockedError(f"log directory {self._path} is already open") from None
        self._lock_fd = fd

    def _open_view(self) -> None:
        """Recovery for a read-only open, beside a writer that may be running.

        A writer in another process may append, roll over, truncate, purge or
        reset while the files are listed, their headers read and their records
        scanned, so what looks like damage may be a step of the writer seen
        half way: a segment deleted after the listing, a ``synced_end`` claim
        read just before the writer lowered it for a truncation and then the
        zeros below it, a ``STATE`` newer or older than the segments.  Damage
        (or a vanished file) is therefore only believed when a second look
        finds the same damage over a directory (``STATE`` and every segment
        header) that did not change while the look was taken; otherwise the
        view is opened again, a bounded number of times.  A log nobody writes
        reports its damage after two scans, as it always did.
        """
        seen: Optional[Tuple[Any, ...]] = None
        failure: Optional[BaseException] = None
        for attempt in range(_VIEW_ATTEMPTS):
            before = self._directory_fingerprint()
            failure = None
            try:
                self._load_state()
                recover(self)
            except (CorruptionError, FileNotFoundError) as exc:
                failure = exc
            if failure is None and self.damage is None:
                return
            after = self._directory_fingerprint()
            found = failure if failure is not None else self.damage
            outcome = (type(found), str(found), after)
            if attempt == _VIEW_ATTEMPTS - 1 or (before == after and outcome == seen):
                break
            seen = outcome
            self._reset_view()
            time.sleep(_VIEW_RETRY_PAUSE * (attempt + 1))
        if failure is not None:
            raise failure

    def _directory_fingerprint(self) -> Tuple[Any, ...]:
        """What a writer changes at each step a reader could see half way:
        ``STATE`` and the name and header of every segment file."""
        def head(name: str, size: int) -> bytes:
            try:
                fd = os.open(os.path.join(self._path, name), os.O_RDONLY | os.O_NONBLOCK)
            except OSError:
                return b""
            try:
                return os.pread(fd, size, 0)
            except OSError:
                return b""
            finally:
                os.close(fd)

        try:
            names = sorted(os.listdir(self._path))
        except OSError:
            names = []
        return (head(STATE_FILE, 256),) + tuple((n, head(n, 64)) for n in names if n.endswith(".seg"))

    def _reset_view(self) -> None:
        """Forget a read-only open's attempt, to make another."""
        while self._segments:
            seg = self._segments.pop()
            self._core.drop_last_segment()
            seg.close()
        self._core = self._core_module.LogCore(self._max_payload, self._verify_reads)
        self.damage = None
        self._generation = 1
        self._boundary = None

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
        if self._read_only:
            self._view_firsts = [seg.first_index for seg in self._segments]
            self.entry = self._view_entry
            self.get_entries = self._view_entries
            return
        # Bound C methods: no Python frame between the caller and the core.
        self.entry = self._core.get
        self.get_entries = self._core.get_range

    # A read-only view's index (offsets and terms) is a snapshot of the open;
    # the mappings show the files as they are now.  Each read is verified (the
    # record's checksum against its chain, its index), and its term must still
    # be the one the snapshot holds: two Raft entries with the same index and
    # term are the same entry, so a record that passes both is the entry the
    # view promised, even if a writer rewrote it since.  Anything else is
    # ViewChangedError, never other data.  The core verifies the record in
    # the mapping and then copies it, and a writer may rewrite it in between,
    # so the copy itself is checked again (_copied_whole).
    def _view_entry(self, index: int) -> Any:
        core = self._core
        try:
            e = core.get(index)
        except CorruptionError as exc:
            raise self._view_changed(index, exc) from exc
        if e is not None and (e.term != core.term_at(index) or not self._copied_whole(e)):
            raise self._view_changed(index, None)
        return e

    def _view_entries(self, start: int, end: int) -> List[Any]:
        core = self._core
        try:
            found = core.get_range(start, end)
        except CorruptionError as exc:
            raise self._view_changed(None, exc) from exc
        term_at = core.term_at
        for e in found:
            if e.term != term_at(e.index) or not self._copied_whole(e):
                raise self._view_changed(e.index, None)
        return found

    def _copied_whole(self, e: Any) -> bool:
        """Whether entry ``e``, as copied out of the mapping, is a whole record:
        its checksum, computed over the copy, equals the crc in the file
        (read after the copy).  A copy torn by a writer's store fails this."""
        index = e.index
        core = self._core
        seg = self._segments[bisect.bisect_right(self._view_firsts, index) - 1]
        mm = seg.mm
        if index == seg.first_index:
            seed = seg.header.prev_crc
        else:
            seed = _CRC_FIELD.unpack_from(mm, core.record_offset(index - 1))[0]
        payload = bytes(e.payload)
        crc = self._crc32c(_FRAME_FIELDS.pack(len(payload), index, e.term, int(e.kind)) + payload, seed)
        return bool(crc == _CRC_FIELD.unpack_from(mm, core.record_offset(index))[0])

    def _view_changed(self, index: Optional[int], cause: Optional[CorruptionError]) -> ViewChangedError:
        what = f"entry {index}" if index is not None else "an entry of the range"
        why = f" ({cause})" if cause is not None else " (it carries another term now)"
        return ViewChangedError(
            f"{what} no longer reads back as when this read-only view was opened{why}: a writer "
            "removed or rewrote it since (or the file was damaged); open a new view",
            cause.path if cause is not None else self._path,
            cause.offset if cause is not None else None,
        )

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

    def _create_segment_file(
        self, first_index: int, prev_crc: int, poison: bool = True
    ) -> Tuple[int, SegmentHeader, bool]:
        """Create, preallocate and head a segment file; its header is durable on return.

        Returns (fd, header, reserved): ``reserved`` is False where preallocation
        fell back to writing zeros (such a segment is never stored to through its
        mapping).  The header is synced before any record is written into the
        file, so a zero header over records is damage on recovery.  The file's
        name becomes durable with the next flush's directory sync, which comes
        before any of its records is acknowledged.  A failed sync poisons the
        log when ``poison`` (as every failed sync does).
        """
        path = os.path.join(self._path, segment_name(first_index))
        if os.path.exists(path):
            os.unlink(path)  # cannot be live: live segments are attached
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            try:
                reserved = _osio.fallocate(fd, self._segment_size) is not False
                hdr = SegmentHeader(self._generation, first_index, prev_crc, SEG_DATA_START)
                _osio.pwrite_all(fd, encode_segment_header(hdr, self._crc32c), 0)
            except OSError as exc:
                raise _storage_full(exc, f"preallocate a {self._segment_size}-byte segment", path)
            try:
                _osio.fdatasync(fd)
            except OSError as exc:
                if poison:
                    self._poison(exc)
                raise
        except BaseException:
            os.close(fd)
            try:
                os.unlink(path)
            except OSError:
                pass
            raise
        self._dir_dirty = True
        return fd, hdr, reserved

    def _make_spare(self) -> None:
        """Ready the first segment of an empty log at the index a plain append
        would start at, so the first append does not wait for a preallocation
        and its sync.  Only advice: on any failure the first append creates the
        segment itself (and reports the error then).  A spare left behind by a
        crash holds no record and is deleted by the next open."""
        first = self.last_index() + 1
        if first >= MAX_INDEX:
            return
        try:
            fd, hdr, reserved = self._create_segment_file(first, 0, poison=False)
        except OSError:
            return
        self._spare = (first, fd, hdr, reserved)

    def _drop_spare(self, unlink: bool = True) -> None:
        spare, self._spare = self._spare, None
        if spare is None:
            return
        os.close(spare[1])
        if unlink:
            try:
                os.unlink(os.path.join(self._path, segment_name(spare[0])))
            except OSError:
                pass

    def _new_segment(self, first_index: int, prev_crc: int) -> None:
        path = os.path.join(self._path, segment_name(first_index))
        spare = self._spare
        if spare is not None and spare[0] == first_index and spare[2].prev_crc == prev_crc and (
            spare[2].generation == self._generation
        ):
            self._spare = None
            _, fd, hdr, reserved = spare
        else:
            self._drop_spare()
            fd, hdr, reserved = self._create_segment_file(first_index, prev_crc)
        try:
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
        if self._spare is not None:
            fds.append(self._spare[1])
            self._spare = None
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

    def append(self, entries: Sequence[Entry]) -> None:
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
        pos = 0
        if self._segments:
            pos = self._append_to_last(entries, 0)
            if pos == n:  # the common case, kept short: it runs once per batch
                self._segments[-1].dirty = True
                return
        self._write_rolling(first, n, lambda pos: self._append_to_last(entries, pos), "entry", pos)

    def _write_rolling(self, first: int, n: int, write: Callable[[int], int], unit: str,
                       written: Optional[int] = None) -> None:
        """Write positions 0..n of a batch starting at index ``first``: the rest of
        the last segment, then new segments.  ``write(pos)`` writes from ``pos``
        into the last segment and returns the position after what fitted;
        ``written``: the caller already wrote positions below it that way."""
        if written is not None:
            pos = written
        else:
            pos = write(0) if self._segments else 0
        if pos < n:
            if pos:
                # This segment may not be the last one once the batch rolls over:
                # mark it now or the next flush would skip its new records.
                self._segments[-1].dirty = True
            try:
                while pos < n:
                    self._roll_over(first if not self._segments else None)
                    new_pos = write(pos)
                    if new_pos == pos:
                        raise EntryTooLargeError(f"the {unit} at {pos} does not fit in an empty segment")
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
        # This runs once per write of the async engine's writers: the checks of
        # _check_writable are inlined (the common case costs no extra call).
        with self._wlock:
            if self._pid != os.getpid() or self._closed or self._read_only or self._poisoned is not None:
                self._check_writable()
            head = entries[0]
            if not self._is_plain_append(head):
                return False
            segments = self._segments
            if not segments or segments[-1].first_index == head.index:
                # The entry before lies outside the last segment; otherwise
                # the core's append checks its term.
                self._check_term_follows(head)
            try:
                # Without segments: validates, then starts the first one.
                self._append_locked(entries, head.index if segments else None)
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
        new_pos: int = self._core.append(entries, pos, 0, self._prepare, self._zero_ahead_window)
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
                    self._core.note_flushed()
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
            if status != 0 and self._read_only and self._changed_by_writer(seg, offset):
                continue
            if status != 0:
                found.append(CorruptionError(_scan_message(status, "record fails verification"), seg.path, offset))

    def _changed_by_writer(self, seg: Segment, offset: int) -> bool:
        """Whether a record of a read-only view that fails verification now
        was changed by a writer since the open, rather than damaged.

        A writer only ever rewrites or zeroes bytes at or past a segment's
        ``synced_end`` claim, and lowers the claim (on disk, synced) before it
        cuts below it.  So a failure below the claim this view loaded, in a
        segment whose header on disk is still the one the view loaded, is
        damage; anything else is a live log moving on.
        """
        if offset >= seg.header.synced_end:
            return True
        try:
            with open(open_regular(seg.path, os.O_RDONLY), "rb") as f:
                raw = f.read(64)
            return decode_segment_header(raw, self._crc32c, seg.path) != seg.header
        except (OSError, CorruptionError):
            return True  # deleted, or being rewritten: no longer this view's file

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
        # An unused spare goes while the directory lock is still held.
        self._drop_spare()
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

    # ------------------------------------------------------- Python access
    # Keys are Raft indexes, not positions: log[1] is the entry at index 1
    # (Raft's first), and slices are half-open ranges of indexes.  There is
    # no "from the end" reading of a negative key: no entry ever has one.
    def __len__(self) -> int:
        """Number of readable entries: ``first_index()`` to the last stored index."""
        first = self.first_index()
        return self._last_stored() - first + 1 if first else 0

    def __bool__(self) -> bool:
        # An open log is a resource, not a value: an empty one is still truthy.
        return True

    @overload
    def __getitem__(self, key: int) -> Entry: ...

    @overload
    def __getitem__(self, key: slice) -> List[Entry]: ...

    def __getitem__(self, key: Union[int, slice]) -> Union[Entry, List[Entry]]:
        """``log[i]``: the entry at index ``i`` (EntryNotFoundError, an IndexError, when
        there is none); ``log[a:b]``: the entries with ``a <= index < b`` that exist."""
        if isinstance(key, slice):
            start, stop = _slice_bounds(key)
            return self.get_entries(start, stop - 1) if stop > start else []
        if isinstance(key, bool) or not isinstance(key, int):
            raise EntryTypeError(f"log keys are int indexes or slices, not {type(key).__name__}")
        if key < 0 or key > MAX_INDEX:
            raise EntryNotFoundError(f"no entry at index {key}: keys are Raft indexes (from 1), not positions")
        found = self.entry(key)
        if found is None:
            raise EntryNotFoundError(f"no entry at index {key} (readable: {self._readable()})")
        return found

    def __contains__(self, item: object) -> bool:
        """True when ``item`` is an entry equal to the one stored at its index."""
        index = getattr(item, "index", None)
        if type(index) is not int or index < 0 or index > MAX_INDEX:
            return False
        return self.entry(index) == item

    def __iter__(self) -> Iterator[Entry]:
        """Every entry readable now, in index order, read a chunk at a time."""
        return self.iter_entries()

    def iter_entries(
        self, start: Optional[int] = None, end: Optional[int] = None, *, chunk: int = 1024
    ) -> Iterator[Entry]:
        """The entries with ``start <= index <= end`` (inclusive, as :meth:`get_entries`),
        ascending, read ``chunk`` entries at a time so a long range is never held whole.

        ``start`` defaults to the first readable index and ``end`` to the last
        index stored *now*: entries appended later are not waited for.  The
        log may change while the iterator is suspended: a truncation below the
        next index ends it early; a change that removed or replaced the entry
        it handed out last (truncate, replace, reset), or a purge past the
        next index, raises :class:`~fastlog.errors.LogChangedError` instead of
        handing out entries of another history.  Bad arguments raise at once.
        """
        chunks = self.iter_chunks(start, end, chunk=chunk)
        return (entry for batch in chunks for entry in batch)

    def iter_chunks(
        self, start: Optional[int] = None, end: Optional[int] = None, *, chunk: int = 1024
    ) -> Iterator[List[Entry]]:
        """:meth:`iter_entries` a list at a time (each of at most ``chunk`` entries)."""
        self._check_open()
        first = 0 if start is None else _check_index("start", start)
        first = max(first, self.first_index())  # full chunks from the first readable entry on
        last = self._last_stored() if end is None else _check_index("end", end)
        if isinstance(chunk, bool) or not isinstance(chunk, int):
            raise EntryTypeError(f"chunk must be an int, not {type(chunk).__name__}")
        if chunk < 1:
            raise InvalidEntryError(f"chunk must be at least 1, got {chunk}")
        return self._read_chunks(first, last, chunk)

    def _read_chunks(self, pos: int, end: int, chunk: int) -> Iterator[List[Entry]]:
        handed: Optional[Entry] = None  # the last entry handed out
        while pos <= end:
            if handed is not None:
                if not self._still_holds(handed):
                    raise LogChangedError(
                        f"entry {handed.index} (term {handed.term}) was truncated or replaced"
                        " while the log was being read"
                    )
                b = self._boundary
                if b is not None and b.index >= pos:
                    raise LogChangedError(
                        f"entries from {pos} to {b.index} were purged while the log was being read"
                    )
            want = min(end - pos, chunk - 1)
            batch = self.get_entries(pos, pos + want)
            if not batch:
                return  # truncated below pos: the log ends here
            yield batch
            if batch[-1].index < pos + want:
                return  # the log ended inside this chunk
            handed = batch[-1]
            pos = handed.index + 1

    def _still_holds(self, entry: Entry) -> bool:
        # Raft's log matching: the same (index, term) means the same entry and
        # the same history before it.  An entry purged since was committed, so
        # the entries after it still continue it.
        b = self._boundary
        if b is not None and entry.index <= b.index:
            return True
        return self.term_at(entry.index) == entry.term

    def _readable(self) -> str:
        first = self.first_index()
        return f"{first}..{self._last_stored()}" if first else "none"

    async def __aenter__(self) -> "Log":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        # close() flushes: keep the fsync off the event loop.
        import asyncio

        await asyncio.to_thread(self.close)

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
        batch: bytes = self._core.read_frames(start, end)
        return batch

    def append_frames(self, batch: Any) -> None:
        """Append a frame batch made by :meth:`read_frames` (of this or another log).

        Every frame is checked on the chain the batch declares (CRC, kind,
        reserved bytes, length, consecutive indexes, terms that never
        decrease, none below the term of the entry before the first) before
        anything is kept; then each is written as it is, its CRC recomputed
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
                try:
                    self._append_frames_locked(frames, seed)
                except OSError as exc:
                    raise _storage_full(exc, "append", self._path)
        if self._sync_always:
            self.flush()

    def _append_frames_locked(self, frames: memoryview, seed: int) -> None:
        # The frame counterpart of _append_locked.  A batch that plainly
        # continues the log is checked by the core in the pass that copies it
        # (all or nothing: a bad frame anywhere writes nothing); any other is
        # checked whole first, since making room for it may truncate.
        core = self._core
        first = _first_frame_index(frames)
        plain = first is not None and bool(self._segments) and first == core.last_index() + 1 and first > core.floor()
        if plain:
            assert first is not None
            min_term = self._term_before(first)
        else:
            first, _count, first_term, _last_term = core.check_frames(frames, seed)
            min_term = self._term_before(first)
            if first_term < min_term:
                raise InvalidTermError(
                    f"entry {first} has term {first_term}, below the term {min_term} of the entry before it"
                )
            self._make_room_for(first)
        # Once the log is flushed, frames keep no synced zeros ahead (append
        # does): measured here, batches of 10,000 frames into a flushed log ran
        # at 7.6M entries/s without them and 3.5M/s with them.
        prepare = self._prepare
        window = self._zero_ahead_window if prepare else 0

        def write(pos: int) -> int:
            # Only the first call of a plain append checks, and it checks the
            # whole batch; later calls continue it in new segments.
            if plain and pos == 0:
                new_pos: int = core.append_frames(frames, 0, seed, prepare, window, min_term)
            else:
                new_pos = core.append_frames(frames, pos, None, prepare, window)
            return new_pos

        self._write_rolling(first, len(frames), write, "frame at byte")

    def _term_before(self, first: int) -> int:
        """The term of the entry before index ``first`` (0 when there is none to compare)."""
        if first < 2:
            return 0
        prev = self.term_at(first - 1)
        return 0 if prev is None else prev

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


def _first_frame_index(frames: memoryview) -> Optional[int]:
    """The index in the first frame's header, or None when there is no whole header."""
    if len(frames) < 32:
        return None
    index: int = _FRAME_INDEX.unpack_from(frames, 8)[0]
    return index


def _slice_bounds(key: slice) -> "tuple[int, int]":
    """The half-open index range ``[start, stop)`` of ``log[start:stop]``."""
    if key.step is not None and key.step != 1:
        raise InvalidIndexError(f"log slices take no step (got {key.step!r}): they are ranges of indexes")
    return _slice_bound("start", key.start, 0), _slice_bound("stop", key.stop, MAX_INDEX + 1)


def _slice_bound(name: str, value: object, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise EntryTypeError(f"slice {name} must be an int index, not {type(value).__name__}")
    if value < 0:
        raise InvalidIndexError(f"slice {name} must not be negative (keys are Raft indexes), got {value}")
    return min(int(value), MAX_INDEX + 1)


def _is_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _storage_full(exc: OSError, what: str, path: str) -> OSError:
    """``exc`` as a StorageFullError when it says the disk (or a quota) is full."""
    if isinstance(exc, StorageFullError) or not _is_full(exc):
        return exc
    full = StorageFullError(exc.errno, f"no space left to {what}: {exc.strerror}", path)
    full.__cause__ = exc
    return full

"""Recovery: what the segment files on disk mean when a log is opened.

Opening a log lists the segment files, reads and checks their headers, scans
every record and decides, for wherever a scan stops, whether that is a torn
write that was never made durable (cut off and zeroed) or damage to data known
durable (:class:`~fastlog.errors.CorruptionError`).  Segments left over from a
reset, a purge or an interrupted creation are deleted.  The rules are in
docs/format.md ("Recovery"); the write path, which never reads any of this
back, stays in :mod:`fastlog.log`.
"""
from __future__ import annotations

import mmap
import os
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

from . import _osio
from ._core_api import FL_ERR_ZERO, SEG_DATA_START
from .errors import CorruptionError
from .file_extents import data_ranges
from .regular_file import open_regular
from .segment import MAX_SEGMENT_SIZE, Segment, SegmentHeader, decode_segment_header, parse_segment_name

if TYPE_CHECKING:  # pragma: no cover
    from .log import Log

__all__ = ["recover", "list_segment_files", "read_header", "open_segment", "scan_message"]

_ZERO_CHUNK = 1 << 16


def list_segment_files(dir_path: str, read_only: bool) -> List[Tuple[int, str]]:
    """``(first index, path)`` of every segment file, sorted; a writable open
    also deletes ``*.tmp`` leftovers of interrupted small-file saves."""
    found = []
    for name in os.listdir(dir_path):
        if name.endswith(".tmp") and not read_only:
            try:
                os.unlink(os.path.join(dir_path, name))
            except FileNotFoundError:
                pass
            continue
        first = parse_segment_name(name)
        if first is not None:
            found.append((first, os.path.join(dir_path, name)))
    found.sort()
    return found


def read_header(path: str, crc32c) -> Optional[SegmentHeader]:
    """The verified header, or None when the header is all zero (or the file is
    shorter than a header and all zero: created, but not yet preallocated)."""
    with open(open_regular(path, os.O_RDONLY), "rb") as f:
        raw = f.read(64)
    if raw == bytes(len(raw)):
        return None
    return decode_segment_header(raw, crc32c, path)


def holds_data_past_header(path: str) -> bool:
    """Whether any byte after the header page of ``path`` is non-zero."""
    fd = open_regular(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        for begin, stop in data_ranges(fd, SEG_DATA_START, size):
            while begin < stop:
                chunk = os.pread(fd, min(stop - begin, _ZERO_CHUNK), begin)
                if not chunk:
                    return False
                if chunk.count(0) != len(chunk):
                    return True
                begin += len(chunk)
        return False
    finally:
        os.close(fd)


def open_segment(path: str, hdr: SegmentHeader, read_only: bool, mapped_stores: bool = False) -> Segment:
    fd = open_regular(path, os.O_RDONLY if read_only else os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        if size < hdr.data_start:
            raise CorruptionError("segment is shorter than its data start", path, size)
        if size > MAX_SEGMENT_SIZE:
            raise CorruptionError(
                f"segment is {size} bytes, more than the largest segment size {MAX_SEGMENT_SIZE}", path, size
            )
        # Read-only opens map privately so nothing can ever reach the file;
        # without mapped stores the mapping is only read (a stray store
        # would be a crash, never a silent write).
        if read_only:
            access = mmap.ACCESS_COPY
        else:
            access = mmap.ACCESS_WRITE if mapped_stores else mmap.ACCESS_READ
        mm = mmap.mmap(fd, size, access=access)
    except BaseException:
        os.close(fd)
        raise
    return Segment(path, fd, mm, size, hdr)


def recover(log: "Log") -> None:
    """Attach the segments of ``log``'s directory to its core, applying the
    recovery rules; leaves ``log`` holding exactly the entries that survive."""
    files = list_segment_files(log._path, log._read_only)
    headers: List[tuple] = []
    stale: List[str] = []
    for i, (first, path) in enumerate(files):
        hdr = read_header(path, log._crc32c)
        if hdr is None and holds_data_past_header(path):
            # A new segment's header is synced before any record is written
            # into it, so records behind a zero header mean the header was lost.
            _damage(log, CorruptionError("segment header is zero but the segment holds data", path, 0))
            break  # (read-only, stop_at_damage) the log ends before this segment
        if hdr is None:
            # Crashed while this segment was being created: its header never
            # reached the disk, so neither did anything after it -- unless a
            # later segment claims durable data.
            for _, later_path in files[i + 1 :]:
                later = read_header(later_path, log._crc32c)
                if later is not None and later.generation >= log._generation and later.synced_end > later.data_start:
                    raise CorruptionError("segment header is zero but later segments hold durable data", path, 0)
            stale.extend(p for _, p in files[i:])
            break
        if hdr.generation < log._generation:
            stale.append(path)  # left over from a reset
            continue
        if hdr.generation > log._generation:
            raise CorruptionError(
                f"segment generation {hdr.generation} is newer than the log's {log._generation}", path, 16
            )
        if hdr.first_index != first:
            raise CorruptionError(f"header first index {hdr.first_index} does not match the file name", path, 24)
        headers.append((hdr, path))
    for path in reversed(stale):
        log._remove_file(path)

    # Whole segments at or below the purge boundary are leftovers of a purge.
    if log._boundary is not None:
        limit = log._boundary.index
        while len(headers) > 1 and headers[1][0].first_index <= limit + 1:
            log._remove_file(headers.pop(0)[1])
    if headers:
        hdr, path = headers[0]
        # A segment's prev_crc is 0 when it starts a log (or a generation) and
        # the previous segment's last CRC otherwise: then the entries before it
        # must either be covered by the purge boundary or be in a segment file
        # that is missing.
        if hdr.prev_crc != 0 and (log._boundary is None or hdr.first_index > log._boundary.index + 1):
            start = 1 if log._boundary is None else log._boundary.index + 1
            _damage(
                log,
                CorruptionError(
                    f"entries {start}..{hdr.first_index - 1} are missing: the segment file before this one is gone",
                    path,
                    32,
                ),
            )
            headers = []

    core = log._core
    for i, (hdr, path) in enumerate(headers):
        if log._segments:
            first, count, end, last_crc = core.segment_info(-1)
            if hdr.first_index != first + count or hdr.prev_crc != last_crc:
                # The chain breaks here: what follows was never made durable.
                _cut_after(log, headers[i:], log._segments[-1].path, end)
                break
        seg = open_segment(path, hdr, log._read_only, log._mapped_stores)
        # A read-only log passes its file too, though it never writes: the core
        # then asks the file system where the tail can hold data instead of
        # reading every page of it (seconds for a sparse multi-GiB segment).
        res = core.load_segment(seg.mm, hdr.first_index, hdr.prev_crc, hdr.data_start, fd=seg.fd)
        log._segments.append(seg)
        clean = res.status == FL_ERR_ZERO and not res.nonzero_after
        if res.end < hdr.synced_end:
            _damage(log, CorruptionError(scan_message(res.status, "durable data is damaged"), path, res.end))
            break
        if not clean:
            # A torn write in data that was never synced: cut it (and all after it).
            _cut_after(log, headers[i + 1 :], path, res.end)
            if not log._read_only:
                _zero_tail(log, seg, len(log._segments) - 1, res.end)
            break

    if log._boundary is not None:
        core.set_floor(log._boundary.index + 1)
        # The first segment may now hold only purged entries.
        while log._segments:
            first, count, _, _ = core.segment_info(0)
            if count and first + count - 1 > log._boundary.index:
                break
            if len(log._segments) == 1 and not count:
                break
            log._drop_first()
    if log._segments and core.first_index() == 0:
        # Nothing readable is left: an empty log starts afresh at any index.
        log._drop_all()
    if log._dir_dirty and not log._read_only:
        _osio.fsync_dir(log._path)
        log._dir_dirty = False
    log._durable_index = log._last_stored()


def _damage(log: "Log", err: CorruptionError) -> None:
    if log._stop_at_damage:
        log.damage = err
        return
    raise err


def _cut_after(log: "Log", later: Sequence[tuple], path: str, offset: int) -> None:
    """Drop the segments in ``later`` (never durable) -- unless one claims durable data."""
    for hdr, _ in later:
        if hdr.synced_end > hdr.data_start:
            _damage(log, CorruptionError("the log breaks off here but a later segment holds durable data", path, offset))
            return
    for _, later_path in reversed(later):
        log._remove_file(later_path)
    if later and not log._read_only:
        _osio.fsync_dir(log._path)
        log._dir_dirty = False


def _zero_tail(log: "Log", seg: Segment, pos: int, start: int) -> None:
    """Zero every non-zero chunk from ``start`` to the end of the segment, then sync."""
    mm = seg.mm
    off = start
    while off < seg.size:
        end = min(seg.size, (off // _ZERO_CHUNK + 1) * _ZERO_CHUNK)
        if mm[off:end].count(0) != end - off:
            log._core.zero(pos, off, end)
        off = end
    _osio.fdatasync(seg.fd)


def scan_message(status: int, default: str) -> str:
    """The words for a core scan status (the FL_ERR_* codes)."""
    return {
        1: "record runs past the end of the segment",
        2: "record has bad reserved bytes or kind",
        3: "record has an unexpected index",
        4: "record checksum mismatch",
        5: "data ends early",
    }.get(status, default)

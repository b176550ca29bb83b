"""Offline tools for a log directory: ``fastlog verify | repair | inspect | dump``.

Every tool reads the directory through :class:`fastlog.log.Log` opened
read-only (so it applies exactly the recovery rules of docs/format.md and
never changes a file) plus the segment-header and small-file codecs; only
:func:`repair` writes, and only after it has said what it will drop.

The tools take the directory lock (shared for reading, exclusive for repair),
so they refuse to run on a directory a live store has open.

Library use::

    from fastlog import tools
    report = tools.verify("/var/lib/raft/log")
    if not report.ok:
        plan = tools.plan_repair("/var/lib/raft/log")
        print(plan.describe())
        tools.repair("/var/lib/raft/log", plan)
"""
from __future__ import annotations

import argparse
import base64
import errno
import fcntl
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from . import _osio
from ._core_api import SEG_DATA_START, SEG_HEADER_SIZE
from ._impl import load_core
from ._types import EntryKind
from .errors import CorruptionError, FastlogError, LockedError, ViewChangedError
from .log import LOCK_FILE, STATE_FILE, Log
from .meta import HARD_STATE_FILE, FileMetaStore
from .segment import SegmentHeader, decode_segment_header, encode_segment_header, parse_segment_name

__all__ = [
    "NotALogError",
    "require_log_directory",
    "SegmentReport",
    "VerifyReport",
    "RepairPlan",
    "verify",
    "plan_repair",
    "repair",
    "inspect",
    "dump",
    "register",
]

EXIT_OK = 0
EXIT_DAMAGED = 1
EXIT_UNUSABLE = 2  # bad options, no such directory, not a log, in use, or the user said no
EXIT_NOT_IN_LOG = 3  # dump: none of the requested entries is in the log


# ---------------------------------------------------------------------------
# what a log directory is
# ---------------------------------------------------------------------------


class NotALogError(FastlogError):
    """The path exists but is not a fastlog log directory; nothing was read or changed."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"not a fastlog log directory: {path} ({reason})")


def require_log_directory(path: "str | os.PathLike[str]") -> str:
    """The absolute path of ``path`` if it is a fastlog log directory, else raise.

    A log directory holds segment files or a ``STATE`` file that starts with
    the state-file magic (a STATE damaged after its magic still counts: that
    is damage to report, not a stranger's directory).  Every log fastlog
    creates writes its STATE before anything else, so an empty directory, or
    one holding other files only, was never a log.  Raises FileNotFoundError
    for a missing path and :class:`NotALogError` for anything else.
    """
    from .smallfile import MAGIC

    path = os.path.abspath(os.fspath(path))
    if not os.path.lexists(path):
        raise FileNotFoundError(errno.ENOENT, "no such directory", path)
    if not os.path.isdir(path):
        raise NotALogError(path, "it is a file, not a directory")
    names = os.listdir(path)
    if any(parse_segment_name(name) is not None for name in names):
        return path
    if STATE_FILE in names:
        try:
            with open(os.path.join(path, STATE_FILE), "rb") as f:
                head = f.read(len(MAGIC))
        except IsADirectoryError:
            head = b""
        if head == MAGIC:
            return path
        raise NotALogError(path, f"its {STATE_FILE} file is not a fastlog log state and it has no segment files")
    if not [n for n in names if n != LOCK_FILE]:
        raise NotALogError(path, "it is empty")
    raise NotALogError(path, f"it holds no {STATE_FILE} file and no segment files")


# ---------------------------------------------------------------------------
# verify
# ---------------------------------------------------------------------------


@dataclass
class SegmentReport:
    """What verification found in one segment file."""

    name: str
    size: int
    first_index: Optional[int] = None
    last_index: Optional[int] = None
    count: int = 0
    end: Optional[int] = None  # offset just past the last valid record
    synced_end: Optional[int] = None
    generation: Optional[int] = None
    status: str = "ok"  # ok | torn tail | unsynced | stale | damaged | ignored
    detail: str = ""

    def line(self) -> str:
        rng = "-" if self.first_index is None else (
            f"{self.first_index}..{self.last_index}" if self.count else f"{self.first_index} (empty)"
        )
        where = "" if self.end is None else f" end={self.end} synced_end={self.synced_end}"
        extra = f": {self.detail}" if self.detail else ""
        return f"{self.name}  {rng}  {self.count} entries{where}  [{self.status}]{extra}"


@dataclass
class VerifyReport:
    """The result of :func:`verify`: ``ok`` is False when durable data is damaged."""

    path: str
    segments: List[SegmentReport] = field(default_factory=list)
    state: str = "missing"
    hard_state: str = "missing"
    damage: List[CorruptionError] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    first_index: int = 0
    last_index: int = 0

    @property
    def ok(self) -> bool:
        return not self.damage

    def lines(self) -> List[str]:
        out = [f"log directory {self.path}"]
        out.append(f"  STATE: {self.state}")
        out.append(f"  HARDSTATE: {self.hard_state}")
        for seg in self.segments:
            out.append("  " + seg.line())
        for note in self.notes:
            out.append(f"  note: {note}")
        for err in self.damage:
            out.append(f"  DAMAGE: {err}")
        if self.ok:
            out.append(f"OK: every checksum verifies (entries {self.first_index}..{self.last_index})")
        else:
            out.append(f"DAMAGED: {len(self.damage)} problem(s); `fastlog repair` can cut the log before the first one")
        return out


def _segment_files(path: str) -> List[Tuple[int, str]]:
    found = []
    for name in os.listdir(path):
        first = parse_segment_name(name)
        if first is not None:
            found.append((first, name))
    found.sort()
    return found


def _read_raw_header(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read(SEG_HEADER_SIZE)


def _check_small_files(path: str, report: VerifyReport) -> None:
    from .smallfile import RECORD_LOG_STATE, read_small_file

    try:
        body = read_small_file(path, STATE_FILE, RECORD_LOG_STATE)
        report.state = "missing (a new log)" if body is None else "ok"
    except CorruptionError as exc:
        report.state = f"DAMAGED ({exc})"
        report.damage.append(exc)
    try:
        hs = FileMetaStore(path).load_hard_state()
        report.hard_state = "missing" if hs is None else f"ok ({_hard_state_text(hs)})"
    except CorruptionError as exc:
        report.hard_state = f"DAMAGED ({exc})"
        report.damage.append(exc)


def _hard_state_text(hs: Any) -> str:
    if hs is None:
        return "none"
    vote = hs.voted_for
    if vote is None:
        return f"term {hs.current_term}, no vote"
    state = "committed" if vote.committed else "not committed"
    return f"term {hs.current_term}, voted for {vote.voted_for_id} in term {vote.voted_for_term} ({state})"


def verify(path: str, *, implementation: Optional[str] = None) -> VerifyReport:
    """Check every checksum of the log at ``path`` without changing anything.

    Damage to durable data (what reopening would refuse with CorruptionError),
    a damaged ``STATE`` or ``HARDSTATE`` make the report not ``ok``.  A torn
    tail that was never made durable is normal after a crash: it is listed
    (reopening cuts it) but is not damage.
    """
    path = require_log_directory(path)
    report = VerifyReport(path)
    _check_small_files(path, report)
    if any(e.path and os.path.basename(e.path) == STATE_FILE for e in report.damage):
        report.notes.append("segments not checked: the log state (generation, purge boundary) is unreadable")
        return report
    files = _segment_files(path)
    by_name = {name: SegmentReport(name, _size(os.path.join(path, name))) for _, name in files}
    try:
        log = Log(path, read_only=True, stop_at_damage=True, implementation=implementation)
    except CorruptionError as exc:
        # A damaged segment header stops recovery before any scan.
        report.damage.append(exc)
        if exc.path and os.path.basename(exc.path) in by_name:
            by_name[os.path.basename(exc.path)].status = "damaged"
            by_name[os.path.basename(exc.path)].detail = str(exc)
        report.segments = [by_name[n] for _, n in files]
        return report
    with log:
        attached = log.segments()
        if log.damage is not None:
            report.damage.append(log.damage)
        for err in log.verify():  # every attached record once more, in place
            if not any(err.path == d.path and err.offset == d.offset for d in report.damage):
                report.damage.append(err)
        report.first_index = log.first_index()
        report.last_index = log.last_index()
        generation = log.generation
        crc32c = load_core(implementation).crc32c
        for info in attached:
            if os.path.basename(info["path"]) not in by_name:  # created by a live writer since the listing
                files.append((info["first_index"], os.path.basename(info["path"])))
                by_name[files[-1][1]] = SegmentReport(files[-1][1], info["size"])
            seg = by_name[os.path.basename(info["path"])]
            seg.first_index = info["first_index"]
            seg.last_index = info["last_index"]
            seg.count = info["count"]
            seg.end = info["end"]
            seg.synced_end = info["synced_end"]
            seg.generation = info["generation"]
            tail = _nonzero_after(os.path.join(path, seg.name), seg.end)
            damaged = [d for d in report.damage if d.path and os.path.basename(d.path) == seg.name]
            if damaged:
                seg.status = "damaged"
                seg.detail = str(damaged[0])
            elif tail is not None:
                seg.status = "torn tail"
                seg.detail = f"unsynced bytes from offset {tail} (never made durable; cut on the next open)"
        attached_names = {os.path.basename(i["path"]) for i in attached}
        for _, name in files:
            seg = by_name[name]
            if name in attached_names or seg.status != "ok":
                continue
            try:
                _describe_unattached(os.path.join(path, name), seg, generation, crc32c, report)
            except FileNotFoundError:  # a live writer deleted it since the listing
                seg.status = "deleted"
                seg.detail = "deleted by the log's writer while it was being checked"
    report.segments = [by_name[n] for _, n in files]
    return report


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:  # a live writer deleted it since the listing
        return 0


def _nonzero_after(path: str, offset: int) -> Optional[int]:
    """Offset of the first non-zero byte at or after ``offset``, or None."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:  # a live writer deleted it since the open
        return None
    with f:
        f.seek(offset)
        pos = offset
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                return None
            stripped = chunk.lstrip(b"\0")
            if stripped:
                return pos + len(chunk) - len(stripped)
            pos += len(chunk)


def _describe_unattached(path: str, seg: SegmentReport, generation: int, crc32c: Callable, report: VerifyReport) -> None:
    """A segment recovery would not attach: say why."""
    raw = _read_raw_header(path)
    if raw == bytes(len(raw)):
        seg.status = "unsynced"
        seg.detail = "header never written (crashed while creating it); removed on the next open"
        return
    try:
        hdr = decode_segment_header(raw, crc32c, path)
    except CorruptionError as exc:
        seg.status = "damaged"
        seg.detail = str(exc)
        return
    seg.first_index = hdr.first_index
    seg.synced_end = hdr.synced_end
    seg.generation = hdr.generation
    if hdr.generation < generation:
        seg.status = "stale"
        seg.detail = f"generation {hdr.generation} < {generation} (left by a reset); removed on the next open"
    elif any(d.path == path or (d.path and seg.name in d.path) for d in report.damage):
        seg.status = "damaged"
    elif report.damage:
        seg.status = "after damage"
        seg.detail = "follows the damaged point; `fastlog repair` drops it"
    else:
        seg.status = "purged or unsynced"
        seg.detail = "holds nothing readable (purged, or never made durable); removed on the next open"


# ---------------------------------------------------------------------------
# repair
# ---------------------------------------------------------------------------


@dataclass
class RepairPlan:
    """What :func:`repair` would do: cut ``cut_file`` at ``cut_offset`` and delete ``drop_files``."""

    path: str
    damage: Optional[CorruptionError] = None
    cut_file: Optional[str] = None  # segment that keeps its records before cut_offset
    cut_offset: int = 0
    drop_files: List[str] = field(default_factory=list)
    keep_last_index: int = 0  # the log ends here after the repair
    dropped_first_index: Optional[int] = None
    dropped_entries_known: int = 0  # entries that still verify but follow the damage
    dropped_last_index: Optional[int] = None  # highest of those, when any
    unrepairable: List[str] = field(default_factory=list)

    @property
    def needed(self) -> bool:
        return self.cut_file is not None or bool(self.drop_files)

    def describe(self) -> List[str]:
        if self.unrepairable:
            return [f"cannot repair: {u}" for u in self.unrepairable]
        if not self.needed:
            return ["nothing to repair: durable data verifies"]
        out = [f"damage: {self.damage}"]
        if self.cut_file:
            out.append(f"will cut {self.cut_file} at byte offset {self.cut_offset} (everything after it is zeroed)")
        for name in self.drop_files:
            out.append(f"will delete {name}")
        if self.dropped_first_index is not None:
            upto = f" up to at least {self.dropped_last_index}" if self.dropped_last_index else ""
            out.append(
                f"will drop every entry from index {self.dropped_first_index} on{upto}"
                f" ({self.dropped_entries_known} of them still verify in the deleted files);"
                f" the log will end at index {self.keep_last_index}"
            )
        out.append("dropped entries may have been acknowledged: restore them from another replica if you can")
        return out


def plan_repair(path: str, *, implementation: Optional[str] = None) -> RepairPlan:
    """Find the first damage to durable data and plan the cut in front of it (read-only)."""
    path = os.path.abspath(path)
    report = verify(path, implementation=implementation)
    plan = RepairPlan(path)
    for err in report.damage:
        if err.path and os.path.basename(err.path) in (STATE_FILE, HARD_STATE_FILE):
            plan.unrepairable.append(
                f"{os.path.basename(err.path)} is damaged ({err}); it cannot be rebuilt from the segments"
                " (the hard state holds the vote): restore it from a backup or rebuild this replica"
            )
    if plan.unrepairable or report.ok:
        plan.damage = report.damage[0] if report.damage else None
        return plan
    files = [name for _, name in _segment_files(path)]
    in_segments = [(d, name) for d in report.damage if d.path and (name := os.path.basename(d.path)) in files]
    first_bad, bad_name = min(in_segments, key=lambda pair: (files.index(pair[1]), pair[0].offset or 0))
    plan.damage = first_bad
    bad_pos = files.index(bad_name)
    seg = next(s for s in report.segments if s.name == bad_name)
    offset = first_bad.offset or 0
    if seg.end is not None and offset >= SEG_DATA_START:
        # Records before the damage verify: keep them, cut at the damaged record.
        assert seg.first_index is not None  # set for every attached segment (seg.end is set)
        plan.cut_file = bad_name
        plan.cut_offset = offset
        kept = _count_records_before(report, seg, offset)
        plan.keep_last_index = (seg.first_index + kept - 1) if kept else (seg.first_index - 1)
        plan.dropped_first_index = plan.keep_last_index + 1
        plan.drop_files = files[bad_pos + 1 :]
    else:
        # The header itself is bad: the whole file goes, and every later one.
        plan.drop_files = files[bad_pos:]
        first = parse_segment_name(bad_name)
        plan.dropped_first_index = first
        plan.keep_last_index = max(0, (first or 1) - 1)
    crc32c = load_core(implementation).crc32c
    for name in plan.drop_files:
        first, count = _scan_alone(os.path.join(path, name), crc32c, implementation)
        plan.dropped_entries_known += count
        if count:
            plan.dropped_last_index = max(plan.dropped_last_index or 0, first + count - 1)
    return plan


def _scan_alone(seg_path: str, crc32c: Callable, implementation: Optional[str]) -> Tuple[int, int]:
    """(first index, records that verify) of one segment file read on its own."""
    try:
        with open(seg_path, "rb") as f:
            data = bytearray(f.read())
        hdr = decode_segment_header(bytes(data[:SEG_HEADER_SIZE]), crc32c, seg_path)
        if len(data) < hdr.data_start:
            return hdr.first_index, 0
        core = load_core(implementation).LogCore(len(data), False)
        res = core.load_segment(data, hdr.first_index, hdr.prev_crc, hdr.data_start)
        count = res.count
        core.drop_last_segment()
        return hdr.first_index, count
    except (CorruptionError, OSError, ValueError):
        return 0, 0


def _count_records_before(report: VerifyReport, seg: SegmentReport, offset: int) -> int:
    """How many of the segment's attached records lie before ``offset``."""
    if seg.end is not None and offset >= seg.end:
        return seg.count
    # log.verify() found damage inside the attached records: walk the frames.
    import struct

    count = 0
    with open(os.path.join(report.path, seg.name), "rb") as f:
        pos = SEG_DATA_START
        while pos < offset:
            f.seek(pos + 4)
            (length,) = struct.unpack("<I", f.read(4))
            pos += 32 + ((length + 7) & ~7)
            count += 1
    return count


def repair(path: str, plan: Optional[RepairPlan] = None, *, implementation: Optional[str] = None) -> RepairPlan:
    """Carry out ``plan`` (or a fresh one): cut the damaged segment, delete what follows.

    Holds the directory's exclusive lock, so no store may have it open.  The
    cut segment's ``synced_end`` is lowered to the cut and the removed bytes are
    zeroed, then everything is synced: reopening afterwards finds a clean end.
    """
    path = require_log_directory(path)
    if plan is None:
        plan = plan_repair(path, implementation=implementation)
    if plan.unrepairable:
        raise CorruptionError("; ".join(plan.unrepairable), path)
    if not plan.needed:
        return plan
    crc32c = load_core(implementation).crc32c
    lock_fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockedError(f"log directory {path} is open; close the store before repairing") from None
        # Later files first, so a crash during the repair leaves a prefix.
        for name in reversed(plan.drop_files):
            try:
                os.unlink(os.path.join(path, name))
            except FileNotFoundError:
                pass
        if plan.drop_files:
            _osio.fsync_dir(path)
        if plan.cut_file:
            _cut_segment(os.path.join(path, plan.cut_file), plan.cut_offset, crc32c)
    finally:
        os.close(lock_fd)
    return plan


def _cut_segment(seg_path: str, offset: int, crc32c: Callable) -> None:
    fd = os.open(seg_path, os.O_RDWR)
    try:
        hdr = decode_segment_header(os.pread(fd, SEG_HEADER_SIZE, 0), crc32c, seg_path)
        # First stop claiming the bytes about to be removed, durably...
        lowered = SegmentHeader(hdr.generation, hdr.first_index, hdr.prev_crc, min(hdr.synced_end, offset), hdr.data_start)
        _pwrite_all(fd, encode_segment_header(lowered, crc32c), 0)
        _osio.fdatasync(fd)
        # ...then zero them, so the scan finds a clean end there.
        size = os.fstat(fd).st_size
        chunk = bytes(1 << 20)
        pos = offset
        while pos < size:
            n = min(len(chunk), size - pos)
            _pwrite_all(fd, chunk[:n], pos)
            pos += n
        exact = SegmentHeader(hdr.generation, hdr.first_index, hdr.prev_crc, offset, hdr.data_start)
        _pwrite_all(fd, encode_segment_header(exact, crc32c), 0)
        _osio.fdatasync(fd)
    finally:
        os.close(fd)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    """Write all of ``data`` at ``offset``: pwrite may write less than asked
    (a signal, a quota, a filesystem's own limit), and a half-zeroed tail or a
    half-written header would leave the repair undone without a word."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(errno.EIO, f"pwrite wrote nothing ({len(view)} bytes left at offset {offset})")
        view = view[written:]
        offset += written


# ---------------------------------------------------------------------------
# inspect and dump
# ---------------------------------------------------------------------------


def open_read_only(path: "str | os.PathLike[str]", *, implementation: Optional[str] = None) -> Log:
    """The log at ``path`` opened the way every tool reads it: read-only, under
    the shared lock, stopping at damage (``log.damage``) instead of raising."""
    return Log(require_log_directory(path), read_only=True, stop_at_damage=True, implementation=implementation)


def inspect(path: str, *, implementation: Optional[str] = None) -> Dict[str, Any]:
    """A description of the log: segments, index range, purge boundary, generation, hard state."""
    path = require_log_directory(path)
    with open_read_only(path, implementation=implementation) as log:
        boundary = log.purge_boundary()
        info: Dict[str, Any] = {
            "path": path,
            "implementation": log.implementation,
            "generation": log.generation,
            "first_index": log.first_index(),
            "last_index": log.last_index(),
            "purge_boundary": None if boundary is None else {"index": boundary.index, "term": boundary.term},
            "segments": [
                {
                    "file": os.path.basename(s["path"]),
                    "first_index": s["first_index"],
                    "last_index": s["last_index"],
                    "count": s["count"],
                    "bytes": s["end"] - SEG_DATA_START,
                    "size": s["size"],
                    "synced_end": s["synced_end"],
                }
                for s in log.segments()
            ],
            "damage": None if log.damage is None else str(log.damage),
        }
    try:
        hs = FileMetaStore(path).load_hard_state()
        info["hard_state"] = None if hs is None else {
            "current_term": hs.current_term,
            "voted_for": None if hs.voted_for is None else {
                "voted_for_id": hs.voted_for.voted_for_id,
                "voted_for_term": hs.voted_for.voted_for_term,
                "committed": hs.voted_for.committed,
            },
        }
        info["hard_state_text"] = _hard_state_text(hs)
    except CorruptionError as exc:
        info["hard_state"] = None
        info["hard_state_text"] = f"DAMAGED ({exc})"
    return info


def readable_range(log: Log) -> Tuple[int, int]:
    """(first, last) index of the entries ``log`` can return; (0, 0) when none."""
    first = log.first_index()
    return (first, log.last_index()) if first else (0, 0)


def iter_entries(log: Log, start: Optional[int] = None, end: Optional[int] = None, *,
                 batch: int = 4096) -> Iterator[Any]:
    """The readable entries of ``log`` with ``start <= index <= end`` (default: all), ascending."""
    first, last = readable_range(log)
    if first == 0:
        return
    lo = first if start is None else max(start, first)
    hi = last if end is None else min(end, last)
    while lo <= hi:
        yield from log.get_entries(lo, min(hi, lo + batch - 1))
        lo += batch


def dump(path: str, start: Optional[int] = None, end: Optional[int] = None, *,
         implementation: Optional[str] = None, batch: int = 4096) -> Iterator[Any]:
    """Yield the entries with ``start <= index <= end`` (default: all), ascending.

    Stops silently at damage; open the log with :func:`open_read_only` and look
    at ``log.damage`` (as ``fastlog dump`` does) to tell.
    """
    with open_read_only(path, implementation=implementation) as log:
        yield from iter_entries(log, start, end, batch=batch)


def range_notes(log: Log, start: Optional[int], end: Optional[int]) -> List[str]:
    """Why part of ``[start, end]`` cannot be printed: purged, or past the end.

    Entries missing because of damage are not explained here: the damage is
    reported on its own.
    """
    first, last = readable_range(log)
    boundary = log.purge_boundary()
    notes: List[str] = []
    if first == 0:
        purged = "" if boundary is None else f" (purged up to index {boundary.index}, term {boundary.term})"
        if log.damage is None:
            notes.append("the log holds no entries" + purged)
        return notes
    lo = 1 if start is None else max(start, 1)
    if boundary is not None and start is not None and lo < first:
        upto = first - 1 if end is None else min(end, first - 1)
        notes.append(f"entries {lo}..{upto} were purged (the purge boundary is index {boundary.index}, "
                     f"term {boundary.term})")
    if log.damage is None and end is not None and end > last:
        past = max(lo, last + 1)
        notes.append(f"entries {past}..{end} are past the end of the log (its last index is {last})")
    elif log.damage is None and start is not None and start > last:
        notes.append(f"nothing from index {start} on: the log ends at index {last}")
    return notes


#: The column names ``fastlog dump`` prints first (without --json).
DUMP_COLUMNS = ("index", "term", "kind", "bytes", "payload")


def format_entry(entry: Any, *, hex_payload: bool = False, width: int = 80) -> str:
    """One tab-separated line with the :data:`DUMP_COLUMNS` of ``entry``."""
    payload = bytes(entry.payload)
    if hex_payload:
        text = payload.hex()
    else:
        text = repr(payload)
    if width and len(text) > width:
        text = text[: max(0, width - 3)] + "..."
    return f"{entry.index}\t{entry.term}\t{_kind_name(entry.kind)}\t{len(payload)}\t{text}"


def entry_json(entry: Any, *, hex_payload: bool = False) -> str:
    """One JSON object: index, term, kind, bytes and the whole payload, as
    ``payload_base64`` (standard alphabet, padded) or, with ``hex_payload``,
    ``payload_hex``; the key names the encoding so a reader never guesses."""
    payload = bytes(entry.payload)
    record: Dict[str, Any] = {
        "index": entry.index,
        "term": entry.term,
        "kind": _kind_name(entry.kind),
        "bytes": len(payload),
    }
    if hex_payload:
        record["payload_hex"] = payload.hex()
    else:
        record["payload_base64"] = base64.b64encode(payload).decode("ascii")
    return json.dumps(record)


def _kind_name(kind: Any) -> str:
    try:
        return EntryKind(kind).name
    except ValueError:
        return str(int(kind))


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------
#
# Every subcommand reports the same failure in the same words on stderr,
# "fastlog COMMAND: error: ...", and exits with the same status:
#   no such directory: PATH                                      -> 2
#   not a fastlog log directory: PATH (why)                      -> 2
#   log directory in use: PATH (a store has it open; ...)       -> 2
#   log directory damaged: PATH: what, [file @ offset]; ...      -> 1


_EXIT_COMMON = """\
  1  the log is damaged: stderr says where ("log directory damaged: ...")
  2  bad options, or the directory could not be read: no such directory,
     not a fastlog log directory, log directory in use (close the store first)"""

_EPILOGS = {
    "verify": "exit status:\n  0  every checksum verifies (a torn, never-synced tail is listed but is no damage)\n"
              + _EXIT_COMMON,
    "repair": "exit status:\n  0  repaired, or nothing to repair\n"
              "  1  the log is damaged and was left as it is (--dry-run, or it cannot be repaired)\n"
              "  2  bad options, the answer was no, or the directory could not be read: no such\n"
              "     directory, not a fastlog log directory, log directory in use (close the store first)",
    "inspect": "exit status:\n  0  done; the log is intact\n" + _EXIT_COMMON,
    "dump": "output:\n"
            "  stdout: a header line with the column names (index, term, kind, bytes, payload;\n"
            "  tab-separated), then one line per entry; with --json no header and one JSON object\n"
            "  per entry: index, term, kind, bytes and the whole payload as payload_base64\n"
            "  (payload_hex with --hex).\n"
            "  stderr: notes on requested entries that are purged or past the end, then the count\n"
            "  line \"fastlog dump: N entries printed (KIND n, ...)\" (in both modes), then any error.\n"
            "\n"
            "exit status:\n  0  done (a broken pipe, e.g. into `head`, also ends quietly with 0)\n"
            + _EXIT_COMMON + "\n"
            "  3  none of the requested entries is in the log: purged, or past its end",
}


def _failure(command: str, path: str, exc: BaseException) -> int:
    """Print the one wording of a failure and return its exit status."""
    path = os.path.abspath(path)
    status = EXIT_UNUSABLE
    if isinstance(exc, LockedError):
        message = f"log directory in use: {path} (a store has it open; close it first)"
    elif isinstance(exc, NotALogError):
        message = str(exc)
    elif isinstance(exc, CorruptionError):
        message = _damaged(path, exc)
        status = EXIT_DAMAGED
    elif isinstance(exc, FileNotFoundError) and exc.filename == path:
        message = f"no such directory: {path}"
    elif isinstance(exc, OSError) and exc.strerror:
        message = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    else:
        message = str(exc)
    print(f"fastlog {command}: error: {message}", file=sys.stderr)
    return status


def _damaged(path: str, damage: CorruptionError, after: Optional[int] = None, *, verified: bool = False) -> str:
    lost = "" if after is None else f"; entries after index {after} cannot be read"
    hint = "" if verified else "`fastlog verify` lists all damage, "
    return f"log directory damaged: {path}: {damage}{lost}; {hint}`fastlog repair` cuts the log before it"


def _run_verify(args: argparse.Namespace) -> int:
    report = verify(args.directory)
    for line in report.lines():
        print(line)
    if report.ok:
        return EXIT_OK
    sys.stdout.flush()
    print(f"fastlog verify: error: {_damaged(report.path, report.damage[0], verified=True)}", file=sys.stderr)
    return EXIT_DAMAGED


def _confirm(prompt: str) -> bool:
    try:
        answer = input(prompt)
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def _run_repair(args: argparse.Namespace) -> int:
    plan = plan_repair(args.directory)
    for line in plan.describe():
        print(line)
    if plan.unrepairable:
        return EXIT_DAMAGED
    if not plan.needed:
        return EXIT_OK
    if args.dry_run:
        return EXIT_DAMAGED
    if not args.yes and not _confirm("proceed? [y/N] "):
        print("nothing changed")
        return EXIT_UNUSABLE
    repair(args.directory, plan)
    after = verify(args.directory)
    print(f"repaired: the log now holds entries {after.first_index}..{after.last_index}")
    return EXIT_OK if after.ok else EXIT_DAMAGED


def _run_inspect(args: argparse.Namespace) -> int:
    info = inspect(args.directory)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        b = info["purge_boundary"]
        print(f"log directory   {info['path']}")
        print(f"generation      {info['generation']}")
        print(f"index range     {info['first_index']}..{info['last_index']}"
              + ("  (empty)" if info["first_index"] == 0 else ""))
        print("purge boundary  " + ("none" if b is None else f"index {b['index']}, term {b['term']}"))
        print(f"hard state      {info['hard_state_text']}")
        print(f"segments        {len(info['segments'])}")
        for s in info["segments"]:
            rng = f"{s['first_index']}..{s['last_index']}" if s["count"] else f"{s['first_index']} (empty)"
            print(f"  {s['file']}  {rng}  {s['count']} entries  {s['bytes']} bytes of {s['size']}"
                  f"  synced_end={s['synced_end']}")
    if info["damage"]:
        sys.stdout.flush()
        damage = CorruptionError(info["damage"])  # the text inspect() kept
        print(f"fastlog inspect: error: {_damaged(info['path'], damage, after=info['last_index'])}", file=sys.stderr)
        return EXIT_DAMAGED
    return EXIT_OK


def _run_dump(args: argparse.Namespace) -> int:
    out = sys.stdout
    path = require_log_directory(args.directory)
    with open_read_only(path) as log:
        if not args.json and not args.no_header:
            print("\t".join(DUMP_COLUMNS), file=out)
        kinds: Counter = Counter()
        printed = 0
        changed: Optional[ViewChangedError] = None
        try:
            for entry in iter_entries(log, args.start, args.end):
                if args.json:
                    print(entry_json(entry, hex_payload=args.hex), file=out)
                else:
                    print(format_entry(entry, hex_payload=args.hex, width=args.width), file=out)
                kinds[_kind_name(entry.kind)] += 1
                printed += 1
                if args.limit and printed >= args.limit:
                    break
        except ViewChangedError as exc:
            # A live writer removed or rewrote entries the dump had not reached:
            # everything printed is what the log held when the dump began.
            changed = exc
        out.flush()  # everything printed reaches the pipe before the notes on stderr
        notes = [] if args.limit and printed >= args.limit else range_notes(log, args.start, args.end)
        if changed is not None:
            notes = [f"the dump stops after {printed} entries: {changed}"]
        for note in notes:
            print(f"fastlog dump: note: {note}", file=sys.stderr)
        per_kind = ", ".join(f"{name} {n}" for name, n in sorted(kinds.items()))
        print(f"fastlog dump: {printed} entries printed" + (f" ({per_kind})" if per_kind else ""), file=sys.stderr)
        if log.damage is not None:
            last = readable_range(log)[1]
            print(f"fastlog dump: error: {_damaged(path, log.damage, after=last)}", file=sys.stderr)
            return EXIT_DAMAGED
        asked_for_a_range = args.start is not None or args.end is not None
        if asked_for_a_range and printed == 0 and notes:
            return EXIT_NOT_IN_LOG
    return EXIT_OK


def _guard(command: str, fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the expected failures into one message and an exit status, not a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except BrokenPipeError:
            raise  # the reader went away (`| head`): the command line ends quietly
        except (FastlogError, OSError) as exc:
            return _failure(command, args.directory, exc)

    return run


def _index(text: str) -> int:
    """An argparse type: a log index, a non-negative integer."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, not {value}")
    return value


def _dump_handler(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    guarded = _guard("dump", _run_dump)

    def run(args: argparse.Namespace) -> int:
        if args.start is not None and args.end is not None and args.start > args.end:
            parser.error(f"--start {args.start} is after --end {args.end}")  # exits with status 2
        return guarded(args)

    return run


def _add_parser(subparsers: Any, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    return subparsers.add_parser(name, epilog=_EPILOGS[name], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 **kwargs)


def register(subparsers: Any) -> None:
    """Add verify, repair, inspect and dump to the ``fastlog`` command line."""
    directory_help = "a fastlog log directory (holds STATE and NNN.seg files)"
    p = _add_parser(subparsers, "verify", help="check every checksum of a log directory (read-only)",
                    description="Check every checksum (segments, STATE, HARDSTATE) without changing anything.")
    p.add_argument("directory", help=directory_help)
    p.set_defaults(handler=_guard("verify", _run_verify))

    p = _add_parser(subparsers, "repair", help="cut a damaged log before its first damage",
                    description="Cut the log in front of the first damaged record (dropping every "
                                "later entry) after printing what will be dropped.")
    p.add_argument("directory", help=directory_help)
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.add_argument("--dry-run", action="store_true", help="only say what would be dropped")
    p.set_defaults(handler=_guard("repair", _run_repair))

    p = _add_parser(subparsers, "inspect", help="show segments, index range, purge boundary and hard state",
                    description="Describe a log directory (read-only): segments, index range, purge "
                                "boundary, generation and hard state.")
    p.add_argument("directory", help=directory_help)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_guard("inspect", _run_inspect))

    p = _add_parser(subparsers, "dump", help="print the entries of an index range",
                    description="Print index, term, kind, payload length and payload of each entry "
                                "(read-only), as text columns or JSON lines.")
    p.add_argument("directory", help=directory_help)
    p.add_argument("--start", type=_index, default=None, metavar="INDEX",
                   help="first index (default: the first entry)")
    p.add_argument("--end", type=_index, default=None, metavar="INDEX",
                   help="last index, inclusive (default: the last entry)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per entry and line; the payload whole, in base64")
    p.add_argument("--hex", action="store_true",
                   help="payload as hex: instead of a bytes repr, or in JSON payload_hex instead of payload_base64")
    p.add_argument("--width", type=_index, default=80, metavar="CHARS",
                   help="cut text payloads longer than this (0: never; JSON is never cut)")
    p.add_argument("--limit", type=_index, default=0, metavar="N", help="stop after N entries (0: no limit)")
    p.add_argument("--no-header", action="store_true", help="leave out the column names line")
    p.set_defaults(handler=_dump_handler(p))

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
import fcntl
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, TextIO, Tuple

from . import _osio
from ._core_api import SEG_DATA_START, SEG_HEADER_SIZE
from ._impl import load_core
from .errors import CorruptionError, FastlogError, LockedError, ViewChangedError
from .log import LOCK_FILE, STATE_FILE, Log
from .meta import HARD_STATE_FILE, FileMetaStore
from .segment import SegmentHeader, decode_segment_header, encode_segment_header, parse_segment_name

__all__ = [
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
EXIT_UNUSABLE = 2  # not a log directory, in use, or the user said no


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
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no such log directory: {path}")
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
    path = os.path.abspath(path)
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
        os.pwrite(fd, encode_segment_header(lowered, crc32c), 0)
        _osio.fdatasync(fd)
        # ...then zero them, so the scan finds a clean end there.
        size = os.fstat(fd).st_size
        chunk = bytes(1 << 20)
        pos = offset
        while pos < size:
            n = min(len(chunk), size - pos)
            os.pwrite(fd, chunk[:n], pos)
            pos += n
        exact = SegmentHeader(hdr.generation, hdr.first_index, hdr.prev_crc, offset, hdr.data_start)
        os.pwrite(fd, encode_segment_header(exact, crc32c), 0)
        _osio.fdatasync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------
# inspect and dump
# ---------------------------------------------------------------------------


def inspect(path: str, *, implementation: Optional[str] = None) -> Dict[str, Any]:
    """A description of the log: segments, index range, purge boundary, generation, hard state."""
    path = os.path.abspath(path)
    with Log(path, read_only=True, stop_at_damage=True, implementation=implementation) as log:
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


def dump(path: str, start: Optional[int] = None, end: Optional[int] = None, *,
         implementation: Optional[str] = None, batch: int = 4096) -> Iterator[Any]:
    """Yield the entries with ``start <= index <= end`` (default: all), ascending."""
    with Log(os.path.abspath(path), read_only=True, stop_at_damage=True, implementation=implementation) as log:
        first, last = log.first_index(), log.last_index()
        if first == 0:
            return
        lo = first if start is None else max(start, first)
        hi = last if end is None else min(end, last)
        while lo <= hi:
            chunk = log.get_entries(lo, min(hi, lo + batch - 1))
            yield from chunk
            lo += batch


def format_entry(entry: Any, *, hex_payload: bool = False, width: int = 80) -> str:
    payload = bytes(entry.payload)
    if hex_payload:
        text = payload.hex()
    else:
        text = repr(payload)
    if width and len(text) > width:
        text = text[: max(0, width - 3)] + "..."
    kind = getattr(entry.kind, "name", str(entry.kind))
    return f"{entry.index}\t{entry.term}\t{kind}\t{len(payload)}\t{text}"


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------


def _run_verify(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    report = verify(args.directory)
    for line in report.lines():
        print(line, file=out)
    return EXIT_OK if report.ok else EXIT_DAMAGED


def _confirm(prompt: str) -> bool:
    try:
        answer = input(prompt)
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def _run_repair(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    plan = plan_repair(args.directory)
    for line in plan.describe():
        print(line, file=out)
    if plan.unrepairable:
        return EXIT_DAMAGED
    if not plan.needed:
        return EXIT_OK
    if args.dry_run:
        return EXIT_DAMAGED
    if not args.yes and not _confirm("proceed? [y/N] "):
        print("nothing changed", file=out)
        return EXIT_UNUSABLE
    repair(args.directory, plan)
    after = verify(args.directory)
    print(f"repaired: the log now holds entries {after.first_index}..{after.last_index}", file=out)
    return EXIT_OK if after.ok else EXIT_DAMAGED


def _run_inspect(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    info = inspect(args.directory)
    if args.json:
        import json

        print(json.dumps(info, indent=2), file=out)
        return EXIT_OK
    b = info["purge_boundary"]
    print(f"log directory   {info['path']}", file=out)
    print(f"generation      {info['generation']}", file=out)
    print(f"index range     {info['first_index']}..{info['last_index']}"
          + ("  (empty)" if info["first_index"] == 0 else ""), file=out)
    print("purge boundary  " + ("none" if b is None else f"index {b['index']}, term {b['term']}"), file=out)
    print(f"hard state      {info['hard_state_text']}", file=out)
    print(f"segments        {len(info['segments'])}", file=out)
    for s in info["segments"]:
        rng = f"{s['first_index']}..{s['last_index']}" if s["count"] else f"{s['first_index']} (empty)"
        print(f"  {s['file']}  {rng}  {s['count']} entries  {s['bytes']} bytes of {s['size']}"
              f"  synced_end={s['synced_end']}", file=out)
    if info["damage"]:
        print(f"DAMAGE: {info['damage']} (shown up to the damage; run `fastlog verify`)", file=out)
        return EXIT_DAMAGED
    return EXIT_OK


def _run_dump(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    n = 0
    try:
        for entry in dump(args.directory, args.start, args.end):
            print(format_entry(entry, hex_payload=args.hex, width=args.width), file=out)
            n += 1
            if args.limit and n >= args.limit:
                break
    except ViewChangedError as exc:
        # A live writer removed or rewrote entries the dump had not reached:
        # everything printed is what the log held when the dump began.
        print(f"note: the dump stops after {n} entries: {exc}", file=sys.stderr)
    return EXIT_OK


def _guard(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the expected failures into a message and an exit status, not a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except LockedError as exc:
            print(f"error: {exc} (close the store first)", file=sys.stderr)
            return EXIT_UNUSABLE
        except CorruptionError as exc:
            print(f"DAMAGED: {exc}", file=sys.stderr)
            return EXIT_DAMAGED
        except (FastlogError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_UNUSABLE

    return run


def register(subparsers: Any) -> None:
    """Add verify, repair, inspect and dump to the ``fastlog`` command line."""
    p = subparsers.add_parser("verify", help="check every checksum of a log directory (read-only)",
                              description="Check every checksum (segments, STATE, HARDSTATE) without changing "
                                          "anything. Exit status: 0 intact, 1 damaged, 2 unusable.")
    p.add_argument("directory")
    p.set_defaults(handler=_guard(_run_verify))

    p = subparsers.add_parser("repair", help="cut a damaged log before its first damage",
                              description="Cut the log in front of the first damaged record (dropping every "
                                          "later entry) after printing what will be dropped.")
    p.add_argument("directory")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.add_argument("--dry-run", action="store_true", help="only say what would be dropped")
    p.set_defaults(handler=_guard(_run_repair))

    p = subparsers.add_parser("inspect", help="show segments, index range, purge boundary and hard state")
    p.add_argument("directory")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_guard(_run_inspect))

    p = subparsers.add_parser("dump", help="print the entries of an index range",
                              description="Print index, term, kind, payload length and payload of each entry.")
    p.add_argument("directory")
    p.add_argument("--start", type=int, default=None, help="first index (default: the first entry)")
    p.add_argument("--end", type=int, default=None, help="last index, inclusive (default: the last entry)")
    p.add_argument("--hex", action="store_true", help="payload as hex instead of a bytes repr")
    p.add_argument("--width", type=int, default=80, help="cut payloads longer than this (0: never)")
    p.add_argument("--limit", type=int, default=0, help="stop after this many entries (0: no limit)")
    p.set_defaults(handler=_guard(_run_dump))

"""Power-loss simulation for fastlog: a model of what a disk may hold after a crash.

How it works
------------
A workload runs against a real :class:`fastlog.Log` (or the asyncio engine,
``fastlog.open``) in a directory while :class:`PowerLossRecorder` watches it:

* every durability call of the library goes through :mod:`fastlog._osio`; the
  recorder wraps ``fdatasync`` / ``fsync`` (the file's bytes at that moment become
  its *durable* content) and ``fsync_dir`` (the directory listing at that moment
  becomes the *durable* listing);
* it wraps ``os.unlink`` / ``os.remove`` / ``os.rename`` / ``os.replace`` to see
  every directory change in order, and ``os.write`` / ``os.pwrite`` /
  ``os.writev`` / ``os.pwritev`` / ``os.ftruncate`` to see every write the
  Python code makes;
* the compiled core stores frames through the shared mapping (or pwrites them
  from C), which no Python hook sees, so the workloads also wrap each Log's
  byte core (workloads.ObservedCore) and observe after every call of it that
  writes.  The page cache is coherent with the mapping, so reading a file shows
  what the library has written so far.

At each of those moments (an *observation*) the recorder reads every file,
keeps per file every distinct content seen since the file was last synced, and
freezes a *crash point*: what a crash at that instant could leave on disk.
:class:`ImageMaker` builds concrete directories from a crash point:

* the directory holds one of the listings observed since the last directory
  fsync (directory operations reach the disk in the order they were made, as on
  a journaling file system; a directory fsync makes every earlier one durable);
* each file's size is one it had since its last sync, and each 4 KiB page holds
  any version that page had since then: its durable version, its version at any
  observed moment, or the page caught half-way through the write between two
  moments (cut at a 64-byte line); a page of a file never synced may also read
  as zeros;
* kinds: all-old, all-new, older listing, write-back in file order, reverse
  write-back, random mixes of pages, and torn images (one or two pages torn at
  512-byte sectors, each sector from any version).  :func:`plan_images` spends
  half of a budget on the mixed kinds.

A crash can also come while a crash image is being recovered:
:func:`check_points` takes images whose reopening changed a file, recovers each
again under a recorder (workloads.recovery_run), continues with the work a Raft
leader would send next, and checks crash images of both (kinds "during
recovery" and "after recovery").

Each image is reopened with a fresh ``Log`` and checked against
:class:`LogModel`, the history of states the log really held, for the promise
of docs/durability.md:

1. every entry acknowledged durable (appended before a completed flush, or
   under ``sync="always"``) is present with the right content;
2. the log is a prefix of a state it held since the last completed flush
   (never a mix of states, never an entry removed by a flushed truncate,
   replace or purge), with that state's purge boundary;
3. the hard state is the last one saved or the one before it.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

PAGE = 4096
SECTOR = 512
LINE = 64

# An entry as the model sees it: (index, term, kind, payload).
ModelEntry = Tuple[int, int, int, bytes]
Boundary = Optional[Tuple[int, int]]


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if not value:
        return default
    return int(value)


def payload_for(index: int, term: int, salt: int, size: int) -> bytes:
    """A payload that names its entry, so any reader can check it belongs where it is."""
    head = b"%d:%d:%d|" % (index, term, salt)
    if size <= len(head):
        return head[:max(size, 0)] if size < len(head) else head
    seed = hashlib.blake2b(head, digest_size=8).digest()
    body = (seed * ((size - len(head)) // 8 + 1))[: size - len(head)]
    return head + body


# ---------------------------------------------------------------------------
# The model: every state the log has held
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LogState:
    boundary: Boundary
    entries: Tuple[ModelEntry, ...]  # contiguous, ascending

    @property
    def last_stored(self) -> int:
        return self.entries[-1][0] if self.entries else 0

    @property
    def last_index(self) -> int:
        return max(self.last_stored, self.boundary[0] if self.boundary else 0)


@dataclass(frozen=True)
class Recovered:
    """What a reopened log holds (or the error reopening it raised)."""

    boundary: Boundary = None
    entries: Tuple[ModelEntry, ...] = ()
    last_index: int = 0
    first_index: int = 0
    hard_state: Any = None
    error: Optional[str] = None


class LogModel:
    """The history of log states and hard states, with the last acknowledged point.

    Call :meth:`begin_*` *before* the matching Log call (a crash during the call
    may leave either the state before or the state after) and :meth:`flushed`
    after a flush returned (or after an append returned under ``sync="always"``).
    """

    def __init__(self) -> None:
        self.states: List[LogState] = [LogState(None, ())]
        # ops[i] is how states[i] was reached from states[i - 1]
        self.ops: List[Tuple[str, int]] = [("init", 0)]
        self.flushed_at = 0
        self.hard_states: List[Any] = []

    # -- transitions -------------------------------------------------------
    @property
    def current(self) -> LogState:
        return self.states[-1]

    def _push(self, state: LogState, op: Tuple[str, int]) -> None:
        self.states.append(state)
        self.ops.append(op)

    def begin_append(self, batch: Sequence[ModelEntry]) -> None:
        cur = self.current
        first = batch[0][0]
        kept = tuple(e for e in cur.entries if e[0] < first)
        self._push(LogState(cur.boundary, kept + tuple(batch)), ("cut", first))

    def begin_truncate(self, from_index: int) -> None:
        cur = self.current
        kept = tuple(e for e in cur.entries if e[0] < from_index)
        self._push(LogState(cur.boundary, kept), ("cut", from_index))

    def begin_purge(self, index: int, term: int) -> None:
        cur = self.current
        kept = tuple(e for e in cur.entries if e[0] > index)
        self._push(LogState((index, term), kept), ("purge", index))

    def begin_reset(self) -> None:
        self._push(LogState(None, ()), ("reset", 0))

    def flushed(self, upto: Optional[int] = None) -> None:
        """A flush returned.  ``upto``: the number of operations it covers, counted
        from the start of the history (default: every operation begun so far)."""
        at = len(self.states) - 1 if upto is None else upto
        self.flushed_at = max(self.flushed_at, at)

    def operations(self) -> int:
        """How many operations have begun (the ``upto`` of a flush covering them all)."""
        return len(self.states) - 1

    def begin_save_hard_state(self, hs: Any) -> None:
        self.hard_states.append(hs)

    def rebase(self, state: LogState) -> None:
        """Start a new history from a durable state (after a checked reopen)."""
        self._push(state, ("rebase", 0))
        self.flushed_at = len(self.states) - 1

    # -- the promise -------------------------------------------------------
    def position(self) -> Tuple[int, int, int]:
        """(last flushed state, last begun state, hard states begun) right now."""
        return (self.flushed_at, len(self.states) - 1, len(self.hard_states))

    def check(self, got: Recovered, position: Tuple[int, int, int], check_hard_state: bool = False) -> Optional[str]:
        """None when ``got`` keeps the promise for a crash at ``position``, else why not."""
        return self.match(got, position, check_hard_state)[1]

    def match(
        self, got: Recovered, position: Tuple[int, int, int], check_hard_state: bool = False
    ) -> Tuple[Optional[int], Optional[str]]:
        """(the state ``got`` is a prefix of, None) when it keeps the promise, else (None, why not)."""
        if got.error is not None:
            return None, f"reopen failed: {got.error}"
        lo, hi, n_hs = position
        # Acknowledged entries that no operation begun since the flush removed:
        # an operation that removes entries is final only once a flush after it
        # completes, so until then the entries it removes may or may not survive.
        acked_last = self.states[lo].last_stored
        for j in range(lo + 1, hi + 1):
            kind, arg = self.ops[j]
            if kind == "cut":
                acked_last = min(acked_last, arg - 1)
            elif kind in ("reset", "rebase"):
                acked_last = 0
        problems: List[str] = []
        found: Optional[int] = None
        for j in range(hi, lo - 1, -1):  # the latest state first: the one the image was heading for
            why = _matches(got, self.states[j], acked_last)
            if why is None:
                found = j
                break
            problems.append(f"state {j}: {why}")
        if found is None:
            return None, "log is no allowed state:\n  " + "\n  ".join(problems[:4])
        if check_hard_state:
            allowed = [None] + list(self.hard_states[:n_hs])
            allowed = allowed[-2:]
            if got.hard_state not in allowed:
                return None, f"hard state {got.hard_state!r} is neither of {allowed!r}"
        return found, None


def _matches(got: Recovered, state: LogState, acked_last: int) -> Optional[str]:
    if got.boundary != state.boundary:
        return f"boundary {got.boundary} != {state.boundary}"
    n = len(got.entries)
    if n > len(state.entries):
        return f"{n} entries, state has only {len(state.entries)}"
    if n and got.entries != state.entries[:n]:
        for a, b in zip(got.entries, state.entries):
            if a != b:
                return f"entry {a[:3]} differs from {b[:3]} (payload {a[3][:24]!r} vs {b[3][:24]!r})"
    need = sum(1 for e in state.entries if e[0] <= acked_last)
    if n < need:
        missing = state.entries[n][0]
        return f"acknowledged entry {missing} missing (have {n} entries, {need} acknowledged)"
    expect_last = max(got.entries[-1][0] if got.entries else 0, got.boundary[0] if got.boundary else 0)
    if got.last_index != expect_last:
        return f"last_index() {got.last_index} != {expect_last}"
    expect_first = got.entries[0][0] if got.entries else 0
    if got.first_index != expect_first:
        return f"first_index() {got.first_index} != {expect_first}"
    return None


# ---------------------------------------------------------------------------
# The file-system model
# ---------------------------------------------------------------------------

Position = Tuple[int, int, int]


@dataclass
class FileTrack:
    fid: int
    durable: Optional[bytes]  # None: never synced
    versions: List[bytes] = field(default_factory=list)  # distinct contents since the last sync, in order

    def add(self, data: bytes) -> None:
        if not self.versions or self.versions[-1] != data:
            if data in self.versions:  # back to an earlier content: it is the newest again
                self.versions.remove(data)
            self.versions.append(data)


@dataclass(frozen=True)
class CrashPoint:
    label: str
    listings: Tuple[Tuple[Tuple[str, int], ...], ...]  # observed since the last dir fsync, oldest first
    files: Dict[int, Tuple[Optional[bytes], Tuple[bytes, ...]]]  # fid -> (durable, versions)
    position: Position
    # "run" for the workload itself, "recovery" while a crash image is being
    # recovered, "after recovery" for the work that follows it.
    phase: str = "run"
    # The model the position refers to (None: the one of the run).
    model: Optional["LogModel"] = None
    # What a completed recovery of this point's directory gives: a crash during
    # that recovery must give exactly the same (recovery is idempotent).
    expect: Optional["Recovered"] = None


# Names of the os functions that write file data; the recorder observes after each.
_WRITE_CALLS = ("write", "pwrite", "writev", "pwritev", "ftruncate")
_DIR_CALLS = ("unlink", "remove", "rename", "replace")


class PowerLossRecorder:
    """Watches one directory and freezes crash points (see the module docstring).

    Thread-safe: the asyncio engine flushes on a worker thread while its event
    loop appends.  ``position`` says where the model stands at each moment
    (a fixed position while a crash image is being recovered).
    """

    def __init__(
        self,
        root: Path,
        model: "LogModel",
        *,
        ignore: Sequence[str] = (),
        real_syncs: bool = False,
        position: Optional[Callable[[], Position]] = None,
        phase: str = "run",
    ):
        self.root = Path(root)
        # Harness self-tests: pretend these calls made nothing durable.
        self.ignore = frozenset(ignore)
        # The model decides what is durable, so the real system calls are only
        # worth their cost when a test wants them.
        self.real_syncs = real_syncs
        self.model = model
        self.position: Callable[[], Position] = position or model.position
        self.phase = phase
        self.point_model: Optional[LogModel] = None
        self.expect: Optional[Recovered] = None
        self.tracks: Dict[int, FileTrack] = {}
        self.ino_fid: Dict[int, int] = {}
        self._gone: Dict[int, int] = {}  # inode -> file id of files no longer listed
        self._next_fid = 1
        self.points: List[CrashPoint] = []
        self.calls: Dict[str, int] = {}
        self.listings: List[Tuple[Tuple[str, int], ...]] = []
        self._lock = threading.RLock()
        listing = self._observe_listing()
        for _name, fid in listing:  # files present at the start are durable as they are
            self.tracks[fid].durable = self.tracks[fid].versions[-1]
            self.tracks[fid].versions = [self.tracks[fid].durable]
        self.listings = [listing]

    # -- observing ---------------------------------------------------------
    def _fid(self, ino: int) -> int:
        fid = self.ino_fid.get(ino)
        if fid is None:
            fid = self._next_fid
            self._next_fid += 1
            self.ino_fid[ino] = fid
            self.tracks[fid] = FileTrack(fid, None)
        return fid

    def _observe_listing(self) -> Tuple[Tuple[str, int], ...]:
        entries = []
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            names = []
        for name in names:
            path = self.root / name
            try:
                with open(path, "rb") as f:
                    st = os.fstat(f.fileno())
                    data = f.read()
            except (FileNotFoundError, IsADirectoryError):
                continue
            fid = self._fid(st.st_ino)
            self.tracks[fid].add(data)
            entries.append((name, fid))
        listing = tuple(entries)
        # an inode that left the directory is a different file if it comes back
        present = {fid for _n, fid in listing}
        for ino, fid in list(self.ino_fid.items()):
            if fid not in present and any(fid == f for _n, f in (self.listings[-1] if self.listings else ())):
                self._gone[ino] = fid
                del self.ino_fid[ino]
        return listing

    def observe(self, label: str) -> None:
        """Read every file now: a crash may leave any page as it is at this moment."""
        with self._lock:
            listing = self._observe_listing()
            if not self.listings or listing != self.listings[-1]:
                self.listings.append(listing)
            self.freeze(label)

    def freeze(self, label: str) -> None:
        with self._lock:
            files: Dict[int, Tuple[Optional[bytes], Tuple[bytes, ...]]] = {}
            wanted = {fid for listing in self.listings for _n, fid in listing}
            for fid in wanted:
                t = self.tracks[fid]
                files[fid] = (t.durable, tuple(t.versions))
            self.points.append(
                CrashPoint(label, tuple(self.listings), files, self.position(), self.phase, self.point_model, self.expect)
            )

    # -- hooks ---------------------------------------------------------------
    def _fid_of_fd(self, fd: int) -> Optional[int]:
        st = os.fstat(fd)
        fid = self.ino_fid.get(st.st_ino)
        if fid is None:
            fid = self._gone.get(st.st_ino)
        return fid

    def _read_fd(self, fd: int) -> bytes:
        # the descriptor may be write-only: reopen the same file for reading
        with open(f"/proc/self/fd/{fd}", "rb") as f:
            return f.read()

    def _in_root(self, fd: int) -> bool:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return False
        target = target.removesuffix(" (deleted)")
        return os.path.dirname(target) == str(self.root)

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def on_file_sync(self, name: str, fd: int, real: Callable[[int], Any]) -> Any:
        if not self._in_root(fd):
            return real(fd)
        with self._lock:
            self._count(name)
            self.observe(f"before {name}")
            data = self._read_fd(fd)
            result = real(fd) if self.real_syncs else None  # an error means nothing became durable
            fid = self._fid_of_fd(fd)
            if fid is not None and name not in self.ignore:
                t = self.tracks[fid]
                t.durable = data
                t.versions = [data]
            self.observe(f"after {name}")
            return result

    def on_dir_sync(self, path: Any, real: Callable[[Any], Any]) -> Any:
        if os.path.realpath(os.fspath(path)) != str(self.root):
            return real(path)
        with self._lock:
            self._count("fsync_dir")
            self.observe("before fsync_dir")
            listing = self.listings[-1]
            result = real(path) if self.real_syncs else None
            if "fsync_dir" not in self.ignore:
                self.listings = [listing]
            self.observe("after fsync_dir")
            return result

    def on_dir_op(self, name: str, real: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self.observe(f"before {name}")
            result = real(*args, **kwargs)
            self.observe(f"after {name}")
            return result

    def on_write(self, name: str, real: Callable[..., Any], fd: int, *args: Any) -> Any:
        result = real(fd, *args)
        if self._in_root(fd):
            with self._lock:
                self._count(name)
                self.observe(f"after {name}")
        return result

    @contextlib.contextmanager
    def installed(self) -> Iterator["PowerLossRecorder"]:
        """Wrap fastlog._osio and the os write and directory calls for the duration of the block."""
        import fastlog._osio as osio

        saved_osio = {n: getattr(osio, n) for n in ("fdatasync", "fsync", "fsync_dir", "fallocate")}
        saved_os = {n: getattr(os, n) for n in _DIR_CALLS + _WRITE_CALLS if hasattr(os, n)}

        def file_sync(name: str) -> Callable[[int], Any]:
            real = saved_osio[name]
            return lambda fd: self.on_file_sync(name, fd, real)

        def fallocate(fd: int, size: int) -> Any:
            result = saved_osio["fallocate"](fd, size)
            if self._in_root(fd):
                with self._lock:
                    self._count("fallocate")
                    self.observe("after fallocate")
            return result

        def dir_op(name: str) -> Callable[..., Any]:
            real = saved_os[name]
            return lambda *a, **k: self.on_dir_op(name, real, *a, **k)

        def write_op(name: str) -> Callable[..., Any]:
            real = saved_os[name]
            return lambda fd, *a: self.on_write(name, real, fd, *a)

        osio.fdatasync = file_sync("fdatasync")
        osio.fsync = file_sync("fsync")
        osio.fsync_dir = lambda path: self.on_dir_sync(path, saved_osio["fsync_dir"])
        osio.fallocate = fallocate
        for n in saved_os:
            setattr(os, n, dir_op(n) if n in _DIR_CALLS else write_op(n))
        try:
            yield self
        finally:
            for n, f in saved_osio.items():
                setattr(osio, n, f)
            for n, f in saved_os.items():
                setattr(os, n, f)


# ---------------------------------------------------------------------------
# Building crash images
# ---------------------------------------------------------------------------

ZERO_PAGE = bytes(PAGE)

# The kinds of crash image, in the order the summary lists them.  "write-back",
# "reverse", "random mix" and "torn" mix pages of different moments.
KINDS = ("all-old", "all-new", "older listing", "write-back", "reverse", "random mix", "torn",
         "during recovery", "after recovery")
MIXED_KINDS = ("write-back", "reverse", "random mix", "torn")


class PagePool:
    """Interns page contents so an image is a cheap tuple of small integers."""

    def __init__(self) -> None:
        self.ids: Dict[bytes, int] = {}
        self.pages: List[bytes] = []

    def id(self, page: bytes) -> int:
        pid = self.ids.get(page)
        if pid is None:
            pid = len(self.pages)
            self.ids[page] = pid
            self.pages.append(page)
        return pid


def _page(data: bytes, p: int) -> bytes:
    page = data[p * PAGE:(p + 1) * PAGE]
    return page if len(page) == PAGE else page + bytes(PAGE - len(page))


class _FileChoices:
    """The sizes and page versions a file may hold after a crash.

    ``pages[p]`` lists the page ids page ``p`` may hold, its durable version
    first: its version at every observed moment since the last sync, and, for
    each change between two consecutive moments, the page caught half-way
    through that change (the new bytes up to some 64-byte boundary, the old
    ones after it).  Between two moments the library made at most one write call
    (every ``os`` write call, sync and store through the mapping is observed),
    and each of those writes ascending offsets, so such a page is one a real
    crash can leave.
    """

    def __init__(self, pool: PagePool, durable: Optional[bytes], versions: Tuple[bytes, ...], rng: random.Random):
        cands: List[bytes] = []
        if durable is not None:
            cands.append(durable)
        for v in versions:
            if v not in cands:
                cands.append(v)
        latest = versions[-1] if versions else (durable or b"")
        sizes: List[int] = []
        for c in ([b""] if durable is None else []) + cands:
            if len(c) not in sizes:
                sizes.append(len(c))
        self.sizes = sizes  # the durable size first
        self.latest_size = len(latest)
        npages = (max(sizes) + PAGE - 1) // PAGE if sizes else 0
        self.pages: List[List[int]] = []
        self.latest: List[int] = []
        # the moments in order, the durable content first
        timeline = ([durable] if durable is not None else []) + [v for v in versions if v is not durable]
        for p in range(npages):
            opts: List[int] = []
            if durable is None or len(durable) <= p * PAGE:
                opts.append(pool.id(ZERO_PAGE))  # never written: reads as zeros
            prev: Optional[bytes] = None
            for c in timeline:
                page = _page(c, p)
                pid = pool.id(page)
                if pid not in opts:
                    opts.append(pid)
                if prev is not None and prev != page:
                    half = _half_written(prev, page, rng)
                    if half is not None:
                        hid = pool.id(half)
                        if hid not in opts:
                            opts.append(hid)
                prev = page
            self.pages.append(opts)
            self.latest.append(pool.id(_page(latest, p)))
        self.varying = [p for p in range(npages) if len(self.pages[p]) > 1]

    def spec(self, size: int, pick: Dict[int, int]) -> Tuple[int, Tuple[int, ...]]:
        n = (size + PAGE - 1) // PAGE
        return (size, tuple(pick.get(p, self.pages[p][0]) for p in range(n)))


def _common_prefix(a: bytes, b: bytes) -> int:
    lo, hi = 0, min(len(a), len(b))
    while hi - lo > 16:  # bisect with slice compares (C speed), then finish byte by byte
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    while lo < hi and a[lo] == b[lo]:
        lo += 1
    return lo


def _half_written(old: bytes, new: bytes, rng: random.Random) -> Optional[bytes]:
    """``old`` overwritten with ``new`` up to a cache-line boundary inside the changed bytes.

    Stores are taken to reach memory (and a disk's DMA) in whole 64-byte lines:
    a segment header (64 bytes at offset 0) is rewritten in place and has no
    other protection against being caught half-way."""
    lo = _common_prefix(old, new)
    hi = PAGE - _common_prefix(old[::-1], new[::-1])
    first, last = (lo + LINE) // LINE, (hi - 1) // LINE
    if first > last:
        return None
    cut = LINE * rng.randint(first, last)
    return new[:cut] + old[cut:]


# An image: ((name, size, page ids), ...) in listing order.
ImageSpec = Tuple[Tuple[str, int, Tuple[int, ...]], ...]


def _tear(rng: random.Random, pool: PagePool, options: List[int]) -> int:
    out = bytearray()
    for s in range(PAGE // SECTOR):
        src = pool.pages[rng.choice(options)]
        out += src[s * SECTOR:(s + 1) * SECTOR]
    return pool.id(bytes(out))


class ImageMaker:
    """Builds the crash images a crash at one point may leave, by kind.

    all-old: every file as last synced; all-new: every file as it is at the
    crash; older listing: a directory listing from before the last directory
    operation that is not durable yet; write-back: the first k pages that
    differ written back, in file order; reverse: the last k written back
    first; random mix: any version of every page (see :class:`_FileChoices`)
    and any size a file had since its last sync; torn: a random mix with one
    or two pages torn at 512-byte sectors, each sector from any version.
    """

    def __init__(self, point: CrashPoint, rng: random.Random, pool: PagePool):
        self.point = point
        self.rng = rng
        self.pool = pool
        self.choices = {fid: _FileChoices(pool, *point.files[fid], rng) for fid in sorted(point.files)}
        self.last = len(point.listings) - 1
        listed = {fid for _n, fid in point.listings[self.last]}
        self.mixable = any(self.choices[fid].varying for fid in listed)

    def image(self, kind: str, k: int = 0, listing: Optional[int] = None, newest: Optional[bool] = None) -> ImageSpec:
        """An image of ``kind``; ``k`` fixes the pages written back, ``listing`` and
        ``newest`` the listing and content of an older-listing image (random otherwise)."""
        rng = self.rng
        li = self.last
        if kind == "older listing" and self.last:
            li = rng.randrange(self.last) if listing is None else listing
        elif kind in ("random mix", "torn") and self.last and rng.random() < 0.2:
            li = rng.randrange(self.last + 1)
        listing = self.point.listings[li]
        # write-back order runs over the pages of every file of the listing
        varying = [(fid, p) for _n, fid in listing for p in self.choices[fid].varying]
        # the first (or last) few pages are where write-back meets what stays old
        top = max(1, len(varying) - 1)
        if not k:
            k = (rng.randint(1, min(3, top)) if rng.random() < 0.5 else rng.randint(1, top)) if varying else 0
        if kind == "write-back":
            new = set(varying[:k])
        elif kind == "reverse":
            new = set(varying[len(varying) - k:])
        torn: set = set()
        if kind == "torn" and varying:
            torn = {varying[rng.randrange(len(varying))] for _ in range(rng.choice((1, 1, 2)))}
        old_or_new = rng.random() < 0.5 if newest is None else not newest
        out = []
        for name, fid in listing:
            ch = self.choices[fid]
            if kind == "all-old" or (kind == "older listing" and old_or_new):
                size, pick = ch.sizes[0], {}
            elif kind in ("all-new", "older listing"):
                size, pick = ch.latest_size, {p: ch.latest[p] for p in ch.varying}
            elif kind in ("write-back", "reverse"):
                size, pick = ch.latest_size, {p: ch.latest[p] for p in ch.varying if (fid, p) in new}
            else:  # random mix, torn
                size = rng.choice(ch.sizes) if rng.random() < 0.3 else ch.latest_size
                pick = {p: rng.choice(ch.pages[p]) for p in ch.varying}
                for tf, tp in torn:
                    if tf == fid:
                        pick[tp] = _tear(rng, self.pool, ch.pages[tp])
            out.append((name,) + ch.spec(size, pick))
        return tuple(out)


def plan_images(points: Sequence[CrashPoint], budget: int, rng: random.Random) -> List[Tuple[int, str]]:
    """Which (crash point, kind) images to check, about ``budget`` of them.

    At least half go to mixed images (write-back, reverse, random mix, torn) at
    the crash points where some page has more than one possible version; the
    rest to the clean ones (all-new at evenly spread points -- each is the
    directory at a distinct moment -- all-old, and older listings).
    """
    if not points:
        return []
    mixable = [i for i, pt in enumerate(points) if _mixable(pt)]
    n_mixed = budget // 2 if mixable else 0
    n_clean = max(len(points) and 2, budget - n_mixed)
    plan: List[Tuple[int, str]] = []
    # clean: all-new and all-old at evenly spread points, the last point always
    n_new = max(1, n_clean // 2)
    step = max(1.0, len(points) / n_new)
    chosen = sorted({min(len(points) - 1, int(i * step)) for i in range(n_new)} | {len(points) - 1})
    for i in chosen:
        plan.append((i, "all-new"))
    n_old = max(1, n_clean - len(chosen))
    with_listings = [i for i, pt in enumerate(points) if len(pt.listings) > 1]
    for j in range(n_old):
        if with_listings and j % 2 == 0:
            plan.append((rng.choice(with_listings), "older listing"))
        else:
            plan.append((rng.randrange(len(points)), "all-old"))
    cycle = ("random mix", "torn", "write-back", "reverse", "torn", "random mix")
    for j in range(n_mixed):
        plan.append((mixable[j % len(mixable)] if j < len(mixable) else rng.choice(mixable), cycle[j % len(cycle)]))
    plan.sort(key=lambda t: t[0])
    return plan


def _mixable(point: CrashPoint) -> bool:
    listed = {fid for _n, fid in point.listings[-1]}
    for fid in listed:
        durable, versions = point.files[fid]
        if any(v != durable for v in versions) and (durable is not None or any(versions)):
            return True
    return False


def materialize(spec: ImageSpec, pool: PagePool) -> Dict[str, bytes]:
    """The files (name -> bytes) of an image."""
    return {name: b"".join(pool.pages[p] for p in pages)[:size] for name, size, pages in spec}


def write_image(img: Dict[str, bytes], path: Path) -> None:
    """Make directory ``path`` hold exactly the files of ``img``."""
    path.mkdir(parents=True, exist_ok=True)
    for name in os.listdir(path):
        full = path / name
        if full.is_dir():
            shutil.rmtree(full)
        else:
            os.unlink(full)
    for name, data in img.items():
        with open(path / name, "wb") as f:
            f.write(data)


def read_dir(path: Path) -> Dict[str, bytes]:
    out = {}
    for name in sorted(os.listdir(path)):
        with open(path / name, "rb") as f:
            out[name] = f.read()
    return out


# ---------------------------------------------------------------------------
# Reopening
# ---------------------------------------------------------------------------


def to_model_entry(e: Any) -> ModelEntry:
    return (int(e.index), int(e.term), int(e.kind), bytes(e.payload))


@contextlib.contextmanager
def syncs_disabled() -> Iterator[None]:
    """Skip the real fsync calls (reopening crash images tests recovery, not the disk)."""
    import fastlog._osio as osio

    saved = {n: getattr(osio, n) for n in ("fdatasync", "fsync", "fsync_dir")}
    osio.fdatasync = osio.fsync = lambda fd: None
    osio.fsync_dir = lambda path: None
    try:
        yield
    finally:
        for n, f in saved.items():
            setattr(osio, n, f)


def read_log(path: Path, **options: Any) -> Recovered:
    """Open the log at ``path`` and read everything it holds."""
    import fastlog

    try:
        with fastlog.Log(str(path), **options) as log:
            return _read_all(log, log.purge_boundary(), spot_checks=True)
    except Exception as exc:  # reported as a broken promise, with its type
        return Recovered(error=f"{type(exc).__name__}: {exc}")


def read_engine(path: Path, **options: Any) -> Recovered:
    """Open ``path`` as the asyncio engine (``fastlog.open``) and read everything through its
    LogStore and MetaStore (the synchronous reads; opening is the same recovery)."""
    import fastlog

    try:
        with fastlog.open(str(path), **options) as engine:
            store = engine.log_store()
            return _read_all(store, store.load_purge_boundary(), spot_checks=False)
    except Exception as exc:
        return Recovered(error=f"{type(exc).__name__}: {exc}")


def _read_all(reader: Any, b: Any, spot_checks: bool) -> Recovered:
    """Everything ``reader`` (a ``Log`` or a ``LogStore``) holds, once its reads agree.

    ``b`` is the purge boundary the caller read first.  With ``spot_checks``
    the single-entry reads (``entry``, ``term_at``) at both ends and the middle
    must match ``get_entries``; only the ``Log`` reads one entry synchronously.
    """
    first = reader.first_index()
    last = reader.last_index()
    entries = tuple(to_model_entry(e) for e in reader.get_entries(first, last)) if first else ()
    if entries and len(entries) != entries[-1][0] - entries[0][0] + 1:
        return Recovered(error=f"get_entries returned a non-contiguous range {entries[0][0]}..{entries[-1][0]}")
    for probe in (first, last, (first + last) // 2) if spot_checks else ():
        if first and first <= probe <= last:
            e = reader.entry(probe)
            want = entries[probe - first]
            if e is None or to_model_entry(e) != want:
                return Recovered(error=f"entry({probe}) {e!r} disagrees with get_entries")
            if reader.term_at(probe) != want[1]:
                return Recovered(error=f"term_at({probe}) disagrees with get_entries")
    if b is not None and reader.term_at(b.index) != b.term:
        return Recovered(error=f"term_at(boundary {b.index}) != {b.term}")
    return Recovered(
        boundary=(b.index, b.term) if b is not None else None,
        entries=entries,
        last_index=last,
        first_index=first,
    )


def read_hard_state(path: Path) -> Any:
    """The hard state stored in ``path`` (through the engine's meta store)."""
    from fastlog.meta import FileMetaStore

    return FileMetaStore(str(path)).load_hard_state()


# ---------------------------------------------------------------------------
# Running a workload and checking its images
# ---------------------------------------------------------------------------


@dataclass
class CrashStats:
    crash_points: int = 0
    images: int = 0  # (crash point, image) pairs checked
    distinct_images: int = 0  # distinct directories reopened
    torn_cut: int = 0  # images whose reopened log lost unacknowledged entries
    recoveries: int = 0  # crash images whose recovery was itself recorded and crashed
    failed: int = 0  # images that broke the promise
    failures: List[str] = field(default_factory=list)  # the first few, described
    kinds: Dict[str, int] = field(default_factory=dict)  # images checked, by kind
    failed_kinds: Dict[str, int] = field(default_factory=dict)  # images that broke the promise, by kind

    def add(self, other: "CrashStats") -> None:
        self.crash_points += other.crash_points
        self.images += other.images
        self.distinct_images += other.distinct_images
        self.torn_cut += other.torn_cut
        self.recoveries += other.recoveries
        self.failed += other.failed
        self.failures.extend(other.failures)
        for k, v in other.kinds.items():
            self.kinds[k] = self.kinds.get(k, 0) + v
        for k, v in other.failed_kinds.items():
            self.failed_kinds[k] = self.failed_kinds.get(k, 0) + v

    def count(self, kind: str, failed: bool) -> None:
        self.images += 1
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if failed:
            self.failed += 1
            self.failed_kinds[kind] = self.failed_kinds.get(kind, 0) + 1

    def mixed_share(self) -> float:
        mixed = sum(self.kinds.get(k, 0) for k in MIXED_KINDS + ("during recovery", "after recovery"))
        return mixed / self.images if self.images else 0.0


# A recorded recovery: given a directory holding a crash image, what that image
# recovers to and the model state it matched, recover it under a recorder and
# return the crash points of that recovery and of the work after it.
RecoveryRun = Callable[[Path, Recovered, LogState, Position], List[CrashPoint]]


class _Checker:
    """Reopens images (each distinct one once) and checks them against a model."""

    def __init__(self, stats: CrashStats, scratch: Path, img_dir: Path, open_options: Dict[str, Any],
                 check_hard_state: bool, reopen_twice_every: int, max_failures: int, describe: str,
                 reader: str) -> None:
        self.stats = stats
        self.scratch = scratch
        self.img_dir = img_dir
        self.open_options = open_options
        self.check_hard_state = check_hard_state
        self.reopen_twice_every = reopen_twice_every
        self.max_failures = max_failures
        self.describe = describe
        self.reader = reader
        self.pool = PagePool()
        self.cache: Dict[ImageSpec, Tuple[Recovered, bool]] = {}
        self.listed_after: Dict[ImageSpec, Tuple[str, ...]] = {}  # the files left by reopening each image

    def check(self, spec: ImageSpec, kind: str, point: CrashPoint, n: int, model: LogModel) -> Tuple[Recovered, bool, Optional[int]]:
        """Check one image; return (what it reopened to, whether recovery changed a file, matched state)."""
        entry = self.cache.get(spec)
        if entry is None:
            img = materialize(spec, self.pool)
            entry = _reopen(img, self.img_dir, self.open_options, self.check_hard_state,
                            len(self.cache) % self.reopen_twice_every == 0, self.reader)
            self.cache[spec] = entry
            self.listed_after[spec] = tuple(os.listdir(self.img_dir))
            self.stats.distinct_images += 1
        got, changed = entry
        m = point.model or model
        state, why = m.match(got, point.position, check_hard_state=self.check_hard_state)
        if why is None and point.expect is not None and (
            got.entries != point.expect.entries or got.boundary != point.expect.boundary
        ):
            why = (f"recovery is not idempotent: a crash during it reopens to {_brief(got)}, "
                   f"the completed recovery gave {_brief(point.expect)}")
        self.stats.count(kind, why is not None)
        if why is None:
            if len(got.entries) < len(m.states[point.position[1]].entries):
                self.stats.torn_cut += 1
            return got, changed, state
        if len(self.stats.failures) < self.max_failures:
            saved = self.scratch / f"failed-{len(self.stats.failures)}"
            img = materialize(spec, self.pool)
            write_image(img, saved)
            sizes = {name: len(v) for name, v in img.items()}
            self.stats.failures.append(
                f"{self.describe} {kind} image at crash point {n} ({point.phase}: {point.label}, "
                f"position {point.position}): {why}\n  image files {sizes} kept in {saved}"
            )
        return got, changed, None


def _brief(r: Recovered) -> str:
    if not r.entries:
        return f"no entries (boundary {r.boundary})"
    return f"entries {r.entries[0][0]}..{r.entries[-1][0]} (boundary {r.boundary})"


def check_points(
    points: Sequence[CrashPoint],
    model: LogModel,
    scratch: Path,
    budget: int,
    seed: int,
    open_options: Dict[str, Any],
    describe: str = "",
    check_hard_state: bool = False,
    reopen_twice_every: int = 7,
    max_failures: int = 5,
    recovery: Optional[RecoveryRun] = None,
    recovery_runs: int = 0,
    recovery_images: int = 12,
    reader: str = "log",
) -> CrashStats:
    """Check about ``budget`` images spread over ``points`` (see :func:`plan_images`),
    then crash ``recovery_runs`` recoveries; returns the counts and failures.

    Identical images are reopened once (recovery is deterministic) but checked
    against the model position of every crash point that produced them.  Every
    ``reopen_twice_every``-th distinct image is reopened a second time, which
    must give the same log (recovery is idempotent).

    A recovery run takes an image whose reopening changed some file (a torn
    tail cut and zeroed, a stale segment or ``*.tmp`` file deleted), recovers
    it again under a recorder (``recovery``), and checks ``recovery_images``
    crash images of that recovery and of the work after it: a crash during
    recovery must leave a directory that still keeps the promise of the
    original crash point, and that recovers to exactly what the completed
    recovery gave.
    """
    stats = CrashStats(crash_points=len(points))
    if not points:
        return stats
    rng = random.Random(seed)
    with syncs_disabled(), _image_dir(scratch) as img_dir:
        checker = _Checker(stats, scratch, img_dir, open_options, check_hard_state, reopen_twice_every,
                           max_failures, describe, reader)
        makers: Dict[int, ImageMaker] = {}
        candidates: List[Tuple[ImageSpec, Recovered, LogState, Position]] = []
        for n, kind in plan_images(points, budget, rng):
            maker = makers.get(n)
            if maker is None:
                makers.clear()  # the plan is sorted by point: one maker alive at a time
                maker = makers[n] = ImageMaker(points[n], rng, checker.pool)
            spec = maker.image(kind)
            got, changed, state = checker.check(spec, kind, points[n], n, model)
            if changed and state is not None:
                candidates.append((spec, got, model.states[state], points[n].position))
        if recovery is None or not recovery_runs or not candidates:
            return stats
        # Distinct recoveries, those with the most to get wrong first: a deleted
        # segment (its deletion must be durable), more than one entry cut (the
        # records after a torn one must be durably zeroed); then any.
        unique: Dict[ImageSpec, Tuple[int, float, Recovered, LogState, Position]] = {}
        for spec, got, state, position in candidates:
            if spec not in unique:
                cut = len(state.entries) - len(got.entries)
                dropped_from = state.entries[len(got.entries)][0] if cut else 0
                left = set(checker.listed_after[spec])
                # a deleted segment with a header, that entries sent again could lead up to
                deleted = any(
                    name not in left and name.endswith(".seg") and name[:20].isdigit()
                    and int(name[:20]) > dropped_from and any(checker.pool.pages[pages[0]][:64]) if pages else False
                    for name, _size, pages in spec
                )
                rank = 0 if deleted and cut else 1 if cut > 1 else 2
                unique[spec] = (rank, rng.random(), got, state, position)
        picked = sorted(unique, key=lambda s: unique[s][:2])[:recovery_runs]
        for r, spec in enumerate(picked):
            _rank, _r, got, state, position = unique[spec]
            work = img_dir.parent / f"recovery-{r}"
            write_image(materialize(spec, checker.pool), work)
            rec_points = recovery(work, got, state, position)
            shutil.rmtree(work, ignore_errors=True)
            stats.recoveries += 1
            stats.crash_points += len(rec_points)
            during = [p for p in rec_points if p.phase == "recovery"]
            after = [p for p in rec_points if p.phase != "recovery"]
            half = recovery_images // 2
            for phase_points, kind_name, budget_ in ((during, "during recovery", half),
                                                     (after, "after recovery", recovery_images - half)):
                for n, kind in plan_images(phase_points, budget_, rng):
                    point = phase_points[n]
                    spec2 = ImageMaker(point, rng, checker.pool).image(kind)
                    checker.check(spec2, kind_name, point, n, model)
            # Always: right after each write of the work after recovery, only
            # its first pages written back (the rest as last synced); at the end,
            # each listing recovery's deletions may fall back to.
            for n, point in enumerate(after):
                maker = ImageMaker(point, rng, checker.pool)
                if point.label.startswith("after core.append"):
                    for k in (1, 2, 3):
                        checker.check(maker.image("write-back", k=k), "after recovery", point, n, model)
                if n == len(after) - 1:
                    for li in range(len(point.listings) - 1):
                        checker.check(maker.image("older listing", listing=li, newest=True), "after recovery",
                                      point, n, model)
    return stats


@contextlib.contextmanager
def _image_dir(scratch: Path) -> Iterator[Path]:
    """A scratch directory for images, in memory when /dev/shm is available."""
    import tempfile

    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else str(scratch)
    d = Path(tempfile.mkdtemp(prefix="fastlog-crash-", dir=base))
    try:
        yield d / "log"
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _reopen(img: Dict[str, bytes], img_dir: Path, open_options: Dict[str, Any], hard_state: bool, twice: bool,
            reader: str = "log") -> Tuple[Recovered, bool]:
    """Reopen an image; return what it holds and whether recovery changed any file."""
    write_image(img, img_dir)
    got = read_engine(img_dir, **open_options) if reader == "engine" else read_log(img_dir, **open_options)
    after = read_dir(img_dir)
    changed = {k: v for k, v in after.items() if k != "LOCK"} != {k: v for k, v in img.items() if k != "LOCK"}
    if got.error is not None:
        return got, changed
    if hard_state:
        try:
            hs = read_hard_state(img_dir)
        except Exception as exc:
            return Recovered(error=f"hard state: {type(exc).__name__}: {exc}"), changed
        got = Recovered(got.boundary, got.entries, got.last_index, got.first_index, hs, None)
    if twice:
        again = read_log(img_dir, **open_options)
        if again.error is not None or again.entries != got.entries or again.boundary != got.boundary:
            return Recovered(error=f"second reopen differs from the first: {again.error or again.entries[-1:]}"), changed
    return got, changed


# ---------------------------------------------------------------------------
# Counts in the pytest terminal summary
# ---------------------------------------------------------------------------

_SUMMARY_PLUGIN = "fastlog-robustness-counts"


class _Summary:
    """Adds up counts per topic and shows them at the end of the pytest run."""

    def __init__(self) -> None:
        self.topics: Dict[str, Tuple[str, Dict[str, int]]] = {}

    def add(self, topic: str, template: Any, counts: Dict[str, int]) -> None:
        _tmpl, totals = self.topics.setdefault(topic, (template, {}))
        for k, v in counts.items():
            totals[k] = totals.get(k, 0) + v

    def lines(self) -> List[str]:
        return [f"{topic}: " + _fill(template, totals) for topic, (template, totals) in self.topics.items()]

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.topics:
            terminalreporter.section("fastlog robustness counts")
            for line in self.lines():
                terminalreporter.write_line(line)


def _fill(template: Any, totals: Dict[str, int]) -> str:
    return template(totals) if callable(template) else template.format(**totals)


def report(config: Any, topic: str, template: Any, **counts: int) -> None:
    """Add ``counts`` to ``topic``'s totals, shown in the terminal summary whatever the
    capture mode (``template`` formats the totals, e.g. ``"{images} images"``, or is a
    function of them)."""
    print(f"{topic}: " + _fill(template, counts))
    pm = config.pluginmanager
    plugin = pm.get_plugin(_SUMMARY_PLUGIN)
    if plugin is None:
        plugin = _Summary()
        pm.register(plugin, _SUMMARY_PLUGIN)
    plugin.add(topic, template, counts)


def kind_key(kind: str) -> str:
    return "kind_" + kind.replace("-", "_").replace(" ", "_")


def describe_kinds(totals: Dict[str, int]) -> str:
    """The images checked by kind, and the share of those mixing moments or crashing recovery."""
    images = sum(totals.get(kind_key(k), 0) for k in KINDS)
    mixed = sum(totals.get(kind_key(k), 0) for k in MIXED_KINDS + ("during recovery", "after recovery"))
    parts = [f"{totals.get(kind_key(k), 0)} {k}" for k in KINDS]
    share = f"{100 * mixed / images:.0f}%" if images else "0%"
    return (", ".join(parts) + f" ({share} mixed, torn or crashed during/after recovery; "
            f"{totals.get('recoveries', 0)} recoveries crashed)")

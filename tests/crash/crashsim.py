"""Power-loss simulation for fastlog: a model of what a disk may hold after a crash.

How it works
------------
A workload runs against a real :class:`fastlog.Log` in a directory while
:class:`PowerLossRecorder` watches it:

* every durability call of the library goes through :mod:`fastlog._osio`; the
  recorder wraps ``fdatasync`` / ``fsync`` (the file's bytes at that moment become
  its *durable* content) and ``fsync_dir`` (the directory listing at that moment
  becomes the *durable* listing);
* it also wraps ``os.unlink`` / ``os.remove`` / ``os.rename`` / ``os.replace`` to see
  every directory change in order;
* segment data is written through a shared mapping, which the recorder cannot
  intercept, but the page cache is coherent with the mapping, so reading a file
  shows what the library has written so far.  The recorder reads every file at
  each of the calls above (an *observation*) and keeps, per file, every distinct
  content seen since the file was last synced.

At each observation it freezes a *crash point*: what a crash at that instant
could leave on disk.  :func:`crash_images` then builds concrete directories from
a crash point:

* the directory holds one of the listings observed since the last directory
  fsync (directory operations reach the disk in the order they were made, as on
  a journaling file system; a directory fsync makes every earlier one durable);
* each file's size is one it had since its last sync, and each 4 KiB page holds
  any version that page had since then (its durable version, or one observed
  later); a page of a file never synced may also read as zeros;
* some images tear one page at 512-byte sector granularity.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

PAGE = 4096
SECTOR = 512

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
        if got.error is not None:
            return f"reopen failed: {got.error}"
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
        ok = False
        for j in range(lo, hi + 1):
            why = _matches(got, self.states[j], acked_last)
            if why is None:
                ok = True
                break
            problems.append(f"state {j}: {why}")
        if not ok:
            return "log is no allowed state:\n  " + "\n  ".join(problems[-4:])
        if check_hard_state:
            allowed = [None] + list(self.hard_states[:n_hs])
            allowed = allowed[-2:]
            if got.hard_state not in allowed:
                return f"hard state {got.hard_state!r} is neither of {allowed!r}"
        return None


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


@dataclass
class FileTrack:
    fid: int
    durable: Optional[bytes]  # None: never synced
    versions: List[bytes] = field(default_factory=list)  # distinct contents since the last sync

    def add(self, data: bytes) -> None:
        if data not in self.versions:
            self.versions.append(data)


@dataclass(frozen=True)
class CrashPoint:
    label: str
    listings: Tuple[Tuple[Tuple[str, int], ...], ...]  # observed since the last dir fsync, oldest first
    files: Dict[int, Tuple[Optional[bytes], Tuple[bytes, ...]]]  # fid -> (durable, versions)
    position: Tuple[int, int, int]


class PowerLossRecorder:
    """Watches one directory and freezes crash points (see the module docstring)."""

    def __init__(self, root: Path, model: LogModel, *, ignore: Sequence[str] = (), real_syncs: bool = False):
        self.root = Path(root)
        # Harness self-tests: pretend these calls made nothing durable.
        self.ignore = frozenset(ignore)
        # The model decides what is durable, so the real system calls are only
        # worth their cost when a test wants them.
        self.real_syncs = real_syncs
        self.model = model
        self.tracks: Dict[int, FileTrack] = {}
        self.ino_fid: Dict[int, int] = {}
        self._gone: Dict[int, int] = {}  # inode -> file id of files no longer listed
        self._next_fid = 1
        self.points: List[CrashPoint] = []
        self.calls: Dict[str, int] = {}
        self.listings: List[Tuple[Tuple[str, int], ...]] = []
        self._active = False
        self._take_points = True
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
        listing = self._observe_listing()
        if not self.listings or listing != self.listings[-1]:
            self.listings.append(listing)
        if self._take_points:
            self.freeze(label)

    def freeze(self, label: str) -> None:
        files: Dict[int, Tuple[Optional[bytes], Tuple[bytes, ...]]] = {}
        wanted = {fid for listing in self.listings for _n, fid in listing}
        for fid in wanted:
            t = self.tracks[fid]
            files[fid] = (t.durable, tuple(t.versions))
        self.points.append(CrashPoint(label, tuple(self.listings), files, self.model.position()))

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

    def on_file_sync(self, name: str, fd: int, real: Callable[[int], Any]) -> Any:
        self.calls[name] = self.calls.get(name, 0) + 1
        if not self._in_root(fd):
            return real(fd)
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
        self.calls["fsync_dir"] = self.calls.get("fsync_dir", 0) + 1
        if os.path.realpath(os.fspath(path)) != str(self.root):
            return real(path)
        self.observe("before fsync_dir")
        listing = self.listings[-1]
        result = real(path) if self.real_syncs else None
        if "fsync_dir" not in self.ignore:
            self.listings = [listing]
        self.observe("after fsync_dir")
        return result

    def on_dir_op(self, name: str, real: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self.observe(f"before {name}")
        result = real(*args, **kwargs)
        self.observe(f"after {name}")
        return result

    @contextlib.contextmanager
    def installed(self) -> Iterator["PowerLossRecorder"]:
        """Wrap fastlog._osio and the os directory calls for the duration of the block."""
        import fastlog._osio as osio

        saved_osio = {n: getattr(osio, n) for n in ("fdatasync", "fsync", "fsync_dir", "fallocate")}
        saved_os = {n: getattr(os, n) for n in ("unlink", "remove", "rename", "replace")}

        def file_sync(name: str):
            real = saved_osio[name]
            return lambda fd: self.on_file_sync(name, fd, real)

        def fallocate(fd: int, size: int) -> Any:
            self.calls["fallocate"] = self.calls.get("fallocate", 0) + 1
            result = saved_osio["fallocate"](fd, size)
            if self._in_root(fd):
                self.observe("after fallocate")
            return result

        def dir_op(name: str):
            real = saved_os[name]
            return lambda *a, **k: self.on_dir_op(name, real, *a, **k)

        osio.fdatasync = file_sync("fdatasync")
        osio.fsync = file_sync("fsync")
        osio.fsync_dir = lambda path: self.on_dir_sync(path, saved_osio["fsync_dir"])
        osio.fallocate = fallocate
        for n in saved_os:
            setattr(os, n, dir_op(n))
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


class _FileChoices:
    """The sizes and page versions a file may hold after a crash.

    ``pages[p]`` lists the page ids page ``p`` may hold, its durable version first.
    """

    def __init__(self, pool: PagePool, durable: Optional[bytes], versions: Tuple[bytes, ...]):
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
        for p in range(npages):
            opts: List[int] = []
            if durable is None or len(durable) <= p * PAGE:
                opts.append(pool.id(ZERO_PAGE))  # never written: reads as zeros
            for c in cands:
                page = c[p * PAGE:(p + 1) * PAGE]
                if len(page) < PAGE:
                    page = page + bytes(PAGE - len(page))
                pid = pool.id(page)
                if pid not in opts:
                    opts.append(pid)
            self.pages.append(opts)
            lat = latest[p * PAGE:(p + 1) * PAGE]
            self.latest.append(pool.id(lat + bytes(PAGE - len(lat))))
        self.varying = [p for p in range(npages) if len(self.pages[p]) > 1]

    def spec(self, size: int, pick: Dict[int, int]) -> Tuple[int, Tuple[int, ...]]:
        n = (size + PAGE - 1) // PAGE
        return (size, tuple(pick.get(p, self.pages[p][0]) for p in range(n)))


# An image: ((name, size, page ids), ...) in listing order.
ImageSpec = Tuple[Tuple[str, int, Tuple[int, ...]], ...]


def _tear(rng: random.Random, pool: PagePool, options: List[int]) -> int:
    out = bytearray()
    for s in range(PAGE // SECTOR):
        src = pool.pages[rng.choice(options)]
        out += src[s * SECTOR:(s + 1) * SECTOR]
    return pool.id(bytes(out))


def crash_images(point: CrashPoint, rng: random.Random, limit: int, pool: Optional[PagePool] = None) -> Iterator[ImageSpec]:
    """Up to ``limit`` distinct images a crash at ``point`` may leave (see :func:`materialize`).

    Structured images come first (all durable, all latest, each listing,
    write-back in file order and in reverse order), then random ones, about a
    third of them with one page torn at sector granularity.
    """
    pool = pool if pool is not None else PagePool()
    choices = {fid: _FileChoices(pool, *point.files[fid]) for fid in point.files}

    def image(listing_idx: int, mode: str, k: int = 0) -> ImageSpec:
        out = []
        for name, fid in point.listings[listing_idx]:
            ch = choices[fid]
            if mode == "old":
                size, pick = ch.sizes[0], {}
            elif mode == "new":
                size, pick = ch.latest_size, {p: ch.latest[p] for p in ch.varying}
            elif mode == "prefix":  # sequential write-back: the first k varying pages are new
                size, pick = ch.latest_size, {p: ch.latest[p] for p in ch.varying[:k]}
            elif mode == "suffix":  # the last pages written back first
                size, pick = ch.latest_size, ({p: ch.latest[p] for p in ch.varying[len(ch.varying) - k:]} if k else {})
            else:  # random
                size = rng.choice(ch.sizes) if rng.random() < 0.3 else ch.latest_size
                pick = {p: rng.choice(ch.pages[p]) for p in ch.varying}
                if ch.varying and rng.random() < 0.35:
                    p = rng.choice(ch.varying)
                    pick[p] = _tear(rng, pool, ch.pages[p])
            out.append((name,) + ch.spec(size, pick))
        return tuple(out)

    last = len(point.listings) - 1
    plan: List[Tuple[int, str, int]] = [(last, "new", 0), (0, "old", 0), (last, "old", 0), (0, "new", 0)]
    maxk = max((len(c.varying) for c in choices.values()), default=0)
    for k in range(1, maxk + 1):
        plan.append((last, "prefix", k))
        plan.append((last, "suffix", k))
    for li in range(1, last):
        plan.append((li, "new", 0))
        plan.append((li, "old", 0))
    seen: set = set()
    produced = 0
    for li, mode, k in plan:
        if produced >= limit:
            return
        img = image(li, mode, k)
        if img not in seen:
            seen.add(img)
            produced += 1
            yield img
    misses = 0
    while produced < limit and misses < 4 * limit + 20:
        img = image(rng.randrange(len(point.listings)), "random")
        if img in seen:
            misses += 1
            continue
        seen.add(img)
        produced += 1
        yield img


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
            b = log.purge_boundary()
            first = log.first_index()
            last = log.last_index()
            entries = tuple(to_model_entry(e) for e in log.get_entries(first, last)) if first else ()
            if entries and len(entries) != entries[-1][0] - entries[0][0] + 1:
                return Recovered(error=f"get_entries returned a non-contiguous range {entries[0][0]}..{entries[-1][0]}")
            for probe in (first, last, (first + last) // 2):
                if first and first <= probe <= last:
                    e = log.entry(probe)
                    want = entries[probe - first]
                    if e is None or to_model_entry(e) != want:
                        return Recovered(error=f"entry({probe}) {e!r} disagrees with get_entries")
                    if log.term_at(probe) != want[1]:
                        return Recovered(error=f"term_at({probe}) disagrees with get_entries")
            if b is not None and log.term_at(b.index) != b.term:
                return Recovered(error=f"term_at(boundary {b.index}) != {b.term}")
            return Recovered(
                boundary=(b.index, b.term) if b is not None else None,
                entries=entries,
                last_index=last,
                first_index=first,
            )
    except Exception as exc:  # reported as a broken promise, with its type
        return Recovered(error=f"{type(exc).__name__}: {exc}")


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
    failed: int = 0  # images that broke the promise
    failures: List[str] = field(default_factory=list)  # the first few, described

    def add(self, other: "CrashStats") -> None:
        self.crash_points += other.crash_points
        self.images += other.images
        self.distinct_images += other.distinct_images
        self.torn_cut += other.torn_cut
        self.failed += other.failed
        self.failures.extend(other.failures)


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
) -> CrashStats:
    """Check about ``budget`` images spread over ``points``; returns the counts and failures.

    Identical images are reopened once (recovery is deterministic) but checked
    against the model position of every crash point that produced them.  Every
    ``reopen_twice_every``-th distinct image is reopened a second time, which
    must give the same log (recovery is idempotent).
    """
    stats = CrashStats(crash_points=len(points))
    if not points:
        return stats
    rng = random.Random(seed)
    pool = PagePool()
    cache: Dict[ImageSpec, Recovered] = {}
    per_point = max(2, budget // len(points))
    extra = max(0, budget - per_point * len(points))
    with syncs_disabled(), _image_dir(scratch) as img_dir:
        for n, point in enumerate(points):
            limit = per_point + (1 if n < extra else 0)
            for spec in crash_images(point, rng, limit, pool):
                got = cache.get(spec)
                if got is None:
                    img = materialize(spec, pool)
                    got = _reopen(img, img_dir, open_options, check_hard_state, len(cache) % reopen_twice_every == 0)
                    cache[spec] = got
                    stats.distinct_images += 1
                stats.images += 1
                why = model.check(got, point.position, check_hard_state=check_hard_state)
                if why is None:
                    if len(got.entries) < len(model.states[point.position[1]].entries):
                        stats.torn_cut += 1
                    continue
                stats.failed += 1
                if len(stats.failures) < max_failures:
                    saved = scratch / f"failed-{len(stats.failures)}"
                    img = materialize(spec, pool)
                    write_image(img, saved)
                    sizes = {name: len(v) for name, v in img.items()}
                    stats.failures.append(
                        f"{describe} crash point {n} ({point.label}, position {point.position}): {why}\n"
                        f"  image files {sizes} kept in {saved}"
                    )
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


def _reopen(img: Dict[str, bytes], img_dir: Path, open_options: Dict[str, Any], hard_state: bool, twice: bool) -> Recovered:
    write_image(img, img_dir)
    got = read_log(img_dir, **open_options)
    if got.error is not None:
        return got
    if hard_state:
        try:
            hs = read_hard_state(img_dir)
        except Exception as exc:
            return Recovered(error=f"hard state: {type(exc).__name__}: {exc}")
        got = Recovered(got.boundary, got.entries, got.last_index, got.first_index, hs, None)
    if twice:
        again = read_log(img_dir, **open_options)
        if again.error is not None or again.entries != got.entries or again.boundary != got.boundary:
            return Recovered(error=f"second reopen differs from the first: {again.error or again.entries[-1:]}")
    return got


# ---------------------------------------------------------------------------
# Counts in the pytest terminal summary
# ---------------------------------------------------------------------------

_SUMMARY_PLUGIN = "fastlog-robustness-counts"


class _Summary:
    """Adds up counts per topic and shows them at the end of the pytest run."""

    def __init__(self) -> None:
        self.topics: Dict[str, Tuple[str, Dict[str, int]]] = {}

    def add(self, topic: str, template: str, counts: Dict[str, int]) -> None:
        _tmpl, totals = self.topics.setdefault(topic, (template, {}))
        for k, v in counts.items():
            totals[k] = totals.get(k, 0) + v

    def lines(self) -> List[str]:
        return [f"{topic}: " + template.format(**totals) for topic, (template, totals) in self.topics.items()]

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.topics:
            terminalreporter.section("fastlog robustness counts")
            for line in self.lines():
                terminalreporter.write_line(line)


def report(config: Any, topic: str, template: str, **counts: int) -> None:
    """Add ``counts`` to ``topic``'s totals, shown in the terminal summary whatever the
    capture mode (``template`` formats the totals, e.g. ``"{images} images"``)."""
    print(f"{topic}: " + template.format(**counts))
    pm = config.pluginmanager
    plugin = pm.get_plugin(_SUMMARY_PLUGIN)
    if plugin is None:
        plugin = _Summary()
        pm.register(plugin, _SUMMARY_PLUGIN)
    plugin.add(topic, template, counts)

"""A full disk, on every filesystem: StorageFullError, never SIGBUS, nothing flushed lost.

Three layers, each on both cores:

* pwrite-only mode (``mapped_stores=False``, what fastlog uses on btrfs, FUSE,
  NFS, ...) forced on the local disk writes exactly the bytes of the default
  mode (a differential test);
* ENOSPC injected at each write site (a core whose writes fail, or a patched
  ``fastlog._osio``): StorageFullError, the log not poisoned where nothing on
  disk is inconsistent, and a reopen finds every flushed entry;
* real small filesystems (loop-mounted btrfs, journaled ext4, XFS, and
  tmpfs) filled up while a CHILD process appends, so a SIGBUS shows as the
  child's signal exit instead of killing the test run.  Then the log is
  reopened read-write in the still-full filesystem and purged.  Needs root
  and loop devices (skipped otherwise, with the reason).

Seen failing on broken builds: with the code before pwrite-only mode, the
compiled core's btrfs child died with SIGBUS (-7) and the pure-Python core's
with a bare OSError(ENOSPC); with the claim skip after a flush removed, with
the claim lowered after the cut (poisoning), with purge poisoning on a full
disk, with the batch not taken back, and with the pure-Python core's
``zero`` not punching holes, the matching test below failed; with the
no-progress check of ``_osio.pwrite_all`` removed, the EIO test hung.
"""
from __future__ import annotations

import errno
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

import fastlog._osio as osio
from fastlog import Log, LogId
from fastlog.errors import PoisonedError, StorageFullError

from core_modules import CORE_NAMES, import_core

REPO = Path(__file__).resolve().parent.parent
SEG = 64 << 10


@pytest.fixture(params=CORE_NAMES)
def impl(request: pytest.FixtureRequest) -> str:
    import_core(request.param)  # skips when the compiled core is not built
    return request.param


def make(log: Log, start: int, n: int, size: int = 300, term: int = 1) -> List[Any]:
    return [log.Entry(index=i, term=term, payload=bytes([i % 251]) * size) for i in range(start, start + n)]


def content(log: Log) -> list:
    first, last = log.first_index(), log.last_index()
    return [(e.index, e.term, e.payload) for e in log.get_entries(first, last)] if first else []


def poisoned(log: Log) -> bool:
    try:
        log.flush()
    except PoisonedError:
        return True
    return False


# ---------------------------------------------------------------------------
# pwrite-only mode writes the bytes of the default mode
# ---------------------------------------------------------------------------


def _workload(path: str, impl: str, mapped: Optional[bool]) -> list:
    with Log(path, implementation=impl, segment_size=SEG, mapped_stores=mapped) as log:
        log.append(make(log, 1, 5, size=10))  # small stores, before the first flush
        log.append(make(log, 6, 400, size=200))  # rolls over
        log.flush()
        log.append(make(log, 406, 3, size=8))  # small batch after a flush
        log.flush()
        log.append(make(log, 409, 100, size=1000))
        log.truncate(450)  # inside the last segment, below its claim after the flush
        log.flush()
        log.append(make(log, 300, 50, size=77, term=2))  # replace: drops segments
        log.purge(LogId(index=120, term=1))
        log.append(make(log, 350, 300, size=500, term=2))
        out = content(log)
    return out


def test_pwrite_only_mode_writes_the_same_bytes(tmp_path: Path, impl: str) -> None:
    a, b = str(tmp_path / "default"), str(tmp_path / "pwrite")
    assert _workload(a, impl, None) == _workload(b, impl, False)
    names = sorted(os.listdir(a))
    assert names == sorted(os.listdir(b))
    for name in names:
        if name != "LOCK":
            assert filecmp.cmp(os.path.join(a, name), os.path.join(b, name), shallow=False), name
    with Log(b, implementation=impl, segment_size=SEG, mapped_stores=False) as log:
        assert content(log) == _workload(str(tmp_path / "again"), impl, None)


def test_pwrite_only_mode_maps_read_only(tmp_path: Path, impl: str) -> None:
    with Log(str(tmp_path), implementation=impl, segment_size=SEG, mapped_stores=False) as log:
        log.append(make(log, 1, 500))
        for seg in log._segments:
            with pytest.raises(TypeError):
                seg.mm[100] = 1  # PROT_READ: a store would be a crash, not a silent write
        assert log._zero_ahead_window == 0 and log._prepare == 0


def test_pwrite_only_truncate_punches_holes(tmp_path: Path, impl: str) -> None:
    """Truncation frees whole blocks instead of rewriting them (no new space on
    copy-on-write filesystems); the bytes read back as zeros either way."""
    with Log(str(tmp_path), implementation=impl, segment_size=1 << 20, mapped_stores=False) as log:
        log.append(make(log, 1, 2000))
        log.flush()
        seg = log._segments[-1]
        before = os.fstat(seg.fd).st_blocks
        log.truncate(10)
        log.flush()
        cut = log._core.segment_info(-1)[2]
        assert os.fstat(seg.fd).st_blocks < before
        assert bytes(seg.mm[cut : 2000 * 340]) == bytes(2000 * 340 - cut)
    with Log(str(tmp_path), implementation=impl, segment_size=1 << 20) as log:
        assert log.last_index() == 9


def test_pwrite_only_reopen_cuts_a_torn_tail(tmp_path: Path, impl: str) -> None:
    """Cutting a torn tail on reopen goes through LogCore.zero: holes, no stores."""
    path = str(tmp_path)
    with Log(path, implementation=impl, segment_size=1 << 20, mapped_stores=False) as log:
        log.append(make(log, 1, 100))
        end = log.segments()[-1]["end"]
        seg_path = log.segments()[-1]["path"]
    with open(seg_path, "r+b") as f:  # a torn write past the durable records
        f.seek(end + 100)
        f.write(b"\xff" * 20000)
    with Log(path, implementation=impl, segment_size=1 << 20, mapped_stores=False) as log:
        assert log.last_index() == 100
        log.append(make(log, 101, 10))
    with open(seg_path, "rb") as f:
        data = f.read()
    assert b"\xff" * 8 not in data
    with Log(path, implementation=impl, segment_size=1 << 20) as log:
        assert content(log) == [(e.index, e.term, e.payload) for e in make(log, 1, 110)]


def test_core_never_stores_into_a_read_only_mapping(tmp_path: Path, core_module: Any) -> None:
    """A read-only mapping with a file: every write goes with pwrite, whatever
    the hints (``prepare``, ``mapped_upto``) say.  Seen failing: with the
    compiled core's guard removed, this test died with SIGSEGV."""
    import mmap

    size = 1 << 20
    path = str(tmp_path / "seg")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        osio.fallocate(fd, size)
        mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
        core = core_module.LogCore(1 << 16)
        core.load_segment(mm, 1, 0, 4096, fresh=True, fd=fd)
        batch = [core_module.Entry(i, 1, b"x" * 50) for i in range(1, 11)]
        assert core.append(batch, 0, size, 1 << 16) == 10  # small-store and prepared hints
        core.append([core_module.Entry(i, 1, b"y" * 5000) for i in range(11, 111)], 0, 0, 1 << 16)
        core.write_at(0, 0, b"HEADER")
        _, _, end, _ = core.segment_info(0)
        cut, old_end = core.truncate(50)
        core.zero(0, cut, old_end)
        assert core.get_range(1, 49) == batch + [core_module.Entry(i, 1, b"y" * 5000) for i in range(11, 50)]
        with open(path, "rb") as f:
            data = f.read()
        assert data[:6] == b"HEADER" and data[cut:old_end] == bytes(old_end - cut)
        core.drop_last_segment()
        mm.close()
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------
# ENOSPC at each write site
# ---------------------------------------------------------------------------


class FullCore:
    """Wraps a LogCore; the named write methods fail with ENOSPC while ``full``
    (after ``allow`` more successful calls), writing nothing, as a full disk does."""

    def __init__(self, core: Any, methods: set, allow: int = 0) -> None:
        self._core = core
        self._methods = methods
        self.allow = allow
        self.full = True

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._core, name)
        if name not in self._methods:
            return real

        def call(*args: Any, **kw: Any) -> Any:
            if self.full:
                if self.allow <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                self.allow -= 1
            return real(*args, **kw)

        return call


@contextmanager
def full_core(log: Log, *methods: str, allow: int = 0) -> Iterator[FullCore]:
    real = log._core
    fake = FullCore(real, set(methods), allow)
    log._core = fake
    try:
        yield fake
    finally:
        log._core = real


def reopened(path: str, impl: str) -> list:
    with Log(path, implementation=impl, segment_size=SEG) as log:
        return content(log)


def test_append_write_fails(tmp_path: Path, impl: str) -> None:
    path = str(tmp_path)
    log = Log(path, implementation=impl, segment_size=SEG)
    log.append(make(log, 1, 100))
    log.flush()
    before = content(log)
    with full_core(log, "append"):
        with pytest.raises(StorageFullError):
            log.append(make(log, 101, 5))
    assert content(log) == before and not poisoned(log)
    # A batch that rolls over and fails in the second segment is taken back whole.
    with full_core(log, "append", allow=1):
        with pytest.raises(StorageFullError):
            log.append(make(log, 101, 400))
    assert content(log) == before and not poisoned(log)
    log.append(make(log, 101, 400))
    log.close()
    assert reopened(path, impl)[-1][0] == 500


def test_segment_header_write_fails(tmp_path: Path, impl: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path)
    log = Log(path, implementation=impl, segment_size=SEG)
    log.append(make(log, 1, 150))
    log.flush()
    before = content(log)
    real = osio.pwrite_all

    def pwrite_all(fd: int, data: Any, offset: int) -> None:
        if offset == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, data, offset)

    monkeypatch.setattr(osio, "pwrite_all", pwrite_all)
    with pytest.raises(StorageFullError):
        log.append(make(log, 151, 300))
    monkeypatch.setattr(osio, "pwrite_all", real)
    assert content(log) == before and not poisoned(log)
    log.close()
    assert reopened(path, impl) == before


def test_claim_write_fails_after_flush(tmp_path: Path, impl: str) -> None:
    """The lazy synced_end claim is skipped without space: flush and close succeed."""
    path = str(tmp_path)
    log = Log(path, implementation=impl, segment_size=SEG, claim_interval=0)
    log.append(make(log, 1, 50))
    with full_core(log, "write_at"):
        assert log.flush() == 50
        log.append(make(log, 51, 300))  # rolls over: earlier segments' claims too
        assert log.flush() == 350
        assert not poisoned(log)
        log.close()
    assert [e[0] for e in reopened(path, impl)] == list(range(1, 351))


def test_truncate_claim_lowering_fails(tmp_path: Path, impl: str) -> None:
    """Lowering the claim comes first: without space the truncation changes nothing."""
    path = str(tmp_path)
    log = Log(path, implementation=impl, segment_size=SEG, claim_interval=0)
    log.append(make(log, 1, 400))
    log.flush()
    log.flush()  # the claims, written by the first flush, synced
    before = content(log)
    with full_core(log, "write_at"):
        with pytest.raises(StorageFullError):
            log.truncate(380)  # below the last segment's claim
        with pytest.raises(StorageFullError):
            log.append(make(log, 100, 5, term=2))  # a replace: the same truncation first
    assert content(log) == before and not poisoned(log)
    assert log.durable_index() == 400
    log.truncate(380)
    log.close()
    assert reopened(path, impl) == before[:379]


def test_truncate_zeroing_fails_poisons_but_loses_nothing(tmp_path: Path, impl: str) -> None:
    path = str(tmp_path)
    log = Log(path, implementation=impl, segment_size=SEG)
    log.append(make(log, 1, 100))
    log.flush()
    with full_core(log, "zero"):
        with pytest.raises(StorageFullError):
            log.truncate(90)
    assert poisoned(log)
    log.close()
    got = reopened(path, impl)
    assert got[:89] == [(e.index, e.term, e.payload) for e in make(log, 1, 89)]


@pytest.mark.parametrize("site", ["pwrite_all", "fsync"])
def test_purge_state_write_fails(tmp_path: Path, impl: str, monkeypatch: pytest.MonkeyPatch, site: str) -> None:
    path = str(tmp_path)
    log = Log(path, implementation=impl, segment_size=SEG)
    log.append(make(log, 1, 400))
    log.flush()
    before = content(log)
    real = getattr(osio, site)

    def fail(*_a: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(osio, site, fail)
    with pytest.raises(StorageFullError):
        log.purge(LogId(index=300, term=1))
    with pytest.raises(StorageFullError):
        log.reset()
    monkeypatch.setattr(osio, site, real)
    assert log.purge_boundary() is None and content(log) == before and not poisoned(log)
    assert not [n for n in os.listdir(path) if n.endswith(".tmp")]
    log.purge(LogId(index=300, term=1))
    log.close()
    assert reopened(path, impl) == before[300:]


def test_flush_sync_fails_full(tmp_path: Path, impl: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed fsync poisons (the kernel may have dropped the pages) but says why."""
    log = Log(str(tmp_path), implementation=impl, segment_size=SEG)
    log.append(make(log, 1, 10))
    monkeypatch.setattr(osio, "fdatasync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(StorageFullError):
        log.flush()
    monkeypatch.undo()
    assert poisoned(log)
    log.close()


def test_python_core_write_without_progress_is_eio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pwrite that returns 0 is an error, never an endless loop (the compiled
    core's _pwrite_all has the same rule in C)."""
    log = Log(str(tmp_path), implementation="python", segment_size=SEG)
    log.append(make(log, 1, 3))
    monkeypatch.setattr(os, "pwrite", lambda fd, data, off: 0)
    with pytest.raises(OSError) as info:
        log.append(make(log, 4, 3))
    assert info.value.errno == errno.EIO
    monkeypatch.undo()
    log.close()


def test_filesystem_decides_mapped_stores(tmp_path: Path) -> None:
    from fastlog import fsinfo

    with Log(str(tmp_path), segment_size=SEG) as log:
        assert log._mapped_stores == fsinfo.stores_in_place(str(tmp_path))
    with Log(str(tmp_path), segment_size=SEG, mapped_stores=True) as log:
        assert log._mapped_stores


# ---------------------------------------------------------------------------
# Real small filesystems, filled up
# ---------------------------------------------------------------------------

# (mkfs command, image size in MiB) per filesystem; tmpfs needs no image.
FILESYSTEMS: Dict[str, Any] = {
    "btrfs": (["mkfs.btrfs", "-q", "-f"], 300),
    "ext4": (["mkfs.ext4", "-q", "-F", "-j"], 300),
    "xfs": (["mkfs.xfs", "-q", "-f"], 300),
    "tmpfs": (None, 300),
}
FREE_MIB = 16  # left free after the filler (scaled down from the ~70 MiB of the reported runs)
CHILD_SEG = 4 << 20
# Payload bytes per entry: small for the compiled core (batches of 10 are then
# small stores, one of the paths that stored through the mapping); larger for
# the pure-Python core, which takes ~40 s to fill 16 MiB with small entries.
PAYLOAD = {"c": 200, "python": 2000}


def _skip_reason(fs: str) -> Optional[str]:
    if os.geteuid() != 0:
        return "needs root to mount filesystems"
    mkfs = FILESYSTEMS[fs][0]
    if mkfs is None:
        return None
    if not os.path.exists("/dev/loop-control"):
        return "no loop devices"
    if shutil.which(mkfs[0]) is None:
        return f"{mkfs[0]} is not installed (.ci/fs-tools.sh installs it)"
    return None


@contextmanager
def small_filesystem(fs: str) -> Iterator[str]:
    """A freshly made ``fs`` mounted on a private temporary directory, filled up
    to FREE_MIB free; unmounted (and its loop device let go) on the way out."""
    reason = _skip_reason(fs)
    if reason:
        pytest.skip(reason)
    mkfs, size_mib = FILESYSTEMS[fs]
    top = tempfile.mkdtemp(prefix=f"fastlog-full-{fs}-{os.getpid()}-")
    mnt = os.path.join(top, "mnt")
    os.mkdir(mnt)
    mounted = False
    try:
        if mkfs is None:
            cmd = ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", mnt]
        else:
            image = os.path.join(top, "image")
            with open(image, "wb") as f:
                f.truncate(size_mib << 20)
            made = subprocess.run(mkfs + [image], capture_output=True, text=True)
            if made.returncode:
                pytest.skip(f"{mkfs[0]} failed: {made.stderr.strip()[:200]}")
            # -o loop: the loop device is detached again by the unmount.
            cmd = ["mount", "-o", "loop", image, mnt]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"cannot mount {fs}: {done.stderr.strip()[:200]}")
        mounted = True
        _fill(mnt)
        yield mnt
    finally:
        if mounted:
            subprocess.run(["umount", mnt], check=False)
            if os.path.ismount(mnt):
                subprocess.run(["umount", "-l", mnt], check=False)
        shutil.rmtree(top, ignore_errors=True)


def _fill(mnt: str) -> None:
    os.sync()
    st = os.statvfs(mnt)
    spare = st.f_bavail * st.f_frsize - (FREE_MIB << 20)
    if spare > 0:
        fd = os.open(os.path.join(mnt, "filler"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.posix_fallocate(fd, 0, spare)
            os.fsync(fd)
        finally:
            os.close(fd)
    os.sync()


CHILD = textwrap.dedent(
    """
    import json, sys
    from fastlog import Log
    from fastlog.errors import StorageFullError
    path, impl, batch, flush_every, seg, size = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])

    def say(**kw):
        print(json.dumps(kw), flush=True)

    log = Log(path, implementation=impl, segment_size=seg)
    nxt, batches = 1, 0
    try:
        while True:
            log.append([log.Entry(index=i, term=1, payload=(b"%d;" % i).ljust(size, b"-")) for i in range(nxt, nxt + batch)])
            nxt += batch
            batches += 1
            if flush_every and batches % flush_every == 0:
                say(flushed=log.flush())
    except StorageFullError as exc:
        say(full=repr(exc), appended=nxt - 1)
    try:
        log.close()
        say(closed=nxt - 1)
    except StorageFullError as exc:
        say(close_full=repr(exc))
    """
)


def _payload(i: int, size: int) -> bytes:
    return (b"%d;" % i).ljust(size, b"-")


def _run_child(path: str, impl: str, batch: int, flushing: bool) -> Dict[str, Any]:
    # About one flush per 256 KiB of payload.
    flush_every = max(1, (256 << 10) // (batch * PAYLOAD[impl])) if flushing else 0
    env = dict(os.environ, PYTHONPATH=str(REPO))
    args = [batch, flush_every, CHILD_SEG, PAYLOAD[impl]]
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, path, impl] + [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    said: Dict[str, Any] = {"rc": proc.returncode, "stderr": proc.stderr[-2000:]}
    for line in proc.stdout.splitlines():
        said.update(json.loads(line))
    return said


def _check_fill_and_reopen(mnt: str, impl: str, batch: int, flushing: bool) -> None:
    path = os.path.join(mnt, f"log-{batch}-{int(flushing)}")
    said = _run_child(path, impl, batch, flushing)
    assert said["rc"] == 0, f"child died with {said['rc']} (a negative number is a signal): {said}"
    assert "full" in said, said
    durable = said.get("closed", said.get("flushed", 0))
    # Reopen read-write in the still-full (now quite full) filesystem: every
    # flushed entry is there.
    rest = _fill_rest(mnt)
    log = Log(path, implementation=impl, segment_size=CHILD_SEG)
    try:
        assert log.last_index() >= durable
        if durable:
            got = log.get_entries(1, durable)
            assert [e.index for e in got] == list(range(1, durable + 1))
            assert all(e.payload == _payload(e.index, PAYLOAD[impl]) for e in got)
        cutoff = log.last_index() // 2
        if cutoff:
            try:
                log.purge(LogId(index=cutoff, term=1))
            except StorageFullError:
                assert log.purge_boundary() is None and not poisoned(log)
            else:
                assert log.first_index() == cutoff + 1
    finally:
        log.close()
    shutil.rmtree(path)
    os.unlink(rest)
    os.sync()


def _fill_rest(mnt: str) -> str:
    """Take whatever space the log left, down to the last 64 KiB or so."""
    rest = os.path.join(mnt, "rest")
    fd = os.open(rest, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        size = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
        got = 0
        while size >= 64 << 10:
            try:
                os.posix_fallocate(fd, got, size)
                got += size
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                size //= 2
        os.fsync(fd)
    finally:
        os.close(fd)
    return rest


@pytest.mark.parametrize(
    "fs, impl",
    [
        ("btrfs", "c"),
        # The pure-Python core never stored records through the mapping, and
        # takes longer: only where it matters, and not in the pure-Python run.
        pytest.param("btrfs", "python", marks=pytest.mark.slow),
        ("ext4", "c"),
        ("xfs", "c"),
        ("tmpfs", "c"),
    ],
)
def test_full_filesystem_never_sigbus(fs: str, impl: str) -> None:
    """Append in a child until the filesystem is full, in batches of 10 and
    1,000, flushing and not: the child ends with StorageFullError, never a
    signal; the log then reopens read-write with every flushed entry.

    Before pwrite-only mode, every btrfs run died with SIGBUS (-7)."""
    if impl not in CORE_NAMES:
        pytest.skip("the compiled core is not under test (FASTLOG_NO_EXTENSIONS=1)")
    import_core(impl)
    with small_filesystem(fs) as mnt:
        for batch in (10, 1000):
            for flushing in (False, True):
                _check_fill_and_reopen(mnt, impl, batch, flushing)

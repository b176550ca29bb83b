"""A full disk, on every filesystem: StorageFullError, never SIGBUS, nothing flushed lost.

Three layers, each on both cores:

* pwrite-only mode (``mapped_stores=False``, what fastlog uses on btrfs, FUSE,
  NFS, ...) forced on the local disk writes exactly the bytes of the default
  mode (a differential test);
* ENOSPC injected at each write site (a core whose writes fail, or a patched
  ``fastlog._osio``): StorageFullError, the log not poisoned where nothing on
  disk is inconsistent, and a reopen finds every flushed entry;
* real small filesystems filled up while a child process appends are the
  filesystem matrix's job (tests/fs/test_fs_full.py).

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
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, List, Optional

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

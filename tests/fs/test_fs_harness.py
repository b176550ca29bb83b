"""The filesystem matrix's own machinery (tests/fsmatrix.py): skipping, selecting, reaping."""
from __future__ import annotations

import fcntl
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

import fsmatrix
from fsmatrix import FS_NAMES, FilesystemUnavailable, FsMatrix, reap_dead_runs, selected_filesystems

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")


def test_not_root_skips_every_filesystem_with_one_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fsmatrix.os, "geteuid", lambda: 1000)
    matrix = FsMatrix()
    try:
        for name in FS_NAMES:
            with pytest.raises(FilesystemUnavailable, match="needs root"):
                matrix.mount(name)
        assert sorted(matrix.unavailable) == sorted(FS_NAMES) and not matrix.mounted
        with pytest.raises(FilesystemUnavailable, match="needs root"):  # asked again: the same answer
            matrix.mount("xfs")
    finally:
        matrix.close()


def test_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FASTLOG_FS_MATRIX", raising=False)
    assert selected_filesystems() == FS_NAMES
    monkeypatch.setenv("FASTLOG_FS_MATRIX", "tmpfs, ext4")
    assert selected_filesystems() == ("ext4", "tmpfs")
    monkeypatch.setenv("FASTLOG_FS_MATRIX", "none")
    assert selected_filesystems() == ()
    matrix = FsMatrix()
    try:
        with pytest.raises(FilesystemUnavailable, match="FASTLOG_FS_MATRIX"):
            matrix.mount("btrfs")
    finally:
        matrix.close()


@needs_root
def test_missing_mkfs_is_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    real_which = fsmatrix._which
    monkeypatch.setattr(fsmatrix, "_which", lambda cmd: None if cmd == "mkfs.xfs" else real_which(cmd))
    matrix = FsMatrix()
    try:
        with pytest.raises(FilesystemUnavailable) as info:
            matrix.mount("xfs")
        assert "mkfs.xfs not found" in str(info.value) or "loop" in str(info.value)
    finally:
        matrix.close()


@needs_root
def test_a_dead_runs_mounts_are_reaped_and_a_live_runs_are_not(tmp_path: Path) -> None:
    """Two leftover run directories, each with a mounted tmpfs: one whose lock is free (its run
    was killed) and one whose lock is held; reaping takes down only the first."""
    runs = fsmatrix._runs_dir()
    dead = Path(tempfile.mkdtemp(prefix="run-dead-", dir=runs))
    live = Path(tempfile.mkdtemp(prefix="run-live-", dir=runs))
    held = None
    try:
        for run in (dead, live):
            (run / ".lock").touch()
            (run / "tmpfs").mkdir()
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(run / "tmpfs")])
            if done.returncode != 0:
                pytest.skip("cannot mount a tmpfs")
            (run / "tmpfs" / "data").write_bytes(b"x")
        held = os.open(live / ".lock", os.O_RDWR)
        fcntl.flock(held, fcntl.LOCK_EX)

        reap_dead_runs(runs)

        assert not dead.exists()
        assert os.path.ismount(live / "tmpfs") and (live / "tmpfs" / "data").read_bytes() == b"x"
    finally:
        if held is not None:
            os.close(held)
        for run in (dead, live):
            fsmatrix._take_down(run)
        assert not live.exists()


@needs_root
def test_take_down_never_deletes_through_a_mount_that_stays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """If unmounting fails, the files of the still-mounted filesystem are left alone."""
    run = Path(tempfile.mkdtemp(prefix="run-stuck-", dir=fsmatrix._runs_dir()))
    point = run / "tmpfs"
    point.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(point)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs")
    try:
        (point / "data").write_bytes(b"keep")
        monkeypatch.setattr(fsmatrix, "_unmount", lambda p: None)  # an unmount that does nothing
        fsmatrix._take_down(run)
        assert (point / "data").read_bytes() == b"keep"
    finally:
        monkeypatch.undo()
        fsmatrix._take_down(run)
    assert not run.exists()


def test_close_twice_and_no_mount_after_close() -> None:
    matrix = FsMatrix()
    matrix.close()
    matrix.close()
    with pytest.raises(FilesystemUnavailable, match="taken down"):
        matrix.mount("tmpfs")

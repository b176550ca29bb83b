"""Fixtures of the filesystem matrix (see tests/fsmatrix.py).

``fs_mount`` is parametrized over ext4 (journaled), XFS, btrfs and tmpfs
(ids ``ext4``, ``xfs``, ``btrfs``, ``tmpfs``); each filesystem is mounted once
per session, on first use, and taken down at the end.  ``fs_dir`` is a fresh,
empty directory on it for one test, deleted afterwards so the next test finds
the space free.  A filesystem that cannot be mounted here skips its tests,
and the terminal summary says why in one line per filesystem.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from fsmatrix import FS_NAMES, SPECS, FilesystemUnavailable, FsMatrix, MountedFs

# The matrix reuses the crash tests' model and counters (tests/crash/crashsim.py).
_CRASH = str(Path(__file__).resolve().parent.parent / "crash")
if _CRASH not in sys.path:
    sys.path.insert(0, _CRASH)

_MATRIX = pytest.StashKey[FsMatrix]()


@pytest.fixture(scope="session")
def fs_matrix(pytestconfig: pytest.Config) -> Iterator[FsMatrix]:
    """The session's mounts; everything is unmounted and detached when the session ends."""
    matrix = FsMatrix()
    pytestconfig.stash[_MATRIX] = matrix
    try:
        yield matrix
    finally:
        matrix.close()


@pytest.fixture(params=FS_NAMES)
def fs_mount(request: pytest.FixtureRequest, fs_matrix: FsMatrix) -> MountedFs:
    """One mounted filesystem of the matrix (skips where it cannot be mounted)."""
    try:
        return fs_matrix.mount(request.param)
    except FilesystemUnavailable as exc:
        pytest.skip(f"{request.param} not available: {exc}")


@pytest.fixture
def fs_dir(fs_mount: MountedFs) -> Iterator[Path]:
    """A fresh directory on the filesystem of ``fs_mount``, removed after the test."""
    path = Path(tempfile.mkdtemp(prefix="test-", dir=fs_mount.root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        fs_mount.sync()


def _describe(name: str) -> str:
    spec = SPECS[name]
    if not spec.size:
        return f"mounted with -o {spec.options}"
    return f"{spec.size >> 20} MiB sparse loop image, {' '.join(spec.mkfs)}"


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    matrix = config.stash.get(_MATRIX, None)
    if matrix is None:
        return
    terminalreporter.section("filesystem matrix")
    for name in FS_NAMES:
        if name in matrix.unavailable:
            terminalreporter.write_line(f"{name}: SKIPPED, {matrix.unavailable[name]}")
        elif name in matrix.mounted:
            terminalreporter.write_line(f"{name}: ran ({_describe(name)})")

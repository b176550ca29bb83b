"""Power cuts on every filesystem of the matrix: where the LazyFS suite plugs in.

The power-cut suite (tests/powercut/) mounts LazyFS -- a FUSE filesystem that
can drop every byte that was not synced, as a power cut does -- over a backing
directory, lets a child write, cuts the power, reopens and checks.  On the
matrix, the backing directory is ``fs_dir``: the writes and syncs that LazyFS
passes down then land on journaled ext4, XFS, btrfs or tmpfs.

The suite plugs in by providing ``tests/powercut/matrix_hook.py`` with::

    def power_cut_rounds(backing_dir: pathlib.Path, *, implementation: str, cuts: int) -> dict:
        '''Mount LazyFS over backing_dir, run ``cuts`` power cuts with the given core
        ("c" or "python"), unmount, and return the counts to report (each an int, e.g.
        {"cuts": ..., "acknowledged": ..., "lost": 0}); call pytest.skip(reason)
        where LazyFS cannot run, and fail the test on a broken promise.'''

Until that module exists, this test skips with one line saying so.
``FASTLOG_FS_POWER_CUTS`` (default 10) sets the cuts per filesystem and core.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Optional

import pytest

from crashsim import env_int, report
from fsmatrix import MountedFs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

POWERCUT_DIR = Path(__file__).resolve().parent.parent / "powercut"


def power_cut_hook() -> Optional[Callable[..., Any]]:
    """``power_cut_rounds`` of tests/powercut/matrix_hook.py, or None while there is none."""
    if not (POWERCUT_DIR / "matrix_hook.py").is_file():
        return None
    if str(POWERCUT_DIR) not in sys.path:
        sys.path.insert(0, str(POWERCUT_DIR))
    return getattr(importlib.import_module("matrix_hook"), "power_cut_rounds", None)


def test_power_cuts_on_filesystem(
    request: pytest.FixtureRequest, fs_mount: MountedFs, fs_dir: Path, core_module: ModuleType
) -> None:
    rounds = power_cut_hook()
    if rounds is None:
        pytest.skip("no power-cut suite to run on the matrix (tests/powercut/matrix_hook.py)")
    implementation = core_module.IMPLEMENTATION
    counts = rounds(fs_dir, implementation=implementation, cuts=env_int("FASTLOG_FS_POWER_CUTS", 10))
    report(
        request.config,
        f"power cuts on {fs_mount.name} ({implementation} core)",
        ", ".join(f"{{{key}}} {key}" for key in sorted(counts)),
        **counts,
    )

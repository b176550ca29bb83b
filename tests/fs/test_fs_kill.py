"""kill -9 at random moments (tests/test_kill.py) on every filesystem of the matrix.

The same children and checks as tests/test_kill.py, with the log on the
mounted filesystem and the core chosen per test: a child drives the
synchronous ``Log`` (appends, flushes, replacing appends, truncates, purges,
resets, hard-state saves) on 64 KiB segments, the parent SIGKILLs it at a
random moment, reopens and checks the promise against the model; a second
child drives the asyncio engine with eight writers sharing fsyncs.

``FASTLOG_FS_KILLS`` (default 6) and ``FASTLOG_FS_KILLS_ENGINE`` (default 3)
set the kills per filesystem and core.
"""
from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

import test_kill as kill
from crashsim import env_int, report
from fsmatrix import MountedFs

# Slow: the matrix runs in the compiled-core run of `make test`, which covers both cores.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

#: Fewer kills than tests/test_kill.py makes, so each child first announces up to
#: this many operations (whatever the machine's speed), then writes on for a random while.
PROGRESS = 40


def _report(request: pytest.FixtureRequest, fs: MountedFs, implementation: str, what: str, counts: dict) -> None:
    report(
        request.config,
        f"{what} on {fs.name} ({implementation} core)",
        "{kills} SIGKILLs, {ops} operations replayed, {flushes} acknowledged flushes, "
        "{cut} reopens lost only unacknowledged entries",
        **counts,
    )


def test_kill_on_filesystem(
    request: pytest.FixtureRequest, fs_mount: MountedFs, fs_dir: Path, core_module: ModuleType
) -> None:
    implementation = core_module.IMPLEMENTATION
    counts = kill.kill_rounds(
        fs_dir, env_int("FASTLOG_FS_KILLS", 6), seed=11, implementation=implementation, progress=PROGRESS
    )
    _report(request, fs_mount, implementation, "process kills", counts)
    assert counts["kills"] >= 1 and counts["flushes"] > 0


def test_kill_group_commit_on_filesystem(
    request: pytest.FixtureRequest, fs_mount: MountedFs, fs_dir: Path, core_module: ModuleType
) -> None:
    implementation = core_module.IMPLEMENTATION
    counts = kill.kill_rounds(
        fs_dir,
        env_int("FASTLOG_FS_KILLS_ENGINE", 3),
        seed=13,
        child=kill.CHILD_ENGINE,
        implementation=implementation,
        progress=PROGRESS,
    )
    _report(request, fs_mount, implementation, "process kills, async engine", counts)
    assert counts["flushes"] > 0

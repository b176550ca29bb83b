"""The power-cut suite on each filesystem of the matrix (tests/fs/test_fs_powercut.py).

LazyFS keeps its "disk" in a backing directory; here that directory lies on
the mounted filesystem under test (journaled ext4, XFS, btrfs or tmpfs), so
every write and sync LazyFS passes down lands there.  Each call runs the sync
``Log`` writer and the asyncio engine (group commit) for ``cuts`` rounds each,
with power cuts during recovery too, and fails on any lost acknowledged entry.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from fastlog.testing.lazyfs import LazyFS, ensure_built, unavailable_reason
from powercut import CutCounts, kill_leftover_children, run_for


def power_cut_rounds(backing_dir: Path, *, implementation: str, cuts: int) -> dict:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"power-cut suite skipped: {reason}")
    base = Path(tempfile.mkdtemp(prefix="lazyfs", dir=backing_dir))
    if "-o" in str(base).lower():  # LazyFS would take such a path for a mount option
        pytest.skip(f"LazyFS cannot use a path holding '-o': {base}")
    fs = LazyFS(ensure_built(), base=base)
    runs: list[CutCounts] = []
    try:
        fs.start()
        runs.append(run_for(fs, "log", implementation, seed=21, rounds=cuts, recovery_every=2))
        runs.append(run_for(fs, "engine", implementation, seed=22, rounds=cuts, recovery_every=4))
    finally:
        kill_leftover_children()
        fs.remove()
    failures = [f for run in runs for f in run.failures]
    assert not failures, "\n".join(failures[:5])
    lost = sum(run.lost for run in runs)
    assert lost == 0
    return {
        "cuts": sum(run.cuts for run in runs),
        "acknowledged": sum(run.acked for run in runs),
        "lost": lost,
    }

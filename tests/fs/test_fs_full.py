"""A really full disk on every filesystem of the matrix.

Each test fills the mounted filesystem with preallocated filler files until
about 3 MiB are left, then a CHILD process appends to a log on 1 MiB segments
in batches of 10 or of 1000 entries, flushing after every batch or never,
until the filesystem is full.  The child must end the appends with
``StorageFullError`` (or another clean ``OSError``) and close the log, never by
a signal: a store through a shared mapping that the filesystem cannot back is
a SIGBUS, and running in a child turns it into a failed test instead of a dead
test run.  The test then takes the last free blocks too (the writer stops at
the first segment that does not fit, which can leave most of a segment's
worth free), and a second child reopens the log read-write in the
completely full filesystem and must find every entry flushed before the error
(every entry appended, when the writer's close returned), purges half of the
log -- which must work or fail with an ``OSError`` without poisoning the log:
a flush afterwards succeeds, an append fails at most with
``StorageFullError`` -- and reopens once more to check the result.

Broken-build evidence, both seen on a core that still stores through the
shared mapping on every filesystem and poisons the log when a purge cannot
write ``STATE``:

* btrfs: the writer dies with SIGBUS (with batches of 1000 in every run, with
  batches of 10 in some) -- in ``append``
  taking a failed batch back (``Log._truncate_locked``), or in ``close ->
  flush -> _write_claim`` (``LogCore.write_at``) after the appends ended with
  a bare ``OSError(ENOSPC)`` from ``LogCore.append`` -- and the child
  reopening the full filesystem dies with SIGBUS in ``_recover ->
  _zero_tail -> LogCore.zero``; both cores.  Journaled ext4, XFS and tmpfs
  end the appends cleanly with ``StorageFullError``.
* every filesystem: purge on the completely full disk raises
  ``OSError(ENOSPC)`` from writing ``STATE.tmp`` and poisons the log, so the
  flush after it raises ``PoisonedError``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, List, Tuple

import pytest

from crashsim import report
from fsmatrix import MountedFs, fill_filesystem

# Slow: the matrix runs in the compiled-core run of `make test`, which covers both cores.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).resolve().parent / "full_disk_child.py"

SEGMENT_SIZE = 1 << 20
#: Room left by the filler: a few segments' worth.
LEAVE = 3 << 20
#: Payload sizes: the batches of 10 take about 20 KiB, those of 1000 about 500 KiB
#: (so a full disk takes some 150 and some 6 batches).
PAYLOAD = {10: 2000, 1000: 500}


def run_child(args: List[str], timeout: float = 180) -> Tuple[int, List[str], str]:
    """Run the child with ``args``; returns (exit status, its lines, its stderr)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONFAULTHANDLER"] = "1"  # a fatal signal prints where it struck
    try:
        proc = subprocess.run(
            [sys.executable, str(CHILD), *args], capture_output=True, text=True, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        pytest.fail(f"the child hung ({timeout} s): {' '.join(args[:1])}; last lines: {out.splitlines()[-5:]}")
    return proc.returncode, proc.stdout.splitlines(), proc.stderr


def ended_cleanly(what: str, status: int, lines: List[str], err: str) -> None:
    """Fail with the signal or the traceback that ended a child."""
    if status < 0:
        name = signal.Signals(-status).name
        pytest.fail(f"{what} was killed by {name}; its last lines: {lines[-4:]}\n{err[-2000:]}")
    assert status == 0, f"{what} ended with status {status}; its last lines: {lines[-4:]}\n{err[-3000:]}"


def last_number(lines: List[str], tag: str) -> int:
    found = [int(line.split()[1]) for line in lines if line.startswith(tag + " ")]
    return found[-1] if found else 0


def json_line(lines: List[str], tag: str) -> Dict[str, Any]:
    for line in lines:
        if line.startswith(tag + " "):
            return json.loads(line[len(tag) + 1 :])
    raise AssertionError(f"the reopening child printed no {tag!r} line: {lines}")


def is_os_error(outcome: str) -> bool:
    """Whether an outcome recorded by the child is an OSError (it has an errno)."""
    parts = outcome.split()
    return len(parts) >= 2 and parts[1] != "None"


@pytest.mark.parametrize("flush", ["flush", "no-flush"])
@pytest.mark.parametrize("batch", [10, 1000])
def test_full_disk(
    request: pytest.FixtureRequest,
    fs_mount: MountedFs,
    fs_dir: Path,
    core_module: ModuleType,
    batch: int,
    flush: str,
) -> None:
    implementation = core_module.IMPLEMENTATION
    size = PAYLOAD[batch]
    fill_filesystem(fs_mount, fs_dir / "filler", LEAVE)
    log_path = str(fs_dir / "log")

    status, lines, err = run_child(["write", log_path, implementation, str(SEGMENT_SIZE), str(batch), flush, str(size)])
    ended_cleanly("the writing child", status, lines, err)
    appended, flushed = last_number(lines, "A"), last_number(lines, "F")
    error = next((line[2:] for line in lines if line.startswith("E ")), None)
    closed = next((line[2:] for line in lines if line.startswith("C ")), None)
    assert error is not None, f"the appends ended without an error: {lines[-4:]}"
    assert is_os_error(error), f"the full disk surfaced as {error}, not as an OSError"
    assert appended > 0, f"not one batch fit in {LEAVE >> 20} MiB: {error}"
    assert closed is not None and (closed == "ok" or is_os_error(closed)), f"close: {closed}"

    fill_filesystem(fs_mount, fs_dir / "filler", 0, smallest=4096)

    status, lines, err = run_child(["reopen", log_path, implementation, str(SEGMENT_SIZE), str(size)])
    ended_cleanly("the child reopening the full filesystem", status, lines, err)
    opened, used, reopened = json_line(lines, "opened"), json_line(lines, "used"), json_line(lines, "reopened")

    for step, state in (("the reopen", opened), ("after the purge", used), ("the second reopen", reopened)):
        assert state["wrong"] == [], f"{step}: entries that are not what was written: {state['wrong']}"
        assert state["last"] >= flushed, f"{step}: the log ends at {state['last']}, {flushed} was flushed"
    assert opened["first"] == 1 and opened["boundary"] is None
    assert opened["last"] <= appended, f"the log ends at {opened['last']}, only {appended} were appended"
    if closed == "ok":
        assert opened["last"] == appended, f"close returned, yet {opened['last']} of {appended} entries came back"

    purge = used.get("purge")
    if purge is not None:
        assert purge == "ok" or is_os_error(purge), f"purge on the full disk: {purge}"
        if purge == "ok":
            assert used["boundary"] == used["purge_at"] and reopened["boundary"] == used["purge_at"]
        else:
            assert reopened["boundary"] in (None, used["purge_at"])
    assert used["flush"] == "ok", f"flush after the purge attempt ({purge}): {used['flush']}"
    assert used["append"] == "ok" or used["append"].startswith("StorageFullError"), (
        f"append after the purge attempt ({purge}): {used['append']}"
    )
    if used["close"] == "ok":
        assert reopened["last"] == used["last"]

    report(
        request.config,
        f"full disk on {fs_mount.name} ({implementation} core)",
        "{runs} filled filesystems, {appended} entries appended, {flushed} flushed and all found after reopen, "
        "{purged} purges on the full disk worked",
        runs=1,
        appended=appended,
        flushed=flushed,
        purged=int(purge == "ok"),
    )
    print(f"{fs_mount.name} {implementation} batch={batch} {flush}: appends ended with {error}; close: {closed}; "
          f"purge: {purge}")

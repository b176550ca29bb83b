"""The power-cut variant of a conformance case: durability proven on LazyFS.

A clean close and reopen cannot tell a real ``flush()`` from one that does
nothing: the data is in the OS page cache either way.  Here the case's
``write`` half runs in a child process on a LazyFS mount; when it has
returned, LazyFS drops every byte that was not fsynced (a power cut), the
child is killed without closing anything, LazyFS is mounted again (a
reboot), and the ``verify`` half runs on the engine reopened over what the
"disk" kept.  An engine whose flush or ``save_hard_state`` does not reach
stable storage fails here.

Run the child by hand with ``python -m fastlog.testing.power_cut write
CASE module:factory PATH``.
"""
from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, List, Optional

from .conformance import POWER_CUT_CASES, CaseContext, ConformanceError, OpenEngine
from .factory import load_factory
from .lazyfs import LazyFS

__all__ = ["WRITTEN", "run_power_cut_case"]

#: The line the child prints once the write half has returned.
WRITTEN = "fastlog-power-cut: written"

# The child's engine, kept open (and unclosed) until the child is killed.
_kept: List[Any] = []


async def _write(case: str, spec: str, path: str) -> None:
    write, _ = POWER_CUT_CASES[case]
    ctx = CaseContext(load_factory(spec), path)
    await ctx.open()
    await write(ctx)
    # The engine stays open: nothing may reach the disk after this but what
    # the write half made durable.
    _kept.append(ctx.engine)


def _child_main(argv: list[str]) -> int:
    mode, case, spec, path, search_path = argv
    if mode != "write":
        raise SystemExit(f"unknown mode {mode!r}")
    for entry in reversed(json.loads(search_path)):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    asyncio.run(_write(case, spec, path))
    sys.stdout.write(WRITTEN + "\n")
    sys.stdout.flush()
    sys.stdin.read()  # wait for the power cut and the SIGKILL that follows it
    return 0


def run_power_cut_case(
    case: str, spec: str, open_engine: OpenEngine, lazyfs_binary: Path, *, timeout: float = 60.0
) -> None:
    """Run ``case``'s write half in a child on LazyFS, cut the power, verify in this process.

    Raises :class:`ConformanceError` when the engine lost data or failed in
    the child (with its output); ``RuntimeError`` when LazyFS itself failed.
    """
    if case not in POWER_CUT_CASES:
        raise KeyError(f"no power-cut variant of case {case!r}; known: {', '.join(POWER_CUT_CASES)}")
    fs = LazyFS(lazyfs_binary)
    child: Optional[subprocess.Popen] = None
    errors = None
    try:
        fs.start()
        path = str(fs.mount / "engine")
        search_path = json.dumps([p for p in sys.path if p and os.path.isdir(p)])
        errors = open(fs.base / "child.err", "w+")  # a file: a chatty child never blocks on a pipe
        child = subprocess.Popen(
            [sys.executable, "-m", "fastlog.testing.power_cut", "write", case, spec, path, search_path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
        )
        assert child.stdout is not None
        if not _wait_for_written(child, timeout):
            child.kill()
            child.communicate(timeout=10)
            errors.seek(0)
            tail = "\n".join(errors.read().strip().splitlines()[-15:])
            raise ConformanceError(
                f"{case}[power-cut]: the engine failed (or took over {timeout:.0f} s) before the power cut:\n{tail}"
            )
        fs.power_cut()
        child.kill()
        child.communicate(timeout=10)
        child = None
        fs.restart()
        ctx = CaseContext(open_engine, path)

        async def verify() -> None:
            await ctx.open()
            try:
                await POWER_CUT_CASES[case][1](ctx)
            finally:
                await ctx.close()

        try:
            asyncio.run(verify())
        except ConformanceError as exc:
            raise ConformanceError(
                f"{case}[power-cut]: after a power cut (every byte not fsynced dropped): {exc}"
            ) from None
    finally:
        if child is not None:
            child.kill()
            child.communicate(timeout=10)
        if errors is not None:
            errors.close()
        fs.remove()


def _wait_for_written(child: "subprocess.Popen[bytes]", timeout: float) -> bool:
    """Whether the child printed :data:`WRITTEN` before ``timeout`` (False when it exited or hung)."""
    assert child.stdout is not None
    fd = child.stdout.fileno()
    want = WRITTEN.encode() + b"\n"
    seen = b""
    deadline = time.monotonic() + timeout
    while want not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                return False  # the child exited
            seen = seen[-len(want):] + chunk
    return True


if __name__ == "__main__":
    raise SystemExit(_child_main(sys.argv[1:]))

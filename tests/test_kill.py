"""kill -9 at random moments: a child writes, the parent kills it, reopens and checks.

The child tells the parent, through a pipe, every operation *before* doing it
and every flush *after* it returned; the parent replays those lines into the
same model the power-loss simulator uses (tests/crash/crashsim.py) and checks
the promise after each kill.  The same directory lives through every kill, so
each round also recovers what the previous rounds left.

FASTLOG_KILLS sets the number of kills of the default test (20); the ``slow``
test does FASTLOG_KILLS_SLOW (100).
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List, Optional

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "crash"))

import fastlog  # noqa: E402
from crashsim import LogModel, LogState, env_int, read_log, report  # noqa: E402
from writer_protocol import replay  # noqa: E402

SEGMENT_SIZE = 64 << 10
REPO = Path(__file__).resolve().parent.parent

CHILD = r'''
import random, sys
sys.path.insert(0, sys.argv[4])
from writer_protocol import LogWriter, say_on_stdout

path, seed, sync = sys.argv[1], int(sys.argv[2]), sys.argv[3]
implementation, segment_size = sys.argv[5] or None, int(sys.argv[6])
rng = random.Random(seed)
w = LogWriter(say_on_stdout, path, seed, sync, implementation, segment_size)
say_on_stdout("ready")
while True:
    r = rng.random()
    w.begin()
    if r < 0.55 or w.first == 0:
        start = w.last + 1
        if w.first == 0 and rng.random() < 0.2:
            start = max(w.low, rng.randint(1, 40))
        n, size = rng.randint(1, 20), rng.choice([0, 16, 300, 1500, 4000])
        w.append(start, n, size)
    elif r < 0.80:
        w.flush()
    elif r < 0.87 and w.last > w.low:
        w.replace(rng, 10, [16, 900])
    elif r < 0.91 and w.last > w.low:
        w.truncate(rng)
    elif r < 0.95 and w.first and w.last > w.first:
        w.purge(rng)
    elif r < 0.96:
        w.reset()
    else:
        w.save_hard_state(rng.choice([None, 1, 2]))
'''


# The same through the asyncio engine: several writer tasks append concurrently
# and share fsyncs through group commit.  A writer announces an operation
# ("A ...", numbered in announcement order) before starting it; after
# flush_async() returns it reports "F n": n is the last operation that had
# completed when it called flush_async(), which the group commit must cover.
CHILD_ENGINE = r'''
import asyncio, random, sys
sys.path.insert(0, sys.argv[4])
import fastlog
from writer_protocol import EngineWriter, say_on_stdout as say

path, seed, sync = sys.argv[1], int(sys.argv[2]), sys.argv[3]
implementation, segment_size = sys.argv[5] or None, int(sys.argv[6])

async def main():
    engine = fastlog.open(path, segment_size=segment_size, sync=sync, implementation=implementation)
    store = engine.log_store()
    shared = EngineWriter(say, store, seed)

    async def writer(w):
        rng = random.Random(seed * 101 + w)
        while True:
            async with shared.order:
                if rng.random() < 0.9:
                    n, size = rng.randint(1, 4), rng.choice([0, 16, 700, 3000])
                    await shared.append(store.last_index() + 1, n, size)
                else:
                    first, last = store.first_index(), store.last_index()
                    if not first or last <= first:
                        continue
                    await shared.purge(rng, first, last)
            # outside the lock: the writers wait for durability together
            if sync == "always":
                say(f"F {shared.done}")
            elif rng.random() < 0.5:
                await shared.flush()

    say("ready")
    await asyncio.gather(*(writer(w) for w in range(8)))

asyncio.run(main())
'''


def kill_rounds(
    tmp_path: Path,
    rounds: int,
    seed: int,
    child: str = CHILD,
    *,
    implementation: Optional[str] = None,
    segment_size: int = SEGMENT_SIZE,
    progress: int = 0,
) -> dict:
    """Kill ``rounds`` children writing to the log in ``tmp_path / "log"``, checking after each.

    ``implementation`` ("c", "python", None for the default) is the core the
    children and the checking reopen use; ``tmp_path`` may be on any filesystem.
    With ``progress`` > 0 a child is only killed (after the usual random delay)
    once it has announced a random number (1..progress) of operations, so few
    kills on a slow machine still see work done.
    """
    rng = random.Random(seed)
    path = tmp_path / "log"
    model = LogModel()
    counts = {"kills": 0, "ops": 0, "flushes": 0, "cut": 0}
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    for k in range(rounds):
        sync = "always" if k % 4 == 3 else "none"
        proc = subprocess.Popen(
            [
                sys.executable, "-c", child, str(path), str(seed * 10007 + k), sync, str(REPO / "tests" / "crash"),
                implementation or "", str(segment_size),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        lines: List[str] = []
        ready = threading.Event()

        def read() -> None:
            assert proc.stdout is not None
            buf = b""
            for chunk in iter(lambda: proc.stdout.read1(65536), b""):
                buf += chunk
                *done, buf = buf.split(b"\n")
                for d in done:
                    text = d.decode()
                    if text == "ready":
                        ready.set()
                    else:
                        lines.append(text)
            ready.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        assert ready.wait(60), "the child never started"
        if progress:
            target, deadline = rng.randint(1, progress), time.monotonic() + 60
            while len(lines) < target and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
        time.sleep(rng.choice([0.0, 0.001, 0.01, 0.03, 0.08, 0.15]) * rng.random())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        reader.join(timeout=60)
        err = proc.stderr.read().decode() if proc.stderr else ""
        proc.stderr.close() if proc.stderr else None
        assert proc.returncode == -signal.SIGKILL, f"the child died on its own ({proc.returncode}):\n{err}"
        counts["kills"] += 1
        counts["ops"] += len(lines)
        counts["flushes"] += replay(model, lines).flushes
        got = read_log(path, segment_size=segment_size, implementation=implementation)
        from fastlog.meta import FileMetaStore

        if got.error is None:
            got = type(got)(got.boundary, got.entries, got.last_index, got.first_index, FileMetaStore(path).load_hard_state(), None)
        why = model.check(got, model.position(), check_hard_state=True)
        assert why is None, f"after kill {k + 1} (sync={sync}, {len(lines)} lines, last: {lines[-3:]}): {why}"
        if len(got.entries) < len(model.current.entries):
            counts["cut"] += 1
        # the reopened (and closed, so durable) log is where the next round starts
        model.rebase(LogState(got.boundary, got.entries))
        if got.hard_state is not None:
            model.hard_states = [got.hard_state]
        else:
            model.hard_states = []
    return counts


def _report(request: pytest.FixtureRequest, counts: dict, what: str = "process kills") -> None:
    report(
        request.config,
        f"{what} ({fastlog.IMPLEMENTATION} core)",
        "{kills} SIGKILLs of a writing child, {ops} operations replayed, {flushes} acknowledged flushes, "
        "{cut} reopens lost only unacknowledged entries",
        **counts,
    )


def test_kill_at_random_moments(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    counts = kill_rounds(tmp_path, env_int("FASTLOG_KILLS", 20), seed=1)
    _report(request, counts)
    assert counts["kills"] >= 1 and counts["flushes"] > 0


@pytest.mark.slow
def test_kill_at_random_moments_many(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    counts = kill_rounds(tmp_path, env_int("FASTLOG_KILLS_SLOW", 100), seed=2)
    _report(request, counts)
    assert counts["kills"] >= 100 or counts["kills"] == env_int("FASTLOG_KILLS_SLOW", 100)


def test_kill_during_group_commit(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Eight concurrent writers on the async engine; acknowledgements come from shared fsyncs."""
    counts = kill_rounds(tmp_path, env_int("FASTLOG_KILLS_ENGINE", 12), seed=3, child=CHILD_ENGINE)
    _report(request, counts, "process kills, async engine")
    assert counts["flushes"] > 0

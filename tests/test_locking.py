"""One writer per directory, and readers that never see a torn entry.

A second writable open of an open directory -- from this process or another --
raises LockedError; read-only opens take no lock and work beside a writer
(tests/test_live_read.py).  Reader threads run while a writer appends, replaces, truncates,
purges and resets with small segments (so segments are created and unmapped
all the time); every entry they get must be whole (its payload names its index
and term), and nothing may crash.
"""
from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, List, Optional

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "crash"))

import fastlog  # noqa: E402
from fastlog import LogId  # noqa: E402
from fastlog.errors import ClosedError, LockedError  # noqa: E402
from crashsim import payload_for, report  # noqa: E402

SEG = 64 << 10
REPO = Path(__file__).resolve().parent.parent


def test_second_open_in_the_same_process(tmp_path: Path) -> None:
    with fastlog.Log(tmp_path, segment_size=SEG) as log:
        log.append([log.Entry(index=1, term=1, payload=b"x")])
        with pytest.raises(LockedError):
            fastlog.Log(tmp_path, segment_size=SEG)
        with fastlog.Log(tmp_path, segment_size=SEG, read_only=True) as view:
            assert view.entry(1).payload == b"x"  # a view beside the writer
        with pytest.raises(LockedError):
            fastlog.open(tmp_path, segment_size=SEG)
        # the failed opens changed nothing
        assert log.entry(1).payload == b"x"
    with fastlog.Log(tmp_path, segment_size=SEG) as log:  # released by close
        assert log.last_index() == 1


def test_engine_holds_the_lock_until_closed(tmp_path: Path) -> None:
    async def main() -> None:
        engine = fastlog.open(tmp_path, segment_size=SEG)
        with pytest.raises(LockedError):
            fastlog.Log(tmp_path, segment_size=SEG)
        await engine.close()
        with fastlog.Log(tmp_path, segment_size=SEG):
            pass

    asyncio.run(main())


def test_readers_share_a_closed_log(tmp_path: Path) -> None:
    with fastlog.Log(tmp_path, segment_size=SEG) as log:
        log.append([log.Entry(index=1, term=1, payload=b"x")])
    with fastlog.Log(tmp_path, read_only=True) as a, fastlog.Log(tmp_path, read_only=True) as b:
        assert a.entry(1) == b.entry(1)
        with fastlog.Log(tmp_path, segment_size=SEG) as writer:  # views never keep a writer out
            assert writer.last_index() == 1


OTHER = r"""
import sys, fastlog
from fastlog.errors import LockedError
try:
    fastlog.Log(sys.argv[1], read_only=sys.argv[2] == "ro")
except LockedError as exc:
    print("locked")
else:
    print("opened")
"""

HOLDER = r"""
import sys, time, fastlog
log = fastlog.Log(sys.argv[1])
print("holding", flush=True)
time.sleep(600)
"""


def _python(code: str, *args: str, **kw: Any) -> Any:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True, env=env, **kw)


@pytest.mark.parametrize("mode", ["rw", "ro"])
def test_second_open_from_another_process(tmp_path: Path, mode: str) -> None:
    with fastlog.Log(tmp_path, segment_size=SEG):
        proc = _python(OTHER, str(tmp_path), mode)
        out, _ = proc.communicate(timeout=60)
        assert out.strip() == ("locked" if mode == "rw" else "opened")
    proc = _python(OTHER, str(tmp_path), mode)
    out, _ = proc.communicate(timeout=60)
    assert out.strip() == "opened"


def test_the_lock_dies_with_its_process(tmp_path: Path) -> None:
    holder = _python(HOLDER, str(tmp_path))
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        with pytest.raises(LockedError):
            fastlog.Log(tmp_path, segment_size=SEG)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    with fastlog.Log(tmp_path, segment_size=SEG) as log:
        assert log.last_index() == 0


# ---------------------------------------------------------------------------
# Readers against a busy writer
# ---------------------------------------------------------------------------


def _check_entry(e: Any, index: int) -> None:
    assert e.index == index, f"asked for {index}, got {e.index}"
    head, _, _ = bytes(e.payload).partition(b"|")
    i, t, salt = (int(x) for x in head.split(b":"))
    assert (i, t) == (e.index, e.term), f"entry {e.index}/{e.term} carries the payload of {i}/{t}"
    assert bytes(e.payload) == payload_for(i, t, salt, len(e.payload)), f"entry {i} payload is torn"


def test_readers_never_see_a_torn_entry(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fastlog._osio as osio

    # Durability is not under test here: skip the real syncs, keep the work.
    for name in ("fdatasync", "fsync", "fsync_dir"):
        monkeypatch.setattr(osio, name, lambda _arg: None)
    ops = 2500 if fastlog.IMPLEMENTATION == "c" else 800
    log = fastlog.Log(tmp_path, segment_size=SEG)
    stop = threading.Event()
    errors: List[BaseException] = []
    reads = [0]

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        try:
            while not stop.is_set():
                last = log.last_index()
                first = log.first_index()
                if not first or last < first:
                    continue
                i = rng.randint(first, last)
                e = log.entry(i)
                if e is not None:
                    _check_entry(e, i)
                t = log.term_at(i)
                lo = rng.randint(first, last)
                prev: Optional[int] = None  # index of the entry before e in this range
                for e in log.get_entries(lo, lo + rng.randint(0, 40)):
                    _check_entry(e, e.index)
                    if prev is not None:
                        assert e.index == prev + 1, "a range skipped an index"
                    prev = e.index
                reads[0] += 1
                del t
                if reads[0] % 4 == 0:
                    time.sleep(0)  # let the writer in
        except ClosedError:
            pass
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(2)]
    # Readers spin in short calls that hold the GIL; switch often so the
    # writer is not starved (and so reads interleave with every step of it).
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)
    for t in threads:
        t.start()
    rng = random.Random(7)
    salt = 0
    term = 1
    try:
        for _ in range(ops):
            if errors:
                break
            salt += 1
            last, first = log.last_index(), log.first_index()
            b = log.purge_boundary()
            low = (b.index if b else 0) + 1
            r = rng.random()
            if r < 0.6 or not first:
                n, size = rng.randint(1, 10), rng.choice([10, 500, 3000])
                log.append([log.Entry(index=last + 1 + k, term=term, payload=payload_for(last + 1 + k, term, salt, size)) for k in range(n)])
            elif r < 0.72 and last > low:
                term += 1
                start = rng.randint(max(low, first), last)
                log.append([log.Entry(index=start + k, term=term, payload=payload_for(start + k, term, salt, 700)) for k in range(rng.randint(1, 6))])
            elif r < 0.82 and last > low:
                log.truncate(rng.randint(low + 1, last))
            elif r < 0.92 and first and last > first:
                idx = rng.randint(first, last - 1)
                log.purge(LogId(index=idx, term=log.term_at(idx)))
            elif r < 0.94:
                log.reset()
            else:
                log.flush()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        sys.setswitchinterval(old_interval)
        log.close()
    assert not errors, f"a reader failed: {errors[0]!r}"
    report(
        request.config,
        f"concurrent readers ({fastlog.IMPLEMENTATION} core)",
        "{reads} checked reads (entry, term_at, get_entries) during {ops} writer operations",
        reads=reads[0],
        ops=ops,
    )
    assert reads[0] > 0

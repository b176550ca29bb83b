"""Read-only views of a log that another process is writing.

A read-only open takes no lock, so it works beside a running writer, and a
writer opens a directory that views hold open.  A writer PROCESS runs a random
workload on small segments (appends that roll over, replaces, truncations,
purges, resets, flushes) while the test opens views in a loop: each must be a
valid prefix of what the writer wrote (consecutive indexes, terms that never
decrease, every payload the writer's deterministic payload for its index,
term and salt), and ``fastlog inspect``, ``verify`` and ``dump`` must succeed
against the live directory.  The writer must see no error at all.

Seen failing: with the read-only open of before (``flock(LOCK_SH)`` on
``LOCK``), the writer process could not open beside the held view (LockedError)
and no view could open beside the writer.  With the retry of
``Log._open_view`` removed (``_VIEW_ATTEMPTS = 1``) views beside the writer
failed on both cores within seconds -- FileNotFoundError for a segment deleted
between the listing and its open, and a false CorruptionError ("the log breaks
off here but a later segment holds durable data") -- and
``test_a_claim_lowered_under_the_open_is_read_again`` failed at once with
"data ends early" below the stale claim.  With the check of each copied
entry against its record's crc removed (``Log._copied_whole``), the pure-Python
core's views returned an entry whose payload was zeros (the writer cut the
record between the core's verification and its copy): ValueError in
``_check_entry``, once in a full suite run and again in a 15-second run.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, List, Optional

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "crash"))

import fastlog  # noqa: E402
import fastlog.recovery  # noqa: E402
from fastlog.errors import CorruptionError, LockedError, ViewChangedError  # noqa: E402
from crashsim import payload_for  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SEG = 16 << 10
# How long the writer runs, per core; the CLI commands run during it.
SECONDS = float(os.environ.get("FASTLOG_LIVE_SECONDS", "8"))

WRITER = r"""
import random, sys, time, traceback
sys.path.insert(0, sys.argv[5])
from crashsim import payload_for
import fastlog
from fastlog import LogId

path, impl, seconds, seed = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
try:
    log = fastlog.Log(path, segment_size=%(seg)d, implementation=impl)
    print("ready", flush=True)
    rng = random.Random(seed)
    term = log.term_at(log.last_index()) or 1 if log.last_index() else 1
    salt = 0
    ops = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ops += 1
        salt += 1
        last, first = log.last_index(), log.first_index()
        b = log.purge_boundary()
        low = (b.index if b else 0) + 1
        r = rng.random()
        if r < 0.55 or not first:
            n, size = rng.randint(1, 12), rng.choice([10, 300, 2000])
            log.append([log.Entry(index=last + 1 + k, term=term, payload=payload_for(last + 1 + k, term, salt, size)) for k in range(n)])
        elif r < 0.67 and last > low:
            term += 1  # a new leader replaces a suffix
            start = rng.randint(max(low, first), last)
            log.append([log.Entry(index=start + k, term=term, payload=payload_for(start + k, term, salt, 700)) for k in range(rng.randint(1, 6))])
        elif r < 0.77 and last > low:
            log.truncate(rng.randint(max(low + 1, first), last))
        elif r < 0.84 and first and last > first:
            idx = rng.randint(first, last - 1)
            log.purge(LogId(index=idx, term=log.term_at(idx)))
        elif r < 0.845:
            log.reset()
        else:
            log.flush()
    log.close()
    print("done", ops, flush=True)
except BaseException:
    traceback.print_exc()
    sys.exit(1)
""" % {"seg": SEG}


def _env(impl: str) -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("FASTLOG_NO_EXTENSIONS", None)
    env.pop("FASTLOG_REQUIRE_EXTENSION", None)
    if impl == "python":
        env["FASTLOG_NO_EXTENSIONS"] = "1"
    else:
        env["FASTLOG_REQUIRE_EXTENSION"] = "1"
    return env


def _check_entry(e: Any, index: int) -> None:
    assert e.index == index, f"asked for {index}, got {e.index}"
    head, _, _ = bytes(e.payload).partition(b"|")
    i, t, salt = (int(x) for x in head.split(b":"))
    assert (i, t) == (e.index, e.term), f"entry {e.index}/{e.term} carries the payload of {i}/{t}"
    assert bytes(e.payload) == payload_for(i, t, salt, len(e.payload)), f"entry {i} payload is not the writer's"


def _check_view(view: fastlog.Log) -> int:
    """Check that ``view`` is a valid log; return how many entries it holds
    (-1 when a writer changed entries before they were read)."""
    first, last = view.first_index(), view.last_index()
    b = view.purge_boundary()
    if first == 0:
        return 0
    assert b is None or first > b.index
    try:
        entries = view.get_entries(first, last)
    except ViewChangedError:
        return -1
    assert [e.index for e in entries] == list(range(first, last + 1)), "the view is not consecutive"
    term = 0
    for e in entries:
        _check_entry(e, e.index)
        assert e.term >= term, f"term goes down at {e.index}"
        term = e.term
        assert view.term_at(e.index) == e.term
    assert view.verify() == []
    return len(entries)


def _core_name(core_module: ModuleType) -> str:
    return "python" if core_module.__name__.endswith("_pycore") else "c"


def test_views_and_tools_beside_a_writer_process(tmp_path: Path, core_module: ModuleType) -> None:
    impl = _core_name(core_module)
    path = tmp_path / "log"
    with fastlog.Log(path, segment_size=SEG, implementation=impl) as log:
        log.append([log.Entry(index=i, term=1, payload=payload_for(i, 1, 0, 100)) for i in range(1, 50)])
    # A view held from before the writer starts: the writer must open anyway.
    held = fastlog.Log(path, read_only=True, implementation=impl)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), impl, str(SECONDS), "11", str(REPO / "tests" / "crash")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(impl),
    )
    views = changed = entries = 0
    commands = [["inspect"], ["verify"], ["dump", "--limit", "500"]]
    running: List[Any] = []
    ran: List[str] = []
    rounds = 0

    def collect() -> None:
        for name, proc in running:
            out, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, f"fastlog {name} on a live log: {out}{err}"
            assert "LockedError" not in err and "already open" not in err, err
            ran.append(name)
        running.clear()

    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "ready", writer.communicate(timeout=60)
        # Two writers still exclude each other.
        with pytest.raises(LockedError):
            fastlog.Log(path, segment_size=SEG, implementation=impl)
        while writer.poll() is None:
            if running and all(p.poll() is not None for _, p in running):
                collect()
            if not running and rounds < 2:
                # The three commands at once, in other processes, against the live directory.
                rounds += 1
                running.extend(
                    (cmd[0], subprocess.Popen(
                        [sys.executable, "-m", "fastlog", cmd[0], str(path), *cmd[1:]],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(impl),
                    ))
                    for cmd in commands
                )
            with fastlog.Log(path, read_only=True, implementation=impl) as view:
                n = _check_view(view)
            views += 1
            changed += n < 0
            entries += max(n, 0)
        out, err = writer.communicate(timeout=120)
        collect()
    finally:
        for _, proc in running:
            proc.kill()
            proc.wait(timeout=60)
        if writer.poll() is None:
            writer.kill()
            writer.wait(timeout=60)
    assert writer.returncode == 0 and out.startswith("done"), f"the writer failed:\n{out}{err}"
    # The held view still answers: with its snapshot's entries or ViewChangedError.
    try:
        for e in held.get_entries(1, 49):
            _check_entry(e, e.index)
    except ViewChangedError:
        pass
    held.close()
    assert views > 0
    assert {"inspect", "verify", "dump"} <= set(ran), f"the CLI ran only {ran}"
    print(f"{impl}: {views} views ({changed} changed while read, {entries} entries checked), "
          f"writer {out.split()[1]} ops, CLI {ran}")
    # And the log the writer left is whole.
    with fastlog.Log(path, read_only=True, implementation=impl) as view:
        assert _check_view(view) >= 0


def test_a_claim_lowered_under_the_open_is_read_again(tmp_path: Path, core_module: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """A view that read a segment's header just before a writer lowered its
    ``synced_end`` for a truncation (and zeroed below the old claim) looks
    again instead of reporting damage."""
    impl = _core_name(core_module)
    with fastlog.Log(tmp_path, segment_size=SEG, implementation=impl) as log:
        log.append([log.Entry(index=i, term=1, payload=payload_for(i, 1, 0, 100)) for i in range(1, 21)])
        log.flush()
        log.truncate(11)  # lowers the claim, zeroes entries 11..20
    real = fastlog.recovery.read_header
    calls = [0]

    def stale_header(p: str, crc32c: Any) -> Optional[Any]:
        hdr = real(p, crc32c)
        calls[0] += 1
        if calls[0] == 1 and hdr is not None:
            # the header as it was before the truncation: it claims the zeros
            from dataclasses import replace

            return replace(hdr, synced_end=hdr.synced_end + 20 * 136)
        return hdr

    monkeypatch.setattr(fastlog.recovery, "read_header", stale_header)
    with fastlog.Log(tmp_path, read_only=True, implementation=impl) as view:
        assert view.last_index() == 10
        assert _check_view(view) == 10


def test_a_writer_opens_beside_views_and_views_beside_a_writer(tmp_path: Path, core_module: ModuleType) -> None:
    impl = _core_name(core_module)
    with fastlog.Log(tmp_path, segment_size=SEG, implementation=impl) as log:
        log.append([log.Entry(index=i, term=1, payload=b"a%d" % i) for i in (1, 2, 3)])
    with fastlog.Log(tmp_path, read_only=True, implementation=impl) as view:
        with fastlog.Log(tmp_path, segment_size=SEG, implementation=impl) as log:
            with pytest.raises(LockedError):
                fastlog.Log(tmp_path, segment_size=SEG, implementation=impl)
            log.append([log.Entry(index=4, term=1, payload=b"b")])
            with fastlog.Log(tmp_path, read_only=True, implementation=impl) as live:
                assert live.last_index() == 4 and live.entry(4).payload == b"b"
            # The snapshot stays what it was.
            assert view.last_index() == 3 and view.entry(3).payload == b"a3"
            # Entries replaced in place (another term) or cut are never
            # returned as the old ones; those before the cut still read.
            log.append([log.Entry(index=2, term=2, payload=b"c")])
            with pytest.raises(ViewChangedError):
                view.entry(2)
            with pytest.raises(ViewChangedError):
                view.entry(3)
            with pytest.raises(ViewChangedError):
                view.get_entries(1, 3)
            assert view.entry(1).payload == b"a1"
            assert view.verify() == []  # the writer's work, not damage
            # A reset deletes the segments; the view still reads its mapping.
            log.reset()
            assert view.entry(1).payload == b"a1"
    with fastlog.Log(tmp_path, read_only=True, implementation=impl) as view:
        assert view.last_index() == 0


def test_damage_in_a_closed_log_is_still_reported(tmp_path: Path, core_module: ModuleType) -> None:
    impl = _core_name(core_module)
    with fastlog.Log(tmp_path, segment_size=SEG, implementation=impl) as log:
        log.append([log.Entry(index=i, term=1, payload=payload_for(i, 1, 0, 100)) for i in range(1, 21)])
    seg = sorted(p for p in os.listdir(tmp_path) if p.endswith(".seg"))[0]
    with open(tmp_path / seg, "r+b") as f:
        f.seek(4096 + 5 * 136 + 40)
        f.write(b"\xff")
    start = time.monotonic()
    with pytest.raises(CorruptionError) as info:
        fastlog.Log(tmp_path, read_only=True, implementation=impl)
    assert not isinstance(info.value, ViewChangedError)
    with fastlog.Log(tmp_path, read_only=True, stop_at_damage=True, implementation=impl) as view:
        assert view.damage is not None and view.damage.path and view.damage.path.endswith(seg)
        assert view.last_index() == 5
    assert time.monotonic() - start < 5

"""Fork a writer, SIGKILL it, cut the power under it, reopen and check the promise.

A round of a :class:`Workload`: fork a child running one of
:mod:`powercut_writers` on the LazyFS mount; let it work for a random moment;
SIGKILL it; write back the pages it dirtied through its mapping (``syncfs``:
the kernel's page cache sits above LazyFS); drop everything not fsynced
(``lazyfs::clear-cache``); replay the child's announcements into the
:class:`crashsim.LogModel`; reopen on the mount and check every acknowledged
entry, the purge boundary and the hard state against it.  The reopened log is
closed (so durable) and becomes the start of the next round, in the same
directory.  :func:`run_for` runs rounds, some followed by cuts during the
recovery of what they left (:func:`cut_during_recovery`);
:func:`repair_rounds` cuts the power under ``fastlog repair``;
:func:`torn_rounds` lets LazyFS tear writes and crash itself.
"""
from __future__ import annotations

import atexit
import os
import random
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crashsim import LogModel, LogState, Recovered, payload_for, read_log
from fastlog.testing.lazyfs import LazyFS
from powercut_writers import WRITERS, apply_broken_build
from writer_protocol import replay as replay_lines

# Small segments: LazyFS has no fallocate, so preallocating goes through the C
# library's fallback (a write to every block, each a FUSE round trip): about
# 1 s per MiB here.  64 KiB keeps rollovers frequent and cheap.
SEGMENT_SIZE = 64 << 10


_running: set[int] = set()  # children not reaped yet


@atexit.register
def kill_leftover_children() -> None:
    """SIGKILL and reap children an interrupted test left running (before the unmount)."""
    for pid in list(_running):
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except OSError:
            pass
        _running.discard(pid)


class Child:
    """A forked child running ``WRITERS[name]``; its announcements arrive in :attr:`lines`."""

    def __init__(self, name: str, path: str, seed: int, impl: str, options: dict[str, Any]) -> None:
        body = WRITERS[name]
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns into the test run
            code = 0
            try:
                os.close(r)
                apply_broken_build()

                def say(line: str) -> None:
                    os.write(w, (line + "\n").encode())

                body(say, path, seed, impl, options)
            except BaseException:
                code = 1
                try:
                    os.write(w, ("! " + traceback.format_exc().replace("\n", " | ") + "\n").encode())
                except BaseException:
                    pass
            finally:
                os._exit(code)
        os.close(w)
        self.pid = pid
        _running.add(pid)
        self.lines: list[str] = []
        self.error: str | None = None
        self.status: int | None = None
        self._cond = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read, args=(r,), daemon=True)
        self._reader.start()

    def _read(self, fd: int) -> None:
        buf = b""
        try:
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                buf += chunk
                *complete, buf = buf.split(b"\n")
                with self._cond:
                    for raw in complete:
                        text = raw.decode()
                        if text.startswith("! "):
                            self.error = text[2:]
                        else:
                            self.lines.append(text)
                    self._cond.notify_all()
        finally:
            os.close(fd)
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    def wait_for(self, word: str, timeout: float = 60.0) -> bool:
        """Wait until the child said ``word`` (first word of a line); False if it ended first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if any(line.split(" ", 1)[0] == word for line in self.lines):
                    return True
                if self._eof:
                    return False
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)

    def said(self, word: str) -> str | None:
        with self._cond:
            for line in self.lines:
                if line.split(" ", 1)[0] == word:
                    return line
        return None

    def kill(self) -> int:
        """SIGKILL (if still running), reap, and collect every line it wrote; returns the wait status."""
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _, status = os.waitpid(self.pid, 0)
        _running.discard(self.pid)
        self._reader.join(timeout=60)
        self.status = status
        return status

    @property
    def killed_by_us(self) -> bool:
        return self.status is not None and os.WIFSIGNALED(self.status) and os.WTERMSIG(self.status) == signal.SIGKILL

    def operations(self) -> list[str]:
        """The protocol lines (announcements and acknowledgements), without the markers."""
        markers = ("ready", "begin", "opened", "closed", "done")
        return [line for line in self.lines if line.split(" ", 1)[0] not in markers]


# ---------------------------------------------------------------------------
# The model side
# ---------------------------------------------------------------------------


def replay(model: LogModel, lines: list[str], journal: bool = False) -> int:
    """Apply a child's lines to the model; returns how many acknowledgements they held
    (flushes and hard-state saves, each durable when the child said it)."""
    replayed = replay_lines(model, lines, journal=journal)
    return replayed.flushes + replayed.hard_states


def acknowledged_entries(model: LogModel, position: tuple[int, int, int]) -> list[tuple[int, int, int, bytes]]:
    """The entries a crash at ``position`` must keep: acknowledged, and removed by
    no operation begun since (a cut removes what lies at or above it, a reset
    everything; below a purge begun since, either boundary is allowed)."""
    lo, hi, _ = position
    state = model.states[lo]
    floor, ceiling = 0, state.last_stored
    for kind, arg in model.ops[lo + 1:hi + 1]:
        if kind == "cut":
            ceiling = min(ceiling, arg - 1)
        elif kind in ("reset", "rebase"):
            ceiling = 0
        elif kind == "purge":
            floor = max(floor, arg)
    return [e for e in state.entries if floor < e[0] <= ceiling]


def count_lost(model: LogModel, position: tuple[int, int, int], got: Recovered) -> tuple[int, int]:
    """(acknowledged entries that must be there, how many of them are missing or different)."""
    need = acknowledged_entries(model, position)
    if got.error is not None:
        return len(need), len(need)
    have = {e[0]: e for e in got.entries}
    lost = sum(1 for e in need if have.get(e[0]) != e)
    return len(need), lost


# ---------------------------------------------------------------------------
# Reopening
# ---------------------------------------------------------------------------


def recover_log(path: Path, impl: str) -> Recovered:
    """Reopen (recovering) and read the log and its hard state."""
    from fastlog.meta import FileMetaStore

    got = read_log(path, segment_size=SEGMENT_SIZE, implementation=impl)
    if got.error is not None:
        return got
    try:
        hs = FileMetaStore(str(path)).load_hard_state()
    except Exception as exc:
        return Recovered(error=f"hard state: {type(exc).__name__}: {exc}")
    return Recovered(got.boundary, got.entries, got.last_index, got.first_index, hs, None)


def recover_journal(path: Path, impl: str) -> Recovered:
    """Reopen a PySyncObj journal: its entries (through the journal and the log), term, vote, commit index."""
    from fastlog.integrations.pysyncobj import FastlogJournal

    try:
        with FastlogJournal(str(path), sync="periodic", segment_size=SEGMENT_SIZE, implementation=impl) as j:
            term, vote, commit = j.getCurrentTerm(), j.getVotedForNodeId(), j.getRaftCommitIndex()
            entries = list(j)
            first = j.first_index()
    except Exception as exc:
        return Recovered(error=f"journal reopen: {type(exc).__name__}: {exc}")
    got = read_log(path / "log", segment_size=SEGMENT_SIZE, implementation=impl)
    if got.error is not None:
        return got
    as_log = [(e[1], e[2], 1, e[0]) for e in entries]
    if tuple(as_log) != got.entries:
        return Recovered(error=f"journal entries {[e[1] for e in entries][:5]}... differ from the log's")
    if entries and first != entries[0][1]:
        return Recovered(error=f"journal first_index() {first} != its first entry {entries[0][1]}")
    if entries and not 1 <= commit <= entries[-1][1]:
        return Recovered(error=f"commit index {commit} lies beyond the journal's last entry {entries[-1][1]}")
    hs = None if (term, vote) == (0, None) else (term, vote)
    return Recovered(got.boundary, got.entries, got.last_index, got.first_index, hs, None)


# ---------------------------------------------------------------------------
# Rounds
# ---------------------------------------------------------------------------


@dataclass
class CutCounts:
    cuts: int = 0  # power cuts (clear-cache or a LazyFS crash) checked
    acked: int = 0  # acknowledged entries checked present after the cuts
    acks: int = 0  # acknowledgements (flushes, durable calls, hard-state saves) replayed
    lost: int = 0  # acknowledged entries missing after a cut
    failures: list[str] = field(default_factory=list)
    extra: dict[str, int] = field(default_factory=dict)

    def bump(self, key: str, n: int = 1) -> None:
        self.extra[key] = self.extra.get(key, 0) + n


class Workload:
    """One directory on the mount, one writer kind, one model, many rounds."""

    def __init__(self, fs: LazyFS, kind: str, impl: str, seed: int, options: dict[str, Any] | None = None) -> None:
        self.fs = fs
        self.kind = kind
        self.impl = impl
        self.seed = seed
        self.rng = random.Random(seed)
        self.options = {"segment_size": SEGMENT_SIZE, **(options or {})}
        self.journal = kind == "journal"
        self.path = fs.mount / f"{kind}-{impl}-{seed}"
        self.model = LogModel()
        self.counts = CutCounts()
        self.round = 0
        self.last_lines: list[str] = []
        self.seed_directory()

    def seed_directory(self) -> None:
        """Start from a durable first entry, so the first segment already exists:
        creating one through LazyFS takes longer than many of the rounds last."""
        entry = (1, 1, 1, payload_for(1, 1, self.seed, 64))
        if self.journal:
            from fastlog.integrations.pysyncobj import FastlogJournal

            with FastlogJournal(str(self.path), sync="always", segment_size=SEGMENT_SIZE, implementation=self.impl) as j:
                j.add(entry[3], 1, 1)
        elif self.kind != "meta":
            import fastlog

            with fastlog.Log(str(self.path), segment_size=SEGMENT_SIZE, implementation=self.impl) as log:
                log.append([log.Entry(index=1, term=1, payload=entry[3])])
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            return
        self.model.begin_append([entry])
        self.model.flushed()

    # -- one writer round ----------------------------------------------------
    def run_writer(self, delay: float, kind: str | None = None, wait_lazyfs: float = 0.0) -> Child:
        """Fork the writer, let it run ``delay`` seconds (or, with ``wait_lazyfs``, until
        LazyFS crashes itself, at most that long), SIGKILL it and replay its lines."""
        self.round += 1
        child = Child(kind or self.kind, str(self.path), self.seed * 100003 + self.round, self.impl, self.options)
        if not child.wait_for("ready"):
            child.kill()
            raise AssertionError(f"the {self.kind} child never started: {child.error}")
        if wait_lazyfs:
            deadline = time.monotonic() + wait_lazyfs
            while self.fs.alive() and time.monotonic() < deadline and child.error is None:
                time.sleep(0.002)
            # The writer may see the dead mount before LazyFS's exit is reaped.
            settle = time.monotonic() + 2.0
            while child.error is not None and self.fs.alive() and time.monotonic() < settle:
                time.sleep(0.01)
        else:
            time.sleep(delay)
        child.kill()
        if self.fs.alive():
            # With the file system up, the writer has no reason to die on its own.
            assert child.killed_by_us and child.error is None, (
                f"the {self.kind} child died on its own (status {child.status}): {child.error}"
            )
        self.counts.acks += replay(self.model, child.operations(), journal=self.journal)
        self.last_lines = child.operations()[-8:]
        return child

    def cut(self) -> None:
        """Power cut on a running LazyFS: everything not fsynced is gone."""
        self.fs.power_cut()

    def check(self, label: str, broken: bool = False) -> str | None:
        """Reopen, compare with the model, start the next round from what was found."""
        position = self.model.position()
        got = recover_journal(self.path, self.impl) if self.journal else recover_log(self.path, self.impl)
        why = self.model.check(got, position, check_hard_state=True)
        need, lost = count_lost(self.model, position, got)
        self.counts.cuts += 1
        self.counts.acked += need - lost
        self.counts.lost += lost
        if why is not None:
            self.counts.failures.append(
                f"{self.kind} ({self.impl}) {label}, round {self.round}: {why}\n  the writer's last lines: {self.last_lines}"
            )
            if not broken:
                raise AssertionError(self.counts.failures[-1] + f"\n  directory {self.fs.backing_path(self.path)}")
        if got.error is None:
            self.model.rebase(LogState(got.boundary, got.entries))
            self.model.hard_states = [got.hard_state] if got.hard_state is not None else []
        else:  # broken build only: start over in a fresh directory
            self.path = self.path.with_name(self.path.name + "x")
            self.model = LogModel()
            self.seed_directory()
        return why

    def pick_delay(self) -> float:
        # Mostly short: most cuts should land while the writer is busy, some
        # right at its start (recovery of the previous round's cut is done by then).
        return self.rng.choice([0.005, 0.02, 0.05, 0.1, 0.2]) * self.rng.random() + 0.002


def _kill_and_time(child: Child, what: str, finished: str, estimate: list[float]) -> str | None:
    """Kill ``child``, which must not have failed on its own.  When it had said
    ``finished`` (``"<finished> <seconds>"``), those seconds join ``estimate`` (the
    last eight kept), so the next kill aims inside the time the work takes."""
    child.kill()
    assert child.killed_by_us and child.error is None, f"{what} failed in the child: {child.error}"
    line = child.said(finished)
    if line:
        estimate.append(float(line.split()[1]))
        del estimate[:-8]
    return line


def cut_during_recovery(w: Workload, estimate: list[float]) -> bool:
    """Kill a child that reopens the (torn) log, cut the power; True when the kill
    landed after recovery began and before it finished."""
    child = Child("recovery", str(w.path), w.seed, w.impl, w.options)
    if not child.wait_for("ready"):
        child.kill()
        raise AssertionError(f"the recovery child never started: {child.error}")
    mean = sum(estimate) / len(estimate) if estimate else 0.005
    # Mostly within the time a recovery takes; now and then later, which also
    # keeps the estimate learning from recoveries that finished.
    time.sleep(w.rng.uniform(0, 1.3 * mean if w.rng.random() < 0.8 else 0.05))
    opened = _kill_and_time(child, "recovery", "opened", estimate)
    w.fs.power_cut()
    return child.said("begin") is not None and opened is None


def run_for(fs: LazyFS, kind: str, impl: str, seed: int, rounds: int, *, recovery_every: int = 0,
            options: dict[str, Any] | None = None, broken: bool = False) -> CutCounts:
    """``rounds`` writer rounds, each ending in a power cut and a check; every
    ``recovery_every``-th round also cuts the power during the recovery that follows."""
    w = Workload(fs, kind, impl, seed, options)
    estimate: list[float] = []
    for k in range(rounds):
        w.run_writer(w.pick_delay())
        w.cut()
        if recovery_every and k % recovery_every == recovery_every - 1:
            # The directory now holds a torn tail: cut again while a child recovers it.
            for _ in range(2):
                if cut_during_recovery(w, estimate):
                    w.counts.bump("during_recovery")
                w.counts.bump("recovery_cuts")
                w.counts.cuts += 1
        w.check(f"cut {k + 1}", broken=broken)
    return w.counts


# ---------------------------------------------------------------------------
# Cutting the power during `fastlog repair`
# ---------------------------------------------------------------------------

# Repair tests build a fresh damaged log every round: small segments keep that cheap.
REPAIR_SEGMENT_SIZE = 16 << 10
DATA_START = 4096  # docs/format.md: records start at the second page
FRAME_HEADER = 32


def _frames(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, payload length, index) of each record of a segment file (docs/format.md)."""
    out = []
    pos = DATA_START
    while pos + FRAME_HEADER <= len(data):
        length = int.from_bytes(data[pos + 4:pos + 8], "little")
        index = int.from_bytes(data[pos + 8:pos + 16], "little")
        if index == 0:
            break
        out.append((pos, length, index))
        pos += FRAME_HEADER + ((length + 7) & ~7)
    return out


def damaged_log(path: Path, impl: str, rng: random.Random, seed: int) -> tuple[list[tuple[int, int, int, bytes]], int]:
    """A cleanly closed log of several segments with one flipped byte in a record of
    a middle segment (durable damage below ``synced_end``).  Returns its entries
    and the last index a repair must keep."""
    import fastlog

    entries = [(i, 1 + i // 50, 1, payload_for(i, 1 + i // 50, seed, rng.choice([40, 200, 600]))) for i in range(1, 121)]
    with fastlog.Log(str(path), segment_size=REPAIR_SEGMENT_SIZE, implementation=impl) as log:
        log.append([log.Entry(index=e[0], term=e[1], payload=e[3]) for e in entries])
    segments = sorted(p for p in path.iterdir() if p.suffix == ".seg")
    assert len(segments) >= 3, segments
    victim = segments[rng.randint(1, len(segments) - 2)]
    data = victim.read_bytes()
    frames = [f for f in _frames(data) if f[1] > 0]
    offset, length, index = rng.choice(frames)
    at = offset + rng.choice([0, FRAME_HEADER + rng.randrange(length)])  # the CRC or a payload byte
    fd = os.open(victim, os.O_RDWR)
    try:
        os.pwrite(fd, bytes([data[at] ^ 0x5A]), at)
        os.fsync(fd)
    finally:
        os.close(fd)
    return entries, index - 1


def _damage_of(plan: Any) -> tuple[str, int | None]:
    d = plan.damage
    return (os.path.basename(d.path or ""), d.offset) if d is not None else ("", None)


def repair_rounds(fs: LazyFS, impl: str, seed: int, rounds: int, runner: str = "repair", kill_on: str = "") -> CutCounts:
    """Damage a log, run ``fastlog repair`` in a child, cut the power at a random
    moment of it; afterwards the log must open as exactly the prefix the repair
    keeps, or still report the very damage it had (same file and offset: then a
    second repair must plan the same cut and finish the job), never anything else.
    ``runner="repair_by_rewriting"`` is the deliberately broken repair; ``kill_on``
    kills the child as soon as it says that word instead of at a random moment."""
    from fastlog import tools

    rng = random.Random(seed)
    counts = CutCounts()
    estimate: list[float] = []
    options = {"segment_size": REPAIR_SEGMENT_SIZE}
    for k in range(rounds):
        path = fs.mount / f"repair-{impl}-{seed}-{k}"
        entries, keep = damaged_log(path, impl, rng, seed * 1000 + k)
        plan = tools.plan_repair(str(path), implementation=impl)
        assert plan.keep_last_index == keep, (plan.describe(), keep)
        child = Child(runner, str(path), seed, impl, options)
        assert child.wait_for("ready"), child.error
        if kill_on:
            child.wait_for(kill_on)
        elif k == 0:
            child.wait_for("done")  # the first repair runs to the end: how long one takes
        else:
            time.sleep(rng.uniform(0, 1.2 * sum(estimate) / len(estimate)))
        if not _kill_and_time(child, "repair", "done", estimate) and child.said("begin"):
            counts.bump("mid_repair")
        fs.power_cut()
        counts.cuts += 1
        counts.bump("repairs")
        want = tuple(entries[:keep])
        got = read_log(path, segment_size=REPAIR_SEGMENT_SIZE, implementation=impl)
        if got.error is not None:
            # The cut came before the repair's first durable step: the damage is still there.
            if "CorruptionError" not in got.error:
                counts.failures.append(f"repair round {k}: reopen after the cut: {got.error}")
                continue
            counts.bump("still_damaged")
            again = tools.plan_repair(str(path), implementation=impl)
            if _damage_of(again) != _damage_of(plan) or again.keep_last_index != keep:
                counts.failures.append(
                    f"repair round {k} ({impl}): after the cut the damage is {_damage_of(again)}, keeping 1..{again.keep_last_index};"
                    f" before the repair it was {_damage_of(plan)}, keeping 1..{keep}; directory {fs.backing_path(path)}"
                )
                continue
            tools.repair(str(path), implementation=impl)
            got = read_log(path, segment_size=REPAIR_SEGMENT_SIZE, implementation=impl)
        have = {e[0]: e for e in got.entries}
        lost = sum(1 for e in want if have.get(e[0]) != e)
        counts.acked += len(want) - lost
        counts.lost += lost
        if got.error is not None or got.entries != want or got.boundary is not None:
            last = got.entries[-1][0] if got.entries else 0
            counts.failures.append(
                f"repair round {k} ({impl}): after the cut the log holds {len(got.entries)} entries up to {last}"
                f" ({got.error}), the repair keeps exactly 1..{keep}; directory {fs.backing_path(path)}"
            )
            continue
        report = tools.verify(str(path), implementation=impl)
        if not report.ok:
            counts.failures.append(f"repair round {k} ({impl}): verify after the repair: {report.lines()[:3]}")
    return counts


# ---------------------------------------------------------------------------
# LazyFS's own crash faults: a torn write, a torn sequence of writes
# ---------------------------------------------------------------------------


def torn_fault(rng: random.Random, target: str) -> dict[str, Any]:
    """An ``[[injection]]`` table for the segment file ``target`` (its path as LazyFS sees it).

    torn-op: the n-th write to the file is split into equal parts, some of which
    persist, then LazyFS crashes.  torn-seq: in the n-th run of writes between
    two fsyncs, only the listed writes persist, then LazyFS crashes.  Either
    way everything else not fsynced is gone, as in a power cut.
    """
    if rng.random() < 0.5:
        parts = rng.choice([2, 3, 4, 8])
        persist = sorted(rng.sample(range(1, parts + 1), rng.randint(1, parts - 1)))
        return {"type": "torn-op", "file": target, "occurrence": rng.randint(2, 12), "parts": parts, "persist": persist}
    return {
        "type": "torn-seq", "op": "write", "file": target,
        "occurrence": rng.randint(1, 2), "persist": rng.choice([[2], [3], [1, 3], [2, 3], [1, 4]]),
    }


def torn_rounds(fs: LazyFS, kind: str, impl: str, seed: int, rounds: int) -> CutCounts:
    """Each round: a fresh log whose first segment is durable; LazyFS restarted with
    a torn-op or torn-seq fault on that segment; the writer runs until LazyFS
    crashes itself (or, when the fault is not reached in time, an ordinary
    clear-cache cut); then LazyFS is restarted without faults, a child reopening
    the log is killed and the power cut again while it recovers, and the log is
    checked.

    The first segment exists before the fault is armed, so the torn writes are
    record writes and page write-backs (header claims included), never the
    64-byte header written when a segment is created: tearing that one inside a
    512-byte sector is outside what disks do (sector writes are atomic) and
    outside the promise.
    """
    rng = random.Random(seed)
    total = CutCounts()
    estimate: list[float] = []
    for k in range(rounds):
        w = Workload(fs, kind, impl, seed * 1000 + k, {"resets": False})
        fault = torn_fault(rng, fs.backing_path(w.path / "00000000000000000001.seg"))
        fs.restart([fault])
        try:
            w.run_writer(0.0, wait_lazyfs=1.5)
            if fs.alive():
                w.cut()
                total.bump("torn_missed")
            else:
                total.bump("torn")
                total.bump(fault["type"])
        finally:
            fs.restart()
        # What the fault left (a torn write, writes persisted out of order) is
        # recovered by a child that is itself cut off mid-way.
        if cut_during_recovery(w, estimate):
            w.counts.bump("during_recovery")
        w.counts.bump("recovery_cuts")
        w.counts.cuts += 1
        w.check(f"{fault['type']} {fault}")
        for key, n in w.counts.extra.items():
            total.bump(key, n)
        total.cuts += w.counts.cuts
        total.acked += w.counts.acked
        total.acks += w.counts.acks
        total.lost += w.counts.lost
        total.failures += w.counts.failures
    return total

"""``fastlog bench --power-cuts N``: does an engine keep what it acknowledged when the power goes?

For every engine a child process (a fresh interpreter: ``python -m
fastlog.bench.powercut write ...``) appends entries in small batches to a
directory on a LazyFS mount and prints ``ack <index>`` on stdout each time the
engine's own durable commit of a batch has returned.  The parent SIGKILLs the
child at a random moment, cuts the power (LazyFS drops every byte that was not
fsynced), and a second fresh child (``... check ...``) reopens the directory,
times the open plus the read of the last entry (the recovery time), and checks
every entry up to the last acknowledged index.  The next writer continues the
same log, so later cuts also recover a log that grew and was cut before; after
a cut that lost entries or left a log that does not reopen, the engine starts
over in a fresh directory.

Each entry's payload is a digest of its index (:func:`payload_for`) and its
term is a function of the index (:func:`term_for`), so the checker tells a
real entry from a missing, stale or garbage one without knowing what the
writer did beyond its last acknowledgement.

The durable commit of each engine (:data:`COMMITS`): fastlog ``flush_async()``
on the asyncio engine (group commit, as a Raft node uses it); SQLite in WAL
mode with ``synchronous=FULL``; LMDB with ``sync=True`` (its default flags);
RocksDB ``WriteOptions.sync``; LevelDB ``sync=True``; PySyncObj's
``FileJournal.flush()`` (an ``msync`` of its mapped file).  The registry
engines are opened through :mod:`fastlog.engines` (the same adapters the speed
workloads measure), the peers with ``durable=True``.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, TextIO, Tuple

__all__ = [
    "COMMITS",
    "JOURNAL_ENGINE",
    "CutTally",
    "PowerCutRun",
    "payload_for",
    "term_for",
    "select_engines",
    "journal_missing",
    "lazyfs_problem",
    "run_power_cuts",
]

#: PySyncObj's own journal: not a :mod:`fastlog.engines` engine, a column of this benchmark only.
JOURNAL_ENGINE = "pysyncobj"

#: How each engine's writer makes a batch durable before it acknowledges it.
COMMITS: Dict[str, str] = {
    "fastlog": "asyncio engine, persist_entries + flush_async() (group commit)",
    "fastlog-python": "the same, pure-Python core",
    "sqlite": "WAL mode, synchronous=FULL: each batch one committed transaction",
    "lmdb": "sync=True, metasync=True (lmdb's defaults): each batch one committed write transaction",
    "rocksdb": "WriteOptions.sync = True: each batch one synced WriteBatch",
    "leveldb": "write_batch(sync=True): each batch one synced batch",
    JOURNAL_ENGINE: "FileJournal.add per entry, then FileJournal.flush() (msync of its mapped file)",
}

# Engines the power-cut column leaves out: nothing of theirs is on disk.
_NOT_PERSISTENT = ("memory",)

# fastlog preallocates every segment; LazyFS has no fallocate, so the C library
# writes every block through FUSE (about 1 s per MiB).  Small segments keep the
# rollovers cheap and frequent, so cuts also land around them.
FASTLOG_SEGMENT_SIZE = 64 << 10
PAYLOAD_SIZE = 128
MAX_BATCH = 16
# Environment variable of the writer child naming a deliberately broken fastlog
# writer, which the harness must catch: "skip-flush" acknowledges without calling
# flush_async(); "no-fdatasync" calls it with fastlog's fdatasync made a no-op.
BROKEN_ENV = "FASTLOG_BENCH_POWERCUT_BROKEN"
BROKEN_BUILDS = ("skip-flush", "no-fdatasync")
CHILD_TIMEOUT = 120.0


def payload_for(index: int, size: int = PAYLOAD_SIZE) -> bytes:
    """The payload of entry ``index``: its digest, repeated to ``size`` bytes."""
    digest = hashlib.blake2b(b"fastlog power cut %d" % index, digest_size=32).digest()
    return (digest * (size // len(digest) + 1))[:size]


def term_for(index: int) -> int:
    """Terms rise every 1000 entries, as after an election now and then."""
    return 1 + index // 1000


# ---------------------------------------------------------------------------
# The children: writer and checker (run as `python -m fastlog.bench.powercut`)
# ---------------------------------------------------------------------------


def _say(line: str) -> None:
    # Unbuffered and whole: what the pipe holds when the child is killed is
    # exactly what it had acknowledged.
    os.write(1, (line + "\n").encode())


def _open_registry(engine: str, path: str) -> Any:
    from ..engines import get_engine

    if engine.startswith("fastlog"):
        # durability is left to flush_async(), as a Raft node does
        return get_engine(engine).open(path, durable=False, segment_size=FASTLOG_SEGMENT_SIZE)
    return get_engine(engine).open(path, durable=True)


def _journal_file(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return os.path.join(path, "journal.bin")


def _write_journal(path: str, seed: int, size: int) -> None:
    from pysyncobj.journal import FileJournal

    rng = random.Random(seed)
    journal = FileJournal(_journal_file(path))
    last = journal[-1][1] if len(journal) else 0
    _say(f"ready {last}")
    while True:
        n = rng.randint(1, MAX_BATCH)
        for index in range(last + 1, last + n + 1):
            journal.add(payload_for(index, size), index, term_for(index))
        journal.flush()
        last += n
        _say(f"ack {last}")


async def _write_engine(engine: str, path: str, seed: int, size: int, skip_flush: bool) -> None:
    from .subjects import entry_class_of

    rng = random.Random(seed)
    opened = _open_registry(engine, path)
    store = opened.log_store()
    cls = entry_class_of(store)
    persist, flush_async = store.persist_entries, store.flush_async
    last = store.last_index()
    _say(f"ready {last}")
    while True:
        n = rng.randint(1, MAX_BATCH)
        await persist([cls(i, term_for(i), payload_for(i, size)) for i in range(last + 1, last + n + 1)])
        if not skip_flush:
            await flush_async()
        last += n
        _say(f"ack {last}")


def writer_main(engine: str, path: str, seed: int, size: int) -> None:
    """Append and acknowledge until killed."""
    broken = os.environ.get(BROKEN_ENV, "") if engine.startswith("fastlog") else ""
    skip_flush = broken == "skip-flush"
    if broken == "no-fdatasync":
        from .. import _osio

        _osio.fdatasync = lambda fd: None
    if engine == JOURNAL_ENGINE:
        _write_journal(path, seed, size)
    else:
        asyncio.run(_write_engine(engine, path, seed, size, skip_flush))


def _count_bad(read: Any, first: int, last: int, size: int) -> Tuple[int, int]:
    """(missing or wrong entries among ``first..last``, how many were read); ``read(a, b)``
    returns (index, term, payload) tuples of the entries it has in ``a..b``."""
    bad = checked = 0
    chunk = 4096
    for start in range(first, last + 1, chunk):
        end = min(last, start + chunk - 1)
        have = {i: (t, p) for i, t, p in read(start, end)}
        for index in range(start, end + 1):
            checked += 1
            if have.get(index) != (term_for(index), payload_for(index, size)):
                bad += 1
    return bad, checked


def _check_journal(path: str, need: int, size: int) -> Dict[str, Any]:
    from pysyncobj.journal import FileJournal

    t0 = time.perf_counter()
    journal = FileJournal(_journal_file(path))
    last = journal[-1][1] if len(journal) else 0
    if len(journal):
        journal[-1][0]  # the read of the last entry, part of the recovery time
    recovery = time.perf_counter() - t0
    entries = [(idx, term, bytes(cmd)) for cmd, idx, term in (journal[k] for k in range(len(journal)))]
    journal._destroy()
    by_index = {e[0]: e for e in entries}

    def read(a: int, b: int) -> List[Tuple[int, int, bytes]]:
        return [by_index[i] for i in range(a, b + 1) if i in by_index]

    lost, _ = _count_bad(read, 1, need, size)
    stray, _ = _count_bad(read, need + 1, last, size)
    positions_ok = all(e[0] == k + 1 for k, e in enumerate(entries))
    return {"recovery": recovery, "last": last, "lost": lost, "stray": stray + (0 if positions_ok else 1)}


def _preload(engine: str) -> None:
    """Import the engine's modules, so that the recovery time holds no import."""
    import importlib

    from ..engines import get_engine

    spec = get_engine(engine)
    spec.missing_reason  # noqa: B018 (the probe imports the engine's package)
    importlib.import_module(spec.module)
    importlib.import_module("fastlog.engine")


async def _check_engine(engine: str, path: str, need: int, size: int) -> Dict[str, Any]:
    _preload(engine)
    t0 = time.perf_counter()
    opened = _open_registry(engine, path)
    try:
        store = opened.log_store()
        last = store.last_index()
        if last:
            store.get_entries(last, last)
        recovery = time.perf_counter() - t0

        def read(a: int, b: int) -> List[Tuple[int, int, bytes]]:
            return [(e.index, e.term, bytes(e.payload)) for e in store.get_entries(a, b)]

        lost, _ = _count_bad(read, 1, need, size)
        stray, _ = _count_bad(read, need + 1, last, size)
    finally:
        await opened.close()
    return {"recovery": recovery, "last": last, "lost": lost, "stray": stray}


def checker_main(engine: str, path: str, need: int, size: int) -> None:
    """Reopen after the cut and print one JSON line: recovery seconds, last index,
    acknowledged entries lost, entries past the acknowledged ones that are wrong."""
    try:
        if engine == JOURNAL_ENGINE:
            result = _check_journal(path, need, size)
        else:
            result = asyncio.run(_check_engine(engine, path, need, size))
    except Exception as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"}
    _say(json.dumps(result))


# ---------------------------------------------------------------------------
# The parent
# ---------------------------------------------------------------------------


@dataclass
class CutTally:
    """What the cuts under one engine found."""

    engine: str
    commit: str
    cuts: int = 0
    #: entries acknowledged by the writers (each counted once, in the cut it was acknowledged in)
    acknowledged: int = 0
    #: acknowledged entries missing or wrong after a cut (in the cut that found them)
    lost: int = 0
    #: reopens that raised, crashed or hung
    failed_reopens: int = 0
    #: entries past the last acknowledged one that came back wrong (garbage, not just missing)
    stray: int = 0
    #: cuts after which the engine started over in a fresh directory
    restarts: int = 0
    recovery_seconds: List[float] = field(default_factory=list)
    #: entries in the log the last reopen found (the logs grow from cut to cut)
    last_entries: int = 0
    problems: List[str] = field(default_factory=list)
    #: the cuts ended early (a writer that would not start, LazyFS failing)
    stopped: bool = False

    @property
    def median_recovery(self) -> Optional[float]:
        return statistics.median(self.recovery_seconds) if self.recovery_seconds else None

    def to_json(self) -> Dict[str, Any]:
        return {
            "commit": self.commit,
            "cuts": self.cuts,
            "acknowledged_entries": self.acknowledged,
            "lost_acknowledged_entries": self.lost,
            "failed_reopens": self.failed_reopens,
            "wrong_unacknowledged_entries": self.stray,
            "fresh_directories": self.restarts,
            "stopped_early": self.stopped,
            "median_recovery_seconds": self.median_recovery,
            "recovery_seconds": self.recovery_seconds,
            "entries_at_last_reopen": self.last_entries,
            "problems": self.problems[:20],
        }


@dataclass
class PowerCutRun:
    """Every engine's tally, the engines skipped (with why), or why nothing could run."""

    cuts: int
    tallies: Dict[str, CutTally] = field(default_factory=dict)
    skipped: Dict[str, str] = field(default_factory=dict)
    unavailable: Optional[str] = None
    elapsed: float = 0.0

    def to_json(self) -> Dict[str, Any]:
        return {
            "cuts_per_engine": self.cuts,
            "unavailable": self.unavailable,
            "skipped_engines": self.skipped,
            "elapsed_seconds": self.elapsed,
            "payload_bytes": PAYLOAD_SIZE,
            "fastlog_segment_size": FASTLOG_SEGMENT_SIZE,
            "engines": {name: tally.to_json() for name, tally in self.tallies.items()},
        }


def journal_missing() -> Optional[str]:
    try:
        import pysyncobj.journal  # noqa: F401
    except Exception as exc:
        return f"cannot import pysyncobj ({type(exc).__name__}); install the pysyncobj extra"
    return None


def select_engines(names: Optional[Sequence[str]]) -> Tuple[List[str], Dict[str, str]]:
    """The engines to cut the power under, and the ones skipped with a reason.

    ``names`` None: every available persistent engine of the registry and
    PySyncObj's journal.  A name that is neither raises ValueError.
    """
    from .. import engines
    from .subjects import BASELINE

    chosen: List[str] = []
    skipped: Dict[str, str] = {}
    wanted = list(names) if names is not None else [s.name for s in engines.engines()] + [JOURNAL_ENGINE]
    for name in wanted:
        if name == JOURNAL_ENGINE:
            reason = journal_missing()
        elif name == BASELINE:
            if names is not None:
                skipped[name] = "the raw file baseline is not an engine: no power-cut column"
            continue
        elif name in engines.ENGINE_NAMES:
            if name in _NOT_PERSISTENT:
                if names is not None:
                    skipped[name] = "keeps nothing on disk"
                continue
            reason = engines.get_engine(name).missing_reason
        else:
            known = ", ".join(n for n in engines.ENGINE_NAMES if n not in _NOT_PERSISTENT)
            raise ValueError(f"unknown engine {name!r} for --power-cuts; known: {known}, {JOURNAL_ENGINE}")
        if reason is None:
            chosen.append(name)
        else:
            skipped[name] = reason
    return chosen, skipped


def lazyfs_problem() -> Optional[str]:
    """Why LazyFS cannot run here (one line), or None; builds it when needed."""
    from ..testing.lazyfs import LazyFS, ensure_built, unavailable_reason

    reason = unavailable_reason()
    if reason is not None:
        return reason
    try:
        probe = LazyFS(ensure_built())
        try:
            probe.start()
        finally:
            probe.remove()
    except Exception as exc:  # a failed build or a refused mount
        return " ".join(str(exc).split())
    return None


def _child(args: Sequence[str], env: Dict[str, str], stderr: Any = subprocess.PIPE) -> "subprocess.Popen[bytes]":
    return subprocess.Popen(
        [sys.executable, "-m", "fastlog.bench.powercut", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=env,
    )


def _tail(text: bytes, lines: int = 3) -> str:
    return " | ".join(text.decode(errors="replace").strip().splitlines()[-lines:])


class _Lines:
    """The lines a child prints, read by a thread so the parent can wait for one."""

    def __init__(self, proc: "subprocess.Popen[bytes]") -> None:
        self.lines: List[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: "subprocess.Popen[bytes]") -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            with self._cond:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_for(self, word: str, timeout: float) -> Optional[str]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if line.split(" ", 1)[0] == word:
                        return line
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    return None
                self._cond.wait(left)

    def join(self) -> None:
        self._thread.join(timeout=30)


class _EngineCuts:
    """One engine's directory on a LazyFS mount, and the cuts under it."""

    def __init__(self, fs: Any, engine: str, seed: int, size: int, env: Dict[str, str]) -> None:
        self.fs = fs
        self.engine = engine
        self.rng = random.Random(seed)
        self.size = size
        self.env = env
        self.tally = CutTally(engine, COMMITS.get(engine, ""))
        self.generation = 0
        self.durable_last = 0  # entries 1..durable_last were found intact by the last check
        self.path = self._fresh_path()

    def _fresh_path(self) -> Path:
        self.generation += 1
        self.durable_last = 0
        return self.fs.mount / f"{self.engine}-{self.generation}"

    def write_and_kill(self) -> int:
        """Run a writer, SIGKILL it at a random moment; the last index it acknowledged."""
        seed = self.rng.randrange(1 << 30)
        # stderr in a file: nobody reads it while the writer runs, and a pipe could fill up
        with tempfile.TemporaryFile() as err:
            proc = _child(["write", self.engine, str(self.path), str(seed), str(self.size)], self.env, stderr=err)
            lines = _Lines(proc)
            died = None
            try:
                if lines.wait_for("ready", CHILD_TIMEOUT) is None:
                    died = "did not start"
                else:
                    # Mostly within the first few hundred batches, now and then later.
                    time.sleep(self.rng.uniform(0.01, 0.3) if self.rng.random() < 0.8 else self.rng.uniform(0.3, 1.0))
                    if proc.poll() is not None:
                        died = f"ended on its own with status {proc.returncode}"
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
                lines.join()
                if proc.stdout is not None:
                    proc.stdout.close()
            if died is not None:
                err.seek(0)
                raise RuntimeError(f"the {self.engine} writer {died}: {_tail(err.read())}")
        acks = [int(line.split()[1]) for line in lines.lines if line.startswith("ack ")]
        return acks[-1] if acks else 0

    def check(self, need: int) -> Dict[str, Any]:
        proc = _child(["check", self.engine, str(self.path), str(need), str(self.size)], self.env)
        try:
            out, err = proc.communicate(timeout=CHILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return {"error": f"the reopen did not finish in {CHILD_TIMEOUT:.0f} s"}
        text = out.decode(errors="replace").strip().splitlines()
        if proc.returncode != 0 or not text:
            return {"error": f"the reopening child ended with status {proc.returncode}: {_tail(err)}"}
        try:
            result: Dict[str, Any] = json.loads(text[-1])
        except ValueError:
            return {"error": f"the reopening child said {text[-1][:200]!r}"}
        return result

    def one_cut(self) -> None:
        t = self.tally
        acked = self.write_and_kill()
        self.fs.power_cut()
        need = max(acked, self.durable_last)
        t.cuts += 1
        t.acknowledged += max(0, acked - self.durable_last)
        got = self.check(need)
        if "error" in got:
            # counted here, not in lost: nothing of the log can be read until it is repaired
            t.failed_reopens += 1
            t.problems.append(f"cut {t.cuts}: {self.path.name} did not reopen: {got['error']}")
        else:
            t.recovery_seconds.append(float(got["recovery"]))
            t.last_entries = int(got["last"])
            t.lost += int(got["lost"])
            t.stray += int(got["stray"])
            if got["lost"] or got["stray"]:
                t.problems.append(
                    f"cut {t.cuts}: {self.path.name}: {got['lost']} of entries 1..{need} (acknowledged) lost, "
                    f"{got['stray']} wrong entries past them; log ends at {got['last']}"
                )
            else:
                self.durable_last = max(need, int(got["last"]))
                return
        # What is left cannot be continued honestly: start over.
        t.restarts += 1
        self.path = self._fresh_path()


def run_power_cuts(
    names: Optional[Sequence[str]],
    cuts: int,
    *,
    seed: int = 1,
    payload_size: int = PAYLOAD_SIZE,
    progress: Optional[TextIO] = sys.stderr,
    broken: Optional[str] = None,
) -> PowerCutRun:
    """``cuts`` power cuts under every chosen engine (see the module's docstring).

    Never raises for an environment problem: without LazyFS the run says why in
    ``unavailable``; an engine whose package is missing is in ``skipped``.
    ``broken`` (one of :data:`BROKEN_BUILDS`) breaks the fastlog writers on
    purpose: what the harness must catch.  ValueError for an unknown engine
    name.
    """
    from ..testing.lazyfs import LazyFS, ensure_built

    chosen, skipped = select_engines(names)
    run = PowerCutRun(cuts=cuts, skipped=skipped)

    def say(text: str) -> None:
        if progress is not None:
            progress.write(text + "\n")
            progress.flush()

    for name, reason in skipped.items():
        say(f"power cuts: skipping {name}: {reason}")
    problem = lazyfs_problem()
    if problem is not None:
        run.unavailable = problem
        say(f"power cuts: skipped, LazyFS cannot run here: {problem}")
        return run
    binary = ensure_built()
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if broken is not None:
        if broken not in BROKEN_BUILDS:
            raise ValueError(f"broken must be one of {BROKEN_BUILDS}, not {broken!r}")
        env[BROKEN_ENV] = broken
    else:
        env.pop(BROKEN_ENV, None)
    start = time.perf_counter()
    for k, engine in enumerate(chosen):
        t0 = time.perf_counter()
        # in the system's temporary directory: LazyFS refuses paths holding "-o"
        base = Path(tempfile.mkdtemp(prefix=f"fastlog_bench_powercut_{os.getpid()}_"))
        fs = LazyFS(binary, base)
        try:
            fs.start()
            cutter = _EngineCuts(fs, engine, seed * 7919 + k, payload_size, env)
            run.tallies[engine] = cutter.tally
            for _ in range(cuts):
                cutter.one_cut()
        except Exception as exc:
            tally = run.tallies.setdefault(engine, CutTally(engine, COMMITS.get(engine, "")))
            tally.stopped = True
            tally.problems.append(f"the run stopped: {type(exc).__name__}: {exc}")
        finally:
            fs.remove()
        t = run.tallies[engine]
        median = t.median_recovery
        say(
            f"power cuts: {engine:<14} {t.cuts} cuts, {t.acknowledged} acknowledged, {t.lost} lost, "
            f"{t.failed_reopens} failed reopens, median recovery "
            f"{'-' if median is None else f'{median * 1e3:.1f} ms'}  ({time.perf_counter() - t0:.1f} s)"
        )
    run.elapsed = time.perf_counter() - start
    return run


def _main(argv: Sequence[str]) -> None:
    role, engine, path = argv[0], argv[1], argv[2]
    if role == "write":
        writer_main(engine, path, int(argv[3]), int(argv[4]))
    elif role == "check":
        checker_main(engine, path, int(argv[3]), int(argv[4]))
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    _main(sys.argv[1:])

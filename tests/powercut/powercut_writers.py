"""What a child process does between its fork and the power cut.

Each writer runs forever (the parent SIGKILLs it) and tells the parent, through
``say``, every operation *before* it starts and every acknowledgement *after*
the call that makes it durable returned: the line protocol of
tests/crash/writer_protocol.py, shared with tests/test_kill.py, which the parent
replays into the model of tests/crash/crashsim.py.

Children are forked from the test process, which has already imported
fastlog, so a cut costs a fork rather than a new interpreter.

``FASTLOG_POWERCUT_NO_FDATASYNC=1`` in the environment turns
``fastlog._osio.fdatasync`` into a no-op in the child: the deliberately broken
build the suite must catch.
"""
from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable
from typing import Any

from crashsim import payload_for
from writer_protocol import EngineWriter, LogWriter, Say, hard_state

BROKEN_FDATASYNC_ENV = "FASTLOG_POWERCUT_NO_FDATASYNC"


def apply_broken_build() -> None:
    """Make ``fdatasync`` do nothing when the environment asks for the broken build."""
    if os.environ.get(BROKEN_FDATASYNC_ENV) == "1":
        import fastlog._osio as osio

        osio.fdatasync = lambda fd: None


def _vote(rng: random.Random) -> int | None:
    return rng.choice([None, 1, 2, 3])


def log_writer(say: Say, path: str, seed: int, impl: str, options: dict[str, Any]) -> None:
    """The synchronous ``Log``: append, flush, replace, truncate, purge, reset, hard state."""
    rng = random.Random(seed)
    resets = options.get("resets", True)
    sync = "always" if options.get("sync_always") else "none"
    w = LogWriter(say, path, seed, sync, impl, options["segment_size"])
    say("ready")
    while True:
        r = rng.random()
        w.begin()
        if r < 0.25 and w.first:
            w.flush()
        elif r < 0.31 and w.last > w.low:
            w.replace(rng, 8, [16, 500])
        elif r < 0.34 and w.last > w.low:
            w.truncate(rng)
        elif r < 0.37 and w.first and w.last > w.first:
            w.purge(rng)
        elif r < 0.375 and resets:
            w.reset()
        elif r < 0.40:
            w.save_hard_state(_vote(rng))
        else:
            n, size = rng.randint(1, 16), rng.choice([0, 16, 100, 300, 1200])
            w.append(w.last + 1, n, size)


def engine_writer(say: Say, path: str, seed: int, impl: str, options: dict[str, Any]) -> None:
    """The asyncio engine: eight writer tasks whose ``flush_async()`` calls share fsyncs.

    Indexes are chosen and persisted in order under a lock (as a Raft leader
    does); the wait for durability happens outside it, so the writers' flushes
    overlap and are group-committed.  A writer acknowledges exactly the
    operations that had completed when it called ``flush_async()``.
    """
    import fastlog

    async def main() -> None:
        engine = fastlog.open(path, segment_size=options["segment_size"], implementation=impl)
        store, meta = engine.log_store(), engine.meta_store()
        hs = meta.load_hard_state()
        hs_term = [hs.current_term if hs else 0]
        shared = EngineWriter(say, store, seed)

        async def writer(w: int) -> None:
            rng = random.Random(seed * 101 + w)
            while True:
                async with shared.order:
                    r = rng.random()
                    first, last = store.first_index(), store.last_index()
                    if r < 0.88 or not first or last <= first:
                        n, size = rng.randint(1, 4), rng.choice([0, 16, 200, 900])
                        await shared.append(last + 1, n, size)
                    elif r < 0.95:
                        await shared.purge(rng, first, last)
                    else:
                        hs_term[0] += 1
                        vote = _vote(rng)
                        say(f"H {hs_term[0]} {vote}")
                        meta.save_hard_state(hard_state(hs_term[0], vote))
                        continue
                if rng.random() < 0.5:
                    await shared.flush()
                else:
                    await asyncio.sleep(0)

        say("ready")
        await asyncio.gather(*(writer(w) for w in range(8)))

    asyncio.run(main())


def meta_writer(say: Say, path: str, seed: int, impl: str, options: dict[str, Any]) -> None:
    """The MetaStore alone: one ``save_hard_state`` after another, each durable on return."""
    from fastlog.meta import FileMetaStore

    rng = random.Random(seed)
    meta = FileMetaStore(path)
    hs = meta.load_hard_state()
    term = hs.current_term if hs else 0
    say("ready")
    while True:
        term += rng.randint(1, 3)
        vote = _vote(rng)
        say(f"H {term} {vote}")
        meta.save_hard_state(hard_state(term, vote))


def journal_writer(say: Say, path: str, seed: int, impl: str, options: dict[str, Any]) -> None:
    """PySyncObj's journal: add, delete from (truncate), delete to (compaction), clear, term and vote.

    ``sync="always"``: every add and delete is durable when it returns.
    ``sync="periodic"``: entries are durable once ``sync_entries()`` or
    ``flush()`` returned (what ``FastlogTCPTransport`` calls before sending).
    Compaction, ``clear`` and ``setCurrentTerm`` are durable on return in both.
    """
    from fastlog.integrations.pysyncobj import FastlogJournal

    rng = random.Random(seed)
    sync = options["journal_sync"]
    j = FastlogJournal(path, sync=sync, segment_size=options["segment_size"], implementation=impl)
    term = max(j.getCurrentTerm(), j[-1][2] if len(j) else 0, 1)
    salt = seed * 1000003
    say("ready")
    while True:
        r = rng.random()
        n = len(j)
        salt += 1
        if r < 0.6 or n == 0:
            # (an empty journal would take any index, but one at or below the
            # purge boundary resets the log first: keep to the next index)
            idx = j.first_index() + n
            size = rng.choice([0, 16, 200, 900])
            say(f"A {idx} 1 {term} {salt} {size}")
            j.add(payload_for(idx, term, salt, size), idx, term)
            if sync == "always":
                say("F")
        elif r < 0.75:
            (j.flush if rng.random() < 0.3 else j.sync_entries)()
            say("F")
        elif r < 0.81:
            pos = rng.randint(0, n - 1)
            say(f"T {j.first_index() + pos}")
            j.deleteEntriesFrom(pos)
            term += 1
            if sync == "always":
                say("F")
        elif r < 0.86 and n > 1:
            pos = rng.randint(1, n - 1)
            cutoff = j.first_index() + pos - 1
            say(f"P {cutoff} {j[pos - 1][2]}")
            j.deleteEntriesTo(pos)
            say("F")  # compaction flushes everything before it writes the boundary
        elif r < 0.87:
            say("R")
            j.clear()
            say("F")
        elif r < 0.95:
            term += 1
            vote = rng.choice([None, "127.0.0.1:4321", "127.0.0.1:4322"])
            say(f"H {term} {vote}")
            j.setCurrentTerm(term, vote)
        else:
            j.setRaftCommitIndex(max(1, j.first_index() + n - 1 - rng.randint(0, 3)))
            j.onOneSecondTimer()
            say("F")


def recovery_opener(say: Say, path: str, seed: int, impl: str, options: dict[str, Any]) -> None:
    """Reopen a log that has a torn tail (recovery cuts and zeroes it); the parent kills it meanwhile."""
    import fastlog

    say("ready")
    start = time.monotonic()
    say("begin")
    log = fastlog.Log(path, segment_size=options["segment_size"], implementation=impl)
    say(f"opened {time.monotonic() - start:.6f}")
    log.close()
    say("closed")
    time.sleep(3600)


def repair_runner(say: Say, path: str, seed: int, impl: str, options: dict[str, Any]) -> None:
    """``fastlog repair`` on a damaged log (the library call the command runs)."""
    from fastlog import tools

    say("ready")
    start = time.monotonic()
    say("begin")
    tools.repair(path, implementation=impl)
    say(f"done {time.monotonic() - start:.6f}")
    time.sleep(3600)


def repair_by_rewriting(say: Say, path: str, seed: int, impl: str, options: dict[str, Any]) -> None:
    """A deliberately broken repair, for the harness's own test: it replaces the
    damaged segment by deleting it and writing it anew before cutting it, so a
    power cut in between loses the entries the repair was meant to keep."""
    from fastlog import tools

    say("ready")
    start = time.monotonic()
    say("begin")
    plan = tools.plan_repair(path, implementation=impl)
    victim = os.path.join(path, plan.cut_file or plan.drop_files[0])
    with open(victim, "rb") as f:
        data = f.read()
    os.unlink(victim)
    say(f"gone {time.monotonic() - start:.6f}")
    time.sleep(0.02)
    with open(victim, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tools.repair(path, implementation=impl)
    say(f"done {time.monotonic() - start:.6f}")
    time.sleep(3600)


WRITERS: dict[str, Callable[..., None]] = {
    "log": log_writer,
    "engine": engine_writer,
    "meta": meta_writer,
    "journal": journal_writer,
    "recovery": recovery_opener,
    "repair": repair_runner,
    "repair_by_rewriting": repair_by_rewriting,
}

"""Workloads for the power-loss simulator: a Log driven in step with a LogModel."""
from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import fastlog
from fastlog import EntryKind, HardState, LogId, VotedFor
from fastlog.meta import FileMetaStore

from crashsim import (
    CrashPoint,
    LogModel,
    LogState,
    ModelEntry,
    Position,
    PowerLossRecorder,
    Recovered,
    RecoveryRun,
    payload_for,
)

SEGMENT_SIZE = 64 << 10



def _save_hard_state(model: LogModel, meta: Any, term: int, vote: Optional[int]) -> None:
    """Tell the model, then save through ``meta``; odd and even votes differ in ``committed``
    so both values of the flag go through the meta file."""
    hs = HardState(
        current_term=term,
        voted_for=None if vote is None else VotedFor(voted_for_id=vote, voted_for_term=term, committed=vote % 2 == 0),
    )
    model.begin_save_hard_state(hs)
    meta.save_hard_state(hs)

class Driver:
    """Applies operations to a Log and to the model, in the order crash safety needs."""

    def __init__(self, log: fastlog.Log, model: LogModel, meta: Optional[FileMetaStore] = None, salt: int = 0):
        self.log = log
        self.model = model
        self.meta = meta
        self.salt = salt
        self.sync_always = log.is_write_durable()
        self.term = 1

    def make(self, index: int, term: int, size: int) -> Any:
        self.salt += 1
        kind = EntryKind.COMMAND if size else EntryKind.NOOP
        if size and self.salt % 7 == 0:
            kind = EntryKind.CONFIG
        return self.log.Entry(index=index, term=term, payload=payload_for(index, term, self.salt, size), kind=kind)

    def append_entries(self, entries: List[Any]) -> None:
        batch: List[ModelEntry] = [(e.index, e.term, int(e.kind), bytes(e.payload)) for e in entries]
        self.model.begin_append(batch)
        self.log.append(entries)
        if self.sync_always:
            self.model.flushed()

    def append(self, count: int, sizes: List[int]) -> None:
        start = self.log.last_index() + 1
        # Terms never decrease along a log: continue at the last entry's term at least.
        self.term = max(self.term, self.log.term_at(start - 1) or 0)
        self.append_entries([self.make(start + i, self.term, sizes[i % len(sizes)]) for i in range(count)])

    def replace(self, from_index: int, count: int, sizes: List[int]) -> None:
        """Raft's replace: a batch whose first index is <= last_index (a new term)."""
        self.term += 1
        self.append_entries([self.make(from_index + i, self.term, sizes[i % len(sizes)]) for i in range(count)])

    def truncate(self, from_index: int) -> None:
        self.model.begin_truncate(from_index)
        self.log.truncate(from_index)
        if self.sync_always:
            self.model.flushed()

    def purge(self, index: int) -> None:
        term = self.log.term_at(index)
        assert term is not None
        self.model.begin_purge(index, term)
        self.log.purge(LogId(index=index, term=term))

    def reset(self) -> None:
        self.model.begin_reset()
        self.log.reset()

    def flush(self) -> None:
        self.log.flush()
        self.model.flushed()

    def save_hard_state(self, term: int, vote: Optional[int]) -> None:
        assert self.meta is not None
        _save_hard_state(self.model, self.meta, term, vote)


def random_workload(driver: Driver, rng: random.Random, n_ops: int) -> None:
    """A random mix of every operation, sized so 64 KiB segments roll over often."""
    log = driver.log
    hs_term = 0
    for _ in range(n_ops):
        r = rng.random()
        last = log.last_index()
        first = log.first_index()
        b = log.purge_boundary()
        low = (b.index if b else 0) + 1
        sizes = [rng.choice([0, 8, 100, 700, 1500, 3000, 5000])]
        if r < 0.38 or first == 0:
            driver.append(rng.randint(1, 12), sizes + [rng.randint(0, 2000)])
        elif r < 0.62:
            driver.flush()
        elif r < 0.70 and last > low:
            driver.truncate(rng.randint(low + 1, last))
        elif r < 0.80 and last >= low:
            driver.replace(rng.randint(max(low, first), last), rng.randint(1, 8), sizes)
        elif r < 0.87 and first and last > first:
            driver.purge(rng.randint(first, last - 1))
        elif r < 0.90:
            driver.reset()
            if rng.random() < 0.5:  # a reset log may start anywhere
                driver.append_entries([driver.make(rng.randint(1, 500), driver.term, 64)])
        elif driver.meta is not None:
            hs_term += 1
            driver.save_hard_state(hs_term, rng.choice([None, 1, 2, 3]))
        else:
            driver.flush()


def scripted_workloads() -> Dict[str, Any]:
    """Small targeted scenarios: each name maps to a function(driver)."""

    def rollover(d: Driver) -> None:
        for _ in range(6):
            d.append(9, [3000, 2900, 100])
            d.flush()
        d.append(20, [4000])

    def truncate_across_segments(d: Driver) -> None:
        d.append(60, [2500])
        d.flush()
        d.truncate(7)
        d.append(5, [1000])
        d.flush()
        d.truncate(3)
        d.flush()

    def replace_suffix(d: Driver) -> None:
        d.append(40, [1800])
        d.flush()
        d.replace(25, 30, [1800])
        d.flush()
        d.replace(10, 3, [200])
        d.replace(12, 40, [1800])
        d.flush()

    def purge_segments(d: Driver) -> None:
        d.append(80, [2000])
        d.flush()
        base = d.log.first_index()
        d.purge(base + 30)
        d.append(5, [2000])
        d.purge(base + 69)
        d.flush()
        d.purge(d.log.last_index())
        d.append(10, [3000])
        d.flush()

    def reset_and_restart(d: Driver) -> None:
        d.append(50, [2500])
        d.flush()
        d.reset()
        d.append_entries([d.make(i, 9, 2500 + i) for i in range(1, 31)])
        d.flush()
        d.reset()
        d.append_entries([d.make(100, 9, 1000)])
        d.flush()

    def unflushed_tail_then_truncate(d: Driver) -> None:
        d.append(10, [3000])
        d.flush()
        d.append(10, [3000])
        d.truncate(5)
        d.append(12, [2999])
        d.flush()

    def batch_spans_rollover(d: Driver) -> None:
        # The segment a batch starts in must be synced too, not just the new one.
        d.append(5, [3000])
        d.flush()
        d.flush()  # no header update pending: only the batch marks the segment dirty
        d.append(30, [3000])
        d.flush()
        d.append(1, [10])

    def purge_after_unflushed_replace(d: Driver) -> None:
        # A durable purge boundary must never be paired with entries older than
        # the replace that came before it.
        d.append(12, [900])
        d.flush()
        d.replace(3, 6, [900])
        d.purge(5)
        d.append(3, [900])
        d.flush()

    return {
        "batch_spans_rollover": batch_spans_rollover,
        "purge_after_unflushed_replace": purge_after_unflushed_replace,
        "rollover": rollover,
        "truncate_across_segments": truncate_across_segments,
        "replace_suffix": replace_suffix,
        "purge_segments": purge_segments,
        "reset_and_restart": reset_and_restart,
        "unflushed_tail_then_truncate": unflushed_tail_then_truncate,
    }


class ObservedCore:
    """A Log's byte core that tells the recorder after every call that writes.

    The compiled core stores frames through the mapping (or pwrites them from
    C), which no Python hook sees; each of its writing calls writes one
    ascending range, so observing after each call shows the recorder every
    moment a crash can catch (the pages half-way through a call are built
    from the moments before and after it, see crashsim._FileChoices).
    """

    WRITES = frozenset(("append", "zero", "write_at", "truncate"))

    def __init__(self, core: Any, rec: PowerLossRecorder) -> None:
        self._core = core
        self._rec = rec

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._core, name)
        if name not in self.WRITES:
            return attr

        def observed(*args: Any, **kwargs: Any) -> Any:
            try:
                return attr(*args, **kwargs)
            finally:
                self._rec.observe(f"after core.{name}")

        return observed


def watch_core(log: Any, rec: PowerLossRecorder) -> None:
    """Observe every writing call into ``log``'s byte core (see ObservedCore).

    The one place the harness reaches into fastlog beyond fastlog._osio.  The
    compiled core's zero-ahead thread is left running: it only ever writes zeros
    past the records, over zeros, so no crash image can tell its writes apart."""
    core = getattr(log, "_core", None)
    if core is not None and not isinstance(core, ObservedCore):
        log._core = ObservedCore(core, rec)


# Log options of the recorded runs: claim_interval=0 refreshes the synced_end
# claim at every flush, a huge one only when a segment is sealed or closed; both
# are deterministic (the default throttles by wall-clock time).
LOG_VARIANTS: Dict[str, Dict[str, Any]] = {
    "eager claims": {"claim_interval": 0.0, "zero_ahead": False},
    "lazy claims": {"claim_interval": 1e9, "zero_ahead": False},
    "zero ahead": {"claim_interval": 0.0, "zero_ahead": True},
}


def record(
    root: Path,
    body: Any,
    *,
    variant: str = "eager claims",
    sync: str = "none",
    implementation: Optional[str] = None,
    with_meta: bool = False,
    ignore: Sequence[str] = (),
    reopen_midway: bool = False,
) -> tuple:
    """Run ``body(driver)`` under a recorder; return (recorder, model)."""
    root.mkdir(parents=True, exist_ok=True)
    model = LogModel()
    rec = PowerLossRecorder(root, model, ignore=ignore)
    options = dict(LOG_VARIANTS[variant], segment_size=SEGMENT_SIZE, sync=sync, implementation=implementation)
    return _record(root, body, rec, model, options, with_meta, reopen_midway)


def _record(root: Path, body: Any, rec: PowerLossRecorder, model: LogModel, options: Dict[str, Any],
            with_meta: bool, reopen_midway: bool) -> tuple:
    with rec.installed():
        log = fastlog.Log(str(root), **options)
        watch_core(log, rec)
        meta = FileMetaStore(str(root)) if with_meta else None
        driver = Driver(log, model, meta)
        try:
            body(driver)
            rec.observe("before close")
        finally:
            log.close()
        model.flushed()  # close() flushes
        rec.observe("after close")
        if reopen_midway:
            # reopen and go on: recovery of a cleanly closed log, then more work
            log = fastlog.Log(str(root), **options)
            watch_core(log, rec)
            driver.log = log
            try:
                body(driver)
            finally:
                log.close()
            model.flushed()
            rec.observe("after second close")
    return rec, model


# ---------------------------------------------------------------------------
# Crashing recovery itself
# ---------------------------------------------------------------------------


def _segment_firsts(root: Path) -> List[int]:
    """First indexes of the segment files in ``root`` (their names, docs/format.md)."""
    out = []
    for name in os.listdir(root):
        if len(name) == 24 and name.endswith(".seg") and name[:20].isdigit():
            out.append(int(name[:20]))
    return sorted(out)


def recovery_run(options: Dict[str, Any], ignore: Sequence[str] = ()) -> RecoveryRun:
    """A :data:`crashsim.RecoveryRun` opening images with ``options``.

    It reopens the image under a recorder (the image is what the disk holds,
    so every file starts durable), which records recovery's own writes, syncs
    and deletions; then, as a Raft leader would after a follower restarts, it
    sends the entries recovery dropped again, with identical bytes: first the
    first one alone, flushed, then the rest of those that belonged to the same
    segment file, flushed, then closes.  Recovery must leave nothing behind
    that these identical records could bring back to life: the records after
    a torn one chain on after an identical copy of it unless recovery zeroed
    them durably, and a deleted later segment chains on after the refilled
    segment unless recovery made its deletion durable.

    ``ignore``: pretend these calls made nothing durable *during recovery*
    (the harness's self-test of a broken recovery).
    """

    def run(work: Path, got: Recovered, state: LogState, position: Position) -> List[CrashPoint]:
        model = LogModel()
        rec = PowerLossRecorder(work, model, ignore=ignore, position=lambda: position, phase="recovery")
        rec.expect = got
        firsts = _segment_firsts(work)
        dropped = list(state.entries[len(got.entries):])
        with rec.installed():
            log = fastlog.Log(str(work), **options)
            try:
                rec.ignore = frozenset()
                model.rebase(LogState(got.boundary, got.entries))
                if got.hard_state is not None:
                    model.hard_states.append(got.hard_state)
                rec.position, rec.point_model, rec.expect, rec.phase = model.position, model, None, "after recovery"
                rec.observe("after recovery")
                watch_core(log, rec)
                driver = Driver(log, model)
                if dropped:
                    again = [log.Entry(index=i, term=t, payload=p, kind=EntryKind(k)) for i, t, k, p in dropped]
                    driver.append_entries(again[:1])
                    driver.flush()
                    later = [f for f in firsts if f > dropped[0][0]]
                    rest = [e for e in again[1:] if not later or e.index < later[0]]
                    if rest:
                        driver.append_entries(rest)
                        driver.flush()
                else:
                    driver.append(2, [300])
                    driver.flush()
            finally:
                log.close()
            model.flushed()
            rec.observe("after close")
        return rec.points

    return run


# ---------------------------------------------------------------------------
# The asyncio engine
# ---------------------------------------------------------------------------


class EngineDriver:
    """Drives ``fastlog.open``'s LogStore and MetaStore in step with a LogModel.

    Acknowledgements follow the engine's contract: ``flush_async()`` returning
    makes durable every mutation completed before it was called (group commit
    shares one fsync among concurrent callers); under ``sync="always"`` each
    write is durable when it returns.
    """

    def __init__(self, engine: Any, model: LogModel) -> None:
        self.store = engine.log_store()
        self.meta = engine.meta_store()
        self.model = model
        self.always = self.store.is_write_durable()
        self.term = 1
        self.salt = 0

    def make(self, index: int, term: int, size: int) -> Any:
        self.salt += 1
        kind = EntryKind.COMMAND if size else EntryKind.NOOP
        return self.store.Entry(index=index, term=term, payload=payload_for(index, term, self.salt, size), kind=kind)

    def _batch(self, first: int, count: int, size: int) -> List[Any]:
        return [self.make(first + i, self.term, size) for i in range(count)]

    @staticmethod
    def _model_batch(entries: List[Any]) -> List[ModelEntry]:
        return [(e.index, e.term, int(e.kind), bytes(e.payload)) for e in entries]

    async def persist(self, count: int, size: int) -> None:
        entries = self._batch(self.store.last_index() + 1, count, size)
        self.model.begin_append(self._model_batch(entries))
        upto = self.model.operations()
        await self.store.persist_entries(entries)
        if self.always:
            self.model.flushed(upto)

    async def writer(self, count: int, size: int) -> None:
        """A plain append then flush_async: the appends of a burst share one fsync."""
        entries = self._batch(self.store.last_index() + 1, count, size)
        self.model.begin_append(self._model_batch(entries))
        upto = self.model.operations()  # a plain append is done before persist_entries first yields
        await self.store.persist_entries(entries)
        await self.store.flush_async()
        self.model.flushed(upto)

    async def burst(self, writers: int, size: int, rng: random.Random) -> None:
        if self.store.first_index() == 0:  # not a plain append: one at a time
            await self.persist(3, size)
            return
        await asyncio.gather(*(self.writer(rng.randint(1, 6), size) for _ in range(writers)))

    async def replace_range(self, from_index: int, count: int, size: int) -> None:
        self.term += 1
        entries = self._batch(from_index, count, size)
        self.model.begin_append(self._model_batch(entries))
        await self.store.replace_range(from_index, entries)
        if self.always:
            self.model.flushed()

    async def truncate(self, from_index: int) -> None:
        self.model.begin_truncate(from_index)
        await self.store.truncate(from_index)
        if self.always:
            self.model.flushed()

    async def purge(self, index: int) -> None:
        term = self.store.term_at(index)
        assert term is not None
        self.model.begin_purge(index, term)
        await self.store.purge(LogId(index=index, term=term))
        if self.always:
            self.model.flushed()

    async def reset(self) -> None:
        self.model.begin_reset()
        await self.store.reset()
        if self.always:
            self.model.flushed()

    async def flush(self) -> None:
        upto = self.model.operations()
        await self.store.flush_async()
        self.model.flushed(upto)

    def save_hard_state(self, term: int, vote: Optional[int]) -> None:
        _save_hard_state(self.model, self.meta, term, vote)


async def engine_workload(d: EngineDriver, rng: random.Random, n_ops: int) -> None:
    """A random mix of every engine operation, with bursts of concurrent writers."""
    store = d.store
    hs_term = 0
    for _ in range(n_ops):
        r = rng.random()
        last = store.last_index()
        first = store.first_index()
        b = store.load_purge_boundary()
        low = (b.index if b else 0) + 1
        size = rng.choice([0, 100, 700, 1500, 3000])
        if r < 0.25 or first == 0:
            await d.persist(rng.randint(1, 10), size)
        elif r < 0.50:
            await d.burst(rng.randint(2, 5), size, rng)
        elif r < 0.60:
            await d.flush()
        elif r < 0.68 and last > low:
            await d.truncate(rng.randint(low + 1, last))
        elif r < 0.80 and last >= low:
            await d.replace_range(rng.randint(max(low, first), last), rng.randint(1, 8), size)
        elif r < 0.87 and first and last > first:
            await d.purge(rng.randint(first, last - 1))
        elif r < 0.90:
            await d.reset()
        else:
            hs_term += 1
            d.save_hard_state(hs_term, rng.choice([None, 1, 2, 3]))


def record_engine(root: Path, seed: int, n_ops: int, *, variant: str = "eager claims", sync: str = "none",
                  ignore: Sequence[str] = ()) -> tuple:
    """Run :func:`engine_workload` on ``fastlog.open(root)`` under a recorder; return (recorder, model)."""
    root.mkdir(parents=True, exist_ok=True)
    model = LogModel()
    rec = PowerLossRecorder(root, model, ignore=ignore)
    options = dict(LOG_VARIANTS[variant], segment_size=SEGMENT_SIZE, sync=sync)

    async def main() -> None:
        engine = fastlog.open(str(root), **options)
        watch_core(engine.log_store().log, rec)
        try:
            await engine_workload(EngineDriver(engine, model), random.Random(seed), n_ops)
            rec.observe("before close")
        finally:
            await engine.close()
        model.flushed()  # closing flushes
        rec.observe("after close")

    with rec.installed():
        asyncio.run(main())
    return rec, model

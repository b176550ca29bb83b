"""Workloads for the power-loss simulator: a Log driven in step with a LogModel."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import fastlog
from fastlog import EntryKind, HardState, LogId, VotedFor
from fastlog.meta import FileMetaStore

from crashsim import LogModel, ModelEntry, PowerLossRecorder, payload_for

SEGMENT_SIZE = 64 << 10


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
        hs = HardState(
            current_term=term,
            voted_for=None if vote is None else VotedFor(voted_for_id=vote, voted_for_term=term, committed=vote % 2 == 0),
        )
        self.model.begin_save_hard_state(hs)
        self.meta.save_hard_state(hs)


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
            driver.log = log
            try:
                body(driver)
            finally:
                log.close()
            model.flushed()
            rec.observe("after second close")
    return rec, model

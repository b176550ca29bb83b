"""The asyncio storage engine: lifecycle, hard state, durability modes, poisoning, threads."""
from __future__ import annotations

import asyncio
import errno
import threading

import pytest

import fastlog
from fastlog import Entry, HardState, LogId, VotedFor, _osio
from fastlog.engine import FileLogStore, FileStorageEngine, open_engine
from fastlog.errors import ClosedError, EntryTypeError, InvalidIndexError, LockedError, PoisonedError
from fastlog.meta import FileMetaStore
from fastlog.protocols import LogStore, MetaStore, StorageEngine

SEGMENT = 64 << 10  # small segments, so tests cross segment boundaries


def run(coro):
    return asyncio.run(coro)


def entries(first, last, term=1, tag=b"e"):
    return [Entry(index=i, term=term, payload=tag + str(i).encode()) for i in range(first, last + 1)]


def opened(path, **options):
    options.setdefault("segment_size", SEGMENT)
    return fastlog.open(path, **options)


def indexes(store, start=0, end=10**9):
    return [e.index for e in store.get_entries(start, end)]


def test_open_gives_stable_stores_and_protocols(tmp_path):
    async def main():
        engine = opened(tmp_path)
        assert isinstance(engine, FileStorageEngine)
        assert isinstance(engine, StorageEngine)
        assert engine.log_store() is engine.log_store()
        assert engine.meta_store() is engine.meta_store()
        assert isinstance(engine.log_store(), FileLogStore)
        assert isinstance(engine.log_store(), LogStore)
        assert isinstance(engine.meta_store(), FileMetaStore)
        assert isinstance(engine.meta_store(), MetaStore)
        await engine.close()
        await engine.close()  # idempotent
        assert engine.closed

    run(main())


def test_open_is_awaitable_and_an_async_context_manager(tmp_path):
    async def main():
        engine = await fastlog.open(tmp_path, segment_size=SEGMENT)
        async with engine:
            await engine.log_store().persist_entries(entries(1, 3))
        assert engine.closed
        async with opened(tmp_path) as again:
            assert indexes(again.log_store()) == [1, 2, 3]

    run(main())


def test_open_engine_is_fastlog_open(tmp_path):
    with open_engine(tmp_path, segment_size=SEGMENT) as engine:  # sync context manager: close_sync()
        assert engine.log_store().last_index() == 0
    assert engine.closed


def test_second_open_is_locked(tmp_path):
    async def main():
        async with opened(tmp_path):
            with pytest.raises(LockedError):
                opened(tmp_path)
        async with opened(tmp_path):
            pass

    run(main())


def test_closed_engine_refuses(tmp_path):
    async def main():
        engine = opened(tmp_path)
        log, meta = engine.log_store(), engine.meta_store()
        await log.persist_entries(entries(1, 2))
        await engine.close()
        with pytest.raises(ClosedError):
            await log.persist_entries(entries(3, 3))
        with pytest.raises(ClosedError):
            await log.flush_async()
        with pytest.raises(ClosedError):
            log.flush()
        with pytest.raises(ClosedError):
            await log.entry(1)
        with pytest.raises(ClosedError):
            log.get_entries(1, 2)
        with pytest.raises(ClosedError):
            meta.save_hard_state(HardState(current_term=1, voted_for=None))

    run(main())


def test_bad_options(tmp_path):
    with pytest.raises(ValueError):
        fastlog.open(tmp_path, sync="sometimes")
    with pytest.raises(TypeError):
        fastlog.open(tmp_path, no_such_option=1)


# -- hard state (d-engine's MetaStore cases) -------------------------------------


def test_hard_state_save_and_load(tmp_path):
    async def main():
        async with opened(tmp_path) as engine:
            meta = engine.meta_store()
            assert meta.load_hard_state() is None
            state = HardState(current_term=2, voted_for=VotedFor(voted_for_id=3, voted_for_term=2, committed=False))
            meta.save_hard_state(state)
            meta.flush()
            await meta.flush_async()
            assert meta.load_hard_state() == state

    run(main())


def test_reset_keeps_hard_state(tmp_path):
    async def main():
        state = HardState(current_term=4, voted_for=VotedFor(voted_for_id=1, voted_for_term=4, committed=True))
        async with opened(tmp_path) as engine:
            log = engine.log_store()
            engine.meta_store().save_hard_state(state)
            await log.persist_entries(entries(1, 50))
            await log.purge(LogId(index=10, term=1))
            await log.reset()
            assert log.last_index() == 0
            assert log.load_purge_boundary() is None
            assert log.get_entries(0, 100) == []
            assert engine.meta_store().load_hard_state() == state
        async with opened(tmp_path) as engine:
            assert engine.log_store().last_index() == 0
            assert engine.meta_store().load_hard_state() == state

    run(main())


def test_hard_state_and_vote_survive_reopen(tmp_path):
    async def main():
        vote = VotedFor(voted_for_id=9, voted_for_term=7, committed=True)
        async with opened(tmp_path) as engine:
            engine.meta_store().save_hard_state(HardState(current_term=6, voted_for=None))
            engine.meta_store().save_hard_state(HardState(current_term=7, voted_for=vote))
            await engine.log_store().persist_entries(entries(1, 5, term=7))
        async with opened(tmp_path) as engine:
            loaded = engine.meta_store().load_hard_state()
            assert loaded == HardState(current_term=7, voted_for=vote)
            assert loaded.voted_for.voted_for_id == 9 and loaded.voted_for.committed
            assert indexes(engine.log_store()) == [1, 2, 3, 4, 5]

    run(main())


def test_hard_state_lives_next_to_the_log(tmp_path):
    async def main():
        async with opened(tmp_path) as engine:
            engine.meta_store().save_hard_state(HardState(current_term=1, voted_for=None))
        assert (tmp_path / "HARDSTATE").exists()
        assert (tmp_path / "STATE").exists()

    run(main())


# -- durability modes -------------------------------------------------------------


class SyncRecorder:
    """Counts fdatasync calls made through fastlog._osio."""

    def __init__(self, monkeypatch):
        self.calls = 0
        self._real = _osio.fdatasync
        monkeypatch.setattr(_osio, "fdatasync", self)

    def __call__(self, fd):
        self.calls += 1
        self._real(fd)


def test_default_mode_is_not_write_durable_until_flushed(tmp_path, monkeypatch):
    async def main():
        async with opened(tmp_path) as engine:
            log = engine.log_store()
            assert log.is_write_durable() is False
            await log.persist_entries(entries(1, 1))  # creating the first segment syncs its header
            syncs = SyncRecorder(monkeypatch)
            await log.persist_entries(entries(2, 10))
            assert syncs.calls == 0  # written to the mapping only
            assert log.durable_index() < 10
            await log.flush_async()
            assert syncs.calls >= 1
            assert log.durable_index() == 10
            await log.persist_entries(entries(11, 12))
            assert log.durable_index() == 10
            log.flush()
            assert log.durable_index() == 12
            before = syncs.calls
            await log.flush_async()  # nothing new: no fsync
            log.flush()
            assert syncs.calls == before

    run(main())


def test_sync_always_is_durable_on_return(tmp_path, monkeypatch):
    async def main():
        async with opened(tmp_path, sync="always") as engine:
            log = engine.log_store()
            assert log.is_write_durable() is True
            syncs = SyncRecorder(monkeypatch)
            await log.persist_entries(entries(1, 10))
            assert syncs.calls >= 1
            assert log.durable_index() == 10
            await log.replace_range(8, entries(8, 9, term=2))
            assert log.durable_index() == 9
            calls = syncs.calls
            await log.truncate(5)
            await log.persist_entries(entries(5, 6, term=3))
            assert syncs.calls > calls
            assert log.durable_index() == 6

    run(main())


def test_sync_always_concurrent_writers_share_fsyncs(tmp_path, monkeypatch):
    async def main():
        async with opened(tmp_path, sync="always") as engine:
            log = engine.log_store()
            await log.persist_entries(entries(1, 1))
            syncs = SyncRecorder(monkeypatch)

            async def writer(rounds):
                for _ in range(rounds):
                    i = log.last_index() + 1
                    await log.persist_entries([Entry(index=i, term=1, payload=b"x")])

            await asyncio.gather(*(writer(5) for _ in range(32)))
            assert log.last_index() == 161
            assert log.durable_index() == 161
            assert syncs.calls < 160 // 4

    run(main())


# -- semantics through the async API ------------------------------------------------


def test_persist_read_purge_truncate(tmp_path):
    async def main():
        async with opened(tmp_path) as engine:
            log = engine.log_store()
            assert log.last_index() == 0 and log.load_purge_boundary() is None
            await log.persist_entries(entries(1, 400))  # spans several segments
            assert (await log.entry(123)).payload == b"e123"
            assert await log.entry(401) is None
            assert indexes(log, 10, 12) == [10, 11, 12]
            assert log.get_entries(5, 4) == []
            await log.purge(LogId(index=100, term=1))
            assert await log.entry(100) is None
            assert log.load_purge_boundary() == LogId(index=100, term=1)
            assert log.term_at(100) == 1
            await log.truncate(300)
            assert log.last_index() == 299
            with pytest.raises(InvalidIndexError):
                await log.truncate(100)
            await log.persist_entries(entries(300, 310, term=2))
            await log.flush_async()
        async with opened(tmp_path) as engine:
            log = engine.log_store()
            assert log.load_purge_boundary() == LogId(index=100, term=1)
            assert indexes(log) == list(range(101, 311))
            assert (await log.entry(305)).term == 2

    run(main())


def test_persist_over_suffix_replaces_it(tmp_path):
    async def main():
        async with opened(tmp_path) as engine:
            log = engine.log_store()
            await log.persist_entries(entries(1, 20))
            await log.persist_entries(entries(15, 16, term=2))
            assert log.last_index() == 16
            assert [e.term for e in log.get_entries(14, 16)] == [1, 2, 2]
            with pytest.raises(InvalidIndexError):
                await log.persist_entries(entries(18, 19))  # gap
            assert log.last_index() == 16

    run(main())


def test_empty_batch_and_bad_batches(tmp_path):
    async def main():
        async with opened(tmp_path) as engine:
            log = engine.log_store()
            await log.persist_entries([])
            assert log.last_index() == 0
            for bad in (None, 5, b"bytes", "text", [1, 2], [Entry(index=1, term=1), "x"]):
                with pytest.raises((EntryTypeError, TypeError, ValueError)):
                    await log.persist_entries(bad)
            assert log.last_index() == 0
            await log.persist_entries(entries(1, 3))
            for bad in ("1", None, 1.5, True):
                with pytest.raises(EntryTypeError):
                    await log.truncate(bad)
            with pytest.raises(InvalidIndexError):
                await log.truncate(-1)
            with pytest.raises(EntryTypeError):
                await log.purge(3)
            assert indexes(log) == [1, 2, 3]
            await log.persist_entries(iter(entries(4, 5)))  # any iterable of entries
            assert log.last_index() == 5

    run(main())


def test_replace_range(tmp_path, monkeypatch):
    async def main():
        async with opened(tmp_path) as engine:
            log = engine.log_store()
            await log.persist_entries(entries(1, 10))
            # One append does the cut and the write: truncate is never called on its own.
            truncate_calls = []
            monkeypatch.setattr(log.log, "truncate", lambda i: truncate_calls.append(i))
            await log.replace_range(5, entries(5, 7, term=2))
            assert truncate_calls == []
            assert indexes(log) == [1, 2, 3, 4, 5, 6, 7]
            assert [e.term for e in log.get_entries(4, 7)] == [1, 2, 2, 2]
            # New entries starting below from_index replace from their own first index.
            await log.replace_range(6, entries(3, 4, term=3))
            assert indexes(log) == [1, 2, 3, 4]
            assert [e.term for e in log.get_entries(1, 4)] == [1, 1, 3, 3]
            # Starting above from_index would leave a gap: refused, nothing changes.
            with pytest.raises(InvalidIndexError):
                await log.replace_range(2, entries(4, 5, term=4))
            assert indexes(log) == [1, 2, 3, 4]
            monkeypatch.undo()
            # No new entries: a plain truncate.
            await log.replace_range(3, [])
            assert indexes(log) == [1, 2]
            # At or below the purge boundary: refused.
            await log.persist_entries(entries(3, 10))
            await log.purge(LogId(index=4, term=1))
            with pytest.raises(InvalidIndexError):
                await log.replace_range(4, entries(4, 5, term=5))
            assert indexes(log) == list(range(5, 11))
            # Beyond the end: a plain append.
            await log.replace_range(11, entries(11, 12, term=5))
            assert log.last_index() == 12

    run(main())


# -- poisoning ---------------------------------------------------------------------------


def _failing_fdatasync(fd):
    raise OSError(errno.EIO, "injected fdatasync failure")


def test_fsync_failure_is_raised_and_poisons(tmp_path, monkeypatch):
    async def main():
        engine = opened(tmp_path)
        log = engine.log_store()
        await log.persist_entries(entries(1, 5))
        await log.flush_async()
        await log.persist_entries(entries(6, 8))
        monkeypatch.setattr(_osio, "fdatasync", _failing_fdatasync)
        with pytest.raises(OSError, match="injected"):
            await log.flush_async()
        monkeypatch.undo()  # even a working disk cannot make it trustworthy again
        with pytest.raises(PoisonedError) as info:
            await log.persist_entries(entries(9, 9))
        assert isinstance(info.value.__cause__, OSError)
        with pytest.raises(PoisonedError):
            await log.flush_async()
        with pytest.raises(PoisonedError):
            log.flush()
        with pytest.raises(PoisonedError):
            await log.truncate(3)
        with pytest.raises(PoisonedError):
            await log.purge(LogId(index=2, term=1))
        with pytest.raises(PoisonedError):
            await log.reset()
        assert log.durable_index() == 5
        assert indexes(log) == [1, 2, 3, 4, 5, 6, 7, 8]  # reads still work
        await engine.close()
        async with opened(tmp_path) as again:  # reopening recovers from the disk
            assert indexes(again.log_store())[:5] == [1, 2, 3, 4, 5]
            await again.log_store().persist_entries(entries(again.log_store().last_index() + 1, 20))
            await again.log_store().flush_async()

    run(main())


def test_fsync_failure_reaches_every_waiter(tmp_path, monkeypatch):
    async def main():
        async with opened(tmp_path) as engine:
            log = engine.log_store()
            await log.persist_entries(entries(1, 1))
            await log.flush_async()
            monkeypatch.setattr(_osio, "fdatasync", _failing_fdatasync)

            async def writer():
                await log.persist_entries([Entry(index=log.last_index() + 1, term=1)])
                await log.flush_async()

            results = await asyncio.gather(*(writer() for _ in range(16)), return_exceptions=True)
            assert len(results) == 16
            # Those the failed fsync covered get its error, later ones PoisonedError.
            assert all(isinstance(r, (OSError, PoisonedError)) for r in results)
            assert any(isinstance(r, OSError) for r in results)
            assert log.group_commit.error is not None

    run(main())


def test_sync_flush_failure_poisons(tmp_path, monkeypatch):
    async def main():
        async with opened(tmp_path) as engine:
            log = engine.log_store()
            await log.persist_entries(entries(1, 3))
            monkeypatch.setattr(_osio, "fdatasync", _failing_fdatasync)
            with pytest.raises(OSError, match="injected"):
                log.flush()
            with pytest.raises(PoisonedError):
                await log.persist_entries(entries(4, 4))

    run(main())


def test_sync_always_persist_raises_when_fsync_fails(tmp_path, monkeypatch):
    async def main():
        async with opened(tmp_path, sync="always") as engine:
            log = engine.log_store()
            await log.persist_entries(entries(1, 3))
            monkeypatch.setattr(_osio, "fdatasync", _failing_fdatasync)
            with pytest.raises(OSError, match="injected"):
                await log.persist_entries(entries(4, 4))
            with pytest.raises(PoisonedError):
                await log.persist_entries(entries(5, 5))

    run(main())


# -- threads: the event loop never waits for an fsync -------------------------------------


class GatedSync:
    """An fdatasync that blocks its (worker) thread until the test opens the gate."""

    def __init__(self, monkeypatch):
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.calls = 0
        self._real = _osio.fdatasync
        monkeypatch.setattr(_osio, "fdatasync", self)

    def __call__(self, fd):
        self.calls += 1
        self.entered.set()
        if not self.gate.wait(timeout=30):
            raise OSError(errno.ETIMEDOUT, "test gate never opened")
        self._real(fd)


async def _wait_for(event: threading.Event) -> None:
    while not event.is_set():
        await asyncio.sleep(0.001)


def test_fsync_runs_off_the_event_loop(tmp_path, monkeypatch):
    async def main():
        async with opened(tmp_path) as engine:
            log = engine.log_store()
            await log.persist_entries(entries(1, 10))
            gated = GatedSync(monkeypatch)
            first = asyncio.ensure_future(log.flush_async())
            await _wait_for(gated.entered)  # the fsync is stuck in the worker...
            await log.persist_entries(entries(11, 20))  # ...and the loop keeps appending
            assert (await log.entry(15)).index == 15
            second = asyncio.ensure_future(log.flush_async())
            await asyncio.sleep(0)
            assert not first.done() and not second.done()
            gated.gate.set()
            await asyncio.gather(first, second)
            assert log.durable_index() == 20
            assert log.group_commit.stats()["flushes"] == 2  # the second flush covers 11..20

    run(main())


def test_structural_operations_wait_for_the_flush_in_flight(tmp_path, monkeypatch):
    async def main():
        async with opened(tmp_path) as engine:
            log = engine.log_store()
            await log.persist_entries(entries(1, 300))
            gated = GatedSync(monkeypatch)
            flushing = asyncio.ensure_future(log.flush_async())
            await _wait_for(gated.entered)
            truncating = asyncio.ensure_future(log.truncate(200))
            await asyncio.sleep(0.01)
            assert not truncating.done()  # queued behind the fsync, loop still free
            appending = asyncio.ensure_future(log.persist_entries(entries(200, 205, term=2)))
            await asyncio.sleep(0.01)
            assert not appending.done()  # held back until the truncate has run
            gated.gate.set()
            await asyncio.gather(flushing, truncating, appending)
            assert log.last_index() == 205
            assert [e.term for e in log.get_entries(199, 201)] == [1, 2, 2]

    run(main())


def test_cancelled_waiter_does_not_disturb_others(tmp_path, monkeypatch):
    async def main():
        async with opened(tmp_path) as engine:
            log = engine.log_store()
            await log.persist_entries(entries(1, 5))
            gated = GatedSync(monkeypatch)
            doomed = asyncio.ensure_future(log.flush_async())
            kept = asyncio.ensure_future(log.flush_async())
            await _wait_for(gated.entered)
            doomed.cancel()
            gated.gate.set()
            await kept
            with pytest.raises(asyncio.CancelledError):
                await doomed
            assert log.durable_index() == 5
            await log.persist_entries(entries(6, 6))
            await log.flush_async()
            assert log.durable_index() == 6

    run(main())


def test_close_waits_for_flushes_in_flight(tmp_path, monkeypatch):
    async def main():
        engine = opened(tmp_path)
        log = engine.log_store()
        await log.persist_entries(entries(1, 5))
        gated = GatedSync(monkeypatch)
        flushing = asyncio.ensure_future(log.flush_async())
        await _wait_for(gated.entered)
        closing = asyncio.ensure_future(engine.close())
        await asyncio.sleep(0.01)
        assert not closing.done()
        gated.gate.set()
        await asyncio.gather(flushing, closing)
        assert engine.closed

    run(main())


def test_close_serves_a_flush_just_requested(tmp_path):
    async def main():
        engine = opened(tmp_path)
        log = engine.log_store()
        await log.persist_entries(entries(1, 3))
        waiting = asyncio.ensure_future(log.flush_async())
        await asyncio.sleep(0)  # the waiter is queued, its flush not yet started
        assert not waiting.done()
        await engine.close()
        await waiting  # served, not refused
        assert log.group_commit.stats()["durable"] == log.group_commit.stats()["written"]

    run(main())


def test_mixed_concurrent_operations(tmp_path):
    async def main():
        async with opened(tmp_path) as engine:
            log = engine.log_store()
            # Choosing an index and writing it must not interleave with another
            # writer's choice (as in Raft, where one leader assigns indexes);
            # the flushes run concurrently with everything.
            assign = asyncio.Lock()

            async def writer(n):
                for k in range(30):
                    async with assign:
                        i = log.last_index() + 1
                        await log.persist_entries([Entry(index=i, term=1, payload=b"w%d" % n)])
                    if k % 3 == 0:
                        await log.flush_async()

            async def trimmer():
                for _ in range(10):
                    await asyncio.sleep(0)
                    async with assign:
                        last = log.last_index()
                        if last > 20:
                            await log.purge(LogId(index=last - 20, term=1))
                    flushing = asyncio.ensure_future(log.flush_async())
                    async with assign:
                        last = log.last_index()
                        first = log.first_index()
                        if first and last - first > 5:
                            await log.truncate(last - 2)
                    await flushing

            await asyncio.gather(*(writer(n) for n in range(8)), trimmer())
            await log.flush_async()
            got = indexes(log)
            assert got == list(range(log.first_index(), log.last_index() + 1))
            last = log.last_index()
        async with opened(tmp_path) as engine:
            assert engine.log_store().last_index() == last

    run(main())


# -- read-only ------------------------------------------------------------------------------


def test_read_only_engine(tmp_path):
    async def main():
        async with opened(tmp_path) as engine:
            await engine.log_store().persist_entries(entries(1, 3))
            engine.meta_store().save_hard_state(HardState(current_term=2, voted_for=None))
        async with opened(tmp_path, read_only=True) as engine:
            log = engine.log_store()
            assert indexes(log) == [1, 2, 3]
            assert engine.meta_store().load_hard_state() == HardState(current_term=2, voted_for=None)
            with pytest.raises(PermissionError):
                await log.persist_entries(entries(4, 4))
            with pytest.raises(PermissionError):
                engine.meta_store().save_hard_state(HardState(current_term=3, voted_for=None))
            await log.flush_async()  # nothing to make durable
            log.flush()

    run(main())

"""The sync Log: semantics, segment rollover, recovery rules, claims, options."""
from __future__ import annotations

import os

import pytest

import fastlog
from fastlog import Entry, EntryKind, Log, LogId
from fastlog._core_api import SEG_DATA_START
from fastlog.errors import (
    ClosedError,
    CorruptionError,
    EntryTypeError,
    InvalidEntryError,
    InvalidIndexError,
    LockedError,
    PoisonedError,
    StorageFullError,
)

SEG = 64 * 1024  # small segments so tests cross segment boundaries


def entries(first: int, last: int, term: int = 1, size: int = 100) -> list:
    return [Entry(index=i, term=term, payload=bytes([i % 251]) * size) for i in range(first, last + 1)]


def content(log: Log) -> list:
    first, last = log.first_index(), log.last_index()
    if not first:
        return []
    return [(e.index, e.term, int(e.kind), e.payload) for e in log.get_entries(first, last)]


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "log")


def test_empty_log(path):
    with Log(path, segment_size=SEG) as log:
        assert log.last_index() == 0
        assert log.first_index() == 0
        assert log.entry(1) is None
        assert log.get_entries(1, 10) == []
        assert log.term_at(1) is None
        assert log.purge_boundary() is None
        assert log.flush() == 0


def test_append_read_across_segments_and_reopen(path):
    want = entries(1, 3000)
    with Log(path, segment_size=SEG) as log:
        for i in range(0, 3000, 250):
            log.append(want[i : i + 250])
        assert len(log.segments()) > 3
        assert log.get_entries(1, 3000) == want
        assert log.entry(2999) == want[2998]
        assert log.term_at(1234) == 1
    with Log(path, segment_size=SEG) as log:
        assert log.get_entries(1, 3000) == want
        assert log.last_index() == 3000
        assert log.get_entries(2990, 5000) == want[2989:]
        assert log.get_entries(10, 9) == []


def test_suffix_replacement_and_gap(path):
    with Log(path, segment_size=SEG) as log:
        log.append(entries(1, 1000))
        log.append(entries(400, 410, term=2))
        assert log.last_index() == 410
        assert log.entry(400).term == 2 and log.entry(399).term == 1
        with pytest.raises(InvalidIndexError):
            log.append(entries(412, 413))
        assert log.last_index() == 410
    with Log(path, segment_size=SEG) as log:
        assert log.last_index() == 410
        assert log.entry(411) is None
        assert [e.term for e in log.get_entries(398, 410)] == [1, 1] + [2] * 11


def test_truncate_purge_reset(path):
    with Log(path, segment_size=SEG) as log:
        log.append(entries(1, 2000))
        log.truncate(1500)
        assert log.last_index() == 1499
        log.purge(LogId(index=700, term=1))
        assert log.first_index() == 701
        assert log.entry(700) is None
        assert log.term_at(700) == 1  # the boundary's term
        with pytest.raises(InvalidIndexError):
            log.truncate(700)
        with pytest.raises(InvalidIndexError):
            log.append(entries(700, 701))
        log.purge(LogId(index=600, term=1))  # lower than the boundary: nothing changes
        assert log.purge_boundary() == LogId(index=700, term=1)
    with Log(path, segment_size=SEG) as log:
        assert (log.first_index(), log.last_index()) == (701, 1499)
        assert log.purge_boundary() == LogId(index=700, term=1)
        log.reset()
        assert log.last_index() == 0 and log.purge_boundary() is None
        log.append(entries(50, 60))
    with Log(path, segment_size=SEG) as log:
        assert (log.first_index(), log.last_index()) == (50, 60)


def test_purge_everything_then_append_anywhere_above(path):
    with Log(path, segment_size=SEG) as log:
        log.append(entries(1, 100))
        log.purge(LogId(index=5000, term=3))
        assert log.last_index() == 5000
        assert log.first_index() == 0
        log.append(entries(6000, 6001))  # an empty log accepts any index above the boundary
        assert log.first_index() == 6000
    with Log(path, segment_size=SEG) as log:
        assert (log.first_index(), log.last_index()) == (6000, 6001)


def test_truncate_to_boundary_leaves_empty_log(path):
    with Log(path, segment_size=SEG) as log:
        log.append(entries(1, 100))
        log.purge(LogId(index=50, term=1))
        log.truncate(51)
        assert log.last_index() == 50 and log.first_index() == 0
        log.append(entries(70, 71))
        assert log.first_index() == 70


def test_bad_input_changes_nothing(path):
    with Log(path, segment_size=SEG) as log:
        log.append(entries(1, 10))
        bad_batches = [
            [Entry(index=11, term=1), Entry(index=13, term=1)],  # not consecutive
            [Entry(index=11, term=1), "not an entry"],
            [Entry(index=11, term=1, payload=b"x" * SEG)],  # too large for a segment
            [Entry(index=0, term=1)],
        ]
        for batch in bad_batches:
            with pytest.raises((InvalidEntryError, EntryTypeError)):
                log.append(batch)
            assert log.last_index() == 10
        with pytest.raises(EntryTypeError):
            log.append(b"bytes")
        with pytest.raises(InvalidIndexError):
            log.entry(-1)
        with pytest.raises(EntryTypeError):
            log.truncate("3")
        with pytest.raises(EntryTypeError):
            log.purge(5)
        assert log.last_index() == 10


def test_entry_value_type():
    e = Entry(index=3, term=2, payload=b"ab", kind=EntryKind.CONFIG)
    assert e == Entry(index=3, term=2, payload=b"ab", kind=EntryKind.CONFIG)
    assert hash(e) == hash(Entry(index=3, term=2, payload=b"ab", kind=EntryKind.CONFIG))
    assert e != Entry(index=3, term=2, payload=b"ab")
    assert "index=3" in repr(e) and "CONFIG" in repr(e)
    with pytest.raises(AttributeError):
        e.index = 4  # type: ignore[misc]
    with pytest.raises(EntryTypeError):
        Entry(index=1, term=1, payload="text")  # type: ignore[arg-type]
    with pytest.raises(InvalidIndexError):
        Entry(index=-1, term=1)


def test_lock(path):
    with Log(path, segment_size=SEG):
        with pytest.raises(LockedError):
            Log(path, segment_size=SEG)
    Log(path, segment_size=SEG).close()


def test_closed(path):
    log = Log(path, segment_size=SEG)
    log.close()
    log.close()
    with pytest.raises(ClosedError):
        log.entry(1)
    with pytest.raises(ClosedError):
        log.append(entries(1, 1))


def test_claims_exact_after_close(path):
    with Log(path, segment_size=SEG) as log:
        log.append(entries(1, 1000))
    with Log(path, segment_size=SEG, read_only=True) as log:
        for seg in log.segments():
            assert seg["synced_end"] == seg["end"]


def _seg_paths(path):
    return sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".seg"))


def _flip(file, offset):
    with open(file, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x40]))


def test_damage_in_durable_data_is_corruption(path):
    with Log(path, segment_size=SEG) as log:
        log.append(entries(1, 300))
    seg = _seg_paths(path)[0]
    _flip(seg, SEG_DATA_START + 5000)
    with pytest.raises(CorruptionError) as info:
        Log(path, segment_size=SEG)
    assert info.value.path == seg and info.value.offset is not None and info.value.offset <= SEG_DATA_START + 5000
    # Read-only, up to the damage:
    with Log(path, segment_size=SEG, read_only=True, stop_at_damage=True) as log:
        assert log.damage is not None
        assert 0 < log.last_index() < 300


def test_torn_tail_is_cut(path):
    with Log(path, segment_size=SEG) as log:
        log.append(entries(1, 100))
        log.flush()
        log.flush()  # the claim of the first flush is now durable too
        log.append(entries(101, 150))
        end = log.segments()[-1]["end"]
        # Simulate a crash: drop the process state without close().
        fd_copy = open(log.segments()[-1]["path"], "rb").read()
        log._poisoned = RuntimeError("simulated crash")  # close() must not flush now
    # Tear the last record written after the flush.
    torn = bytearray(fd_copy)
    torn[end - 8 : end] = b"\xff" * 8
    with open(_seg_paths(path)[-1], "wb") as f:
        f.write(torn)
    with Log(path, segment_size=SEG) as log:
        assert log.last_index() == 149
        assert log.get_entries(1, 149) == entries(1, 149)
        log.append(entries(150, 151))
    with Log(path, segment_size=SEG) as log:
        assert log.last_index() == 151


def test_enospc_rolls_back_and_resumes(path, monkeypatch):
    import errno

    from fastlog import _osio

    real = _osio.fallocate
    with Log(path, segment_size=SEG) as log:
        log.append(entries(1, 100))
        state = {"full": True}

        def fallocate(fd, size):
            if state["full"]:
                raise OSError(errno.ENOSPC, "No space left on device")
            real(fd, size)

        monkeypatch.setattr(_osio, "fallocate", fallocate)
        with pytest.raises(StorageFullError):
            log.append(entries(101, 1000))
        assert log.last_index() == 100
        assert log.get_entries(1, 100) == entries(1, 100)
        state["full"] = False
        log.append(entries(101, 1000))
        assert log.last_index() == 1000


def test_failed_fsync_poisons(path, monkeypatch):
    from fastlog import _osio

    with Log(path, segment_size=SEG) as log:
        log.append(entries(1, 10))

        def broken(fd):
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(_osio, "fdatasync", broken)
        with pytest.raises(OSError):
            log.flush()
        with pytest.raises(PoisonedError):
            log.append(entries(11, 11))
        with pytest.raises(PoisonedError):
            log.flush()
        assert log.entry(5) is not None  # reads still work


def test_sync_always_is_durable(path, monkeypatch):
    from fastlog import _osio

    calls = []
    real = _osio.fdatasync
    monkeypatch.setattr(_osio, "fdatasync", lambda fd: (calls.append(fd), real(fd)))
    with Log(path, segment_size=SEG, sync="always") as log:
        assert log.is_write_durable()
        log.append(entries(1, 5))
        assert calls and log.durable_index() == 5


def test_both_implementations_share_the_format(path):
    try:
        import fastlog_ext._core  # noqa: F401
    except ImportError:
        if os.environ.get("FASTLOG_REQUIRE_EXTENSION") == "1":
            raise
        pytest.skip("compiled core not built")
    for writer, reader in (("c", "python"), ("python", "c")):
        p = path + writer
        with Log(p, segment_size=SEG, implementation=writer) as log:
            E = log.Entry
            log.append([E(index=i, term=i // 7, payload=bytes([i % 256]) * (i % 300), kind=i % 3) for i in range(1, 800)])
            log.truncate(700)
            log.purge(LogId(index=20, term=2))
            want = [(e.index, e.term, int(e.kind), e.payload) for e in log.get_entries(1, 10_000)]
        with Log(p, segment_size=SEG, implementation=reader) as log:
            assert content(log) == want
            assert log.purge_boundary() == LogId(index=20, term=2)


def test_options_validated(path):
    with pytest.raises(InvalidEntryError):
        Log(path, segment_size=1000)
    with pytest.raises(InvalidEntryError):
        Log(path, sync="sometimes")
    with pytest.raises(ValueError):
        Log(path, implementation="fortran")
    assert fastlog.Log(path, segment_size=SEG).close() is None

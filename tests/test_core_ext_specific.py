"""Behaviour specific to the compiled core (fastlog_ext._core).

The shared contract is tested on both cores in test_core.py; this file covers
what only the extension has: the busy guard around calls that release the GIL,
the exported buffer that keeps a mapping open, the hardware CRC path, the
C Entry type, and bounds checks on damaged mappings.
"""
from __future__ import annotations

import contextlib
import gc
import mmap
import os
import pickle
import random
import threading
import time
import types

import pytest

from core_modules import CORE_NAMES, import_core
from fastlog._core_api import FL_ERR_CRC, FL_OK, REC_HEADER_SIZE
from fastlog._types import EntryKind, LogId, PyEntry
from fastlog.errors import (
    CorruptionError,
    EntryTypeError,
    FastlogError,
    InvalidEntryError,
    InvalidIndexError,
)

pytestmark = pytest.mark.skipif("c" not in CORE_NAMES, reason="pure Python forced (FASTLOG_NO_EXTENSIONS)")

DS = 64
SIZE = 1 << 16


@pytest.fixture(scope="module")
def C():
    return import_core("c")


@pytest.fixture(scope="module")
def P():
    return import_core("python")


def batch(C, first, n, size=16, term=1):
    kinds = (EntryKind.COMMAND, EntryKind.NOOP, EntryKind.CONFIG)
    return [C.Entry(i, term, bytes([i & 0xFF]) * (size + i % 7), kinds[i % 3]) for i in range(first, first + n)]


def attached(C, n=0, *, size=SIZE, verify_reads=False, buf=None):
    core = C.LogCore(1 << 20, verify_reads)
    if buf is None:
        buf = bytearray(size)
    core.load_segment(buf, 1, 0, DS)
    if n:
        assert core.append(batch(C, 1, n)) == n
    return core, buf


# ---------------------------------------------------------------------------
# module


def test_module_identity(C):
    assert C.IMPLEMENTATION == "c"
    assert isinstance(C.crc32c_hw_available(), bool)
    assert C.FL_MAX_PAYLOAD == 0x7FFFFFFF
    for name in C.__all__:
        assert hasattr(C, name), name


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 63, 64, 65, 255, 256, 1000, 4096, 70000, 300000])
def test_hardware_and_table_crc_agree(C, n):
    data = bytes((i * 131 + 7) & 0xFF for i in range(n))
    for seed in (0, 1, 0xDEADBEEF, 0xFFFFFFFF):
        assert C.crc32c(data, seed) == C._crc32c_portable(data, seed)
    assert C._crc32c_portable(b"123456789") == 0xE3069283


def test_crc32c_unaligned_and_strided_views(C, P):
    raw = bytes(range(256)) * 40
    for start in range(9):
        view = memoryview(raw)[start:]
        assert C.crc32c(view) == P.crc32c(bytes(view))
    strided = memoryview(raw)[::3]
    assert C.crc32c(strided) == P.crc32c(bytes(strided))


def test_frame_size_matches_python_core(C, P):
    for n in (0, 1, 7, 8, 9, 255, 1 << 20, 0x7FFFFFFF):
        assert C.frame_size(n) == P.frame_size(n)
    with pytest.raises(InvalidIndexError):
        C.frame_size(-1)
    with pytest.raises(EntryTypeError):
        C.frame_size("8")


# ---------------------------------------------------------------------------
# Entry


def test_entry_has_no_instance_dict_and_is_immutable(C):
    e = C.Entry(1, 2, b"x")
    assert not hasattr(e, "__dict__")
    with pytest.raises(AttributeError):
        e.index = 5
    with pytest.raises(AttributeError):
        e.extra = 1
    with pytest.raises(AttributeError):
        del e.payload
    with pytest.raises(AttributeError):
        e.__init__(3, 4)  # re-initialising would change a "frozen" entry
    assert (e.index, e.term, e.payload, e.kind) == (1, 2, b"x", EntryKind.COMMAND)


def test_entry_matches_python_entry(C):
    for args in [(1, 2), (0, 0, b""), (2**64 - 1, 2**64 - 1, b"\x00" * 9, EntryKind.CONFIG), (5, 1, b"n", 0)]:
        c, p = C.Entry(*args), PyEntry(*args)
        assert c == p and p == c and not (c != p)
        assert hash(c) == hash(p)
        assert repr(c) == repr(p)
        assert c.kind is p.kind
        assert c.log_id == p.log_id == LogId(index=args[0], term=args[1])
    assert C.Entry(1, 1, b"a") != PyEntry(1, 1, b"b")
    assert C.Entry(1, 1) != (1, 1)
    with pytest.raises(TypeError):
        C.Entry(1, 1) < C.Entry(2, 1)  # noqa: B015 - no ordering, as PyEntry


def test_entry_keyword_and_buffer_arguments(C):
    e = C.Entry(index=3, term=4, payload=bytearray(b"ab"), kind=EntryKind.NOOP)
    assert type(e.payload) is bytes and e.payload == b"ab" and e.kind is EntryKind.NOOP
    assert C.Entry(1, 1, memoryview(b"xyz")).payload == b"xyz"


def test_entry_pickle_and_copy(C):
    import copy

    e = C.Entry(7, 3, b"payload", EntryKind.CONFIG)
    for clone in (pickle.loads(pickle.dumps(e)), copy.copy(e), copy.deepcopy(e)):
        assert type(clone) is C.Entry and clone == e


def test_entry_subclass_is_accepted_and_read_back_as_entry(C):
    class MyEntry(C.Entry):
        pass

    core, _ = attached(C)
    assert core.append([MyEntry(1, 1, b"a"), C.Entry(2, 1, b"b")]) == 2
    got = core.get(1)
    assert type(got) is C.Entry and got == MyEntry(1, 1, b"a")
    with pytest.raises(AttributeError):
        MyEntry(1, 1).anything = 1


def test_uninitialised_entry_is_rejected(C):
    core, _ = attached(C)
    blank = C.Entry.__new__(C.Entry)
    with pytest.raises(InvalidEntryError):
        core.check_batch([blank])
    with pytest.raises(InvalidEntryError):
        core.append([blank])
    assert core.segment_info(0) == (1, 0, DS, 0)


def test_python_entries_are_rejected_by_the_c_core(C):
    core, _ = attached(C)
    with pytest.raises(EntryTypeError):
        core.append([PyEntry(1, 1)])


def test_ranges_recycle_entries_without_stale_fields(C):
    core, _ = attached(C, 300)
    want = batch(C, 1, 300)
    for _ in range(5):
        assert core.get_range(1, 300) == want
        assert [core.get(i) for i in range(1, 301)] == want
        assert core.get_range(101, 150) == want[100:150]


# ---------------------------------------------------------------------------
# the exported buffer keeps the mapping open


def test_attached_mmap_cannot_be_closed_until_dropped(C):
    mm = mmap.mmap(-1, SIZE)
    core = C.LogCore(1 << 20)
    core.load_segment(mm, 1, 0, DS)
    core.append(batch(C, 1, 3))
    with pytest.raises(BufferError):
        mm.close()
    core.drop_last_segment()
    mm.close()


def test_dropping_first_segment_and_freeing_core_release_buffers(C):
    a, b = mmap.mmap(-1, SIZE), mmap.mmap(-1, SIZE)
    core = C.LogCore(1 << 20)
    core.load_segment(a, 1, 0, DS)
    core.append(batch(C, 1, 4))
    core.load_segment(b, 5, core.segment_info(0)[3], DS)
    core.drop_first_segment()
    a.close()
    assert core.first_index() == 0 and core.segment_info(0)[0] == 5
    del core
    gc.collect()
    b.close()


def test_failed_load_releases_the_buffer(C):
    mm = mmap.mmap(-1, SIZE)
    core = C.LogCore(1 << 20)
    with pytest.raises(InvalidIndexError):
        core.load_segment(mm, 0, 0, DS)
    with pytest.raises(InvalidIndexError):
        core.load_segment(mm, 1, 0, SIZE + 1)
    assert core.segment_count() == 0
    mm.close()


def test_read_only_buffer_reads_but_refuses_writes(C):
    core, buf = attached(C, 5)
    ro = C.LogCore(1 << 20)
    res = ro.load_segment(bytes(buf), 1, 0, DS)
    assert res.count == 5
    assert ro.get_range(1, 5) == core.get_range(1, 5)
    with pytest.raises(FastlogError):
        ro.append(batch(C, 6, 1))
    with pytest.raises(FastlogError):
        ro.zero(0, res.end, res.end + 8)
    with pytest.raises(FastlogError):
        ro.write_at(0, 0, b"x")


# ---------------------------------------------------------------------------
# the busy guard (calls that run without the GIL)


@pytest.mark.parametrize(
    "call",
    [
        lambda core, C: core.drop_last_segment(),
        lambda core, C: core.drop_first_segment(),
        lambda core, C: core.zero(0, SIZE - 8, SIZE),
        lambda core, C: core.write_at(0, 0, b"x"),
        lambda core, C: core.truncate(2),
        lambda core, C: core.append(batch(C, 4, 1)),
        lambda core, C: core.load_segment(bytearray(SIZE), 4, 0, DS),
    ],
)
def test_busy_core_refuses_changes(C, call):
    core, buf = attached(C, 3)
    before = (core.segment_count(), core.segment_info(0), bytes(buf))
    core._busy_enter()
    try:
        assert core.busy == 1
        with pytest.raises(FastlogError) as refused:
            call(core, C)
        assert type(refused.value) is FastlogError  # never a bare RuntimeError
        # reads stay available
        assert core.get(2) == batch(C, 1, 3)[1]
        assert len(core.get_range(1, 3)) == 3
        assert core.term_at(3) == 1
        assert core.verify_segment(0)[0] == FL_OK
    finally:
        core._busy_exit()
    assert core.busy == 0
    assert (core.segment_count(), core.segment_info(0), bytes(buf)) == before
    call(core, C)  # allowed again once idle
    with pytest.raises(FastlogError):
        core._busy_exit()


def test_append_keeps_no_payload_references(C):
    import sys

    core, _ = attached(C, size=1 << 20)
    payload = b"q" * 1000
    good = [C.Entry(i, 1, payload) for i in range(1, 101)]
    bad_middle = good[:50] + [C.Entry(52, 1, payload)] + good[51:]
    base = sys.getrefcount(payload)
    assert core.append(good) == 100  # large: encoded without the GIL
    for call in (lambda: core.append(bad_middle),  # fails half-way through gathering
                 lambda: core.append(good),  # wrong first index
                 lambda: core.append(good, 100)):  # start out of range
        with pytest.raises((InvalidIndexError, InvalidEntryError)):
            call()
    assert core.append([C.Entry(101, 1, payload)]) == 1  # small: encoded with the GIL
    assert sys.getrefcount(payload) == base


def test_large_batches_encode_identically(C, P):
    """Batches past the GIL-release threshold give the same bytes as small ones."""
    entries = [C.Entry(i, 1 + i // 50, bytes([i & 0xFF]) * 600, EntryKind(i % 3)) for i in range(1, 401)]
    big, big_buf = attached(C, size=1 << 20)
    assert big.append(entries) == 400  # 240 KB of frames: encoded without the GIL
    small, small_buf = attached(C, size=1 << 20)
    for i in range(0, 400, 5):
        assert small.append(entries[i : i + 5]) == 5
    assert bytes(big_buf) == bytes(small_buf)
    assert big.busy == 0
    # The pure-Python core reads the very same records.
    pc = P.LogCore(1 << 20)
    res = pc.load_segment(bytes(big_buf), 1, 0, DS)
    assert (res.count, res.end, res.last_crc) == big.segment_info(0)[1:]
    assert [(e.index, e.term, e.kind, e.payload) for e in pc.get_range(1, 400)] == [
        (e.index, e.term, e.kind, e.payload) for e in entries
    ]


def test_large_batch_that_does_not_fit_writes_a_prefix(C):
    core, _ = attached(C, size=DS + 100 * (REC_HEADER_SIZE + 1024))
    entries = [C.Entry(i, 1, b"z" * 1024) for i in range(1, 201)]
    assert core.append(entries) == 100
    assert core.last_index() == 100
    assert core.append(entries, 100) == 100  # full: nothing more fits


def test_reads_during_large_appends_from_another_thread(C):
    """Readers on one thread never see a half-written record while another
    thread appends with the GIL released."""
    core, _ = attached(C, size=8 << 20)
    payload = b"r" * 2000
    total = 3000
    errors = []

    def writer():
        try:
            for first in range(1, total + 1, 100):
                entries = [C.Entry(i, 7, payload) for i in range(first, first + 100)]
                assert core.append(entries) == 100
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=writer)
    t.start()
    seen = 0
    while t.is_alive() or seen < total:
        last = core.last_index()
        assert last >= seen
        seen = last
        if last:
            e = core.get(last)
            assert e is not None and e.payload == payload and e.index == last
            assert core.term_at(last) == 7
            lo = max(1, last - 20)
            tail = core.get_range(lo, last + 500)  # the writer may have gone on meanwhile
            assert [x.index for x in tail] == list(range(lo, lo + len(tail)))
            assert len(tail) >= last - lo + 1
            assert all(x.payload == payload for x in tail)
        if not t.is_alive() and seen == core.last_index():
            break
    t.join()
    assert not errors
    assert core.last_index() == total and core.busy == 0
    assert core.verify_segment(0)[0] == FL_OK


# ---------------------------------------------------------------------------
# damaged mappings never crash


def test_damaged_mapping_gives_corruption_not_a_crash(C):
    core, buf = attached(C, 3)
    off = core.truncate(3)[0]  # offset of record 3
    core.append(batch(C, 3, 1))
    # Make record 3's length point far past the buffer.
    buf[off + 4 : off + 8] = (0x7FFFFFF0).to_bytes(4, "little")
    with pytest.raises(CorruptionError) as info:
        core.get(3)
    assert info.value.offset == off
    with pytest.raises(CorruptionError):
        core.get_range(1, 3)
    assert core.get(2) is not None
    assert core.verify_segment(0)[1] == off


def test_verify_reads_detects_a_flipped_payload_byte(C):
    core, buf = attached(C, 4, verify_reads=True)
    plain = C.LogCore(1 << 20)
    plain.load_segment(buf, 1, 0, DS)
    off = core.truncate(4)[0]
    core.append(batch(C, 4, 1))
    plain_before = plain.get(4)
    buf[off + REC_HEADER_SIZE] ^= 0x01
    with pytest.raises(CorruptionError) as info:
        core.get(4)
    assert info.value.offset == off
    assert core.verify_segment(0) == (FL_ERR_CRC, off)
    assert plain.get(4).payload != plain_before.payload  # trusted reads do not re-check
    plain.drop_last_segment()


def test_garbage_buffers_scan_without_crashing(C):
    import random

    rng = random.Random(1234)
    for _ in range(200):
        size = rng.randrange(0, 600)
        buf = bytearray(rng.getrandbits(8) for _ in range(size))
        if size > 40 and rng.random() < 0.5:
            buf[DS % size : DS % size + 32] = bytes(32)
        core = C.LogCore(1 << 10, verify_reads=rng.random() < 0.5)
        ds = rng.randrange(0, size + 1)
        res = core.load_segment(buf, rng.randrange(1, 5), rng.getrandbits(32), ds)
        assert res.end <= size
        core.get_range(0, 2**64 - 1)
        core.verify_segment(0)


def test_bad_arguments_raise_fastlog_errors(C):
    core, _ = attached(C, 2)
    for bad in (-1, 2**64, "1", 1.0, None, True):
        with pytest.raises((InvalidIndexError, EntryTypeError)):
            core.get(bad)
        with pytest.raises((InvalidIndexError, EntryTypeError)):
            core.get_range(bad, 5)
        with pytest.raises((InvalidIndexError, EntryTypeError)):
            core.term_at(bad)
    for bad in (5, -6, "0", None):
        with pytest.raises((InvalidIndexError, EntryTypeError)):
            core.segment_info(bad)
    with pytest.raises(EntryTypeError):
        core.append(iter(batch(C, 3, 1)))
    with pytest.raises(EntryTypeError):
        core.append(None)
    assert core.last_index() == 2


# ---------------------------------------------------------------------------
# appends to a file: pwrite, or zeros ahead then stores through the mapping


@contextlib.contextmanager
def file_core(C, tmp_path, name, size, helper=True, layout="preallocated"):
    """A core with one fresh segment backed by a real file (appends reach it
    with pwrite or, when prepared, through the mapping); cleaned up after."""
    fd = os.open(tmp_path / name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    mm = None
    core = C.LogCore(1 << 20, False, helper)
    try:
        if layout == "preallocated":
            os.posix_fallocate(fd, 0, size)
        elif layout == "sparse":
            os.ftruncate(fd, size)
        else:
            os.pwrite(fd, bytes(size), 0)
        mm = mmap.mmap(fd, size, access=mmap.ACCESS_WRITE)
        core.load_segment(mm, 1, 0, DS, fresh=True, fd=fd)
        yield types.SimpleNamespace(core=core, mm=mm, fd=fd)
    finally:
        while core.segment_count():
            core.drop_last_segment()
        if mm is not None:
            mm.close()
        os.close(fd)


@pytest.mark.parametrize("helper", [True, False], ids=["helper-thread", "no-helper"])
@pytest.mark.parametrize("seed", range(6))
def test_prepared_appends_leave_the_same_file_as_pwrite(C, tmp_path, seed, helper):
    """Zeroing ahead (``prepare``) changes how bytes reach the file, never which:
    across batch sizes, chunk boundaries, truncations and a full segment, the
    file matches one written with pwrite only, byte for byte.  With the helper
    thread zeroing concurrently, a zero written over a record would show here."""
    rng = random.Random(seed)
    size = (3 << 20) + rng.randrange(0, 1 << 16, 8)
    with file_core(C, tmp_path, "pwrite", size) as fa, file_core(C, tmp_path, "prepared", size, helper) as fb:
        a, b = fa.core, fb.core
        nxt = 1
        while True:
            if rng.random() < 0.1 and nxt > 2:
                cut = rng.randrange(max(1, nxt - 300), nxt)
                for core in (a, b):
                    lo, hi = core.truncate(cut)
                    core.zero(0, lo, hi)
                nxt = cut
                continue
            n = rng.choice([1, 3, 40, 700, 3000])
            entries = [C.Entry(i, 1 + i // 1000, rng.randbytes(rng.choice([0, 5, 256, 1000, 9000])))
                       for i in range(nxt, nxt + n)]
            got_a = a.append(entries, 0, 0, 0)
            got_b = b.append(entries, 0, 0, rng.choice([1 << 16, 1 << 21, 1 << 12]))
            assert got_a == got_b
            nxt += got_a
            if got_a < n:
                break  # the segment is full
        assert a.segment_info(0) == b.segment_info(0)
        assert os.pread(fa.fd, size, 0) == os.pread(fb.fd, size, 0)
        assert bytes(fb.mm) == os.pread(fb.fd, size, 0)


@pytest.mark.parametrize("seed", range(4))
def test_synced_zero_ahead_leaves_the_same_file_as_pwrite(C, tmp_path, seed):
    """Zeros kept ahead of pwrite appends and synced by the zeroer's thread (a
    flushed log, ``ahead`` without ``prepare``), with prepared appends mixed in
    and truncations: the file matches one written with pwrite only, byte for
    byte, so no zero of the thread ever landed on a record.

    Seen failing once with the writer's wait for the zero write in flight
    removed from fl_zeroer_advance (records overwritten with zeros; the
    thread's writes are held back a little here to widen that window)."""
    rng = random.Random(100 + seed)
    size = (6 << 20) + rng.randrange(0, 1 << 16, 8)
    with file_core(C, tmp_path, "pwrite", size) as fa, file_core(C, tmp_path, "synced", size) as fb:
        a, b = fa.core, fb.core
        b._delay_zero_writes(1000)  # each zero write stays in flight a while: writers meet it
        b.note_flushed()  # synced zeros are kept only near the last flush: flushes come at random below
        ops: list = []  # b first, back to back (so it keeps overtaking the thread), then a
        nxt = 1
        while True:
            if rng.random() < 0.08 and nxt > 2:
                cut = rng.randrange(max(1, nxt - 300), nxt)
                lo, hi = b.truncate(cut)
                b.zero(0, lo, hi)
                ops.append(("truncate", cut))
                nxt = cut
                continue
            n = rng.choice([1, 3, 40, 300, 1000])
            entries = [C.Entry(i, 1, rng.randbytes(rng.choice([0, 5, 256, 1000, 4000])))
                       for i in range(nxt, nxt + n)]
            prepare = 1 << 20 if rng.random() < 0.1 else 0
            got = b.append(entries, 0, 0, prepare, rng.choice([1 << 20, 4 << 20]))
            ops.append(("append", entries, got))
            nxt += got
            if rng.random() < 0.05:
                time.sleep(0.001)  # let the thread run ahead, then overtake it
            if rng.random() < 0.2:
                b.note_flushed()
            if got < n:
                break  # the segment is full
        assert b.zero_ahead_error() == 0
        b.drop_last_segment()  # waits for a zero write in flight
        for op in ops:
            if op[0] == "truncate":
                lo, hi = a.truncate(op[1])
                a.zero(0, lo, hi)
            else:
                assert a.append(op[1], 0, 0, 0, 0) == op[2]
        assert os.pread(fa.fd, size, 0) == os.pread(fb.fd, size, 0)


def test_prepare_never_zeroes_over_records(C, tmp_path):
    """Zero-ahead that starts below the end (a stale hint) still begins at the end."""
    with file_core(C, tmp_path, "seg", 1 << 20) as f:
        core, mm = f.core, f.mm
        first = batch(C, 1, 50)
        assert core.append(first, 0, 0, 1 << 16) == 50
        end = core.segment_info(0)[2]
        before = bytes(mm[:end])
        # Reattached, the core knows nothing of its earlier zeros: only the hint.
        core.drop_last_segment()
        assert core.load_segment(mm, 1, 0, DS, fd=f.fd).count == 50
        assert core.append(batch(C, 51, 10, size=3000), 0, DS, 1 << 16) == 10
        assert bytes(mm[:end]) == before
        assert [e.payload for e in core.get_range(1, 50)] == [e.payload for e in first]


def test_prepare_reports_write_errors_and_writes_nothing(C, tmp_path):
    """A zero write that fails (here: a read-only descriptor) raises OSError
    before any record is stored."""
    with file_core(C, tmp_path, "seg", 1 << 20) as f:
        core = f.core
        core.drop_last_segment()
        ro = os.open(tmp_path / "seg", os.O_RDONLY)
        try:
            core.load_segment(f.mm, 1, 0, DS, fresh=True, fd=ro)
            with pytest.raises(OSError):
                core.append(batch(C, 1, 5), 0, 0, 1 << 16)
            assert core.last_index() == 0
            assert bytes(f.mm[DS:DS + 4096]) == bytes(4096)
            assert core.busy == 0
            core.drop_last_segment()
        finally:
            os.close(ro)


def test_switching_to_pwrite_waits_for_zeros_in_flight(C, tmp_path):
    """Prepared appends, then pwrite appends (a flushed log) into the same
    segment: the helper's zeros never land on the pwritten records."""
    size = 8 << 20
    with file_core(C, tmp_path, "seg", size) as f:
        core = f.core
        nxt = 1
        for round_ in range(40):
            prepare = 1 << 20 if round_ % 2 == 0 else 0
            entries = [C.Entry(i, 1, bytes([i & 0xFF]) * 700) for i in range(nxt, nxt + 150)]
            assert core.append(entries, 0, 0, prepare) == 150
            nxt += 150
        got = core.get_range(1, nxt - 1)
        assert [e.payload for e in got] == [bytes([i & 0xFF]) * 700 for i in range(1, nxt)]
        end = core.segment_info(0)[2]
        assert os.pread(f.fd, size, 0)[:end] == bytes(f.mm[:end])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_appends_without_the_parents_helper(C, tmp_path):
    """The helper thread does not survive fork(); the child's core works alone."""
    with file_core(C, tmp_path, "seg", 4 << 20) as f:
        core = f.core
        assert core.append(batch(C, 1, 200, size=900), 0, 0, 1 << 20) == 200  # starts the helper
        # A pwrite append stops the helper following the file, so it writes no
        # zeros where the child is about to store records (they share the file).
        assert core.append(batch(C, 201, 1), 0, 0, 0) == 1
        pid = os.fork()
        if pid == 0:  # the child: append, check, and leave without cleanup
            ok = False
            try:
                ok = core.append(batch(C, 202, 3000, size=900), 0, 0, 1 << 20) == 3000
                ok = ok and [e.index for e in core.get_range(1, 3201)] == list(range(1, 3202))
            finally:
                os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        assert core.append(batch(C, 202, 10), 0, 0, 1 << 20) == 10


@pytest.mark.parametrize("layout", ["preallocated", "sparse", "written"])
@pytest.mark.parametrize("stray", [None, "near", "far", "last"])
def test_tail_check_with_the_file_finds_every_stray_byte(C, tmp_path, layout, stray):
    """With the file at hand the tail check reads only ranges that may hold
    data (SEEK_DATA / SEEK_HOLE); it must still see any non-zero byte."""
    size = 4 << 20
    with file_core(C, tmp_path, "seg", size, layout=layout) as f:
        writer = f.core
        assert writer.append(batch(C, 1, 300, size=500)) == 300
        end = writer.segment_info(0)[2]
        writer.drop_last_segment()
        where = {None: None, "near": end + 3, "far": (3 << 20) + 12345, "last": size - 1}[stray]
        if where is not None:
            os.pwrite(f.fd, b"\x01", where)
        for probe_fd in (f.fd, -1):
            reader = C.LogCore(1 << 20)
            res = reader.load_segment(f.mm, 1, 0, DS, fd=probe_fd)
            assert (res.count, res.end) == (300, end)
            assert res.nonzero_after == (where is not None)
            reader.drop_last_segment()

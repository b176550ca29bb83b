"""The byte-core contract (fastlog/_core_api.py), run against every core module.

Each test runs once per available core (``fastlog._pycore`` always,
``fastlog_ext._core`` when built), so both cores are held to the same results,
statuses and exceptions.  Frames are crafted here with an independent bitwise
CRC-32C, so a shared bug in the cores' encoders cannot hide.
"""
from __future__ import annotations

import mmap
import struct
from typing import Any, List, Sequence, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastlog._core_api import (
    FL_ERR_CRC,
    FL_ERR_INDEX,
    FL_ERR_RESERVED,
    FL_ERR_TRUNCATED,
    FL_ERR_ZERO,
    FL_OK,
    REC_HEADER_SIZE,
    SEG_DATA_START,
)
from fastlog._types import EntryKind
from fastlog.errors import (
    CorruptionError,
    EntryTooLargeError,
    EntryTypeError,
    FastlogError,
    InvalidEntryError,
    InvalidIndexError,
)
from reference_crc import ref_crc32c

SIZE = 4096  # test segment buffer size
DS = 64  # data start used by most tests (the real format uses 4096)
MAX_PAYLOAD = 1 << 16
ERRORS = (FL_ERR_TRUNCATED, FL_ERR_RESERVED, FL_ERR_INDEX, FL_ERR_CRC)
U64_MAX = (1 << 64) - 1


# ---------------------------------------------------------------------------
# Independent reference encoder
# ---------------------------------------------------------------------------


def frame(seed: int, index: int, term: int, kind: int, payload: bytes, *, reserved: bytes = bytes(7),
          length: int | None = None) -> Tuple[bytes, int]:
    """A record frame as docs/format.md describes it, and its crc."""
    if length is None:
        length = len(payload)
    body = struct.pack("<IQQB7s", length, index, term, kind, reserved) + payload
    crc = ref_crc32c(body, seed)
    return struct.pack("<I", crc) + body + bytes(-len(payload) % 8), crc


def build(records: Sequence[Tuple[int, int, bytes]], *, first: int = 1, seed: int = 0, size: int = SIZE,
          ds: int = DS) -> Tuple[bytearray, List[int], List[int]]:
    """A buffer holding ``records`` ((term, kind, payload) each) from ``first`` on.
    Returns (buffer, record offsets, record crcs)."""
    buf = bytearray(size)
    off, crc = ds, seed
    offsets, crcs = [], []
    for i, (term, kind, payload) in enumerate(records):
        raw, crc = frame(crc, first + i, term, kind, payload)
        buf[off : off + len(raw)] = raw
        offsets.append(off)
        crcs.append(crc)
        off += len(raw)
    return buf, offsets, crcs


def payload_of(i: int, n: int = 10) -> bytes:
    return (b"p%d-" % i * (n // 3 + 2))[:n]


def sample_records(n: int, *, first: int = 1, size: int = 10) -> List[Tuple[int, int, bytes]]:
    kinds = (EntryKind.COMMAND, EntryKind.NOOP, EntryKind.CONFIG)
    return [(1 + (first + i) // 3, int(kinds[i % 3]), payload_of(first + i, size + i % 5)) for i in range(n)]


def entries(mod: Any, first: int, n: int, *, term: int = 1, size: int = 10) -> List[Any]:
    return [mod.Entry(i, term, payload_of(i, size)) for i in range(first, first + n)]


def as_tuple(e: Any) -> Tuple[int, int, int, bytes]:
    return (e.index, e.term, int(e.kind), e.payload)


def new_core(mod: Any, *, buf: Any = None, size: int = SIZE, first: int = 1, seed: int = 0, ds: int = DS,
             max_payload: int = MAX_PAYLOAD, verify_reads: bool = False) -> Tuple[Any, Any, Any]:
    core = mod.LogCore(max_payload, verify_reads)
    if buf is None:
        buf = bytearray(size)
    res = core.load_segment(buf, first, seed, ds)
    return core, buf, res


def state(core: Any, *bufs: Any) -> tuple:
    """Everything observable about a core (and its buffers), to prove nothing changed."""
    infos = tuple(core.segment_info(i) for i in range(core.segment_count()))
    return (infos, core.first_index(), core.last_index(), tuple(bytes(b) for b in bufs))


def scan_tuple(res: Any) -> tuple:
    return (res.count, res.end, res.last_crc, res.status, bool(res.nonzero_after))


# ---------------------------------------------------------------------------
# CRC-32C
# ---------------------------------------------------------------------------


def test_crc32c_known_answers(core_module):
    crc = core_module.crc32c
    assert crc(b"123456789") == 0xE3069283
    assert crc(b"") == 0
    # iSCSI test vectors (RFC 3720, appendix B.4).
    assert crc(bytes(32)) == 0x8A9136AA
    assert crc(b"\xff" * 32) == 0x62A8AB43
    assert crc(bytes(range(32))) == 0x46DD794E
    assert crc(bytes(range(31, -1, -1))) == 0x113FDB5C


@pytest.mark.parametrize("n", [0, 1, 3, 4, 7, 8, 9, 31, 47, 48, 49, 63, 64, 100, 255, 4095, 4096, 4097, 8192, 9000, 70000])
def test_crc32c_matches_reference_and_chains(core_module, n):
    data = bytes((i * 7 + n) & 0xFF for i in range(n))
    crc = core_module.crc32c
    if n <= 4097:  # the bitwise reference is slow
        assert crc(data) == ref_crc32c(data)
        assert crc(data, 0x12345678) == ref_crc32c(data, 0x12345678)
    for cut in {0, 1, n // 3, n // 2, n}:
        assert crc(data[cut:], crc(data[:cut])) == crc(data)


def test_crc32c_accepts_buffers(core_module):
    crc = core_module.crc32c
    want = crc(b"123456789")
    assert crc(bytearray(b"123456789")) == want
    assert crc(memoryview(b"xx123456789yy")[2:-2]) == want
    assert crc(b"56789", crc(b"1234")) == want
    assert crc(b"", 0xDEADBEEF) == 0xDEADBEEF


@pytest.mark.parametrize("bad", ["123", None, 12, 1.5])
def test_crc32c_rejects_non_bytes(core_module, bad):
    with pytest.raises(EntryTypeError):
        core_module.crc32c(bad)


@pytest.mark.parametrize("seed", [-1, 1 << 32])
def test_crc32c_rejects_bad_seed(core_module, seed):
    with pytest.raises(InvalidEntryError):
        core_module.crc32c(b"abc", seed)


def test_module_exports(core_module):
    assert core_module.IMPLEMENTATION in ("c", "python")
    assert isinstance(core_module.crc32c_hw_available(), bool)
    if core_module.IMPLEMENTATION == "python":
        assert core_module.crc32c_hw_available() is False
    e = core_module.Entry(1, 2, b"x")
    assert (e.index, e.term, e.payload, e.kind) == (1, 2, b"x", EntryKind.COMMAND)


@given(data=st.binary(max_size=600), cut=st.integers(min_value=0, max_value=600),
       seed=st.integers(min_value=0, max_value=0xFFFFFFFF))
def test_crc32c_chaining_property(core_module, data, cut, seed):
    crc = core_module.crc32c
    cut = min(cut, len(data))
    assert crc(data, seed) == ref_crc32c(data, seed)
    assert crc(data[cut:], crc(data[:cut], seed)) == crc(data, seed)


# ---------------------------------------------------------------------------
# load_segment / scan
# ---------------------------------------------------------------------------


def test_scan_empty_buffer(core_module):
    core, _, res = new_core(core_module, seed=0xABCDEF01)
    assert scan_tuple(res) == (0, DS, 0xABCDEF01, FL_ERR_ZERO, False)
    assert core.segment_count() == 1
    assert core.segment_info(0) == (1, 0, DS, 0xABCDEF01)
    assert core.first_index() == 0
    assert core.last_index() == 0
    assert core.get(1) is None
    assert core.get_range(0, 100) == []
    assert core.term_at(1) is None
    assert core.verify_segment(0) == (FL_OK, DS)


def test_scan_one_record(core_module):
    buf, offsets, crcs = build([(7, EntryKind.CONFIG, b"hello")], first=5, seed=99)
    core, _, res = new_core(core_module, buf=buf, first=5, seed=99)
    end = DS + 32 + 8
    assert scan_tuple(res) == (1, end, crcs[0], FL_ERR_ZERO, False)
    assert core.segment_info(-1) == (5, 1, end, crcs[0])
    assert as_tuple(core.get(5)) == (5, 7, EntryKind.CONFIG, b"hello")
    assert isinstance(core.get(5), core_module.Entry)
    assert core.get(5) == core_module.Entry(5, 7, b"hello", EntryKind.CONFIG)
    assert core.term_at(5) == 7
    assert (core.first_index(), core.last_index()) == (5, 5)


def test_scan_many_records(core_module):
    records = sample_records(60)
    buf, offsets, crcs = build(records)
    core, _, res = new_core(core_module, buf=buf)
    assert res.count == 60 and res.status == FL_ERR_ZERO and not res.nonzero_after
    assert res.last_crc == crcs[-1]
    assert core.get_range(1, 60) == [core_module.Entry(i + 1, t, p, k) for i, (t, k, p) in enumerate(records)]
    assert [core.term_at(i) for i in range(1, 61)] == [t for t, _, _ in records]
    assert core.verify_segment(0) == (FL_OK, res.end)


def test_scan_uses_real_data_start(core_module):
    buf, _, crcs = build(sample_records(3), ds=SEG_DATA_START, size=2 * SEG_DATA_START)
    core, _, res = new_core(core_module, buf=buf, ds=SEG_DATA_START)
    assert (res.count, res.last_crc, res.status) == (3, crcs[-1], FL_ERR_ZERO)
    assert core.get(3).payload == sample_records(3)[2][2]


def test_scan_records_filling_buffer_exactly(core_module):
    # 64 + 6 * (32 + 8) = 304: the last frame ends at the very end of the buffer.
    records = [(1, 1, b"abcdefgh")] * 6
    buf, _, _ = build(records, size=DS + 6 * 40)
    _, _, res = new_core(core_module, buf=buf)
    assert scan_tuple(res)[:2] == (6, len(buf))
    assert res.status == FL_ERR_ZERO and not res.nonzero_after


@pytest.mark.parametrize("tail", [0, 8, 16, 24])
def test_scan_short_zero_tail_is_clean_end(core_module, tail):
    buf, _, _ = build([(1, 1, b"abcdefgh")] * 2, size=DS + 80 + tail)
    _, _, res = new_core(core_module, buf=buf)
    assert (res.count, res.status, res.nonzero_after) == (2, FL_ERR_ZERO, False)


@pytest.mark.parametrize("tail", [1, 8, 31])
def test_scan_short_nonzero_tail_is_truncated(core_module, tail):
    buf, _, _ = build([(1, 1, b"abcdefgh")] * 2, size=DS + 80 + tail)
    buf[-1] = 0x5A
    _, _, res = new_core(core_module, buf=buf)
    assert (res.count, res.end, res.status, res.nonzero_after) == (2, DS + 80, FL_ERR_TRUNCATED, True)


def test_scan_torn_tail_zeroed_from_record_start(core_module):
    records = sample_records(10, size=100)
    buf, offsets, crcs = build(records)
    buf[offsets[7] :] = bytes(len(buf) - offsets[7])  # the last page never made it
    core, _, res = new_core(core_module, buf=buf)
    assert scan_tuple(res) == (7, offsets[7], crcs[6], FL_ERR_ZERO, False)
    assert core.last_index() == 7


def test_scan_torn_tail_zeroed_mid_record(core_module):
    records = sample_records(10, size=100)
    buf, offsets, crcs = build(records)
    cut = offsets[7] + 40
    buf[cut:] = bytes(len(buf) - cut)
    _, _, res = new_core(core_module, buf=buf)
    assert scan_tuple(res) == (7, offsets[7], crcs[6], FL_ERR_CRC, True)


def test_scan_garbage_after_last_record(core_module):
    records = sample_records(4)
    buf, offsets, crcs = build(records)
    end = offsets[-1] + 32 + 16
    buf[end : end + 40] = bytes(range(1, 41))
    _, _, res = new_core(core_module, buf=buf)
    assert res.count == 4 and res.end == end and res.last_crc == crcs[-1]
    assert res.status in ERRORS
    assert res.nonzero_after


def test_scan_garbage_beyond_a_zero_gap(core_module):
    buf, offsets, _ = build(sample_records(4))
    buf[-5] = 1
    _, _, res = new_core(core_module, buf=buf)
    assert (res.count, res.status, res.nonzero_after) == (4, FL_ERR_ZERO, True)


def _one_bad_frame(mod: Any, raw: bytes, *, size: int = SIZE) -> Any:
    """Two good records, then ``raw`` as the third frame; returns the scan result."""
    buf, offsets, crcs = build(sample_records(2), size=size)
    off = offsets[-1] + 32 + ((len(sample_records(2)[-1][2]) + 7) & ~7)
    buf[off : off + len(raw)] = raw[: len(buf) - off]
    _, _, res = new_core(mod, buf=buf)
    assert (res.count, res.end, res.last_crc) == (2, off, crcs[-1])
    return res


def _seed_after_two() -> int:
    return build(sample_records(2))[2][-1]


def test_status_zero(core_module):
    assert _one_bad_frame(core_module, b"").status == FL_ERR_ZERO


def test_status_truncated_frame_runs_past_end(core_module):
    raw, _ = frame(_seed_after_two(), 3, 1, 1, b"x" * 64)
    res = _one_bad_frame(core_module, raw, size=DS + 2 * 48 + 64)
    assert res.status == FL_ERR_TRUNCATED


def test_status_truncated_huge_length(core_module):
    raw, _ = frame(_seed_after_two(), 3, 1, 1, b"abc", length=0xFFFFFFF0)
    assert _one_bad_frame(core_module, raw).status == FL_ERR_TRUNCATED


@pytest.mark.parametrize("kind,reserved", [(3, bytes(7)), (255, bytes(7)), (1, b"\0\0\0\x01\0\0\0"), (0, b"\0" * 6 + b"\x80")])
def test_status_reserved(core_module, kind, reserved):
    raw, _ = frame(_seed_after_two(), 3, 1, kind, b"payload", reserved=reserved)  # crc is right
    assert _one_bad_frame(core_module, raw).status == FL_ERR_RESERVED


def test_status_reserved_checked_before_length(core_module):
    # Order of checks (fastlog_ext/record.c): reserved bytes before the length.
    raw, _ = frame(_seed_after_two(), 3, 1, 3, b"abc", length=0xFFFFFFF0)
    assert _one_bad_frame(core_module, raw).status == FL_ERR_RESERVED


@pytest.mark.parametrize("index", [2, 4, 0, U64_MAX])
def test_status_index(core_module, index):
    raw, _ = frame(_seed_after_two(), index, 1, 1, b"payload")  # crc is right
    assert _one_bad_frame(core_module, raw).status == FL_ERR_INDEX


def test_status_crc(core_module):
    raw = bytearray(frame(_seed_after_two(), 3, 1, 1, b"payload")[0])
    raw[33] ^= 0x04
    assert _one_bad_frame(core_module, bytes(raw)).status == FL_ERR_CRC


def test_status_crc_wrong_seed(core_module):
    raw, _ = frame(12345, 3, 1, 1, b"payload")  # valid frame, but chained to something else
    assert _one_bad_frame(core_module, raw).status == FL_ERR_CRC


def test_segment_seed_must_match(core_module):
    buf, _, _ = build(sample_records(3), seed=777)
    _, _, res = new_core(core_module, buf=buf, seed=778)
    assert (res.count, res.end, res.last_crc, res.status) == (0, DS, 778, FL_ERR_CRC)


def test_spliced_old_record_after_new_one_is_rejected(core_module):
    # Old history: 1, 2, 3.  New history rewrote 2 (same size, other payload)
    # and a crash left the old 3 behind it: 3 must not verify.
    old, offsets, _ = build([(1, 1, b"aaaa"), (1, 1, b"bbbb"), (1, 1, b"cccc")])
    new, offsets_new, crcs_new = build([(1, 1, b"aaaa"), (2, 1, b"BBBB")])
    assert offsets == offsets_new + [offsets[2]]
    new[offsets[2] : offsets[2] + 40] = old[offsets[2] : offsets[2] + 40]
    core, _, res = new_core(core_module, buf=new)
    assert (res.count, res.end, res.last_crc, res.status) == (2, offsets[2], crcs_new[1], FL_ERR_CRC)
    assert core.get(3) is None


def test_spliced_segments_are_rejected(core_module):
    # The first record of a segment is chained to the previous segment's last crc.
    a, _, crcs_a = build(sample_records(3))
    b, _, _ = build(sample_records(2, first=4), first=4, seed=crcs_a[-1] ^ 1)
    core, _, _ = new_core(core_module, buf=a)
    res = core.load_segment(b, 4, crcs_a[-1], DS)
    assert (res.count, res.status) == (0, FL_ERR_CRC)


def test_scan_second_segment_continues(core_module):
    a, _, crcs_a = build(sample_records(3))
    recs_b = sample_records(4, first=4)
    b, _, crcs_b = build(recs_b, first=4, seed=crcs_a[-1])
    core, _, _ = new_core(core_module, buf=a)
    res = core.load_segment(b, 4, crcs_a[-1], DS)
    assert (res.count, res.last_crc, res.status) == (4, crcs_b[-1], FL_ERR_ZERO)
    assert core.segment_count() == 2
    assert core.segment_info(1)[:2] == (4, 4)
    assert core.segment_info(-2)[:2] == (1, 3)
    assert [e.index for e in core.get_range(2, 6)] == [2, 3, 4, 5, 6]
    assert core.get(3).payload == sample_records(3)[2][2]
    assert core.get(7).payload == recs_b[3][2]
    assert (core.first_index(), core.last_index()) == (1, 7)


def test_load_segment_rejects_bad_input(core_module):
    buf, _, crcs = build(sample_records(3))
    core, _, _ = new_core(core_module, buf=buf)
    other = bytearray(SIZE)
    before = state(core, buf, other)
    for first in (3, 5, 1):  # must be last_index + 1 == 4
        with pytest.raises(InvalidIndexError):
            core.load_segment(other, first, crcs[-1], DS)
    with pytest.raises(InvalidIndexError):
        core.load_segment(other, -1, 0, DS)
    with pytest.raises(EntryTypeError):
        core.load_segment(other, "4", 0, DS)
    with pytest.raises(EntryTypeError):
        core.load_segment("not a buffer", 4, 0, DS)
    with pytest.raises(EntryTypeError):
        core.load_segment(None, 4, 0, DS)
    with pytest.raises(InvalidIndexError):
        core.load_segment(other, 4, 0, SIZE + 8)
    with pytest.raises(InvalidIndexError):
        core.load_segment(other, 4, 0, -8)
    with pytest.raises(InvalidEntryError):
        core.load_segment(other, 4, 1 << 32, DS)
    with pytest.raises(InvalidEntryError):
        core.load_segment(other, 4, -1, DS)
    assert state(core, buf, other) == before


def test_load_segment_first_index_zero_rejected(core_module):
    core = core_module.LogCore(MAX_PAYLOAD)
    with pytest.raises(InvalidIndexError):
        core.load_segment(bytearray(SIZE), 0, 0, DS)
    assert core.segment_count() == 0


def test_load_read_only_buffer(core_module):
    buf, _, _ = build(sample_records(3))
    core, _, res = new_core(core_module, buf=bytes(buf))
    assert res.count == 3
    assert core.get(2).payload == sample_records(3)[1][2]
    with pytest.raises(FastlogError):
        core.append(entries(core_module, 4, 1))
    assert core.last_index() == 3


def test_drop_segments(core_module):
    a, _, crcs_a = build(sample_records(3))
    b, _, _ = build(sample_records(3, first=4), first=4, seed=crcs_a[-1])
    core, _, _ = new_core(core_module, buf=a)
    core.load_segment(b, 4, crcs_a[-1], DS)
    core.drop_first_segment()
    assert core.segment_count() == 1
    assert core.get(2) is None and core.get(5) is not None
    assert (core.first_index(), core.last_index()) == (4, 6)
    core.drop_last_segment()
    assert core.segment_count() == 0
    assert (core.first_index(), core.last_index()) == (0, 0)
    assert core.get(5) is None and core.get_range(1, 10) == []
    with pytest.raises(FastlogError):
        core.drop_last_segment()
    with pytest.raises(FastlogError):
        core.drop_first_segment()
    # An empty core takes any first index again.
    res = core.load_segment(bytearray(SIZE), 100, 0, DS)
    assert res.count == 0 and core.segment_info(0)[0] == 100


def test_drop_last_then_reload_continues(core_module):
    a, _, crcs_a = build(sample_records(3))
    core, _, _ = new_core(core_module, buf=a)
    core.load_segment(bytearray(SIZE), 4, crcs_a[-1], DS)
    core.drop_last_segment()
    with pytest.raises(InvalidIndexError):
        core.load_segment(bytearray(SIZE), 5, crcs_a[-1], DS)
    core.load_segment(bytearray(SIZE), 4, crcs_a[-1], DS)
    assert core.append(entries(core_module, 4, 2)) == 2
    assert core.last_index() == 5


def test_dropped_segment_releases_mmap(core_module):
    mm = mmap.mmap(-1, SIZE)
    core, _, _ = new_core(core_module, buf=mm)
    core.append(entries(core_module, 1, 3))
    assert core.get(2) is not None
    with pytest.raises(BufferError):
        mm.close()  # still exported to the core
    core.drop_last_segment()
    mm.close()


def test_segment_info_bad_position(core_module):
    core, _, _ = new_core(core_module)
    for pos in (1, -2, 100):
        with pytest.raises(InvalidIndexError):
            core.segment_info(pos)
        with pytest.raises(InvalidIndexError):
            core.verify_segment(pos)
    with pytest.raises(EntryTypeError):
        core.segment_info("0")


def test_core_constructor_checks(core_module):
    with pytest.raises(EntryTypeError):
        core_module.LogCore("big")
    with pytest.raises(InvalidEntryError):
        core_module.LogCore(-1)
    with pytest.raises(InvalidEntryError):
        core_module.LogCore(1 << 31)
    core_module.LogCore(0x7FFFFFFF)


# ---------------------------------------------------------------------------
# append
# ---------------------------------------------------------------------------


def test_append_then_read(core_module):
    core, buf, _ = new_core(core_module)
    batch = [core_module.Entry(i, 1 + i // 4, payload_of(i, i), EntryKind(i % 3)) for i in range(1, 20)]
    assert core.check_batch(batch) == 1
    assert core.append(batch) == 19
    assert core.get_range(1, 19) == batch
    assert [core.get(i) for i in range(1, 20)] == batch
    assert [core.term_at(i) for i in range(1, 20)] == [e.term for e in batch]
    first, count, end, last_crc = core.segment_info(0)
    assert (first, count) == (1, 19)
    # The bytes are the documented format: rebuild them independently.
    ref, _, crcs = build([(e.term, int(e.kind), e.payload) for e in batch])
    assert bytes(buf) == bytes(ref)
    assert last_crc == crcs[-1]
    assert end == DS + sum(32 + ((len(e.payload) + 7) & ~7) for e in batch)


def test_append_in_several_batches(core_module):
    core, buf, _ = new_core(core_module, first=10)
    assert core.append(entries(core_module, 10, 3)) == 3
    assert core.append(entries(core_module, 13, 1)) == 1
    assert core.append(entries(core_module, 14, 5)) == 5
    assert core.get_range(0, 100) == entries(core_module, 10, 9)
    rescanned, _, res = new_core(core_module, buf=bytearray(buf), first=10)
    assert res.count == 9 and res.status == FL_ERR_ZERO
    assert rescanned.get_range(10, 18) == entries(core_module, 10, 9)


@pytest.mark.parametrize("prepare", [-1, 3, 1 << 41, (1 << 16) + 1])
def test_append_refuses_a_bad_prepare_hint(core_module, prepare):
    core, buf, _ = new_core(core_module)
    with pytest.raises(InvalidEntryError):
        core.append(entries(core_module, 1, 2), 0, 0, prepare)
    assert core.last_index() == 0
    # Without a file behind the segment the hint changes nothing.
    assert core.append(entries(core_module, 1, 2), 0, 0, 1 << 16) == 2
    assert core.get_range(1, 2) == entries(core_module, 1, 2)


def test_append_from_start_position(core_module):
    core, _, _ = new_core(core_module, first=5)
    batch = entries(core_module, 3, 6)  # 3..8; 3 and 4 are already elsewhere
    assert core.append(batch, 2) == 6
    assert core.get_range(1, 10) == batch[2:]


def test_append_partial_fit_and_rollover(core_module):
    size = DS + 5 * 48  # room for exactly five 16-byte payloads
    core, buf, _ = new_core(core_module, size=size)
    batch = entries(core_module, 1, 12, size=16)
    assert core.append(batch) == 5
    first, count, end, last_crc = core.segment_info(-1)
    assert (first, count, end) == (1, 5, size)
    assert core.append(batch, 5) == 5  # nothing fits: unchanged
    assert core.segment_info(-1) == (first, count, end, last_crc)
    buf2 = bytearray(size)
    core.load_segment(buf2, 6, last_crc, DS)
    assert core.append(batch, 5) == 10
    buf3 = bytearray(size)
    core.load_segment(buf3, 11, core.segment_info(-1)[3], DS)
    assert core.append(batch, 10) == 12
    assert core.get_range(1, 12) == batch
    # A fresh core reading the three buffers sees the same chain.
    fresh = core_module.LogCore(MAX_PAYLOAD)
    seed = 0
    for b, first in ((buf, 1), (buf2, 6), (buf3, 11)):
        res = fresh.load_segment(bytearray(b), first, seed, DS)
        assert res.status == FL_ERR_ZERO
        seed = res.last_crc
    assert fresh.get_range(1, 12) == batch


def test_append_where_nothing_fits(core_module):
    core, buf, _ = new_core(core_module, size=DS + 40)
    before = state(core, buf)
    assert core.append(entries(core_module, 1, 2, size=9)) == 0
    assert state(core, buf) == before


def test_append_empty_and_max_payload(core_module):
    core, _, _ = new_core(core_module, max_payload=100)
    batch = [core_module.Entry(1, 1, b""), core_module.Entry(2, 1, b"x" * 100), core_module.Entry(3, 1, b"", EntryKind.NOOP)]
    assert core.append(batch) == 3
    assert core.get_range(1, 3) == batch


def test_append_extreme_values(core_module):
    core, buf, _ = new_core(core_module, first=U64_MAX - 2)
    batch = [core_module.Entry(i, U64_MAX, b"z", EntryKind.CONFIG) for i in range(U64_MAX - 2, U64_MAX + 1)]
    assert core.append(batch) == 3
    assert core.get(U64_MAX) == batch[-1]
    assert core.term_at(U64_MAX) == U64_MAX
    assert core.last_index() == U64_MAX
    assert core.get_range(U64_MAX - 5, U64_MAX) == batch
    _, _, res = new_core(core_module, buf=bytearray(buf), first=U64_MAX - 2)
    assert res.count == 3


def test_append_zeroes_padding_over_garbage(core_module):
    core, buf, _ = new_core(core_module)
    core.append(entries(core_module, 1, 1))
    end = core.segment_info(0)[2]
    buf[end:] = b"\xaa" * (len(buf) - end)
    assert core.append([core_module.Entry(2, 1, b"abc")]) == 1
    assert buf[end + 35 : end + 40] == bytes(5)
    copy = bytearray(buf)
    copy[end + 40 :] = bytes(len(buf) - end - 40)
    _, _, res = new_core(core_module, buf=copy)
    assert (res.count, res.status) == (2, FL_ERR_ZERO)


def test_append_after_empty_segment(core_module):
    a, _, crcs = build(sample_records(3))
    core, _, _ = new_core(core_module, buf=a)
    core.load_segment(bytearray(SIZE), 4, crcs[-1], DS)
    assert core.last_index() == 3
    with pytest.raises(InvalidIndexError):
        core.append(entries(core_module, 5, 1))
    assert core.append(entries(core_module, 4, 2)) == 2
    assert core.get(5) == entries(core_module, 5, 1)[0]


def test_append_without_segment(core_module):
    core = core_module.LogCore(MAX_PAYLOAD)
    with pytest.raises(FastlogError):
        core.append(entries(core_module, 1, 1))


def _bad_batches(mod: Any) -> List[Tuple[Any, type]]:
    E = mod.Entry
    return [
        ([], InvalidEntryError),
        ((E(i, 1, b"x") for i in (4, 5)), EntryTypeError),
        (12, EntryTypeError),
        (None, EntryTypeError),
        ([E(4, 1, b"x"), (5, 1, b"y")], EntryTypeError),
        ([E(4, 1, b"x"), b"raw"], EntryTypeError),
        ([E(4, 1, b"x"), E(6, 1, b"x")], InvalidIndexError),
        ([E(4, 1, b"x"), E(4, 1, b"x")], InvalidIndexError),
        ([E(4, 1, b"x"), E(5, 1, b"x"), E(3, 1, b"x")], InvalidIndexError),
        ([E(5, 1, b"x")], InvalidIndexError),  # gap after last index 3
        ([E(3, 1, b"x")], InvalidIndexError),  # overlap: the core never replaces
        ([E(1, 1, b"x")], InvalidIndexError),
        ([E(4, 1, b"x" * 100), E(5, 1, b"x" * 101)], EntryTooLargeError),
        ([E(4, 1, b"x" * 101)], EntryTooLargeError),
    ]


@pytest.mark.parametrize("case", range(14))
def test_append_rejects_bad_batch_and_changes_nothing(core_module, case):
    batch, exc = _bad_batches(core_module)[case]
    buf, _, _ = build(sample_records(3))
    core, _, _ = new_core(core_module, buf=buf, max_payload=100)
    before = state(core, buf)
    with pytest.raises(exc):
        core.append(batch)
    assert state(core, buf) == before
    assert core.append(entries(core_module, 4, 1, term=2)) == 1  # still usable (record 3 has term 2)


def test_check_batch_errors(core_module):
    core = core_module.LogCore(100)
    E = core_module.Entry
    assert core.check_batch([E(7, 1, b"x"), E(8, 1, b"")]) == 7
    for batch, exc in _bad_batches(core_module):
        if exc is InvalidIndexError and len(batch) == 1:
            continue  # the position in the log is append's business
        with pytest.raises(exc):
            core.check_batch(batch)


def test_bad_entry_late_in_batch_writes_nothing(core_module):
    core, buf, _ = new_core(core_module, max_payload=50)
    batch = entries(core_module, 1, 5) + [core_module.Entry(6, 1, b"y" * 51)]
    before = state(core, buf)
    with pytest.raises(EntryTooLargeError):
        core.append(batch)
    assert state(core, buf) == before
    batch = entries(core_module, 1, 5) + [core_module.Entry(7, 1, b"")]
    with pytest.raises(InvalidIndexError):
        core.append(batch)
    assert state(core, buf) == before


@pytest.mark.parametrize("start,exc", [(-1, InvalidIndexError), (3, InvalidIndexError), (99, InvalidIndexError),
                                       ("0", EntryTypeError), (None, EntryTypeError)])
def test_append_bad_start(core_module, start, exc):
    core, buf, _ = new_core(core_module)
    before = state(core, buf)
    with pytest.raises(exc):
        core.append(entries(core_module, 1, 3), start)
    assert state(core, buf) == before


def test_append_rejects_other_implementations_entries(all_core_modules):
    if len(all_core_modules) < 2:
        pytest.skip("needs both cores")
    a, b = all_core_modules
    for writer, foreign in ((a, b), (b, a)):
        core, buf, _ = new_core(writer)
        before = state(core, buf)
        with pytest.raises(EntryTypeError):
            core.append([foreign.Entry(1, 1, b"x")])
        assert state(core, buf) == before


# ---------------------------------------------------------------------------
# truncate / zero / write_at
# ---------------------------------------------------------------------------


def test_truncate_middle(core_module):
    core, buf, _ = new_core(core_module)
    batch = entries(core_module, 1, 10, size=13)
    core.append(batch)
    _, _, old_end, _ = core.segment_info(0)
    frame_len = 32 + 16
    cut, end = core.truncate(7)
    assert (cut, end) == (DS + 6 * frame_len, old_end)
    assert core.segment_info(0) == (1, 6, cut, struct.unpack_from("<I", buf, DS + 5 * frame_len)[0])
    assert core.last_index() == 6
    assert core.get(7) is None and core.term_at(7) is None
    assert core.get_range(1, 10) == batch[:6]
    core.zero(0, cut, end)
    assert not any(buf[cut:])
    # New history after the cut chains onto record 6.
    new = [core_module.Entry(i, 2, b"new %d" % i) for i in range(7, 9)]
    assert core.append(new) == 2
    _, _, res = new_core(core_module, buf=bytearray(buf))
    assert (res.count, res.status) == (8, FL_ERR_ZERO)
    assert core.get_range(1, 8) == batch[:6] + new


def test_truncate_beyond_last_is_noop(core_module):
    core, buf, _ = new_core(core_module)
    core.append(entries(core_module, 1, 4))
    before = state(core, buf)
    end = core.segment_info(0)[2]
    assert core.truncate(5) == (end, end)
    assert core.truncate(U64_MAX) == (end, end)
    assert state(core, buf) == before


def test_truncate_whole_segment(core_module):
    a, _, crcs = build(sample_records(3))
    core, _, _ = new_core(core_module, buf=a)
    b = bytearray(SIZE)
    core.load_segment(b, 4, crcs[-1], DS)
    core.append(entries(core_module, 4, 5))
    old_end = core.segment_info(-1)[2]
    assert core.truncate(4) == (DS, old_end)
    assert core.segment_info(-1) == (4, 0, DS, crcs[-1])
    assert core.last_index() == 3
    core.zero(-1, DS, old_end)
    assert not any(b)
    assert core.append(entries(core_module, 4, 1, term=9)) == 1
    assert core.term_at(4) == 9


def test_truncate_before_last_segment_rejected(core_module):
    a, _, crcs = build(sample_records(3))
    core, _, _ = new_core(core_module, buf=a)
    b = bytearray(SIZE)
    core.load_segment(b, 4, crcs[-1], DS)
    core.append(entries(core_module, 4, 2))
    before = state(core, a, b)
    for index in (3, 1, 0):
        with pytest.raises(InvalidIndexError):
            core.truncate(index)
    assert state(core, a, b) == before


@pytest.mark.parametrize("index,exc", [(-1, InvalidIndexError), (1 << 64, InvalidIndexError),
                                       ("2", EntryTypeError), (2.0, EntryTypeError), (None, EntryTypeError)])
def test_truncate_bad_input(core_module, index, exc):
    core, buf, _ = new_core(core_module)
    core.append(entries(core_module, 1, 4))
    before = state(core, buf)
    with pytest.raises(exc):
        core.truncate(index)
    assert state(core, buf) == before


def test_zero_and_write_at_bounds(core_module):
    core, buf, _ = new_core(core_module)
    core.append(entries(core_module, 1, 3))
    end = core.segment_info(0)[2]
    before = state(core, buf)
    for start, stop in ((end, SIZE + 1), (-1, 10), (20, 10)):
        with pytest.raises(InvalidIndexError):
            core.zero(0, start, stop)
    with pytest.raises(InvalidIndexError):
        core.zero(0, DS, end)  # live records: truncate first
    with pytest.raises(InvalidIndexError):
        core.zero(0, end - 8, end + 8)
    with pytest.raises(InvalidIndexError):
        core.zero(1, end, SIZE)
    with pytest.raises(InvalidIndexError):
        core.write_at(0, SIZE - 2, b"abc")
    with pytest.raises(InvalidIndexError):
        core.write_at(0, -1, b"abc")
    with pytest.raises(InvalidIndexError):
        core.write_at(0, DS + 8, b"abc")  # inside a live record
    with pytest.raises(EntryTypeError):
        core.write_at(0, 0, "text")
    assert state(core, buf) == before
    core.write_at(0, 0, b"HEADER")
    core.write_at(-1, DS - 4, bytearray(b"\x01\x02\x03\x04"))
    assert buf[:6] == b"HEADER" and buf[DS - 4 : DS] == b"\x01\x02\x03\x04"
    buf[end:] = b"\xff" * (SIZE - end)
    core.zero(0, end, SIZE)
    core.zero(0, 0, 6)
    core.zero(0, end, end)
    assert not any(buf[end:]) and not any(buf[:6])
    assert core.get_range(1, 3) == entries(core_module, 1, 3)


# ---------------------------------------------------------------------------
# floor and reads
# ---------------------------------------------------------------------------


def test_floor(core_module):
    core, _, _ = new_core(core_module)
    batch = entries(core_module, 1, 6)
    core.append(batch)
    core.set_floor(3)
    assert core.first_index() == 3 and core.last_index() == 6
    assert core.get(2) is None and core.term_at(2) is None
    assert core.get(3) == batch[2] and core.term_at(3) == 1
    assert core.get_range(1, 4) == batch[2:4]
    core.set_floor(6)
    assert core.first_index() == 6 and core.get_range(0, 10) == [batch[5]]
    core.set_floor(7)
    assert core.first_index() == 0 and core.last_index() == 6
    assert core.get(6) is None and core.get_range(0, 100) == []
    core.set_floor(0)
    assert core.first_index() == 1 and core.get_range(0, 100) == batch
    with pytest.raises(InvalidIndexError):
        core.set_floor(-1)
    with pytest.raises(EntryTypeError):
        core.set_floor("3")
    assert core.first_index() == 1


def test_floor_applies_to_appended_entries(core_module):
    core, _, _ = new_core(core_module, first=10)
    core.set_floor(12)
    core.append(entries(core_module, 10, 4))
    assert core.first_index() == 12
    assert [e.index for e in core.get_range(0, 20)] == [12, 13]


def test_read_edges(core_module):
    core, _, _ = new_core(core_module, first=5)
    batch = entries(core_module, 5, 5)
    core.append(batch)
    assert core.get(0) is None and core.get(4) is None and core.get(10) is None
    assert core.get(U64_MAX) is None
    assert core.term_at(0) is None and core.term_at(10) is None
    assert core.get_range(5, 4) == []
    assert core.get_range(9, 5) == []
    assert core.get_range(7, 7) == [batch[2]]
    assert core.get_range(0, 6) == batch[:2]
    assert core.get_range(8, U64_MAX) == batch[3:]
    assert core.get_range(0, U64_MAX) == batch
    assert core.get_range(10, 20) == []
    assert core.get_range(0, 4) == []


@pytest.mark.parametrize("bad,exc", [(-1, InvalidIndexError), (1 << 64, InvalidIndexError),
                                     ("1", EntryTypeError), (1.0, EntryTypeError), (None, EntryTypeError),
                                     (b"1", EntryTypeError)])
def test_read_bad_input(core_module, bad, exc):
    core, _, _ = new_core(core_module)
    core.append(entries(core_module, 1, 3))
    with pytest.raises(exc):
        core.get(bad)
    with pytest.raises(exc):
        core.term_at(bad)
    with pytest.raises(exc):
        core.get_range(bad, 3)
    with pytest.raises(exc):
        core.get_range(1, bad)


def test_entries_read_are_independent_of_buffer(core_module):
    core, buf, _ = new_core(core_module)
    core.append(entries(core_module, 1, 2))
    e = core.get(1)
    (r,) = core.get_range(1, 1)
    payload = e.payload
    buf[DS + 32 : DS + 34] = b"##"
    assert e.payload == payload == r.payload and isinstance(payload, bytes)


# ---------------------------------------------------------------------------
# verification
# ---------------------------------------------------------------------------


def test_verify_reads_detects_damage(core_module):
    core, buf, _ = new_core(core_module, verify_reads=True)
    batch = entries(core_module, 1, 4, size=20)
    core.append(batch)
    assert core.get_range(1, 4) == batch
    off2 = DS + 56
    buf[off2 + 40] ^= 0x01  # a payload bit of record 2
    assert core.get(1) == batch[0]
    with pytest.raises(CorruptionError) as info:
        core.get(2)
    assert info.value.offset == off2
    with pytest.raises(CorruptionError):
        core.get_range(1, 4)
    buf[off2 + 40] ^= 0x01
    assert core.get(2) == batch[1]


def test_verify_segment(core_module):
    core, buf, _ = new_core(core_module)
    core.append(entries(core_module, 1, 6, size=13))
    end = core.segment_info(0)[2]
    assert core.verify_segment(0) == (FL_OK, end)
    assert core.verify_segment(-1) == (FL_OK, end)
    off3 = DS + 2 * 48
    buf[off3 + 37] ^= 0x80  # payload
    assert core.verify_segment(0) == (FL_ERR_CRC, off3)
    buf[off3 + 37] ^= 0x80
    buf[off3 + 8] ^= 0x02  # index field
    assert core.verify_segment(0) == (FL_ERR_INDEX, off3)
    buf[off3 + 8] ^= 0x02
    buf[off3 + 30] = 1  # a reserved byte
    assert core.verify_segment(0) == (FL_ERR_RESERVED, off3)
    buf[off3 + 30] = 0
    buf[off3 + 32 + 13] = 7  # padding is not covered by the crc
    assert core.verify_segment(0) == (FL_OK, end)


# ---------------------------------------------------------------------------
# both cores, one format
# ---------------------------------------------------------------------------


def test_cores_write_identical_bytes_and_read_each_other(all_core_modules):
    if len(all_core_modules) < 2:
        pytest.skip("needs both cores")
    a, b = all_core_modules
    specs = [(i, 1 + i // 7, payload_of(i, (i * 13) % 70), i % 3) for i in range(1, 40)]
    written = {}
    for mod in (a, b):
        core, buf, _ = new_core(mod, size=2048)
        batch = [mod.Entry(i, t, p, EntryKind(k)) for i, t, p, k in specs]
        n = core.append(batch)
        assert 0 < n < len(batch)
        core.truncate(20)
        written[mod.IMPLEMENTATION] = (bytes(buf), n, core.segment_info(0))
    (buf_a, n_a, info_a), (buf_b, n_b, info_b) = written.values()
    assert buf_a == buf_b and n_a == n_b and info_a == info_b
    # Each reads what the other wrote, and continues the chain for the other.
    for reader, writer in ((a, b), (b, a)):
        core, buf, res = new_core(writer, size=2048)
        core.append([writer.Entry(i, t, p, EntryKind(k)) for i, t, p, k in specs[:10]])
        other, obuf, ores = new_core(reader, buf=bytearray(buf))
        assert (ores.count, ores.status) == (10, FL_ERR_ZERO)
        assert [as_tuple(e) for e in other.get_range(1, 10)] == [as_tuple(e) for e in core.get_range(1, 10)]
        assert other.append([reader.Entry(i, t, p, EntryKind(k)) for i, t, p, k in specs[10:15]]) == 5
        back, _, bres = new_core(writer, buf=bytearray(obuf))
        assert (bres.count, bres.status) == (15, FL_ERR_ZERO)
        assert [as_tuple(e) for e in back.get_range(1, 15)] == [(i, t, k, p) for i, t, p, k in specs[:15]]


def test_cores_agree_on_crafted_damage(all_core_modules):
    if len(all_core_modules) < 2:
        pytest.skip("needs both cores")
    base, offsets, _ = build(sample_records(6, size=21), size=512)
    cases = []
    for off in offsets + [offsets[-1] + 64, 500, 505]:
        for pos in range(0, 33, 3):
            if off + pos < len(base):
                cases.append((off + pos, 0xFF))
    for where, value in cases:
        buf = bytearray(base)
        buf[where] = value
        results = []
        for mod in all_core_modules:
            core, _, res = new_core(mod, buf=bytearray(buf))
            results.append((scan_tuple(res), core.verify_segment(0)))
        assert results[0] == results[1], where


# ---------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------

_entry_specs = st.lists(
    st.tuples(st.integers(min_value=0, max_value=3), st.sampled_from([0, 1, 2]), st.binary(max_size=300)),
    min_size=1,
    max_size=12,
)
_steps = st.lists(st.one_of(_entry_specs, st.integers(min_value=0, max_value=30)), min_size=1, max_size=8)


@given(steps=_steps, size=st.sampled_from([512, 1024, 4096]), first=st.integers(min_value=1, max_value=1 << 40))
def test_random_batches_read_back(core_module, steps, size, first):
    """Batches (lists) and truncations (ints: how many of the last entries to
    drop, within the last segment) against a plain list model."""
    mod = core_module
    core = mod.LogCore(MAX_PAYLOAD)
    bufs = [bytearray(size)]
    core.load_segment(bufs[0], first, 0, DS)
    model: List[Any] = []
    term = 1
    for step in steps:
        if isinstance(step, int):
            seg_first, count, _, _ = core.segment_info(-1)
            drop = min(step, count)
            index = seg_first + count - drop
            cut, old_end = core.truncate(index)
            core.zero(-1, cut, old_end)
            del model[len(model) - drop :]
            continue
        start = first + len(model)
        batch = []
        for i, (dterm, kind, payload) in enumerate(step):
            term += dterm
            batch.append(mod.Entry(start + i, term, payload, EntryKind(kind)))
        pos = 0
        while pos < len(batch):
            new = core.append(batch, pos)
            if new == pos:
                seg_first, count, _, last_crc = core.segment_info(-1)
                bufs.append(bytearray(size))
                core.load_segment(bufs[-1], seg_first + count, last_crc, DS)
            pos = new
        model.extend(batch)
    last = first + len(model) - 1
    assert core.last_index() == (last if model else 0)
    assert core.get_range(first, last) == model
    assert [core.get(e.index) for e in model] == model
    assert [core.term_at(e.index) for e in model] == [e.term for e in model]
    # A fresh core reading the same buffers rebuilds exactly the same state.
    fresh = mod.LogCore(MAX_PAYLOAD)
    for pos, buf in enumerate(bufs):
        seg_first, _, _, _ = core.segment_info(pos)
        seed = core.segment_info(pos - 1)[3] if pos else 0
        res = fresh.load_segment(bytearray(buf), seg_first, seed, DS)
        assert res.status == FL_ERR_ZERO and not res.nonzero_after
        assert fresh.segment_info(pos) == core.segment_info(pos)
        assert fresh.verify_segment(pos) == (FL_OK, res.end)
    assert fresh.get_range(0, U64_MAX) == model


_payloads = st.lists(st.binary(max_size=40), min_size=1, max_size=8)


@given(payloads=_payloads, pick=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7))
def test_bit_flip_in_a_record_is_detected(core_module, payloads, pick, bit):
    records = [(1 + i // 3, i % 3, p) for i, p in enumerate(payloads)]
    buf, offsets, crcs = build(records, size=DS + sum(32 + 8 + len(p) for p in payloads))
    # Every byte a record's checksum covers (header and payload; not padding).
    covered = [(k, off + j) for k, off in enumerate(offsets) for j in range(32 + len(payloads[k]))]
    k, where = covered[pick % len(covered)]
    buf[where] ^= 1 << bit
    core, _, res = new_core(core_module, buf=buf)
    assert res.count == k
    assert res.end == offsets[k]
    assert res.last_crc == (crcs[k - 1] if k else 0)
    assert res.status in ERRORS
    assert res.nonzero_after
    assert [as_tuple(e) for e in core.get_range(0, U64_MAX)] == [(i + 1, t, kd, p) for i, (t, kd, p) in enumerate(records[:k])]


@given(payloads=_payloads, pick=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7),
       slack=st.integers(min_value=0, max_value=100))
def test_bit_flip_after_the_records_is_seen(core_module, payloads, pick, bit, slack):
    records = [(1, 1, p) for p in payloads]
    end = DS + sum(32 + ((len(p) + 7) & ~7) for p in payloads)
    buf, _, _ = build(records, size=end + 1 + slack)
    where = end + pick % (len(buf) - end)
    buf[where] ^= 1 << bit
    _, _, res = new_core(core_module, buf=buf)
    assert res.count == len(payloads) and res.end == end
    assert res.nonzero_after
    if where < end + REC_HEADER_SIZE:
        assert res.status in ERRORS
    else:
        assert res.status == FL_ERR_ZERO


@given(payloads=_payloads, damage=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=6))
def test_random_damage_never_escapes(core_module, payloads, damage):
    records = [(1, 1, p) for p in payloads]
    buf, offsets, _ = build(records, size=DS + 64 + sum(32 + 8 + len(p) for p in payloads))
    span = len(buf) - DS
    first_damage = len(buf)
    for pos, value in damage:
        where = DS + pos % span
        if buf[where] != value:
            buf[where] = value
            first_damage = min(first_damage, where)
    core, _, res = new_core(core_module, buf=buf)
    assert res.status in ERRORS + (FL_ERR_ZERO,)
    intact = sum(1 for k, off in enumerate(offsets) if off + 32 + ((len(payloads[k]) + 7) & ~7) <= first_damage)
    assert intact <= res.count <= len(payloads)
    assert [as_tuple(e) for e in core.get_range(0, U64_MAX)] == [(i + 1, 1, 1, p) for i, p in enumerate(payloads[: res.count])]
    assert core.verify_segment(0) == (FL_OK, res.end)

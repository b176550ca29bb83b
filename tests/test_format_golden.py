"""Golden segment file of on-disk format v1 (docs/format.md).

tests/golden/segment_v1.seg is a complete 8 KiB segment holding entries 1..5;
tests/golden/segment_v1.json is its decoded content.  Every core must decode
the file to exactly that content, and encoding the same entries must give the
file back byte for byte, so a change to the format cannot slip in unnoticed.

The segment header is built here from the table in docs/format.md, on purpose
without fastlog's own header code, which is checked against it.

Regenerate (only together with a format version bump):
``python tests/test_format_golden.py``.
"""
from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any, Dict, List

import pytest

from fastlog._core_api import FL_ERR_ZERO, FL_OK, FORMAT_VERSION, SEG_DATA_START, SEG_HEADER_SIZE, SEG_MAGIC
from fastlog._types import EntryKind
from reference_crc import ref_crc32c

GOLDEN = Path(__file__).resolve().parent / "golden"
SEGMENT_FILE = GOLDEN / "segment_v1.seg"
EXPECTED_FILE = GOLDEN / "segment_v1.json"

SEGMENT_SIZE = 8192
GENERATION = 1
FIRST_INDEX = 1
PREV_CRC = 0

# (index, term, kind, payload): every kind, an empty payload, payloads needing
# 0..7 padding bytes, binary bytes and one long enough to exercise block CRC code.
ENTRIES = [
    (1, 1, EntryKind.NOOP, b""),
    (2, 1, EntryKind.COMMAND, b"set x=1"),
    (3, 2, EntryKind.CONFIG, b'{"voters":[1,2,3],"learners":[]}'),
    (4, 2, EntryKind.COMMAND, bytes(range(0, 256, 3))),
    (5, 7, EntryKind.COMMAND, b"\x00\xff" * 100 + b"end"),
]

# Segment header fields (docs/format.md, "Segment header"): bytes 0..60, then a CRC.
_SEG_HEADER_BODY = struct.Struct("<8sIIQQIIQ12s")


def build_segment_header(*, generation: int, first_index: int, prev_crc: int, synced_end: int,
                         data_start: int = SEG_DATA_START, flags: int = 0) -> bytes:
    """The 64-byte segment header, straight from the table in docs/format.md."""
    body = _SEG_HEADER_BODY.pack(b"FLOGSEG1", 1, data_start, generation, first_index, prev_crc, flags,
                                 synced_end, bytes(12))
    assert len(body) == 60
    return body + struct.pack("<I", ref_crc32c(body))


def parse_segment_header(raw: bytes) -> Dict[str, Any]:
    magic, version, data_start, generation, first_index, prev_crc, flags, synced_end, reserved = (
        _SEG_HEADER_BODY.unpack_from(raw, 0)
    )
    (crc,) = struct.unpack_from("<I", raw, 60)
    return {
        "magic": magic.decode("ascii"),
        "version": version,
        "data_start": data_start,
        "generation": generation,
        "first_index": first_index,
        "prev_crc": prev_crc,
        "flags": flags,
        "synced_end": synced_end,
        "reserved_zero": reserved == bytes(12),
        "crc": crc,
        "crc_ok": crc == ref_crc32c(raw[:60]),
    }


def encode_segment(mod: Any) -> bytes:
    """The golden segment as written by core module ``mod``."""
    buf = bytearray(SEGMENT_SIZE)
    core = mod.LogCore(1 << 20)
    res = core.load_segment(buf, FIRST_INDEX, PREV_CRC, SEG_DATA_START)
    assert res.count == 0 and res.status == FL_ERR_ZERO
    batch = [mod.Entry(i, t, p, k) for i, t, k, p in ENTRIES]
    assert core.append(batch) == len(batch)
    _, _, end, _ = core.segment_info(0)
    header = build_segment_header(generation=GENERATION, first_index=FIRST_INDEX, prev_crc=PREV_CRC, synced_end=end)
    core.write_at(0, 0, header)
    core.drop_last_segment()
    return bytes(buf)


def decode_segment(mod: Any, raw: bytes) -> Dict[str, Any]:
    """Everything a core can tell about the golden segment, as JSON-able data."""
    header = parse_segment_header(raw)
    core = mod.LogCore(1 << 20)
    res = core.load_segment(bytearray(raw), header["first_index"], header["prev_crc"], header["data_start"])
    entries: List[Dict[str, Any]] = []
    for e in core.get_range(0, (1 << 64) - 1):
        entries.append({"index": e.index, "term": e.term, "kind": EntryKind(e.kind).name, "payload_hex": e.payload.hex()})
    records = []
    off = header["data_start"]
    for _ in range(res.count):
        crc, length = struct.unpack_from("<II", raw, off)
        records.append({"offset": off, "length": length, "crc": crc})
        off += 32 + ((length + 7) & ~7)
    return {
        "format_version": FORMAT_VERSION,
        "segment_size": len(raw),
        "header": header,
        "scan": {
            "count": res.count,
            "end": res.end,
            "last_crc": res.last_crc,
            "status": res.status,
            "nonzero_after": bool(res.nonzero_after),
        },
        "verify": list(core.verify_segment(0)),
        "entries": entries,
        "records": records,
        "terms": [core.term_at(i) for i in range(FIRST_INDEX, FIRST_INDEX + res.count)],
    }


def _expected() -> Dict[str, Any]:
    return json.loads(EXPECTED_FILE.read_text())


def test_golden_file_is_the_recorded_one():
    raw = SEGMENT_FILE.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == _expected()["sha256"]
    assert len(raw) == SEGMENT_SIZE


def test_golden_header_follows_the_format():
    raw = SEGMENT_FILE.read_bytes()
    header = parse_segment_header(raw)
    assert header == _expected()["decoded"]["header"]
    assert header["magic"].encode() == SEG_MAGIC and header["version"] == FORMAT_VERSION == 1
    assert header["crc_ok"] and header["reserved_zero"] and header["flags"] == 0
    assert header["data_start"] == SEG_DATA_START
    assert (header["generation"], header["first_index"], header["prev_crc"]) == (GENERATION, FIRST_INDEX, PREV_CRC)
    assert not any(raw[SEG_HEADER_SIZE:SEG_DATA_START])  # rest of the header page is zero


def test_golden_records_follow_the_format():
    # Independent of any core: walk the frames as docs/format.md describes them.
    raw = SEGMENT_FILE.read_bytes()
    off, seed = SEG_DATA_START, PREV_CRC
    for index, term, kind, payload in ENTRIES:
        crc, length, idx, trm, knd = struct.unpack_from("<IIQQB", raw, off)
        assert (length, idx, trm, knd) == (len(payload), index, term, int(kind))
        assert raw[off + 25 : off + 32] == bytes(7)
        assert raw[off + 32 : off + 32 + length] == payload
        end = off + 32 + ((length + 7) & ~7)
        assert raw[off + 32 + length : end] == bytes(end - off - 32 - length)
        assert crc == ref_crc32c(raw[off + 4 : off + 32 + length], seed)
        off, seed = end, crc
    assert not any(raw[off:])
    assert parse_segment_header(raw)["synced_end"] == off


def test_cores_decode_golden_file(core_module):
    raw = SEGMENT_FILE.read_bytes()
    decoded = decode_segment(core_module, raw)
    expected = _expected()["decoded"]
    assert decoded == expected
    assert decoded["scan"]["status"] == FL_ERR_ZERO and decoded["verify"][0] == FL_OK
    assert [(e["index"], e["term"], e["kind"], bytes.fromhex(e["payload_hex"])) for e in decoded["entries"]] == [
        (i, t, k.name, p) for i, t, k, p in ENTRIES
    ]


def test_cores_reencode_golden_file(core_module):
    assert encode_segment(core_module) == SEGMENT_FILE.read_bytes()


def test_log_header_builder_matches_format():
    """fastlog's own segment header encoder must produce the documented bytes."""
    segment = pytest.importorskip("fastlog.segment")
    encode = getattr(segment, "encode_segment_header", None)
    header_type = getattr(segment, "SegmentHeader", None)
    if encode is None or header_type is None:
        pytest.skip("fastlog.segment has no header encoder")
    from fastlog import _pycore

    raw = SEGMENT_FILE.read_bytes()
    h = parse_segment_header(raw)
    ours = encode(
        header_type(generation=h["generation"], first_index=h["first_index"], prev_crc=h["prev_crc"],
                    synced_end=h["synced_end"]),
        _pycore.crc32c,
    )
    assert bytes(ours) == raw[:SEG_HEADER_SIZE]
    for fields in (dict(generation=7, first_index=12345, prev_crc=0xDEADBEEF, synced_end=4096 + 800),
                   dict(generation=(1 << 64) - 1, first_index=(1 << 64) - 1, prev_crc=0xFFFFFFFF, synced_end=1 << 40)):
        assert bytes(encode(header_type(**fields), _pycore.crc32c)) == build_segment_header(**fields)


def regenerate() -> None:
    from fastlog import _pycore

    raw = encode_segment(_pycore)
    GOLDEN.mkdir(exist_ok=True)
    SEGMENT_FILE.write_bytes(raw)
    expected = {
        "description": "fastlog segment format v1: entries 1..5, generation 1, prev_crc 0, synced_end = end",
        "sha256": hashlib.sha256(raw).hexdigest(),
        "decoded": decode_segment(_pycore, raw),
    }
    EXPECTED_FILE.write_text(json.dumps(expected, indent=2) + "\n")


if __name__ == "__main__":
    regenerate()

"""One segment file: its header codec and the handles fastlog keeps open for it.

The layout is in docs/format.md ("Segment header").
"""
from __future__ import annotations

import mmap
import os
import re
import struct
from dataclasses import dataclass
from typing import Optional

from ._core_api import FORMAT_VERSION, SEG_DATA_START, SEG_HEADER_SIZE, SEG_MAGIC
from .errors import CorruptionError

__all__ = [
    "SegmentHeader",
    "encode_segment_header",
    "decode_segment_header",
    "segment_name",
    "parse_segment_name",
    "Segment",
    "MAX_SEGMENT_SIZE",
]

# magic, version, data start, generation, first index, prev_crc, flags, synced_end, 12 reserved bytes
_HEADER = struct.Struct("<8sIIQQIIQ12x")
_CRC = struct.Struct("<I")
assert _HEADER.size + _CRC.size == SEG_HEADER_SIZE
_NAME_RE = re.compile(r"^(\d{20})\.seg$")
_PAGE = 4096

#: The largest segment a log creates or opens.  A segment is preallocated
#: whole when it is created and mapped whole while it is attached, so its size
#: is disk space, memory mappings and address space held for as long as the log
#: is open; 4 GiB is 64 times the default.  A file larger than this (a damaged
#: size, e.g. extended sparsely to a terabyte) is not taken for a segment.
MAX_SEGMENT_SIZE = 1 << 32


@dataclass(frozen=True)
class SegmentHeader:
    generation: int
    first_index: int
    prev_crc: int
    synced_end: int
    data_start: int = SEG_DATA_START
    flags: int = 0


def segment_name(first_index: int) -> str:
    return f"{first_index:020d}.seg"


def parse_segment_name(name: str) -> Optional[int]:
    m = _NAME_RE.match(name)
    return int(m.group(1)) if m else None


def encode_segment_header(h: SegmentHeader, crc32c) -> bytes:
    body = _HEADER.pack(
        SEG_MAGIC, FORMAT_VERSION, h.data_start, h.generation, h.first_index, h.prev_crc, h.flags, h.synced_end
    )
    return body + _CRC.pack(crc32c(body))


def decode_segment_header(raw: bytes, crc32c, path: str) -> SegmentHeader:
    """Parse and verify a header; raise CorruptionError naming the bad field's offset."""
    if len(raw) < SEG_HEADER_SIZE:
        raise CorruptionError("segment is shorter than its header", path, len(raw))
    body = bytes(raw[: _HEADER.size])
    magic, version, data_start, generation, first_index, prev_crc, flags, synced_end = _HEADER.unpack(body)
    if magic != SEG_MAGIC:
        raise CorruptionError("bad segment magic", path, 0)
    (stored,) = _CRC.unpack_from(raw, _HEADER.size)
    if crc32c(body) != stored:
        raise CorruptionError("segment header checksum mismatch", path, _HEADER.size)
    if version != FORMAT_VERSION:
        raise CorruptionError(f"unsupported segment format version {version}", path, 8)
    if data_start != SEG_DATA_START:
        raise CorruptionError(f"unexpected data start {data_start}", path, 12)
    if synced_end < data_start:
        raise CorruptionError(f"synced_end {synced_end} below data start", path, 40)
    return SegmentHeader(generation, first_index, prev_crc, synced_end, data_start, flags)


class Segment:
    """Open handles and bookkeeping of one attached segment file."""

    __slots__ = (
        "path",
        "fd",
        "mm",
        "size",
        "header",
        "claim_written",
        "claim_synced",
        "dirty",
        "header_dirty",
        "epoch",
    )

    def __init__(self, path: str, fd: int, mm: mmap.mmap, size: int, header: SegmentHeader):
        self.path = path
        self.fd = fd
        self.mm = mm
        self.size = size
        self.header = header
        # synced_end as written into the mapping / as known to be on disk.
        self.claim_written = header.synced_end
        self.claim_synced = header.synced_end
        self.dirty = False  # records written since the last fdatasync
        self.header_dirty = False  # header changed since the last fdatasync
        self.epoch = 0  # bumped by every truncation, so a flush in flight can tell

    @property
    def first_index(self) -> int:
        return self.header.first_index

    def claim_on_disk_at_most(self) -> int:
        """The largest synced_end a crash could leave on disk."""
        return max(self.claim_written, self.claim_synced)

    def close(self) -> None:
        # The core's zeroer lets go of this file when the core drops the
        # segment, which callers do first (LogCore.drop_*_segment).
        if self.fd < 0:
            return
        try:
            self.mm.close()
        finally:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1

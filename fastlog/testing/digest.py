"""Content digests of a log: proof that an engine stored exactly the right data.

The digest is XXH3-128 (the ``xxhash`` package) over, for each entry in order::

    index u64 | term u64 | kind u8 | payload length u64 | payload bytes

(integers little-endian), written as 32 lowercase hex digits.  Two logs have
the same digest exactly when they hold the same entries in the same order, so
a benchmark can read back what every engine stored and compare one string.
"""
from __future__ import annotations

import struct
from typing import Any, Iterable, Optional

import xxhash

__all__ = ["EntryDigest", "digest", "digest_log_store"]

_HEADER = struct.Struct("<QQBQ")


class EntryDigest:
    """An incremental digest: feed entries in order with :meth:`update`."""

    __slots__ = ("_hash", "count")

    def __init__(self, entries: Optional[Iterable[Any]] = None):
        self._hash = xxhash.xxh3_128()
        self.count = 0
        if entries is not None:
            self.update(entries)

    def update(self, entries: Iterable[Any]) -> "EntryDigest":
        h = self._hash
        pack = _HEADER.pack
        n = 0
        for e in entries:
            payload = e.payload
            h.update(pack(e.index, e.term, int(e.kind), len(payload)))
            h.update(payload)
            n += 1
        self.count += n
        return self

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def digest(entries: Iterable[Any]) -> str:
    """XXH3-128 hex digest of ``entries`` (index, term, kind, payload of each, in order)."""
    return EntryDigest(entries).hexdigest()


def digest_log_store(store: Any, start: int = 1, end: Optional[int] = None, chunk: int = 10_000) -> str:
    """Digest of every entry a LogStore holds in ``start..end`` (default: up to ``last_index()``).

    Reads with ``get_entries`` in chunks of ``chunk`` indexes, so a large log
    is never materialised at once.
    """
    if end is None:
        end = store.last_index()
    d = EntryDigest()
    lo = max(start, 0)
    while lo <= end:
        hi = min(lo + chunk - 1, end)
        d.update(store.get_entries(lo, hi))
        lo = hi + 1
    return d.hexdigest()

"""The benchmark's data: deterministic entries, built once per entry class.

Every engine receives the same payloads, indexes, terms and kinds, so one
expected digest describes what every engine must hand back.  Entries are
built before any timing starts: the timed loops only pass ready objects in.
"""
from __future__ import annotations

import random
from typing import Any, Dict, List, Optional, Sequence

from .._types import EntryKind

__all__ = ["Dataset", "digest_entries"]

#: A new term every this many entries (terms change rarely in a healthy cluster).
TERM_SPAN = 10_000
#: Every this many-th entry is a CONFIG entry, so a digest also checks kinds.
CONFIG_EVERY = 997


def digest_entries(entries: Sequence[Any]) -> str:
    """The xxh3-128 content digest of ``entries`` (see :mod:`fastlog.testing.digest`)."""
    from ..testing.digest import digest

    return digest(entries)


def term_of(index: int) -> int:
    return 1 + (index - 1) // TERM_SPAN


def kind_of(index: int) -> EntryKind:
    return EntryKind.CONFIG if index % CONFIG_EVERY == 0 else EntryKind.COMMAND


#: Bytes drawn from the generator at a time: ``randbytes`` takes at most
#: 2**31 - 1 bits in one call, and a 10M-entry dataset is far more than that.
_DRAW_BYTES = 1 << 26


def _random_payloads(rng: random.Random, count: int, entry_size: int) -> List[bytes]:
    """``count`` payloads of ``entry_size`` bytes, sliced from draws of whole payloads."""
    if entry_size == 0:
        return [b""] * count
    per_draw = max(1, _DRAW_BYTES // entry_size)
    payloads: List[bytes] = []
    for first in range(0, count, per_draw):
        n = min(per_draw, count - first)
        blob = rng.randbytes(n * entry_size)
        payloads.extend(blob[i * entry_size:(i + 1) * entry_size] for i in range(n))
    return payloads


class Dataset:
    """``count`` entries with indexes ``first .. first + count - 1``.

    Payloads are ``entry_size`` pseudo-random bytes from a fixed seed, stored
    once and shared by the entries of every entry class.
    """

    def __init__(self, count: int, entry_size: int, seed: int, first: int = 1):
        if count < 0 or entry_size < 0:
            raise ValueError("count and entry_size must not be negative")
        self.count = count
        self.entry_size = entry_size
        self.first = first
        self.payloads: List[bytes] = _random_payloads(random.Random(seed), count, entry_size)
        self._entries: Dict[type, List[Any]] = {}
        self._digests: Dict[tuple, str] = {}

    @property
    def last(self) -> int:
        return self.first + self.count - 1

    def entries(self, entry_class: type) -> List[Any]:
        """All entries as ``entry_class`` objects (built on first use, then cached)."""
        built = self._entries.get(entry_class)
        if built is None:
            first = self.first
            built = [
                entry_class(index, term_of(index), payload, kind_of(index))
                for index, payload in zip(range(first, first + self.count), self.payloads)
            ]
            self._entries[entry_class] = built
        return built

    def batches(self, entry_class: type, batch_size: int) -> List[List[Any]]:
        entries = self.entries(entry_class)
        return [entries[i:i + batch_size] for i in range(0, len(entries), batch_size)]

    def slice(self, entry_class: type, lo: int, hi: int) -> List[Any]:
        """Entries with indexes ``lo..hi`` inclusive (clamped to the dataset)."""
        lo = max(lo, self.first)
        hi = min(hi, self.last)
        if lo > hi:
            return []
        entries = self.entries(entry_class)
        return entries[lo - self.first:hi - self.first + 1]

    def _any_entries(self) -> List[Any]:
        for built in self._entries.values():
            return built
        from .._types import PyEntry

        return self.entries(PyEntry)

    def pick(self, indexes: Sequence[int]) -> List[Any]:
        """The entries at ``indexes``, in that order (of whichever entry class is built)."""
        entries, first = self._any_entries(), self.first
        return [entries[i - first] for i in indexes]

    def digest(self, lo: int, hi: int, entry_class: Optional[type] = None) -> str:
        """Expected digest of the entries ``lo..hi`` (cached)."""
        key = (lo, hi)
        value = self._digests.get(key)
        if value is None:
            if entry_class is not None:
                entries = self.slice(entry_class, lo, hi)
            else:
                lo, hi = max(lo, self.first), min(hi, self.last)
                entries = self._any_entries()[lo - self.first:hi - self.first + 1] if lo <= hi else []
            value = digest_entries(entries)
            self._digests[key] = value
        return value

    def drop_entries(self) -> None:
        """Forget the built entry objects (payloads stay)."""
        self._entries.clear()


class PayloadPool:
    """Payloads for logs too large to keep in memory (the recovery-scale workload).

    Entry ``i`` gets payload ``pool[(i * 7919) % size]``: deterministic from
    the seed, so a child process can rebuild any entry without the parent's
    data, while neighbouring entries still differ.
    """

    STRIDE = 7919  # a prime: consecutive indexes land far apart in the pool

    def __init__(self, entry_size: int, seed: int, size: int = 4096):
        blob = random.Random(seed).randbytes(size * entry_size)
        self.payloads: List[bytes] = [blob[i * entry_size:(i + 1) * entry_size] for i in range(size)]

    def payload(self, index: int) -> bytes:
        return self.payloads[(index * self.STRIDE) % len(self.payloads)]

    def batch(self, entry_class: type, first: int, count: int) -> List[Any]:
        """Entries ``first .. first + count - 1`` as ``entry_class`` objects."""
        payloads, stride, size = self.payloads, self.STRIDE, len(self.payloads)
        return [
            entry_class(i, term_of(i), payloads[(i * stride) % size], kind_of(i))
            for i in range(first, first + count)
        ]

"""Helpers shared by the benchmarks (sizes, data, the batch feeder)."""
from __future__ import annotations

import random
from typing import Callable, List

from fastlog._types import EntryKind

#: Payload size of every benchmark entry, as in the targets.
ENTRY_SIZE = 256
#: Entries per append batch.
BATCH_SIZE = 1000
#: Entries per durable batch.
DURABLE_BATCH = 64
#: Entries per range read.
RANGE_SIZE = 10_000
#: Single reads per benchmark call (one read alone is too short to time well).
READS_PER_CALL = 1000
#: Concurrent writers in the group-commit benchmarks.
WRITERS = 64
#: When an append benchmark's log grows past this, it is reset (outside the timing).
RESET_AFTER = 200_000


def make_payloads(count: int, seed: int = 7) -> List[bytes]:
    blob = random.Random(seed).randbytes(count * ENTRY_SIZE)
    return [blob[i * ENTRY_SIZE:(i + 1) * ENTRY_SIZE] for i in range(count)]


def make_entries(entry_class: type, first: int, count: int, payloads: List[bytes]) -> list:
    """``count`` entries from index ``first``, term 1, cycling through ``payloads``."""
    n = len(payloads)
    return [entry_class(first + i, 1, payloads[(first + i) % n], EntryKind.COMMAND) for i in range(count)]


def random_indexes(count: int, high: int, seed: int = 11) -> List[int]:
    rng = random.Random(seed)
    return [rng.randint(1, high) for _ in range(count)]


class Appender:
    """Feeds consecutive batches to an append function, resetting the log when it grows large.

    ``setup()`` (untimed, for ``benchmark.pedantic``) builds the next batch and
    resets the log first when needed; the timed call only appends.
    """

    def __init__(self, entry_class: type, payloads: List[bytes], batch_size: int, reset: Callable[[], None]) -> None:
        self.entry_class = entry_class
        self.payloads = payloads
        self.batch_size = batch_size
        self.reset = reset
        self.next_index = 1

    def setup(self):
        if self.next_index > RESET_AFTER:
            self.reset()
            self.next_index = 1
        batch = make_entries(self.entry_class, self.next_index, self.batch_size, self.payloads)
        self.next_index += self.batch_size
        return (batch,), {}

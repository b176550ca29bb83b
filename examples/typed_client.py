"""A small client of fastlog's documented API, written to pass ``mypy --strict``.

``make typecheck`` checks it, so the public API keeps its types: entries,
log ids, hard state, the synchronous ``Log`` and the asyncio engine.
Run it with ``python examples/typed_client.py [DIRECTORY]``.
"""
from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from typing import Iterator, List, Optional

import fastlog
from fastlog import Entry, EntryKind, HardState, LogId, VotedFor
from fastlog.errors import EntryNotFoundError, FastlogError


def commands(first: int, count: int, term: int) -> List[Entry]:
    return [Entry(index=i, term=term, payload=b"set x %d" % i) for i in range(first, first + count)]


def sync_part(directory: str) -> int:
    with fastlog.Log(directory) as log:
        log.append(commands(1, 100, term=1))
        log.append([Entry(index=101, term=2, payload=b"", kind=EntryKind.NOOP)])
        durable: int = log.flush()
        first: Optional[Entry] = log.entry(1)
        assert first is not None and first.payload == b"set x 1"
        middle: List[Entry] = log.get_entries(40, 49)
        assert [e.index for e in middle] == list(range(40, 50))
        assert len(log) == 101 and log[101].kind == EntryKind.NOOP
        window: List[Entry] = log[10:20]
        assert window[0].index == 10 and window[-1].index == 19
        try:
            log[500]
        except EntryNotFoundError:
            pass
        streamed: Iterator[Entry] = log.iter_entries(1, 101, chunk=16)
        total = sum(len(e.payload) for e in streamed)
        assert total == sum(len(e.payload) for e in log)
        log.purge(LogId(index=50, term=1))
        boundary: Optional[LogId] = log.purge_boundary()
        assert boundary is not None and boundary.index == 50
        last_term: Optional[int] = log.term_at(log.last_index())
        assert last_term == 2
        return durable


async def async_part(directory: str) -> Optional[HardState]:
    async with fastlog.open(directory, sync="none") as engine:
        logs, meta = engine.log_store(), engine.meta_store()
        start = logs.last_index() + 1
        await logs.persist_entries(commands(start, 10, term=2))
        await logs.flush_async()
        got: Optional[Entry] = await logs.entry(start)
        assert got is not None and got.term == 2
        batch: List[Entry] = logs.get_entries(start, start + 9)
        assert len(batch) == 10
        seen = 0
        async for entry in logs.stream_entries(start, chunk=4):
            seen += entry.index >= start
        assert seen == 10
        await logs.replace_range(start + 5, commands(start + 5, 2, term=3))
        await logs.truncate(start + 7)
        durable: bool = logs.is_write_durable()
        assert not durable
        meta.save_hard_state(HardState(current_term=3, voted_for=VotedFor(voted_for_id=2, voted_for_term=3)))
        await meta.flush_async()
        return meta.load_hard_state()


def main(argv: List[str]) -> int:
    directory = argv[1] if len(argv) > 1 else os.path.join(tempfile.mkdtemp(prefix="fastlog-typed-"), "log")
    try:
        durable = sync_part(directory)
        state = asyncio.run(async_part(directory))
    except FastlogError as exc:
        print(f"fastlog failed: {exc}", file=sys.stderr)
        return 1
    print(f"durable up to {durable}; hard state {state}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

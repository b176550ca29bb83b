"""The line protocol between a writing child and the parent that checks it.

A child says every operation *before* it starts and every acknowledgement
*after* the call that makes it durable returned; the parent replays those lines
into the model of crashsim.py.  The kill test (tests/test_kill.py) and the
power-cut suite (tests/powercut/) both speak it, so both sides live here:

``A start n term salt size``  append (or replacing append) of n entries
``T index``                   truncate from index
``P index term``              purge up to index
``R``                         reset
``H term vote``               save a hard state (durable when the call returns)
``F``                         everything announced so far is durable
``F k``                       the first k operations announced are durable (group commit)

``LogWriter`` (the synchronous ``Log``) and ``EngineWriter`` (the asyncio
engine) are the child side: each method does one operation and says it; the
callers keep their own mix of operations.
``replay`` is the parent side.
"""
from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from crashsim import LogModel, payload_for

Say = Callable[[str], None]


def say_on_stdout(line: str) -> None:
    """One protocol line on file descriptor 1, in a single write so a kill never splits it."""
    os.write(1, (line + "\n").encode())


def hard_state(term: int, vote: int | None) -> Any:
    from fastlog import HardState, VotedFor

    return HardState(current_term=term, voted_for=None if vote is None else VotedFor(voted_for_id=vote, voted_for_term=term))


class LogWriter:
    """A ``Log`` and its ``FileMetaStore`` driven by a child, every operation said first.

    ``begin()`` is called once per loop turn: it reads the bounds the choices
    depend on (``first``, ``last``, ``low`` = the first index a purge left
    writable) and moves the payload salt, so replayed payloads are unique.
    """

    def __init__(self, say: Say, path: str, seed: int, sync: str, implementation: str | None, segment_size: int) -> None:
        import fastlog
        from fastlog.meta import FileMetaStore

        self.say, self.sync = say, sync
        self.log = fastlog.Log(path, segment_size=segment_size, sync=sync, implementation=implementation)
        self.meta = FileMetaStore(path)
        hs = self.meta.load_hard_state()
        self.hs_term = hs.current_term if hs else 0
        self.term = max(self.log.term_at(self.log.last_index()) or 0, 1)
        self.salt = seed * 1000003
        self.first = self.last = 0
        self.low = 1

    def begin(self) -> None:
        self.last, self.first = self.log.last_index(), self.log.first_index()
        b = self.log.purge_boundary()
        self.low = (b.index if b else 0) + 1
        self.salt += 1

    def _acknowledge_if_synced(self) -> None:
        if self.sync == "always":
            self.say("F")

    def append(self, start: int, n: int, size: int) -> None:
        term, salt = self.term, self.salt
        self.say(f"A {start} {n} {term} {salt} {size}")
        self.log.append([self.log.Entry(index=start + i, term=term, payload=payload_for(start + i, term, salt, size)) for i in range(n)])
        self._acknowledge_if_synced()

    def replace(self, rng: random.Random, most: int, sizes: Sequence[int]) -> None:
        """A new term overwrites the log from a random index (needs ``last > low``)."""
        self.term += 1
        start = rng.randint(max(self.low, self.first), self.last)
        n, size = rng.randint(1, most), rng.choice(sizes)
        self.append(start, n, size)

    def flush(self) -> None:
        self.log.flush()
        self.say("F")

    def truncate(self, rng: random.Random) -> None:
        """Truncate from a random index above the purge boundary (needs ``last > low``)."""
        cut = rng.randint(self.low + 1, self.last)
        self.say(f"T {cut}")
        self.log.truncate(cut)
        self._acknowledge_if_synced()

    def purge(self, rng: random.Random) -> None:
        """Purge up to a random index below the last (needs ``first and last > first``)."""
        from fastlog import LogId

        idx = rng.randint(self.first, self.last - 1)
        t = self.log.term_at(idx)
        self.say(f"P {idx} {t}")
        self.log.purge(LogId(index=idx, term=t))

    def reset(self) -> None:
        self.say("R")
        self.log.reset()

    def save_hard_state(self, vote: int | None) -> None:
        self.hs_term += 1
        self.say(f"H {self.hs_term} {vote}")
        self.meta.save_hard_state(hard_state(self.hs_term, vote))


class EngineWriter:
    """The asyncio engine's LogStore shared by several writer tasks of one child.

    Operations are numbered in the order they are announced; ``done`` is the
    highest number whose call has returned.  Callers hold ``order`` while they
    pick indexes and persist (as a Raft leader does) and wait for durability
    outside it, so the writers' flushes overlap and are group-committed.
    """

    def __init__(self, say: Say, store: Any, seed: int) -> None:
        self.say, self.store = say, store
        last = store.last_index()
        self.term = max(store.term_at(last) or 0, 1) if last else 1
        self.salt = seed * 1000003
        self.begun = self.done = 0
        self.order = asyncio.Lock()

    def _announce(self, line: str) -> int:
        self.begun += 1
        self.say(line)
        return self.begun

    async def append(self, start: int, n: int, size: int) -> None:
        self.salt += 1
        term, salt = self.term, self.salt
        batch = [self.store.Entry(index=start + i, term=term, payload=payload_for(start + i, term, salt, size)) for i in range(n)]
        mine = self._announce(f"A {start} {n} {term} {salt} {size}")
        await self.store.persist_entries(batch)
        self.done = max(self.done, mine)

    async def purge(self, rng: random.Random, first: int, last: int) -> None:
        """Purge up to a random index in ``first .. last - 1``."""
        from fastlog import LogId

        idx = rng.randint(first, last - 1)
        t = self.store.term_at(idx)
        mine = self._announce(f"P {idx} {t}")
        await self.store.purge(LogId(index=idx, term=t))
        self.done = max(self.done, mine)

    async def flush(self) -> None:
        """Wait for durability and acknowledge what had completed when the wait began."""
        mark = self.done
        await self.store.flush_async()
        self.say(f"F {mark}")


class Replayed(NamedTuple):
    flushes: int  # "F" lines: acknowledged flushes
    hard_states: int  # "H" lines: hard-state saves, durable on return


def replay(model: LogModel, lines: list[str], journal: bool = False) -> Replayed:
    """Apply a child's lines to the model.

    ``F`` acknowledges every operation begun so far; ``F k`` the first k
    operations this child announced (counted from where the child started).
    Journal hard states are ``(term, vote)`` pairs, the journal's own record.
    """
    flushes = hard_states = 0
    base = model.operations()
    for line in lines:
        parts = line.split()
        op = parts[0]
        if op == "A":
            start, n, term, salt, size = map(int, parts[1:])
            model.begin_append([(start + i, term, 1, payload_for(start + i, term, salt, size)) for i in range(n)])
        elif op == "T":
            model.begin_truncate(int(parts[1]))
        elif op == "P":
            model.begin_purge(int(parts[1]), int(parts[2]))
        elif op == "R":
            model.begin_reset()
        elif op == "H":
            vote = " ".join(parts[2:])
            if journal:
                model.begin_save_hard_state((int(parts[1]), None if vote == "None" else vote))
            else:
                model.begin_save_hard_state(hard_state(int(parts[1]), None if vote == "None" else int(vote)))
            hard_states += 1
        elif op == "F":
            model.flushed(base + int(parts[1]) if len(parts) > 1 else None)
            flushes += 1
        else:
            raise AssertionError(f"unknown line from the child: {line!r}")
    return Replayed(flushes, hard_states)

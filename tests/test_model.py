"""The hypothesis model test (fastlog.testing.stateful) on every registered engine.

The engine and :class:`fastlog.testing.LogModel` receive the same random
operations (append with suffix replacement and gaps, truncate, purge, reset,
replace_range, hard state, reopen) and must stay observably identical.
Example counts: ``FASTLOG_HYPOTHESIS_PROFILE=ci`` (default) or ``thorough``.
"""
from __future__ import annotations

import pytest
from hypothesis.stateful import run_state_machine_as_test

from fastlog.engines import ENGINE_NAMES, get_engine
from fastlog.errors import InvalidIndexError
from fastlog.testing import LogModel, digest, hypothesis_settings, make_entries, make_state_machine

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_engine_matches_model(engine: str, tmp_path) -> None:
    spec = get_engine(engine)
    if not spec.available:
        pytest.skip(f"engine {engine} is not available: {spec.missing_reason}")
    options = {"segment_size": 1 << 20} if engine.startswith("fastlog") else {}
    machine = make_state_machine(
        lambda path: spec.open(path, **options), persistent=spec.persistent, base_dir=str(tmp_path), name=f"Model_{engine}"
    )
    run_state_machine_as_test(machine, settings=hypothesis_settings())


# -- the model itself --------------------------------------------------------------


def test_model_rules() -> None:
    from fastlog import LogId

    m = LogModel()
    m.persist([(i, 1, 1, b"") for i in range(1, 11)])
    m.persist([(6, 2, 1, b"x")])
    assert m.last_index() == 6 and m.entry(6) == (6, 2, 1, b"x") and m.entry(7) is None
    with pytest.raises(InvalidIndexError):
        m.persist([(8, 2, 1, b"")])
    m.purge(LogId(index=3, term=1))
    with pytest.raises(InvalidIndexError):
        m.truncate(3)
    with pytest.raises(InvalidIndexError):
        m.persist([(3, 2, 1, b"")])
    m.purge(LogId(index=2, term=1))  # never moves back
    assert m.boundary == LogId(index=3, term=1)
    m.purge(LogId(index=9, term=2))
    assert m.last_index() == 9 and m.entries == {}
    m.persist([(20, 3, 1, b"")])  # an empty log accepts any index above the boundary
    assert m.last_index() == 20
    before = m.copy()
    with pytest.raises(InvalidIndexError):
        m.replace_range(25, [(27, 3, 1, b"")])
    assert m.entries == before.entries and m.boundary == before.boundary
    m.reset()
    assert m.last_index() == 0 and m.boundary is None


def test_digest_covers_every_field() -> None:
    from fastlog import Entry, EntryKind

    base = [Entry(1, 1, b"a"), Entry(2, 1, b"bc")]
    d = digest(base)
    assert len(d) == 32 and d == digest(list(base))
    variants = [
        [Entry(1, 1, b"a"), Entry(3, 1, b"bc")],
        [Entry(1, 1, b"a"), Entry(2, 2, b"bc")],
        [Entry(1, 1, b"a"), Entry(2, 1, b"bc", EntryKind.CONFIG)],
        [Entry(1, 1, b"ab"), Entry(2, 1, b"c")],  # same bytes, other split: length-prefixed
        base[:1],
        [],
    ]
    assert len({d, *(digest(v) for v in variants)}) == len(variants) + 1
    assert digest(make_entries(1, 50)) == digest(make_entries(1, 50))


def test_digest_known_answer() -> None:
    """The digest is pinned: harnesses may store it."""
    import struct

    import xxhash

    from fastlog import Entry, EntryKind

    entries = [Entry(1, 2, b"xyz", EntryKind.NOOP), Entry(2, 2, b"", EntryKind.COMMAND)]
    h = xxhash.xxh3_128()
    for e in entries:
        h.update(struct.pack("<QQBQ", e.index, e.term, int(e.kind), len(e.payload)) + e.payload)
    assert digest(entries) == h.hexdigest()


@pytest.mark.parametrize("engine", ["memory", "sqlite"])
def test_digest_log_store_reads_in_chunks(engine: str, tmp_path) -> None:
    import asyncio

    from fastlog.testing import digest_log_store

    spec = get_engine(engine)

    async def check() -> None:
        eng = spec.open(tmp_path / "db")
        try:
            entries = make_entries(1, 250)
            await eng.log_store().persist_entries(entries)
            assert digest_log_store(eng.log_store(), chunk=16) == digest(entries)
        finally:
            await eng.close()

    asyncio.run(check())


def test_settings_profiles() -> None:
    assert hypothesis_settings("ci").max_examples < hypothesis_settings("thorough").max_examples
    with pytest.raises(ValueError):
        hypothesis_settings("nope")

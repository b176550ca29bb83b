"""Hostile values through the Python API: clear errors, never a crash, nothing changed.

Hypothesis drives the Log and the async engine with huge, negative, wrong-type,
empty and maximum-size values mixed with valid calls.  Every failing call must
raise a fastlog.errors exception (input errors are also ValueError /
TypeError) and leave the log exactly as it was; at the end the directory must
reopen to the same content.
"""
from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent / "crash"))

import fastlog  # noqa: E402
from fastlog import EntryKind, HardState, LogId, VotedFor  # noqa: E402
from fastlog._types import PyEntry  # noqa: E402
from fastlog.errors import FastlogError  # noqa: E402
from crashsim import report, syncs_disabled  # noqa: E402

MAXI = (1 << 64) - 1
SEG = 64 << 10
MAX_ENTRY = 2048

huge_ints = st.sampled_from([-1, -(1 << 63), 1 << 31, 1 << 32, (1 << 63) - 1, 1 << 63, MAXI - 1, MAXI, MAXI + 1, 1 << 100])
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.binary(max_size=3),
    st.builds(object),
    st.lists(st.integers(0, 3), max_size=2),
    st.builds(dict),
)
any_value = st.one_of(st.integers(-3, 60), huge_ints, st.integers(), junk)
payloads = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"", b"m" * MAX_ENTRY, b"m" * (MAX_ENTRY + 1), b"m" * (SEG * 2)]),
    st.binary(max_size=8).map(bytearray),
    st.binary(max_size=8).map(memoryview),
    st.text(max_size=4),
    junk,
)
kinds = st.one_of(st.sampled_from(list(EntryKind)), st.integers(-2, 5), junk)


COUNTS = {"examples": 0, "calls": 0, "refused": 0}


@pytest.fixture(scope="module", autouse=True)
def _report_counts(request: pytest.FixtureRequest) -> Any:
    yield
    report(
        request.config,
        f"hostile input ({fastlog.IMPLEMENTATION} core)",
        "{examples} hypothesis examples, {calls} calls, {refused} refused with a fastlog error and nothing changed",
        **COUNTS,
    )


def only_fastlog_errors(fn: Callable[[], Any]) -> Tuple[bool, Any]:
    """(True, result) or (False, exception); anything but a FastlogError fails the test."""
    COUNTS["calls"] += 1
    try:
        return True, fn()
    except FastlogError as exc:
        COUNTS["refused"] += 1
        return False, exc
    except Exception as exc:  # noqa: BLE001 - the point of the test
        raise AssertionError(f"{type(exc).__name__} is not a fastlog error: {exc!r}") from exc


# ---------------------------------------------------------------------------
# Entry and the value types
# ---------------------------------------------------------------------------


@settings(max_examples=300)
@given(index=any_value, term=any_value, payload=payloads, kind=kinds)
def test_entry_construction(index: Any, term: Any, payload: Any, kind: Any) -> None:
    COUNTS["examples"] += 1
    classes = [PyEntry, fastlog.Entry] if fastlog.Entry is not PyEntry else [PyEntry]
    outcomes = []
    for cls in classes:
        ok, res = only_fastlog_errors(lambda: cls(index=index, term=term, payload=payload, kind=kind))
        if ok:
            assert (res.index, res.term, bytes(res.payload), int(res.kind)) == (index, term, bytes(payload), int(kind))
            outcomes.append(("ok", res.index, res.term, bytes(res.payload), int(res.kind)))
        else:
            outcomes.append(("error", type(res).__name__))
    assert all(o == outcomes[0] for o in outcomes), f"the implementations disagree: {outcomes}"


@settings(max_examples=200)
@given(a=any_value, b=any_value, c=any_value)
def test_value_types(a: Any, b: Any, c: Any) -> None:
    COUNTS["examples"] += 1
    only_fastlog_errors(lambda: LogId(index=a, term=b))
    only_fastlog_errors(lambda: VotedFor(voted_for_id=a, voted_for_term=b, committed=c))
    only_fastlog_errors(lambda: HardState(current_term=a, voted_for=c))


# ---------------------------------------------------------------------------
# The Log
# ---------------------------------------------------------------------------

# A call is (name, arguments); batch arguments are built against the live log.
batch_spec = st.tuples(st.integers(-4, 3) | huge_ints, st.integers(0, 6), payloads, kinds)
calls = st.one_of(
    st.tuples(st.just("append_run"), batch_spec),
    st.tuples(st.just("append_items"), st.lists(st.one_of(st.tuples(any_value, any_value, payloads, kinds), junk), max_size=4)),
    st.tuples(st.just("append_junk"), st.one_of(junk, st.text(max_size=2))),
    st.tuples(st.just("entry"), any_value),
    st.tuples(st.just("get_entries"), st.tuples(any_value, any_value)),
    st.tuples(st.just("term_at"), any_value),
    st.tuples(st.just("truncate"), st.one_of(st.integers(-2, 3), any_value)),
    st.tuples(st.just("purge"), st.one_of(st.tuples(st.integers(-2, 2), any_value), st.tuples(any_value, any_value), junk)),
    st.tuples(st.just("reset"), st.none()),
    st.tuples(st.just("flush"), st.none()),
)


def snapshot(log: Any) -> Tuple[Any, ...]:
    first, last = log.first_index(), log.last_index()
    items = tuple((e.index, e.term, int(e.kind), bytes(e.payload)) for e in log.get_entries(first, last)) if first else ()
    return (first, last, log.purge_boundary(), items)


def build_run(log: Any, spec: Tuple[Any, ...]) -> Optional[List[Any]]:
    """Consecutive entries starting near the end of the log (or at a hostile index)."""
    offset, count, payload, kind = spec
    start = offset if abs(offset) > 1000 else log.last_index() + 1 + offset
    out = []
    for i in range(count):
        ok, e = only_fastlog_errors(lambda: log.Entry(index=start + i, term=max(1, log.last_index() % 7), payload=payload, kind=kind))
        if not ok:
            return None
        out.append(e)
    return out


def build_items(log: Any, items: List[Any]) -> Optional[List[Any]]:
    out = []
    for item in items:
        if isinstance(item, tuple) and len(item) == 4:
            ok, e = only_fastlog_errors(lambda: log.Entry(index=item[0], term=item[1], payload=item[2], kind=item[3]))
            if not ok:
                return None
            out.append(e)
        else:
            out.append(item)
    if fastlog.Entry is not PyEntry and out:
        out.append(PyEntry(index=1, term=1))  # the other implementation's class
    return out


def apply(log: Any, call: Tuple[str, Any]) -> Callable[[], Any]:
    name, arg = call
    if name == "append_run":
        batch = build_run(log, arg)
        return (lambda: log.append(batch)) if batch is not None else (lambda: None)
    if name == "append_items":
        batch = build_items(log, arg)
        return (lambda: log.append(batch)) if batch is not None else (lambda: None)
    if name == "append_junk":
        return lambda: log.append(arg)
    if name == "entry":
        return lambda: log.entry(arg)
    if name == "get_entries":
        return lambda: log.get_entries(*arg)
    if name == "term_at":
        return lambda: log.term_at(arg)
    if name == "truncate":
        return lambda: log.truncate(log.last_index() + arg if isinstance(arg, int) and not isinstance(arg, bool) and -3 < arg < 4 else arg)
    if name == "purge":
        if isinstance(arg, tuple):
            index, term = arg
            if isinstance(index, int) and not isinstance(index, bool) and -3 < index < 3:
                index = log.last_index() + index
            ok, cutoff = only_fastlog_errors(lambda: LogId(index=index, term=term))
            return (lambda: log.purge(cutoff)) if ok else (lambda: None)
        return lambda: log.purge(arg)
    if name == "reset":
        return log.reset
    return log.flush


@settings(max_examples=300)
@given(steps=st.lists(calls, min_size=1, max_size=25))
def test_hostile_calls_on_the_log(steps: List[Tuple[str, Any]]) -> None:
    COUNTS["examples"] += 1
    with tempfile.TemporaryDirectory() as d, syncs_disabled():
        log = fastlog.Log(d, segment_size=SEG, max_entry_size=MAX_ENTRY)
        try:
            log.append([log.Entry(index=i, term=1, payload=b"seed%d" % i) for i in range(1, 6)])
            for step in steps:
                before = snapshot(log)
                ok, res = only_fastlog_errors(apply(log, step))
                if not ok:
                    assert snapshot(log) == before, f"{step[0]} raised {res!r} but changed the log"
            final = snapshot(log)
        finally:
            log.close()
        ok, reopened = only_fastlog_errors(lambda: fastlog.Log(d, segment_size=SEG, max_entry_size=MAX_ENTRY))
        assert ok, f"the log no longer opens: {reopened!r}"
        with reopened:
            assert snapshot(reopened) == final


def test_the_largest_entry_fits_and_one_byte_more_does_not(tmp_path: Path) -> None:
    with fastlog.Log(tmp_path, segment_size=SEG) as log:
        # default max_entry_size is larger than a 64 KiB segment: the segment is the limit
        big = SEG - 4096 - 32
        ok, err = only_fastlog_errors(lambda: log.append([log.Entry(index=1, term=1, payload=b"z" * (big + 1))]))
        assert not ok and isinstance(err, ValueError) and log.last_index() == 0
        log.append([log.Entry(index=1, term=1, payload=b"z" * big)])
        log.append([log.Entry(index=2, term=1, payload=b"z" * big)])  # a segment each
        assert [len(e.payload) for e in log.get_entries(1, 2)] == [big, big]
    with fastlog.Log(tmp_path, segment_size=SEG) as log:
        assert len(log.entry(2).payload) == big


def test_the_last_possible_index(tmp_path: Path) -> None:
    with fastlog.Log(tmp_path, segment_size=SEG) as log:
        log.append([log.Entry(index=MAXI - 1, term=MAXI, payload=b"a"), log.Entry(index=MAXI, term=MAXI, payload=b"b")])
        assert log.last_index() == MAXI and log.term_at(MAXI) == MAXI
        before = snapshot(log)
        ok, _ = only_fastlog_errors(lambda: log.purge(LogId(index=MAXI, term=MAXI)))
        if not ok:
            assert snapshot(log) == before
        after = snapshot(log)
    with fastlog.Log(tmp_path, segment_size=SEG) as log:
        assert snapshot(log) == after


@pytest.mark.parametrize(
    "options",
    [
        {"segment_size": -1},
        {"segment_size": 4095},
        {"segment_size": "64k"},
        {"segment_size": True},
        {"segment_size": 1 << 70},
        {"max_entry_size": -1},
        {"max_entry_size": 1 << 70},
        {"max_entry_size": None},
        {"sync": "sometimes"},
        {"sync": 1},
        {"implementation": "fortran"},
        {"read_only": True, "stop_at_damage": "yes"},
    ],
)
def test_hostile_options(tmp_path: Path, options: dict) -> None:
    try:
        with fastlog.Log(tmp_path / "log", **options):
            pass
    except (FastlogError, ValueError, TypeError, OSError):
        pass  # a clear error
    # whatever happened, a normal open still works
    with fastlog.Log(tmp_path / "log", segment_size=SEG) as log:
        log.append([log.Entry(index=1, term=1)])


# ---------------------------------------------------------------------------
# The async engine
# ---------------------------------------------------------------------------

engine_calls = st.one_of(
    st.tuples(st.just("persist"), batch_spec),
    st.tuples(st.just("persist_junk"), st.one_of(junk, st.lists(junk, min_size=1, max_size=2))),
    st.tuples(st.just("replace_range"), st.tuples(any_value, batch_spec)),
    st.tuples(st.just("truncate"), any_value),
    st.tuples(st.just("purge"), st.one_of(st.tuples(st.integers(-2, 2), any_value), junk)),
    st.tuples(st.just("entry"), any_value),
    st.tuples(st.just("get_entries"), st.tuples(any_value, any_value)),
    st.tuples(st.just("hard_state"), st.one_of(st.tuples(any_value, any_value, any_value), junk)),
    st.tuples(st.just("flush"), st.none()),
)


async def engine_step(store: Any, meta: Any, call: Tuple[str, Any]) -> None:
    name, arg = call
    if name == "persist":
        batch = build_run(store, arg)
        if batch is not None:
            await store.persist_entries(batch)
    elif name == "persist_junk":
        await store.persist_entries(arg)
    elif name == "replace_range":
        from_index, spec = arg
        batch = build_run(store, spec)
        if batch is not None:
            await store.replace_range(from_index, batch)
    elif name == "truncate":
        await store.truncate(arg)
    elif name == "purge":
        if isinstance(arg, tuple):
            # building the LogId may already refuse the values: that is a clear error too
            await store.purge(LogId(index=max(0, store.last_index() + arg[0]), term=arg[1]))
        else:
            await store.purge(arg)
    elif name == "entry":
        await store.entry(arg)
    elif name == "get_entries":
        store.get_entries(*arg)
    elif name == "hard_state":
        if isinstance(arg, tuple):
            term, vid, committed = arg
            vote = VotedFor(voted_for_id=vid, voted_for_term=term, committed=committed)
            meta.save_hard_state(HardState(current_term=term, voted_for=vote))
        else:
            meta.save_hard_state(arg)
    else:
        await store.flush_async()


def engine_snapshot(store: Any, meta: Any) -> Tuple[Any, ...]:
    last = store.last_index()
    items = tuple((e.index, e.term, int(e.kind), bytes(e.payload)) for e in store.get_entries(0, last))
    return (last, store.load_purge_boundary(), items, meta.load_hard_state())


@settings(max_examples=150)
@given(steps=st.lists(engine_calls, min_size=1, max_size=15))
def test_hostile_calls_on_the_engine(steps: List[Tuple[str, Any]]) -> None:
    COUNTS["examples"] += 1
    async def run(d: str) -> Tuple[Any, ...]:
        engine = fastlog.open(d, segment_size=SEG, max_entry_size=MAX_ENTRY)
        try:
            store, meta = engine.log_store(), engine.meta_store()
            await store.persist_entries([store.Entry(index=i, term=1, payload=b"s") for i in range(1, 6)])
            for step in steps:
                before = engine_snapshot(store, meta)
                COUNTS["calls"] += 1
                try:
                    await engine_step(store, meta, step)
                except FastlogError:
                    COUNTS["refused"] += 1
                    assert engine_snapshot(store, meta) == before, f"{step[0]} failed but changed the store"
                except Exception as exc:  # noqa: BLE001
                    raise AssertionError(f"{step[0]}: {type(exc).__name__} is not a fastlog error: {exc!r}") from exc
            return engine_snapshot(store, meta)
        finally:
            await engine.close()

    with tempfile.TemporaryDirectory() as d, syncs_disabled():
        final = asyncio.run(run(d))

        async def reopen() -> Tuple[Any, ...]:
            engine = fastlog.open(d, segment_size=SEG, max_entry_size=MAX_ENTRY)
            try:
                return engine_snapshot(engine.log_store(), engine.meta_store())
            finally:
                await engine.close()

        assert asyncio.run(reopen()) == final

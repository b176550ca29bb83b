"""A hypothesis state machine that drives an engine and :class:`LogModel` side by side.

Rules: append (next index, suffix replacement, gaps, writes at or below the
purge boundary), truncate, purge, reset, replace_range, save_hard_state,
reopen (persistent engines), and reads.  After every step the engine must
show exactly what the model shows: last index, purge boundary, every entry,
point reads around the edges, hard state; and an operation the model refuses
must raise :class:`~fastlog.errors.InvalidIndexError` in the engine and change
nothing.

Example counts come from a profile chosen with ``FASTLOG_HYPOTHESIS_PROFILE``:
``ci`` (the default: few examples, derandomized, so runs are deterministic) or
``thorough`` (many random examples).
"""
from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import tempfile
from typing import Any, Callable, Dict, List, Optional

from .._types import EntryKind, HardState, LogId, VotedFor
from ..errors import InvalidIndexError, InvalidTermError
from .conformance import ConformanceError, OpenEngine
from .model import EntryFields, LogModel, fields_of

__all__ = ["PROFILES", "hypothesis_settings", "make_state_machine", "run_model_test"]

#: name -> hypothesis settings (besides the common ones below).
PROFILES = {
    "ci": dict(max_examples=20, stateful_step_count=30, derandomize=True),
    "thorough": dict(max_examples=400, stateful_step_count=60, derandomize=False),
}


def hypothesis_settings(profile: Optional[str] = None, **overrides: Any) -> Any:
    """Settings for the model test: ``profile`` or ``$FASTLOG_HYPOTHESIS_PROFILE`` (default ``ci``)."""
    from hypothesis import HealthCheck, settings

    name = profile or os.environ.get("FASTLOG_HYPOTHESIS_PROFILE", "").strip() or "ci"
    if name not in PROFILES:
        raise ValueError(f"unknown hypothesis profile {name!r}; choose one of {', '.join(PROFILES)}")
    options: Dict[str, Any] = dict(
        deadline=None,
        database=None,
        print_blob=False,
        suppress_health_check=list(HealthCheck),
    )
    options.update(PROFILES[name])
    options.update(overrides)
    return settings(**options)


def _entry_class() -> type:
    import fastlog

    return fastlog.Entry


def _batch(first: int, count: int, term: int, tag: bytes, kind: EntryKind) -> List[Any]:
    cls = _entry_class()
    return [cls(i, term, tag + i.to_bytes(8, "little").rstrip(b"\0"), kind) for i in range(first, first + count)]


def make_state_machine(
    open_engine: OpenEngine,
    *,
    persistent: bool = True,
    base_dir: Optional[str] = None,
    name: str = "LogStoreMachine",
) -> type:
    """A ``RuleBasedStateMachine`` class testing the engine opened by ``open_engine(path)``.

    Run it with ``hypothesis.stateful.run_state_machine_as_test(cls,
    settings=hypothesis_settings())`` or use its ``TestCase`` attribute.
    """
    from hypothesis import strategies as st
    from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

    starts = st.sampled_from(["next", "next", "inside", "gap", "below", "far"])
    kinds = st.sampled_from(list(EntryKind))
    tags = st.binary(max_size=6)
    restarts = st.sampled_from([False, False, True]) if persistent else st.just(False)

    class Machine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.dir = tempfile.mkdtemp(prefix="fastlog-model-", dir=base_dir)
            self.path = os.path.join(self.dir, "engine")
            self.engine: Any = None
            self.model = LogModel()
            self._open()

        # -- plumbing -------------------------------------------------------------
        def _run(self, value: Any) -> Any:
            if inspect.isawaitable(value):
                return self.loop.run_until_complete(value)
            return value

        def _open(self) -> None:
            self.engine = self._run(open_engine(self.path))

        @property
        def log(self) -> Any:
            return self.engine.log_store()

        def teardown(self) -> None:
            try:
                if self.engine is not None:
                    self._run(self.engine.close())
            finally:
                self.engine = None
                self.loop.close()
                shutil.rmtree(self.dir, ignore_errors=True)

        def _both(self, what: str, model_op: Callable[[LogModel], None], engine_op: Callable[[], Any]) -> None:
            """Apply an operation to the model and the engine; both must accept or both refuse."""
            trial = self.model.copy()
            try:
                model_op(trial)
                refused: Optional[Exception] = None
            except (InvalidIndexError, InvalidTermError) as exc:
                refused = exc
            try:
                self._run(engine_op())
            except (InvalidIndexError, InvalidTermError) as exc:
                if refused is None:
                    raise ConformanceError(f"{what}: the engine refused ({exc}) what the model accepts") from exc
                return
            if refused is not None:
                raise ConformanceError(f"{what}: the engine accepted what the model refuses ({refused})")
            self.model = trial

        def _term(self, step: int) -> int:
            """A term around the highest one in the log (``step`` 1..6): mostly
            at or above it, as Raft appends are, sometimes one below, which
            every engine must refuse."""
            return max(0, self.model.top_term() + step - 2)

        def _first_index(self, start: str, offset: int) -> int:
            last = self.model.last_index()
            b = self.model.boundary.index if self.model.boundary is not None else 0
            if start == "next":
                return last + 1
            if start == "inside":
                return max(b + 1, last - offset)
            if start == "gap":
                return last + 2 + offset
            if start == "below":
                return max(1, b - offset)
            return last + 1 + 7 * offset  # "far": valid only when nothing is stored

        def _reopen(self, flush: bool = False) -> None:
            if flush:
                self._run(self.log.flush_async())
            self._run(self.engine.close())
            self.engine = None
            self._open()

        def _mutate(
            self, what: str, model_op: Callable[[LogModel], None], engine_op: Callable[[], Any], restart: bool
        ) -> None:
            self._both(what, model_op, engine_op)
            if restart and persistent:
                self._reopen()  # the invariant then checks what the reopened engine shows

        # -- rules -----------------------------------------------------------------
        # Rules are picked uniformly, so the common append has a rule of its own,
        # and every mutation may be followed by a restart (``restart``).
        @rule(count=st.integers(1, 6), term=st.integers(1, 6), tag=tags, restart=restarts)
        def append_next(self, count: int, term: int, tag: bytes, restart: bool) -> None:
            batch = _batch(self.model.last_index() + 1, count, self._term(term), tag, EntryKind.COMMAND)
            fields = [fields_of(e) for e in batch]
            self._mutate(
                f"persist_entries({batch[0].index}..+{count})",
                lambda m: m.persist(fields),
                lambda: self.log.persist_entries(batch),
                restart,
            )

        @rule(
            start=starts,
            offset=st.integers(0, 4),
            count=st.integers(0, 5),
            term=st.integers(1, 6),
            tag=tags,
            kind=kinds,
            restart=restarts,
        )
        def append(
            self, start: str, offset: int, count: int, term: int, tag: bytes, kind: EntryKind, restart: bool
        ) -> None:
            batch = _batch(self._first_index(start, offset), count, self._term(term), tag, kind)
            fields = [fields_of(e) for e in batch]
            self._mutate(
                f"persist_entries({batch[0].index if batch else '-'}..+{count})",
                lambda m: m.persist(fields),
                lambda: self.log.persist_entries(batch),
                restart,
            )

        # Truncate and purge act on a log that holds something (their edge cases
        # on empty logs are example-based conformance cases), so logs can grow.
        @precondition(lambda self: self.model.last_index() > 0)
        @rule(back=st.integers(-2, 6), restart=restarts)
        def truncate(self, back: int, restart: bool) -> None:
            index = max(0, self.model.last_index() - back)
            self._mutate(f"truncate({index})", lambda m: m.truncate(index), lambda: self.log.truncate(index), restart)

        @precondition(lambda self: self.model.last_index() > 0)
        @rule(back=st.integers(-3, 8), term=st.integers(0, 6), restart=restarts)
        def purge(self, back: int, term: int, restart: bool) -> None:
            cutoff = LogId(index=max(0, self.model.last_index() - back), term=term)
            self._mutate(f"purge({cutoff})", lambda m: m.purge(cutoff), lambda: self.log.purge(cutoff), restart)

        @precondition(lambda self: self.model.entries or self.model.boundary is not None)
        @rule(restart=restarts)
        def reset(self, restart: bool) -> None:
            self._mutate("reset()", lambda m: m.reset(), lambda: self.log.reset(), restart)

        @rule(
            back=st.integers(-1, 5),
            shift=st.integers(-2, 2),
            count=st.integers(0, 4),
            term=st.integers(1, 6),
            tag=tags,
            restart=restarts,
        )
        def replace_range(self, back: int, shift: int, count: int, term: int, tag: bytes, restart: bool) -> None:
            from_index = max(0, self.model.last_index() - back)
            batch = _batch(max(1, from_index + shift), count, self._term(term), tag, EntryKind.COMMAND)
            fields = [fields_of(e) for e in batch]
            self._mutate(
                f"replace_range({from_index}, {batch[0].index if batch else '-'}..+{count})",
                lambda m: m.replace_range(from_index, fields),
                lambda: self.log.replace_range(from_index, batch),
                restart,
            )

        @rule(term=st.integers(0, 1 << 20), vote=st.one_of(st.none(), st.tuples(st.integers(0, 9), st.booleans())))
        def save_hard_state(self, term: int, vote: Any) -> None:
            voted = None if vote is None else VotedFor(voted_for_id=vote[0], voted_for_term=term, committed=vote[1])
            state = HardState(current_term=term, voted_for=voted)
            self.engine.meta_store().save_hard_state(state)
            self.model.save_hard_state(state)

        @precondition(lambda self: persistent and (self.model.entries or self.model.boundary is not None))
        @rule(flush=st.booleans())
        def reopen(self, flush: bool) -> None:
            self._reopen(flush)

        @rule(start=st.integers(0, 40), length=st.integers(-2, 40))
        def read_range(self, start: int, length: int) -> None:
            end = max(0, start + length)
            got = [fields_of(e) for e in self.log.get_entries(start, end)]
            want = self.model.get_entries(start, end)
            if got != want:
                raise ConformanceError(f"get_entries({start}, {end}): expected {want}, got {got}")

        # -- invariants --------------------------------------------------------------
        @invariant()
        def matches_model(self) -> None:
            log, model = self.log, self.model
            last = model.last_index()
            if log.last_index() != last:
                raise ConformanceError(f"last_index(): expected {last}, got {log.last_index()}")
            if log.load_purge_boundary() != model.boundary:
                raise ConformanceError(
                    f"load_purge_boundary(): expected {model.boundary}, got {log.load_purge_boundary()}"
                )
            got = [fields_of(e) for e in log.get_entries(0, last + 1)]
            want: List[EntryFields] = model.get_entries(0, last + 1)
            if got != want:
                raise ConformanceError(f"log contents: expected {want}, got {got}")
            probes = {0, 1, last, last + 1}
            if want:
                probes.update((want[0][0] - 1, want[0][0]))
            for index in sorted(probes):
                found = self._run(log.entry(index))
                expected = model.entry(index)
                if (None if found is None else fields_of(found)) != expected:
                    raise ConformanceError(f"entry({index}): expected {expected}, got {found!r}")
            state = self.engine.meta_store().load_hard_state()
            if state != model.hard_state:
                raise ConformanceError(f"load_hard_state(): expected {model.hard_state}, got {state}")

    Machine.__name__ = Machine.__qualname__ = name
    return Machine


def run_model_test(
    open_engine: OpenEngine,
    *,
    persistent: bool = True,
    base_dir: Optional[str] = None,
    settings: Any = None,
) -> None:
    """Run the state machine against ``open_engine`` (raises on the first counterexample)."""
    from hypothesis.stateful import run_state_machine_as_test

    machine = make_state_machine(open_engine, persistent=persistent, base_dir=base_dir)
    run_state_machine_as_test(machine, settings=settings or hypothesis_settings())

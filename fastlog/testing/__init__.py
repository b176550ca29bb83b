"""The storage-engine conformance suite, importable to test any engine.

Run everything against your own engine (like d-engine's ``run_all_tests``)::

    import asyncio
    from fastlog.testing import run_all_tests, run_model_test

    def open_my_engine(path):          # a fresh or existing directory
        return MyEngine(path)          # or an awaitable of it

    asyncio.run(run_all_tests(open_my_engine))          # example-based cases
    run_model_test(open_my_engine)                      # hypothesis model test

Pytest-friendly pieces: :data:`CASE_NAMES` / :func:`run_case` (one case on
one directory, plain or with a restart at every checkpoint),
:func:`make_state_machine` (a ``RuleBasedStateMachine`` class) and
:func:`hypothesis_settings` (profile from ``FASTLOG_HYPOTHESIS_PROFILE``:
``ci`` or ``thorough``).  :class:`LogModel` is the specification the model
test checks against.

Under pytest, ``pytest --fastlog-engine=module:factory`` runs all of it, plus
the power-cut variant on LazyFS (:mod:`fastlog.testing.pytest_plugin`,
:mod:`fastlog.testing.power_cut`, :mod:`fastlog.testing.lazyfs`).  The input
checks every engine must make are public in :mod:`fastlog.testing.validate`.

:func:`digest` (XXH3-128 over index, term, kind and payload of each entry)
proves that an engine stored exactly the right data.
"""
from __future__ import annotations

from .conformance import (
    CASE_NAMES,
    CASES,
    DURABLE_CASES,
    POWER_CUT_CASES,
    CaseContext,
    CaseResult,
    ConformanceError,
    OpenEngine,
    make_entries,
    run_all_tests,
    run_case,
)
from .digest import EntryDigest, digest, digest_log_store
from .model import LogModel
from .stateful import PROFILES, hypothesis_settings, make_state_machine, run_model_test

__all__ = [
    "CASES",
    "CASE_NAMES",
    "DURABLE_CASES",
    "CaseContext",
    "CaseResult",
    "ConformanceError",
    "EntryDigest",
    "LogModel",
    "OpenEngine",
    "POWER_CUT_CASES",
    "PROFILES",
    "digest",
    "digest_log_store",
    "hypothesis_settings",
    "make_entries",
    "make_state_machine",
    "run_all_tests",
    "run_case",
    "run_model_test",
]

"""The engine conformance suite (fastlog.testing) on every filesystem of the matrix.

Every case runs in its plain and its reopen variant (a close and reopen at
each checkpoint), and the durable subset again on engines opened with
``durable=True`` (``sync="always"``), for both cores.  Segments of 64 KiB make
the cases roll over into new files, so segment creation, deletion and the
directory syncs around them happen on each filesystem.  Each case's directory
is deleted before the next case starts, so the small tmpfs never fills up.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from types import ModuleType
from typing import Any, List

import pytest

from fastlog.engines.fastlog_engines import open_fastlog
from fastlog.testing import CASE_NAMES, DURABLE_CASES, ConformanceError, run_all_tests

# Slow: the matrix runs in the compiled-core run of `make test`, which covers both cores.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SEGMENT_SIZE = 64 << 10
#: Cases that store a payload larger than a 64 KiB segment holds (1 MiB).
LARGE_PAYLOAD_CASES = {"kinds_and_payloads": 2 << 20}


def _run_cases(fs_dir: Path, implementation: str, durable: bool, cases: List[str]) -> int:
    """Run ``cases`` (both variants each); returns the number of runs, raises on any failure."""
    failures: List[str] = []
    runs = 0
    for case in cases:
        segment_size = LARGE_PAYLOAD_CASES.get(case, SEGMENT_SIZE)

        def open_engine(path: str, segment_size: int = segment_size) -> Any:
            return open_fastlog(path, durable=durable, implementation=implementation, segment_size=segment_size)

        # One case per call: run_all_tests removes its directory when it returns.
        results = asyncio.run(
            run_all_tests(open_engine, base_dir=str(fs_dir), cases=[case], raise_on_failure=False)
        )
        runs += len(results)
        failures += [f"{r.label}: {type(r.error).__name__}: {r.error}" for r in results if not r.passed]
    if failures:
        mode = "durable" if durable else "plain"
        raise ConformanceError(f"{len(failures)} {mode} conformance runs failed:\n  " + "\n  ".join(failures))
    return runs


def test_conformance_on_filesystem(fs_dir: Path, core_module: ModuleType) -> None:
    implementation = core_module.IMPLEMENTATION
    assert _run_cases(fs_dir, implementation, False, list(CASE_NAMES)) == 2 * len(CASE_NAMES)
    assert _run_cases(fs_dir, implementation, True, list(DURABLE_CASES)) == 2 * len(DURABLE_CASES)

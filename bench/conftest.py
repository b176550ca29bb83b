"""Shared fixtures of the pytest-benchmark benchmarks.

The benchmarks run once as ordinary tests in ``make test`` (``--benchmark-disable``)
and fully in ``make bench-ci``.  In the single run the populated logs are
small, so the run stays quick; ``FASTLOG_BENCH_LOG_ENTRIES`` sets their size for
the full runs (default 50,000).
"""
from __future__ import annotations

import asyncio
import os
from typing import Iterator, List

import pytest
from benchutil import BATCH_SIZE, RANGE_SIZE, make_payloads


@pytest.fixture(scope="session")
def payloads() -> List[bytes]:
    return make_payloads(BATCH_SIZE)


@pytest.fixture(scope="session")
def log_entries(request: pytest.FixtureRequest) -> int:
    """Size of the populated logs: small when the benchmarks only run once."""
    if request.config.getoption("benchmark_disable", default=False):
        return RANGE_SIZE + BATCH_SIZE
    return int(os.environ.get("FASTLOG_BENCH_LOG_ENTRIES", "50000"))


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop per module; benchmarks drive coroutines with run_until_complete."""
    event_loop = asyncio.new_event_loop()
    yield event_loop
    event_loop.close()

"""Fixtures of the power-cut suite: LazyFS built once per test run, one mount per test.

Where the suite cannot run (not root, no /dev/fuse, no fusermount3, LazyFS
neither built nor buildable, or a trial mount fails) its tests are left out and the terminal summary
says so in one line.
"""
from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
for extra in (HERE, HERE.parent / "crash"):  # crashsim: the model shared with the crash tests
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from fastlog.testing.lazyfs import LazyFS, ensure_built, unavailable_reason
from powercut import kill_leftover_children

_skip_reason: list[str | None] = []


def _reason() -> str | None:
    if not _skip_reason:
        reason = unavailable_reason()
        if reason is None:
            try:
                probe = LazyFS(ensure_built())  # /dev/fuse may be there and still refuse a mount
                try:
                    probe.start()
                finally:
                    probe.remove()
            except Exception as exc:
                reason = str(exc)
        _skip_reason.append(reason)
    return _skip_reason[0]


@pytest.fixture(scope="session")
def lazyfs_binary() -> Path:
    reason = _reason()
    if reason is not None:
        pytest.skip(f"power-cut suite skipped: {reason}")
    return ensure_built()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.powercut_failed = rep.failed


@pytest.fixture
def lazyfs(lazyfs_binary: Path, request: pytest.FixtureRequest) -> Iterator[LazyFS]:
    """A fresh LazyFS mount, unmounted (``fusermount3 -u``) whatever the test does;
    its backing directory is kept when the test failed, for a look at what the
    power cut left."""
    fs = LazyFS(lazyfs_binary)
    try:
        fs.start()
        yield fs
    finally:
        kill_leftover_children()  # a test that failed mid-round leaves its writer running
        if getattr(request.node, "powercut_failed", False):
            fs.stop()
            print(f"power-cut test failed: the backing directory is kept in {fs.root}")
        else:
            fs.remove()


@pytest.hookimpl(trylast=True)  # after -k / -m have deselected what they will
def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    ours = [item for item in items if HERE in Path(str(item.fspath)).resolve().parents]
    if not ours or _reason() is None:
        return
    config.hook.pytest_deselected(items=ours)
    items[:] = [item for item in items if item not in ours]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _skip_reason and _skip_reason[0] is not None:
        terminalreporter.write_line(f"power-cut suite (LazyFS) skipped: {_skip_reason[0]}")

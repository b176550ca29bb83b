"""pytest plugin: the whole conformance suite on an engine named on the command line.

::

    pytest --fastlog-engine=my_package.my_module:open_engine

runs every conformance case (plain, reopened at every checkpoint, and across a
power cut on LazyFS) and the hypothesis model test on the engine that
``open_engine(path)`` opens.  Installed with fastlog (entry point
``pytest11``), and also loadable with ``-p fastlog.testing.pytest_plugin``.
Without ``--fastlog-engine`` it does nothing.

Options:

* ``--fastlog-engine=module:factory`` (repeatable): the engine factory.
* ``--fastlog-persistent=auto|yes|no``: whether the engine keeps its data
  across close and reopen; ``auto`` (the default) finds out and runs only the
  plain cases of an engine that does not, with one skip saying so.
* ``--fastlog-power-cut=auto|require|off``: the power-cut variant needs root,
  ``/dev/fuse``, ``fusermount3`` and LazyFS; ``auto`` skips it with a
  one-line reason where they are missing, ``require`` fails instead.
* ``--fastlog-lazyfs=PATH``: the LazyFS binary (also ``FASTLOG_LAZYFS``;
  default: ``build/lazyfs/lazyfs`` of a source checkout).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, List, Optional

import pytest

if TYPE_CHECKING:  # the suite is imported only by a run that asks for it
    from .factory import EngineUnderTest

__all__ = ["engines_from_options", "lazyfs_binary_or_skip"]

SUITE_FILE = Path(__file__).with_name("engine_suite.py")

_state: dict = {}


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("fastlog", "fastlog storage-engine conformance")
    group.addoption(
        "--fastlog-engine",
        action="append",
        default=[],
        metavar="MODULE:FACTORY",
        help="run the fastlog conformance suite on the engine FACTORY(path) opens",
    )
    group.addoption(
        "--fastlog-persistent",
        choices=("auto", "yes", "no"),
        default="auto",
        help="whether the engine keeps its data across close and reopen (default: find out)",
    )
    group.addoption(
        "--fastlog-power-cut",
        choices=("auto", "require", "off"),
        default="auto",
        help="power-cut variant on LazyFS: skip where it cannot run (auto), fail there (require), or never",
    )
    group.addoption(
        "--fastlog-lazyfs",
        default=None,
        metavar="PATH",
        help="the LazyFS binary (default: $FASTLOG_LAZYFS, else build/lazyfs/lazyfs)",
    )


def pytest_configure(config: Any) -> None:
    if not config.getoption("fastlog_engine", default=None):
        return
    binary = config.getoption("fastlog_lazyfs", default=None)
    if binary:
        from .lazyfs import BINARY_ENV

        os.environ[BINARY_ENV] = os.path.abspath(binary)  # the power-cut child reads it too
    _state["config"] = config
    engines_from_options(config)  # a factory that does not load is a usage error, before collection
    suite = str(SUITE_FILE)
    if suite not in config.args:
        config.args.append(suite)


def engines_from_options(config: Any) -> List[EngineUnderTest]:
    """The engines ``--fastlog-engine`` names (a usage error when a name does not load)."""
    from .factory import EngineUnderTest

    specs = config.getoption("fastlog_engine", default=None) or []
    persistent = {"auto": None, "yes": True, "no": False}[config.getoption("fastlog_persistent", default="auto")]
    cache = _state.setdefault("engines", {})
    out = []
    for spec in specs:
        if spec not in cache:
            try:
                cache[spec] = EngineUnderTest.from_spec(spec, persistent=persistent)
            except (ImportError, ValueError) as exc:
                raise pytest.UsageError(f"--fastlog-engine={spec}: {exc}") from exc
        out.append(cache[spec])
    return out


def lazyfs_binary_or_skip(unavailable: Callable[[], Optional[str]]) -> Optional[Path]:
    """The LazyFS binary, after one trial mount per run; skip (or fail) with one line when it cannot run."""
    config = _state.get("config")
    mode = config.getoption("fastlog_power_cut", default="auto") if config is not None else "auto"
    if mode == "off":
        pytest.skip("power-cut variant off (--fastlog-power-cut=off)")
    if "lazyfs" not in _state:
        from .lazyfs import LazyFS, ensure_built

        reason = unavailable()
        binary: Optional[Path] = None
        if reason is None:
            try:
                binary = ensure_built()
                trial = LazyFS(binary)
                try:
                    trial.start()
                finally:
                    trial.remove()
            except Exception as exc:  # a FUSE mount can still be refused (containers)
                reason, binary = f"LazyFS does not mount here: {exc}", None
        _state["lazyfs"] = (binary, reason)
    binary, reason = _state["lazyfs"]
    if binary is None:
        message = f"power-cut variant cannot run: {reason}"
        if mode == "require":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return binary

"""The ``fastlog`` command line (also ``python -m fastlog``).

Subcommands live in their own modules.  Each module listed in
:data:`COMMAND_MODULES` exposes ``register(subparsers)``, which adds its
subcommands to the :mod:`argparse` sub-parser collection and gives every one of
them a handler with ``parser.set_defaults(handler=function)``.  A handler takes
the parsed :class:`argparse.Namespace` and returns the exit status (``None``
means 0).

A module that is not installed is skipped, so the command line keeps working
in a partial installation; any other import error is reported.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, List, Optional, Sequence

__all__ = ["COMMAND_MODULES", "build_parser", "main"]

#: Modules that contribute subcommands, in the order their help is listed.
COMMAND_MODULES: List[str] = [
    "fastlog.bench.command",  # bench
    "fastlog.tools",  # verify, repair, inspect, dump
]


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("fastlog")
    except Exception:  # not installed as a distribution (e.g. run from a checkout)
        from pathlib import Path

        version_file = Path(__file__).resolve().parent.parent / "VERSION"
        try:
            return version_file.read_text().strip()
        except OSError:
            return "unknown"


def build_parser(modules: Optional[Sequence[str]] = None) -> argparse.ArgumentParser:
    """The top-level parser with the subcommands of every available module."""
    parser = argparse.ArgumentParser(
        prog="fastlog",
        description="fastlog: a crash-safe Raft log store. Tools and benchmarks.",
    )
    parser.add_argument("--version", action="version", version=f"fastlog {_version()}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMAND_MODULES if modules is None else modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # Only the command module itself being absent is tolerated; a
            # missing dependency inside it is a real error worth seeing.
            if exc.name == name:
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Optional[Callable[[argparse.Namespace], Optional[int]]] = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        status = handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into e.g. `head`: not an error worth a traceback.
        return 0
    return 0 if status is None else int(status)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

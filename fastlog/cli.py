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
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

__all__ = ["COMMAND_MODULES", "build_parser", "main"]

#: Modules that contribute subcommands, in the order their help is listed.
COMMAND_MODULES: List[str] = [
    "fastlog.bench.command",  # bench
    "fastlog.tools",  # verify, repair, inspect, dump
]

#: The subcommands each module registers.  ``fastlog verify DIR`` then imports
#: only the module of ``verify``: the benchmark harness alone takes longer to
#: import than a verify of a small log takes to run.
COMMANDS_OF: Dict[str, Tuple[str, ...]] = {
    "fastlog.bench.command": ("bench",),
    "fastlog.tools": ("verify", "repair", "inspect", "dump"),
}


def _version() -> str:
    from fastlog import __version__

    return __version__


EPILOG = """\
exit status (each command's --help has its own list):
  0    success
  1    damage found (verify, repair, inspect, dump), or invalid results (bench)
  2    bad options, or the directory could not be used: no such directory,
       not a fastlog log directory, log directory in use
  3    dump: none of the requested entries is in the log; bench: a target missed
  130  interrupted (Ctrl-C)"""


def build_parser(modules: Optional[Sequence[str]] = None) -> argparse.ArgumentParser:
    """The top-level parser with the subcommands of every available module."""
    parser = argparse.ArgumentParser(
        prog="fastlog",
        description="fastlog: a crash-safe Raft log store. Tools and benchmarks.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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


def _modules_for(argv: Sequence[str]) -> Optional[List[str]]:
    """The one module whose subcommand ``argv`` names, or None (all of them)."""
    named = next((arg for arg in argv if not arg.startswith("-")), None)
    if named is None:
        return None
    modules = [m for m in COMMAND_MODULES if named in COMMANDS_OF.get(m, ())]
    return modules or None


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_modules_for(argv))
    args = parser.parse_args(argv)
    handler: Optional[Callable[[argparse.Namespace], Optional[int]]] = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        status = handler(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit flush
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`fastlog dump DIR | head`): that is how such a
        # pipeline ends, not an error.  Point stdout at /dev/null so the
        # interpreter's last flush of the buffered rest cannot fail once more.
        _silence_stdout()
        return 0
    return 0 if status is None else int(status)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is no real file (e.g. captured in a test)
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The child processes of the disk-full test (tests/fs/test_fs_full.py).

They run in their own interpreter so that a SIGBUS (a store through a shared
mapping that the filesystem cannot back) ends the child, where the parent sees
it as a signal exit, instead of ending the test run.

``write PATH IMPL SEGMENT_SIZE BATCH FLUSH PAYLOAD``
    appends batches of BATCH entries (flushing after each when FLUSH is
    ``flush``) until an error, then closes the log.  Prints ``A n`` after each
    append returned (n: last index), ``F n`` after each flush returned,
    ``E <type> <errno> <message>`` for the error that ended the appends, and
    ``C ok`` or ``C <type> <errno> <message>`` for the close.

``reopen PATH IMPL SEGMENT_SIZE PAYLOAD``
    opens the log read-write, checks every entry, purges half of it, checks
    that the log is not poisoned, closes, opens it again and checks again;
    prints one JSON object per step.

Anything else -- an exception that is not an ``OSError``, or a signal --
ends the child with a non-zero status, which the parent reports.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List, Optional

import fastlog
from fastlog import LogId


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def payload(index: int, size: int) -> bytes:
    """A payload that names its index, so a misplaced entry cannot pass for the right one."""
    return (b"<%d>" % index * (size // 4 + 1))[:size]


def describe(exc: BaseException) -> str:
    """``<type> <errno> <message> (at <file>:<line> in <function>)``, the innermost frame."""
    where = ""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None:
        code = tb.tb_frame.f_code
        where = f" (at {os.path.basename(code.co_filename)}:{tb.tb_lineno} in {code.co_name})"
    return f"{type(exc).__name__} {getattr(exc, 'errno', None)} {exc}{where}"


def write(path: str, implementation: str, segment_size: int, batch: int, flush: bool, size: int) -> None:
    log = fastlog.Log(path, segment_size=segment_size, implementation=implementation)
    say("ready")
    index = 1
    try:
        while True:
            log.append([log.Entry(index=index + k, term=1, payload=payload(index + k, size)) for k in range(batch)])
            index += batch
            say(f"A {index - 1}")
            if flush:
                log.flush()
                say(f"F {index - 1}")
    except OSError as exc:
        say(f"E {describe(exc)}")
    try:
        log.close()
        say("C ok")
    except OSError as exc:
        say(f"C {describe(exc)}")


def check_entries(log: Any, size: int) -> Dict[str, Any]:
    """Every readable entry from the first index to the last, compared with what was written."""
    first, last = log.first_index(), log.last_index()
    wrong: List[int] = []
    if first:
        got = log.get_entries(first, last)
        if len(got) != last - first + 1:
            wrong.append(-1)
        for e in got:
            if e.term != 1 or bytes(e.payload) != payload(e.index, size):
                wrong.append(e.index)
    boundary = log.purge_boundary()
    return {
        "first": first,
        "last": last,
        "boundary": boundary.index if boundary is not None else None,
        "wrong": wrong[:10],
    }


def attempt(step: Dict[str, Any], name: str, fn: Any) -> None:
    """Run ``fn``; record ``ok`` or the error (an OSError or a fastlog error) under ``name``."""
    try:
        fn()
        step[name] = "ok"
    except (OSError, fastlog.FastlogError) as exc:
        step[name] = describe(exc)


def reopen(path: str, implementation: str, segment_size: int, size: int) -> None:
    log = fastlog.Log(path, segment_size=segment_size, implementation=implementation)
    step = check_entries(log, size)
    say("opened " + json.dumps(step))

    after: Dict[str, Any] = {}
    purge_at: Optional[int] = None
    if step["first"] and step["last"] >= 2:
        purge_at = (step["first"] + step["last"]) // 2
        attempt(after, "purge", lambda: log.purge(LogId(index=purge_at, term=1)))
    after["purge_at"] = purge_at
    # A log that is not poisoned flushes; a new entry may find no room, but must not find a poisoned log.
    attempt(after, "flush", log.flush)
    attempt(
        after,
        "append",
        lambda: log.append([log.Entry(index=step["last"] + 1, term=1, payload=payload(step["last"] + 1, size))]),
    )
    after.update(check_entries(log, size))
    attempt(after, "close", log.close)
    say("used " + json.dumps(after))

    log = fastlog.Log(path, segment_size=segment_size, implementation=implementation)
    again = check_entries(log, size)
    log.close()
    say("reopened " + json.dumps(again))


def main(argv: List[str]) -> None:
    mode, path, implementation, segment_size = argv[0], argv[1], argv[2], int(argv[3])
    if mode == "write":
        write(path, implementation, segment_size, int(argv[4]), argv[5] == "flush", int(argv[6]))
    elif mode == "reopen":
        reopen(path, implementation, segment_size, int(argv[4]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])

"""Opening the files of a log directory without ever blocking on a special file.

A FIFO, socket or device under a name the log uses (``STATE``, ``HARDSTATE``,
``LOCK``, a segment) would make a plain ``open`` wait forever for a writer, or
read from a device.  These files are opened with ``O_NONBLOCK`` (which
changes nothing for a regular file) and refused unless ``fstat`` says they are
regular files.
"""
from __future__ import annotations

import errno
import os
import stat

from .errors import CorruptionError

__all__ = ["open_regular", "check_regular"]


def check_regular(fd: int, path: str) -> None:
    """Raise CorruptionError naming ``path`` unless ``fd`` is a regular file."""
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        raise CorruptionError(f"not a regular file ({_kind(mode)})", path, None)


def open_regular(path: str, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that refuses (CorruptionError) anything but a regular file.

    Never blocks on a FIFO; a directory under the name is refused the same way.
    """
    try:
        fd = os.open(path, flags | os.O_NONBLOCK | os.O_NOCTTY, mode)
    except IsADirectoryError:
        raise CorruptionError("not a regular file (a directory)", path, None) from None
    except OSError as exc:
        # ENXIO: a FIFO without a reader opened for writing, or a socket.
        if exc.errno not in (errno.ENXIO, errno.ENODEV, errno.EOPNOTSUPP):
            raise
        mode = os.stat(path).st_mode
        if stat.S_ISREG(mode):
            raise
        raise CorruptionError(f"not a regular file ({_kind(mode)})", path, None) from None
    try:
        check_regular(fd, path)
        # Regular files ignore O_NONBLOCK, but take it off so nothing else sees it.
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return f"mode {oct(mode)}"

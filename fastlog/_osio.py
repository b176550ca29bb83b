"""Every durability-relevant system call fastlog makes, in one place.

Keeping them here lets tests inject faults (a failing fsync, a full disk) and
record sync points (the power-loss simulator) by patching a single module.
Callers must look the functions up on the module at call time
(``_osio.fdatasync(fd)``), never bind them at import time.
"""
from __future__ import annotations

import errno
import os

__all__ = ["fdatasync", "fsync", "fsync_dir", "fallocate"]


def fdatasync(fd: int) -> None:
    """Make a file's data (and the metadata needed to read it) durable."""
    os.fdatasync(fd)


def fsync(fd: int) -> None:
    """Make a file's data and all of its metadata durable."""
    os.fsync(fd)


def fsync_dir(path: str) -> None:
    """Make the entries of a directory (creations, renames, unlinks) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fallocate(fd: int, size: int) -> None:
    """Reserve ``size`` bytes of real blocks for the file (never sparse).

    A full disk then fails here, with ENOSPC, instead of later as SIGBUS when a
    page of the mapping is first written.
    """
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL) and hasattr(os, "ftruncate"):
            # A filesystem without fallocate: write zeros so the blocks exist.
            _zero_fill(fd, size)
        else:
            raise


def _zero_fill(fd: int, size: int) -> None:
    chunk = bytes(1 << 20)
    done = 0
    while done < size:
        n = min(len(chunk), size - done)
        written = os.pwrite(fd, chunk[:n], done)
        if written <= 0:
            raise OSError(errno.EIO, "short write while preallocating")
        done += written

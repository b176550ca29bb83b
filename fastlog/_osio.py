"""Every durability-relevant system call fastlog makes, in one place.

Keeping them here lets tests inject faults (a failing fsync, a full disk) and
record sync points (the power-loss simulator) by patching a single module.
Callers must look the functions up on the module at call time
(``_osio.fdatasync(fd)``), never bind them at import time.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from typing import Any

__all__ = ["fdatasync", "fsync", "fsync_dir", "fallocate", "punch_hole", "pwrite_all"]

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02


def _load_fallocate() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        func = libc.fallocate64
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    func.restype = ctypes.c_int
    return func


# fallocate(2) itself: os.posix_fallocate quietly emulates it (one written
# byte per block) where the filesystem lacks it, and that promises nothing.
_fallocate = _load_fallocate()


def _fallocate_call(fd: int, mode: int, offset: int, length: int) -> None:
    while _fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        if err != errno.EINTR:
            raise OSError(err, os.strerror(err))


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


def fallocate(fd: int, size: int) -> bool:
    """Reserve ``size`` bytes of real blocks for the file (never sparse).

    A full disk then fails here, with ENOSPC, instead of later when a block is
    first written.  True when fallocate(2) itself reserved the blocks; False
    when the filesystem lacks it and zeros were written instead (a promise
    that does not hold on every filesystem: the log then never stores through
    the segment's mapping).
    """
    if _fallocate is not None:
        try:
            _fallocate_call(fd, 0, 0, size)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS):
                raise
    else:
        try:
            os.posix_fallocate(fd, 0, size)
            return False  # possibly glibc's emulation: nothing is known
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
    # A filesystem without fallocate: write zeros so the blocks exist.
    _zero_fill(fd, size)
    return False


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Deallocate ``[offset, offset + length)`` (whole blocks), keeping the file size.

    The range then reads as zeros and freeing it never needs new space, even
    on a copy-on-write filesystem.  OSError(EOPNOTSUPP) where unsupported.
    """
    if _fallocate is None:
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))
    _fallocate_call(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length)


def pwrite_all(fd: int, data: Any, offset: int) -> None:
    """Write all of ``data`` at ``offset``: short writes are continued, and a
    write that makes no progress is an EIO error rather than an endless loop."""
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):
        written = os.pwrite(fd, view[done:], offset + done)
        if written <= 0:
            raise OSError(errno.EIO, "write made no progress", None)
        done += written


def _zero_fill(fd: int, size: int) -> None:
    chunk = bytes(1 << 20)
    done = 0
    while done < size:
        n = min(len(chunk), size - done)
        pwrite_all(fd, memoryview(chunk)[:n], done)
        done += n

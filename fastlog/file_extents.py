"""Which byte ranges of a file can hold data, as the file system tells.

``lseek(SEEK_DATA / SEEK_HOLE)`` names the ranges that may hold data; holes
and (on ext4, XFS, btrfs) preallocated but never written extents read as
zeros without being read.  Checking that the unused end of a segment is zero
then costs a few system calls, not a read of every byte: a sparse file
extended to a terabyte is checked as quickly as an empty one.  A file system
that cannot tell reports the whole file as data, which is still correct.
"""
from __future__ import annotations

import errno
import os
from typing import Iterator, Tuple

__all__ = ["data_ranges"]


def data_ranges(fd: int, start: int, end: int) -> Iterator[Tuple[int, int]]:
    """``(begin, stop)`` ranges covering every byte of ``[start, end)`` that may hold data."""
    pos = start
    while pos < end:
        try:
            begin = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return  # no data at or after pos
            yield pos, end  # the file system cannot tell: all of it may hold data
            return
        if begin >= end:
            return
        try:
            stop = os.lseek(fd, begin, os.SEEK_HOLE)
        except OSError:
            stop = end
        if stop <= begin:  # a confused answer: take the rest as data
            yield begin, end
            return
        stop = min(stop, end)
        yield begin, stop
        pos = stop

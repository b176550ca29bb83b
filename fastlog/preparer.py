"""Background preparation of segment space, off the append path.

Two costs would otherwise land on appends: creating a segment file
(``fallocate`` of 64 MiB) and the first-write page fault of every page of its
mapping (microseconds each).  One daemon thread per log does both ahead of
time: it keeps the active segment's mapping pre-faulted a window ahead of the
write position, and keeps a spare, preallocated file ready for the next
rollover.  Both are only advice: if the writer gets ahead, it just takes the
faults or creates the file itself.
"""
from __future__ import annotations

import itertools
import mmap
import os
import threading
from typing import Callable, Optional

from . import _osio
from .segment import Segment

__all__ = ["Spare", "SegmentPreparer"]

_CHUNK = 1 << 20  # pre-fault granularity: lets a drop of the segment get in between chunks
_spare_names = itertools.count()


class Spare:
    """A preallocated, mapped file waiting to become the next segment."""

    __slots__ = ("path", "fd", "mm", "size", "populated")

    def __init__(self, path: str, fd: int, mm: mmap.mmap, size: int, populated: int):
        self.path, self.fd, self.mm, self.size, self.populated = path, fd, mm, size, populated

    def discard(self) -> None:
        try:
            self.mm.close()
        finally:
            os.close(self.fd)
            try:
                os.unlink(self.path)
            except OSError:
                pass


class SegmentPreparer:
    """Pre-faults ahead of the writer and prepares the next segment file."""

    def __init__(
        self,
        dir_path: str,
        segment_size: int,
        populate: Callable[[mmap.mmap, int, int], bool],
        window: int,
        spare_prefault: int,
    ) -> None:
        self._dir = dir_path
        self._size = segment_size
        self._populate = populate
        self._window = window
        self._spare_prefault = spare_prefault
        self._cond = threading.Condition()
        self._target: Optional[Segment] = None
        self._target_upto = 0
        self._want_spare = False
        self._spare: Optional[Spare] = None
        self._busy = False
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="fastlog-preparer", daemon=True)
        self._thread.start()

    # -- called by the writer (under the log's write lock) -----------------
    def advance(self, seg: Segment, end: int) -> None:
        """The writer reached ``end`` in ``seg``: keep the window ahead of it."""
        if self._window and seg.populated - end < self._window // 2 and seg.populated < seg.size:
            with self._cond:
                self._target = seg
                self._target_upto = min(seg.size, end + self._window)
                self._cond.notify()
        if not self._want_spare and self._spare is None and end > seg.size // 2:
            with self._cond:
                self._want_spare = True
                self._cond.notify()

    def take_spare(self) -> Optional[Spare]:
        """The prepared spare, waiting for one in preparation; None if there is none."""
        with self._cond:
            while self._busy and self._want_spare and self._spare is None:
                self._cond.wait()
            spare, self._spare = self._spare, None
            self._want_spare = False
            return spare

    def forget(self, seg: Segment) -> None:
        """``seg`` is being dropped: stop pre-faulting it."""
        with self._cond:
            if self._target is seg:
                self._target = None

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._target = None
            self._cond.notify()
        self._thread.join()
        if self._spare is not None:
            self._spare.discard()
            self._spare = None

    # -- the thread -------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and self._target is None and not (self._want_spare and self._spare is None):
                    self._cond.wait()
                if self._stopped:
                    return
                seg, upto = self._target, self._target_upto
                self._target = None
                make_spare = seg is None and self._want_spare and self._spare is None
                self._busy = True
            try:
                if seg is not None:
                    start = seg.populated
                    while start < upto and not self._stopped:
                        stop = min(upto, start + _CHUNK)
                        seg.prefault(stop, self._populate)
                        if seg.populated < stop:
                            break  # dropped, or pre-faulting is not available
                        start = stop
                elif make_spare:
                    spare = self._make_spare()
                    with self._cond:
                        self._spare = spare
                        if spare is None:
                            self._want_spare = False  # failed (e.g. disk full): the writer will find out itself
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _make_spare(self) -> Optional[Spare]:
        path = os.path.join(self._dir, f"spare-{os.getpid()}-{next(_spare_names)}.tmp")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError:
            return None
        try:
            _osio.fallocate(fd, self._size)
            mm = mmap.mmap(fd, self._size, access=mmap.ACCESS_WRITE)
        except BaseException:
            os.close(fd)
            try:
                os.unlink(path)
            except OSError:
                pass
            return None
        populated = 0
        if self._spare_prefault and self._populate(mm, 0, min(self._size, self._spare_prefault)):
            populated = min(self._size, self._spare_prefault)
        return Spare(path, fd, mm, self._size, populated)

"""Background zeroing of segment space ahead of a flushing writer.

A segment is preallocated with ``fallocate``, which gives it *unwritten*
extents: the first fsync after data lands in such an extent must also commit
the extent's conversion to "written" (extent-tree metadata: a journal commit
on a journaled ext4; the ext4 these figures come from has no journal and
writes the metadata blocks directly).  An append-only file written with plain
``write`` pays a similar metadata write for its size change, so fastlog would
only match that raw loop.  Blocks that were already written (with zeros) and
synced need no metadata at all on the next fsync: measured here, about 1.3x
the raw loop's fsync rate.

So once a log is being flushed, one daemon thread keeps a window of the active
segment just past the write position written with zeros and synced, off the
append and flush paths, on another core.  It is only advice: when the writer
gets ahead of it, the writer just writes into unwritten extents as before.  A
log that is only appended to, never flushed, is left alone: there the extra
zeroing measured slower than none.

Safety: the zeroing and the appends both go through ``pwrite`` and both hold
the segment's lock, and the zeroer only writes at or beyond the write position
it sees under that lock, so it can never overwrite a record.
"""
from __future__ import annotations

import os
import threading
from typing import Optional

from . import _osio
from .segment import Segment

__all__ = ["ZeroAhead"]

_CHUNK = 256 << 10
_ZEROS = bytes(_CHUNK)


class ZeroAhead:
    """Keeps ``window`` bytes past a segment's write position written and synced."""

    def __init__(self, window: int) -> None:
        self._window = window
        self._cond = threading.Condition()
        self._target: Optional[Segment] = None
        self._stopped = False
        self._sync = False  # only work once the log is being flushed
        # A failed fsync of ours.  Linux reports a writeback error once per open
        # file description, and ours is the writer's (a dup): the writer's next
        # flush would succeed without it, so the log must fail that flush.
        self.error: Optional[OSError] = None
        self._thread = threading.Thread(target=self._run, name="fastlog-zero-ahead", daemon=True)
        self._thread.start()

    def after_append(self, seg: Segment) -> None:
        """The writer advanced in ``seg``: top its window up (once flushes happen)."""
        if self._sync and seg.zeroed - seg.write_end < self._window // 2 and seg.zeroed < seg.size:
            with self._cond:
                self._target = seg
                self._cond.notify()

    def after_flush(self, seg: Segment) -> None:
        """A flush finished: the log is being made durable, so zeroing pays."""
        self._sync = True
        self.after_append(seg)

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._target = None
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and self._target is None:
                    self._cond.wait()
                if self._stopped:
                    return
                seg, self._target = self._target, None
                assert seg is not None  # the wait above ends only with a target or when stopped
            try:
                self._top_up(seg)
            except OSError:
                pass  # only advice: the writer reports real I/O errors itself

    def _top_up(self, seg: Segment) -> None:
        # Write the zeros a chunk at a time (the writer may take the lock in
        # between), then sync them all at once: one fsync, not one per chunk,
        # competing with the writer's own flushes.
        goal = None
        fd = -1
        try:
            while not self._stopped:
                with seg.lock:
                    if seg.fd < 0:
                        return
                    if goal is None:
                        goal = min(seg.size, seg.write_end + self._window)
                    start = max(seg.zeroed, seg.write_end)
                    start += (-start) % 4096  # whole pages only: the page holding the end has data
                    if start >= goal:
                        break
                    end = min(goal, start + _CHUNK)
                    os.pwrite(seg.fd, _ZEROS[: end - start], start)
                    seg.zeroed = end
                    if fd < 0:
                        # A file description of its own (not a dup): Linux reports a
                        # writeback error once to each open description, so an error
                        # this sync meets still reaches the writer's next fsync too.
                        fd = _reopen(seg.fd)
            if fd >= 0:
                try:
                    _osio.fdatasync(fd)
                except OSError as exc:
                    if self.error is None:
                        self.error = exc
                    raise
        finally:
            if fd >= 0:
                os.close(fd)


def _reopen(fd: int) -> int:
    try:
        return os.open(f"/proc/self/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return os.dup(fd)  # no /proc: the recorded error still reaches the next flush

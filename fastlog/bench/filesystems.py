"""``fastlog bench --filesystems``: the same run once per file system, in one invocation.

Each file system is a fresh loop-mounted image (tmpfs: a fresh mount) from
:mod:`fastlog.bench.loopfs`, used as the work directory of one complete
:func:`~fastlog.bench.runner.run_bench`; it is unmounted and its image deleted
before the next one is made, so only one exists at a time.  A file system that
cannot be mounted (not root, no mkfs) is skipped with one line saying why.
"""
from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import Any, Dict, List, Optional, Sequence, TextIO

from . import loopfs
from .runner import BenchConfig, BenchResults, run_bench, write_json_document

__all__ = ["FilesystemRun", "run_on_filesystems", "parse_filesystems", "default_image_size"]

#: Smallest image: room for every engine's directories of a default run.
_DEFAULT_IMAGE = 4 << 30


def parse_filesystems(spec: str) -> List[str]:
    """``"ext4,xfs"`` -> ["ext4", "xfs"]; ValueError for an unknown name."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in loopfs.FILESYSTEMS]
    if unknown:
        raise ValueError(f"unknown file system(s) {', '.join(unknown)}; choose from {', '.join(loopfs.FILESYSTEMS)}")
    if not names:
        raise ValueError("no file system given")
    return list(dict.fromkeys(names))


def default_image_size(config: BenchConfig) -> int:
    """4 GiB, or three times the largest recovery-scale log when that is more.

    The recovery-scale workload writes one log at a time; 3x its payload covers
    the engines' framing, indexes and preallocation.  The image is sparse, so
    only what the engines write takes space on the disk below.
    """
    largest = max(config.scales) if "recovery-scale" in config.workloads else 0
    return max(_DEFAULT_IMAGE, 3 * largest * (config.entry_size + 64))


@dataclass
class FilesystemRun:
    """The results of one run per file system (in the requested order) and the skipped ones."""

    config: BenchConfig
    results: Dict[str, BenchResults] = field(default_factory=dict)
    skipped: Dict[str, str] = field(default_factory=dict)
    image_size: int = 0

    def to_json(self) -> Dict[str, Any]:
        from .report import filesystem_comparison

        return {
            "format": "fastlog-bench-filesystems/1",
            "image_bytes": self.image_size,
            "filesystems": {fs: r.to_json() for fs, r in self.results.items()},
            "skipped_filesystems": self.skipped,
            "comparison": filesystem_comparison(self),
        }

    def write_json(self, path: str) -> None:
        write_json_document(path, self.to_json())


class _TerminateAsInterrupt:
    """While active, SIGTERM raises KeyboardInterrupt, so the unmounting ``finally`` blocks run."""

    def __enter__(self) -> "_TerminateAsInterrupt":
        self.previous = signal.getsignal(signal.SIGTERM)
        try:
            signal.signal(signal.SIGTERM, self._raise)
            self.installed = True
        except ValueError:  # not the main thread: leave signals alone
            self.installed = False
        return self

    @staticmethod
    def _raise(signum: int, frame: Optional[FrameType]) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    def __exit__(self, *exc_info: object) -> None:
        if self.installed:
            signal.signal(signal.SIGTERM, self.previous)


def run_on_filesystems(
    config: BenchConfig,
    filesystems: Sequence[str],
    *,
    image_size: Optional[int] = None,
    parent: Optional[str] = None,
    progress: Optional[TextIO] = None,
) -> FilesystemRun:
    """Run ``config`` once per file system; ``parent`` holds the images (default: the temp dir)."""
    size = image_size or default_image_size(config)
    run = FilesystemRun(config, image_size=size)

    def say(text: str) -> None:
        if progress is not None:
            progress.write(text + "\n")
            progress.flush()

    with _TerminateAsInterrupt():
        for fstype in filesystems:
            reason = loopfs.check(fstype)
            if reason:
                run.skipped[fstype] = reason
                say(f"fastlog bench: skipping {fstype}: {reason}")
                continue
            try:
                with loopfs.mounted(fstype, size, parent=parent) as mount_point:
                    say(f"fastlog bench: === {fstype} ({size / (1 << 30):.1f} GiB at {mount_point}) ===")
                    t0 = time.perf_counter()
                    run.results[fstype] = run_bench(replace(config, workdir=mount_point), progress=progress)
                    say(f"fastlog bench: {fstype} done in {time.perf_counter() - t0:.0f} s")
            except loopfs.FilesystemUnavailable as exc:
                run.skipped[fstype] = str(exc)
                say(f"fastlog bench: skipping {fstype}: {exc}")
    return run

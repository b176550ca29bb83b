"""A LazyFS mount for power-cut tests: start, cut the power, restart, unmount.

LazyFS is a FUSE file system with its own page cache: writes stay in that
cache until the file is fsynced, and ``lazyfs::clear-cache`` drops every byte
that was not, which is what a power cut does to a disk.  It is a test tool,
not part of fastlog: a source checkout builds it from ``../shared/lazyfs`` into
``build/lazyfs`` (``make lazyfs``); elsewhere name the binary with the
``FASTLOG_LAZYFS`` environment variable (or the plugin's ``--fastlog-lazyfs``).

One :class:`LazyFS` owns a private directory (unique per process and mount)
holding the backing directory, the mount point, the two FIFOs LazyFS talks
through and its configuration.  Every mount is registered for an ``atexit``
unmount, so an interrupted run does not leave a FUSE mount behind.
"""
from __future__ import annotations

import atexit
import ctypes
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Union

REPO = Path(__file__).resolve().parents[2]
# Where CI keeps LazyFS beside its fresh clone, and where `make lazyfs` builds it.
SHARED_LAZYFS = REPO.parent / "shared" / "lazyfs"
BUILT_BINARY = REPO / "build" / "lazyfs" / "lazyfs"
#: Environment variable naming a LazyFS binary; it wins over the built one.
BINARY_ENV = "FASTLOG_LAZYFS"


def _binary_path() -> Path:
    named = os.environ.get(BINARY_ENV, "").strip()
    return Path(named) if named else BUILT_BINARY


LAZYFS_BINARY = _binary_path()

# LazyFS preallocates its whole cache at start: 64 MiB starts in a fraction of
# a second (the 1 GiB of its example takes seconds and as much memory).  The
# logs of these tests stay far below it; a full cache would write through,
# which could only hide a lost write, never invent one.
CACHE_SIZE = "64mb"

InjectionValue = Union[str, int, Sequence[int]]

_live: dict[int, LazyFS] = {}
_libc = ctypes.CDLL(None, use_errno=True)


def unavailable_reason() -> str | None:
    """Why the power-cut suite cannot run here, or None when it can (LazyFS may still need building)."""
    binary = _binary_path()
    if os.geteuid() != 0:
        return "not running as root"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is missing (Debian package fuse3)"
    if os.environ.get(BINARY_ENV, "").strip():
        if not os.access(binary, os.X_OK):
            return f"{BINARY_ENV}={binary} is not an executable file"
        return None
    if not binary.exists() and not (SHARED_LAZYFS / "build.sh").exists():
        return (
            f"LazyFS is neither built ({binary}) nor available to build ({SHARED_LAZYFS}); "
            f"set {BINARY_ENV}=/path/to/lazyfs"
        )
    return None


def ensure_built() -> Path:
    """The LazyFS binary, building it first when needed (idempotent, about 25 s)."""
    binary = _binary_path()
    if binary.exists() or os.environ.get(BINARY_ENV, "").strip():
        return binary
    result = subprocess.run(
        ["bash", str(SHARED_LAZYFS / "build.sh"), str(BUILT_BINARY.parent)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if result.returncode != 0 or not BUILT_BINARY.exists():
        tail = " | ".join(result.stdout.strip().splitlines()[-3:])
        raise RuntimeError(f"building LazyFS failed: {tail}")
    return BUILT_BINARY


def is_mounted(path: str | Path) -> bool:
    """Whether ``path`` is a mount point, also when its FUSE server has died
    (``os.path.ismount`` then fails to stat it and says no)."""
    want = os.path.realpath(str(path))
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4 and fields[4].replace("\\040", " ") == want:
                return True
    return False


def _toml_value(value: InjectionValue) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, int):
        return str(value)
    return "[" + ",".join(str(int(v)) for v in value) + "]"


def syncfs(path: str | Path) -> None:
    """Write back every dirty page of the file system holding ``path``.

    Pages a killed process dirtied through a shared mapping sit in the
    kernel's page cache above LazyFS; they must reach LazyFS before its cache
    is cleared, or they would land on the "disk" after the power cut.
    """
    fd = os.open(str(path), os.O_RDONLY)
    try:
        if _libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)


class LazyFS:
    """One LazyFS instance over a backing directory that outlives restarts."""

    def __init__(self, binary: Path, base: Path | None = None) -> None:
        self.binary = Path(binary)
        # No "-o" anywhere in the paths: LazyFS takes an argument holding "-o"
        # (in any case) for a mount option and drops the config path before it.
        self.base = Path(base) if base else Path(tempfile.mkdtemp(prefix=f"fastlog_powercut_{os.getpid()}_"))
        assert "-o" not in str(self.base).lower(), self.base
        self.root = self.base / "root"  # what the "disk" holds
        self.mount = self.base / "mnt"  # where the code under test writes
        self.faults_fifo = self.base / "faults.fifo"
        self.done_fifo = self.base / "done.fifo"
        self.config = self.base / "lazyfs.toml"
        self.output = self.base / "lazyfs.out"
        self.root.mkdir(parents=True, exist_ok=True)
        self.mount.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self._done_fd: int | None = None
        self.mounts = 0

    # -- lifecycle -----------------------------------------------------------
    def start(self, injections: Sequence[dict[str, InjectionValue]] = ()) -> None:
        """Mount, with the given ``[[injection]]`` tables (torn-op, torn-seq) armed."""
        assert self.proc is None, "already mounted"
        lines = [
            "[faults]",
            f"fifo_path={_toml_value(str(self.faults_fifo))}",
            f"fifo_path_completed={_toml_value(str(self.done_fifo))}",
            "[cache]",
            "apply_eviction=false",
            "[cache.simple]",
            f'custom_size="{CACHE_SIZE}"',
            "blocks_per_page=1",
            "[filesystem]",
            "log_all_operations=false",
            'logfile=""',
        ]
        for table in injections:
            lines.append("[[injection]]")
            lines += [f"{k}={_toml_value(v)}" for k, v in table.items()]
        self.config.write_text("\n".join(lines) + "\n")
        with open(self.output, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    str(self.binary), str(self.mount), "--config-path", str(self.config), "-f",
                    "-o", "allow_other", "-o", "modules=subdir", "-o", f"subdir={self.root}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of the test run must not kill it before the unmount
            )
        _live[id(self)] = self
        deadline = time.monotonic() + 30
        while not is_mounted(self.mount):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.output.read_text(errors="replace").strip().splitlines()[-5:]
                self.stop()
                raise RuntimeError("LazyFS did not mount: " + " | ".join(tail))
            time.sleep(0.005)
        # LazyFS opens the completion FIFO for writing and waits for a reader:
        # hold it open for as long as this mount lives.
        self._done_fd = os.open(self.done_fifo, os.O_RDONLY | os.O_NONBLOCK)
        self.mounts += 1

    def alive(self) -> bool:
        """False once LazyFS has crashed itself (a torn-op / torn-seq fault fired)."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Unmount (with ``fusermount3 -u``) and end the LazyFS process; safe to repeat."""
        if self.proc is None:
            return
        for attempt in range(50):
            if not is_mounted(self.mount):
                break
            args = ["fusermount3", "-u", str(self.mount)] if attempt < 40 else ["fusermount3", "-u", "-z", str(self.mount)]
            if subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
                break
            time.sleep(0.05)  # busy: a killed writer's files are still being released
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None
        if self._done_fd is not None:
            os.close(self._done_fd)
            self._done_fd = None
        _live.pop(id(self), None)

    def restart(self, injections: Sequence[dict[str, InjectionValue]] = ()) -> None:
        self.stop()
        self.start(injections)

    def remove(self) -> None:
        """Unmount and delete the private directory."""
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    # -- faults --------------------------------------------------------------
    def command(self, text: str) -> None:
        # LazyFS holds the FIFO open for reading, so this open never blocks;
        # one command per write, ending in a newline, as LazyFS expects.
        fd = os.open(self.faults_fifo, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(fd, (text + "\n").encode())
        finally:
            os.close(fd)

    def power_cut(self) -> None:
        """Drop every byte that was not fsynced, and wait until LazyFS says it is done."""
        assert self.alive() and self._done_fd is not None, "LazyFS is not running"
        syncfs(self.mount)
        self.command("lazyfs::clear-cache")
        want = b"finished::clear-cache\n"
        got = b""
        deadline = time.monotonic() + 60
        while want not in got:
            left = deadline - time.monotonic()
            if left <= 0 or not self.alive():
                raise RuntimeError(f"LazyFS did not confirm the power cut (got {got!r})")
            ready, _, _ = select.select([self._done_fd], [], [], min(left, 0.5))
            if ready:
                try:
                    got += os.read(self._done_fd, 256)
                except BlockingIOError:
                    pass

    def backing_path(self, mounted: str | Path) -> str:
        """The path LazyFS sees for a file under the mount (what injections name)."""
        rel = os.path.relpath(str(mounted), str(self.mount))
        return str(self.root / rel)

    def log_tail(self, lines: int = 8) -> list[str]:
        try:
            return self.output.read_text(errors="replace").strip().splitlines()[-lines:]
        except OSError:
            return []


@atexit.register
def _unmount_everything() -> None:
    for fs in list(_live.values()):
        try:
            fs.remove()
        except Exception:
            pass

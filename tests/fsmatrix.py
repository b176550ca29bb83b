"""Real filesystems for the tests: small loop-mounted images and a tmpfs.

The filesystem matrix runs fastlog's promises on the filesystems users run it
on -- journaled ext4, XFS, btrfs and tmpfs -- instead of only on whatever
filesystem holds the temporary directory.  :class:`FsMatrix` formats a sparse
image per filesystem (so a 320 MiB XFS costs a few MiB of real disk), mounts
it through a loop device, mounts a size-limited tmpfs, and takes everything
down again.

Taking down is what matters on a shared machine: every image and mount point
lives under a directory of its own
(``/dev/shm/fastlog-fsmatrix/run-<pid>-<random>``, see :func:`_images_parent`),
so parallel runs never meet; :meth:`FsMatrix.close` runs from the fixture's
finalizer, from ``atexit`` and on SIGTERM/SIGHUP; loop devices are attached
with auto-clear (``mount -o loop``), so unmounting frees them.  A run killed
outright (SIGKILL) leaves its mounts behind: each run holds an ``flock`` on
its directory for as long as it lives, and the next run reaps every directory
whose lock is free.

Where a filesystem cannot be had (not root, no loop devices, its mkfs
missing, the mount refused), :meth:`FsMatrix.mount` raises
:class:`FilesystemUnavailable` with a one-line reason, and the tests skip.

``FASTLOG_FS_MATRIX`` picks the filesystems: unset or empty for all of them,
a comma-separated list (``ext4,btrfs``) for some, ``none`` for none.
``FASTLOG_FS_IMAGES`` chooses the directory for the run directories.
"""
from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import errno
import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

__all__ = [
    "FS_NAMES",
    "FsSpec",
    "SPECS",
    "FilesystemUnavailable",
    "MountedFs",
    "FsMatrix",
    "selected_filesystems",
    "fill_filesystem",
]

#: The filesystems of the matrix, in the order the tests run on them.
FS_NAMES: Tuple[str, ...] = ("ext4", "xfs", "btrfs", "tmpfs")

MiB = 1 << 20

# mkfs and losetup live in sbin, which a non-login root shell may not have on PATH.
_SBIN = os.pathsep.join(["/usr/local/sbin", "/usr/sbin", "/sbin"])


@dataclass(frozen=True)
class FsSpec:
    """How to make one filesystem of the matrix."""

    name: str
    #: Size of the sparse image file; 0 for a filesystem without a device (tmpfs).
    size: int
    #: The mkfs command line, without the image path.
    mkfs: Tuple[str, ...] = ()
    #: ``mount -o`` options (beside ``loop`` for images).
    options: str = ""


SPECS: Dict[str, FsSpec] = {
    # What a plain ``mkfs.ext4`` makes on a real disk: a journal (-j says so
    # explicitly), 4 KiB blocks (on a small image mke2fs would otherwise pick
    # 1 KiB ones).  No blocks reserved for root, so "full" means full for the
    # root-run tests too.
    "ext4": FsSpec("ext4", 160 * MiB, ("mkfs.ext4", "-q", "-F", "-j", "-b", "4096", "-m", "0")),
    # mkfs.xfs refuses anything below 300 MiB.
    "xfs": FsSpec("xfs", 320 * MiB, ("mkfs.xfs", "-q", "-f")),
    # Large enough for btrfs's default (non-mixed) data and metadata chunks.
    "btrfs": FsSpec("btrfs", 200 * MiB, ("mkfs.btrfs", "-q", "-f")),
    "tmpfs": FsSpec("tmpfs", 0, (), "size=64m"),
}


class FilesystemUnavailable(Exception):
    """A filesystem of the matrix cannot be mounted here; ``str()`` says why in one line."""


@dataclass(frozen=True)
class MountedFs:
    """One mounted filesystem of the matrix."""

    name: str
    #: The mount point (the tests make their directories below it).
    root: Path
    #: The image file behind the loop device (None for tmpfs).
    image: Optional[Path]

    def free_bytes(self) -> int:
        """Bytes a new file could still take (root reserves nothing on these filesystems)."""
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def sync(self) -> None:
        """Write back this filesystem only (btrfs returns the space of deleted files at commit)."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if _libc_syncfs is None or _libc_syncfs(fd) != 0:
                os.sync()
        finally:
            os.close(fd)


def _load_syncfs() -> Any:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        fn = ctypes.CDLL(name, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_libc_syncfs = _load_syncfs()


def selected_filesystems() -> Tuple[str, ...]:
    """The filesystems ``FASTLOG_FS_MATRIX`` asks for (all of them by default)."""
    value = os.environ.get("FASTLOG_FS_MATRIX", "").strip().lower()
    if not value:
        return FS_NAMES
    if value in ("none", "0", "off", "no"):
        return ()
    return tuple(name for name in FS_NAMES if name in {v.strip() for v in value.split(",")})


def _which(command: str) -> Optional[str]:
    return shutil.which(command, path=os.environ.get("PATH", "") + os.pathsep + _SBIN)


def _run(args: List[str], timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = env.get("PATH", "") + os.pathsep + _SBIN
    env["LC_ALL"] = "C"  # error messages are quoted in skip reasons
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)


def _first_line(proc: subprocess.CompletedProcess) -> str:
    text = (proc.stderr or "").strip() or (proc.stdout or "").strip() or f"exit status {proc.returncode}"
    return text.splitlines()[-1].strip()


def _mount_points_under(directory: Path) -> List[Path]:
    """Mount points at or below ``directory``, deepest first."""
    prefix = str(directory).rstrip("/") + "/"
    found = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                point = fields[4].encode().decode("unicode_escape")  # \040 and friends
                if point.startswith(prefix):
                    found.append(Path(point))
    except OSError:
        return []
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def _unmount(point: Path) -> None:
    """Unmount ``point``: a few tries (a child that was just killed may still hold a file), then lazily."""
    for attempt in range(5):
        if not os.path.ismount(point):
            return
        if _run(["umount", str(point)], timeout=60).returncode == 0:
            return
        time.sleep(0.1 * (attempt + 1))
    if os.path.ismount(point):
        _run(["umount", "-l", str(point)], timeout=60)


def _detach_loops(image: Path) -> None:
    """Detach every loop device still backed by ``image`` (auto-clear normally did it already)."""
    if not _which("losetup"):
        return
    proc = _run(["losetup", "-j", str(image)], timeout=30)
    for line in proc.stdout.splitlines():
        device = line.split(":", 1)[0].strip()
        if device.startswith("/dev/loop"):
            _run(["losetup", "-d", device], timeout=30)


def _take_down(run_dir: Path) -> None:
    """Unmount, detach and delete everything of one run directory.

    Never removes a directory recursively: if an unmount did not happen, the
    files below the mount point belong to the mounted filesystem, and the
    mount point stays (``rmdir`` fails on it).
    """
    for point in _mount_points_under(run_dir):
        _unmount(point)
    if not run_dir.is_dir():
        return
    for image in run_dir.glob("*.img"):
        _detach_loops(image)
        try:
            image.unlink()
        except OSError:
            pass
    for child in run_dir.iterdir():
        if child.is_dir() and not os.path.ismount(child):
            try:
                child.rmdir()
            except OSError:
                pass
    for leftover in (".lock", ".lock.new"):
        try:
            (run_dir / leftover).unlink()
        except OSError:
            pass
    try:
        run_dir.rmdir()
    except OSError:
        pass


#: Free space /dev/shm needs to hold the images: their full size, in case a test fills them all.
_SHM_NEEDED = 1 << 30


def _images_parent() -> Path:
    """Where the run directories (images and mount points) go.

    /dev/shm when it has room for every image at full size: a loop device
    passes each flush of the filesystem on to its image file, and on a disk
    that is a real fsync, which would triple the matrix's run time for nothing
    it tests (these tests are about the filesystems' behaviour, not the
    disk's).  Otherwise the temporary directory.  ``FASTLOG_FS_IMAGES`` overrides.
    """
    chosen = os.environ.get("FASTLOG_FS_IMAGES")
    if chosen:
        return Path(chosen)
    shm = Path("/dev/shm")
    try:
        st = os.statvfs(shm)
        if st.f_bavail * st.f_frsize >= _SHM_NEEDED and os.access(shm, os.W_OK):
            return shm
    except OSError:
        pass
    return Path(tempfile.gettempdir())


def _runs_dir() -> Path:
    path = _images_parent() / "fastlog-fsmatrix"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def reap_dead_runs(runs_dir: Path) -> None:
    """Take down what runs killed outright left behind: directories whose lock nobody holds."""
    for run_dir in runs_dir.glob("run-*"):
        lock = run_dir / ".lock"
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            continue  # being set up right now, or already half removed by its owner
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its run is alive
            _take_down(run_dir)
        finally:
            os.close(fd)


class FsMatrix:
    """Mounts the filesystems of the matrix on demand and takes them all down on :meth:`close`."""

    def __init__(self) -> None:
        self.mounted: Dict[str, MountedFs] = {}
        #: Why each filesystem that was asked for and could not be mounted is missing.
        self.unavailable: Dict[str, str] = {}
        self._closed = False
        self._base: Optional[Path] = None
        self._lock_fd: Optional[int] = None
        self._previous_handlers: Dict[int, Any] = {}

    # -- lifetime --------------------------------------------------------------------

    def _start(self) -> Path:
        """Create this run's directory (holding its lock) and arrange for cleanup."""
        if self._base is not None:
            return self._base
        runs = _runs_dir()
        reap_dead_runs(runs)
        base = Path(tempfile.mkdtemp(prefix=f"run-{os.getpid()}-", dir=runs))
        # The lock is taken before the file gets the name the reaper looks for.
        fd = os.open(base / ".lock.new", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(base / ".lock.new", base / ".lock")
        self._base, self._lock_fd = base, fd
        atexit.register(self.close)
        for signum in (signal.SIGTERM, signal.SIGHUP):
            try:
                self._previous_handlers[signum] = signal.signal(signum, self._on_signal)
            except (ValueError, OSError):  # not the main thread
                pass
        return base

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.close()
        previous = self._previous_handlers.get(signum)
        if callable(previous):
            previous(signum, frame)
        else:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def close(self) -> None:
        """Unmount and detach everything of this run; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._base is not None:
                _take_down(self._base)
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            for signum, previous in self._previous_handlers.items():
                try:
                    if signal.getsignal(signum) == self._on_signal:
                        signal.signal(signum, previous)
                except (ValueError, OSError, TypeError):
                    pass
            atexit.unregister(self.close)

    # -- mounting --------------------------------------------------------------------

    def mount(self, name: str) -> MountedFs:
        """The mounted filesystem ``name``, mounting it on first use (:attr:`mounted` keeps
        every filesystem this run mounted, also after :meth:`close`).

        Raises :class:`FilesystemUnavailable` (with the reason, remembered in
        :attr:`unavailable`) when it cannot be mounted here.
        """
        if self._closed:
            raise FilesystemUnavailable("the filesystem matrix was already taken down")
        if name in self.mounted:
            return self.mounted[name]
        if name in self.unavailable:
            raise FilesystemUnavailable(self.unavailable[name])
        try:
            mounted = self._mount(SPECS[name])
        except FilesystemUnavailable as exc:
            self.unavailable[name] = str(exc)
            raise
        self.mounted[name] = mounted
        return mounted

    def _mount(self, spec: FsSpec) -> MountedFs:
        if spec.name not in selected_filesystems():
            raise FilesystemUnavailable("not selected by FASTLOG_FS_MATRIX")
        if os.geteuid() != 0:
            raise FilesystemUnavailable("mounting needs root")
        if not _which("mount") or not _which("umount"):
            raise FilesystemUnavailable("no mount/umount command")
        if spec.size:
            if not _which("losetup"):
                raise FilesystemUnavailable("no losetup (util-linux)")
            probe = _run(["losetup", "-f"], timeout=30)
            if probe.returncode != 0:
                raise FilesystemUnavailable(f"no loop devices (losetup -f: {_first_line(probe)})")
            if not _which(spec.mkfs[0]):
                raise FilesystemUnavailable(f"{spec.mkfs[0]} not found (make fs-tools installs it as root)")
        base = self._start()
        point = base / spec.name
        point.mkdir()
        if not spec.size:
            args = ["mount", "-t", spec.name, "-o", spec.options, spec.name, str(point)]
            image = None
        else:
            image = base / f"{spec.name}.img"
            with open(image, "wb") as f:
                f.truncate(spec.size)  # sparse: only what the filesystem writes takes disk space
            made = _run([*spec.mkfs, str(image)], timeout=180)
            if made.returncode != 0:
                image.unlink()
                point.rmdir()
                raise FilesystemUnavailable(f"{spec.mkfs[0]} failed: {_first_line(made)}")
            options = ",".join(o for o in ("loop", spec.options) if o)
            args = ["mount", "-t", spec.name, "-o", options, str(image), str(point)]
        done = _run(args, timeout=120)
        if done.returncode != 0 or not os.path.ismount(point):
            _take_down_one(point, image)
            raise FilesystemUnavailable(f"mount refused: {_first_line(done)}")
        return MountedFs(spec.name, point, image)


def _take_down_one(point: Path, image: Optional[Path]) -> None:
    _unmount(point)
    if image is not None:
        _detach_loops(image)
        try:
            image.unlink()
        except OSError:
            pass
    try:
        point.rmdir()
    except OSError:
        pass


def fill_filesystem(fs: MountedFs, directory: Path, leave: int, smallest: int = 64 << 10) -> int:
    """Fill ``fs`` with preallocated filler files in ``directory`` until about ``leave`` bytes are free.

    Returns the bytes the filler took.  Allocates in shrinking chunks, down to
    ``smallest`` bytes, since copy-on-write filesystems refuse a large request
    well before their free count is reached; ``leave=0, smallest=4096`` takes
    every block a file can get.
    """
    directory.mkdir(parents=True, exist_ok=True)
    taken = 0
    chunk = 64 * MiB
    n = len(list(directory.glob("filler-*")))
    while chunk >= smallest:
        want = min(chunk, fs.free_bytes() - leave)
        if want < smallest:
            break
        path = directory / f"filler-{n:04d}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                break  # not even room for another file
            raise
        try:
            os.posix_fallocate(fd, 0, want)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            path.unlink()
            chunk = min(chunk, want) // 2
            continue
        finally:
            os.close(fd)
        taken += want
        n += 1
    return taken

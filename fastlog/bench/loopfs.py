"""Scratch file systems on loop devices, for measuring (or testing) on a chosen file system.

::

    from fastlog.bench.loopfs import mounted, FilesystemUnavailable

    try:
        with mounted("xfs", 1 << 30) as path:   # a fresh 1 GiB XFS, mounted at ``path``
            ...
    except FilesystemUnavailable as exc:
        print("skipping xfs:", exc)

``mounted(fstype, size)`` creates a sparse image file of ``size`` bytes in a
private temporary directory, formats it with the file system's own ``mkfs``
(defaults, so ext4 is journaled), attaches it to a free loop device, mounts it
and yields the mount point.  ``tmpfs`` needs no image: it is mounted with a
``size=`` limit.  On the way out, also after an exception or Ctrl-C, the file
system is unmounted, the loop device detached and the image deleted.  Every
call uses its own directory, so several processes can do this at once.

It needs root and the ``mkfs`` of the file system; when either is missing,
:func:`check` names what is missing and :func:`mounted` raises
:class:`FilesystemUnavailable` before touching anything.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from typing import Callable, Dict, Iterator, List, Optional, Sequence

__all__ = ["FILESYSTEMS", "FilesystemUnavailable", "check", "mounted", "parse_size"]

#: file system -> the mkfs command line (the image path is appended); tmpfs has none.
FILESYSTEMS: Dict[str, Optional[List[str]]] = {
    "ext4": ["mkfs.ext4", "-q", "-F"],
    "xfs": ["mkfs.xfs", "-q", "-f"],
    "btrfs": ["mkfs.btrfs", "-q", "-f"],
    "tmpfs": None,
}

#: The smallest image each mkfs accepts (XFS refuses file systems under 300 MB).
_MINIMUM_SIZE = {"ext4": 32 << 20, "xfs": 320 << 20, "btrfs": 128 << 20, "tmpfs": 1 << 20}


class FilesystemUnavailable(Exception):
    """The file system cannot be mounted here (not root, no mkfs, no loop device)."""


def parse_size(text: str) -> int:
    """``"4G"`` -> 4 GiB, ``"512M"`` -> 512 MiB, ``"4096"`` -> 4096 bytes."""
    text = text.strip()
    factor = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}.get(text[-1:].lower(), 1)
    digits = text[:-1] if factor != 1 else text
    try:
        value = int(float(digits) * factor)
    except ValueError:
        raise ValueError(f"bad size {text!r} (use e.g. 512M, 4G)") from None
    if value <= 0:
        raise ValueError(f"bad size {text!r}: must be positive")
    return value


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def check(fstype: str, *, is_root: Optional[Callable[[], bool]] = None,
          which: Optional[Callable[[str], Optional[str]]] = None) -> Optional[str]:
    """None when ``fstype`` can be mounted here, else one line saying why not.

    ``is_root`` and ``which`` (default: the effective uid is 0, ``shutil.which``)
    exist so the refusal paths can be exercised without root or with a tool
    "missing".
    """
    is_root = is_root or _is_root
    which = which or shutil.which
    if fstype not in FILESYSTEMS:
        return f"unknown file system {fstype!r} (choose from {', '.join(FILESYSTEMS)})"
    if not is_root():
        return "mounting file systems needs root"
    tools = ["mount", "umount"]
    mkfs = FILESYSTEMS[fstype]
    if mkfs is not None:
        tools += [mkfs[0], "losetup"]
    missing = [tool for tool in tools if which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not found (install the {fstype} tools)"
    return None


def _run(cmd: Sequence[str]) -> str:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        message = (proc.stderr.strip() or proc.stdout.strip() or f"exit status {proc.returncode}").splitlines()[-1]
        raise FilesystemUnavailable(f"{' '.join(cmd[:2])} failed: {message}")
    return proc.stdout.strip()


def _unmount(mount_point: str) -> None:
    """Unmount, retrying briefly while something still holds it; lazily as a last resort."""
    for attempt in range(10):
        if subprocess.run(["umount", mount_point], capture_output=True).returncode == 0:
            return
        if not os.path.ismount(mount_point):
            return
        time.sleep(0.2 * (attempt + 1))
    subprocess.run(["umount", "-l", mount_point], capture_output=True)


def _detach(device: str) -> None:
    for attempt in range(5):
        if subprocess.run(["losetup", "-d", device], capture_output=True).returncode == 0:
            return
        time.sleep(0.2 * (attempt + 1))


@contextlib.contextmanager
def mounted(fstype: str, size: int, *, parent: Optional[str] = None) -> Iterator[str]:
    """A fresh, empty ``fstype`` of ``size`` bytes mounted for the duration of the ``with``.

    ``parent`` is where the private directory holding the image and the mount
    point is created (default: the system temporary directory).  Raises
    :class:`FilesystemUnavailable` when the file system cannot be made or
    mounted; everything created up to that point is removed again.
    """
    problem = check(fstype)
    if problem:
        raise FilesystemUnavailable(problem)
    size = max(size, _MINIMUM_SIZE[fstype])
    home = tempfile.mkdtemp(prefix=f"fastlog-{fstype}-{os.getpid()}-", dir=parent)
    mount_point = os.path.join(home, "mnt")
    image = os.path.join(home, f"{fstype}.img")
    device: Optional[str] = None
    is_mounted = False
    try:
        os.mkdir(mount_point)
        mkfs = FILESYSTEMS[fstype]
        if mkfs is None:
            _run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", mount_point])
        else:
            with open(image, "wb") as fh:
                fh.truncate(size)  # sparse: only what the file system writes takes disk space
            _run([*mkfs, image])
            device = _run(["losetup", "--find", "--show", image])
            _run(["mount", "-t", fstype, device, mount_point])
        is_mounted = True
        yield mount_point
    finally:
        if is_mounted:
            _unmount(mount_point)
        if device is not None:
            _detach(device)
        shutil.rmtree(home, ignore_errors=True)

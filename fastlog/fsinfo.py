"""Which filesystem a log lives on, and whether stores through a mapping are safe there.

A store to a page of a shared writable mapping cannot report an error: when
the filesystem must allocate a block for it at fault time and cannot, the
process gets SIGBUS.  fastlog only stores through its mappings where blocks
that were already written with ``pwrite`` (zeros or records) are overwritten
in place, with no allocation at all:

* ext4 and XFS overwrite written blocks in place;
* tmpfs keeps every page it handed out (``fallocate`` allocates them).

Everywhere else -- copy-on-write filesystems (btrfs: every overwrite takes a
new block), FUSE, NFS, overlayfs, quotas that are charged late, anything
unknown -- every byte goes to the file with ``pwrite`` and the mapping is only
read (docs/format.md, "How appends reach the file").

The probe is ``fstatfs(2)``'s ``f_type``, read through ctypes: the magic
numbers below are the kernel's, and ``os.statvfs`` does not report them.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Any, Optional

__all__ = ["EXT4_MAGIC", "XFS_MAGIC", "TMPFS_MAGIC", "fs_type", "fs_name", "stores_in_place"]

EXT4_MAGIC = 0xEF53  # also ext2/ext3 (the ext4 driver); see Log's preallocation check
XFS_MAGIC = 0x58465342
TMPFS_MAGIC = 0x01021994
_BTRFS_MAGIC = 0x9123683E

_IN_PLACE = frozenset({EXT4_MAGIC, XFS_MAGIC, TMPFS_MAGIC})
_NAMES = {EXT4_MAGIC: "ext4", XFS_MAGIC: "xfs", TMPFS_MAGIC: "tmpfs", _BTRFS_MAGIC: "btrfs"}

# struct statfs starts with f_type (a __fsword_t, the size of a long) on every
# 64- and 32-bit Linux ABI; the rest of the struct is never read, so a buffer
# larger than any version of it is enough.
_STATFS_BUF = 256


def _load_fstatfs() -> Optional[Any]:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        func = libc.fstatfs
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_void_p]
    func.restype = ctypes.c_int
    return func


_fstatfs = _load_fstatfs()


def fs_type(fd: int) -> Optional[int]:
    """The ``f_type`` magic of the filesystem holding ``fd``, or None when it cannot be read."""
    if _fstatfs is None:
        return None
    buf = ctypes.create_string_buffer(_STATFS_BUF)
    if _fstatfs(fd, buf) != 0:
        return None
    magic = ctypes.c_long.from_buffer(buf).value
    return magic & 0xFFFFFFFF  # f_type is signed on some ABIs; the magics are 32-bit


def fs_name(path: str) -> str:
    """A short name of the filesystem holding ``path`` (for messages and tests)."""
    magic = _type_of_path(path)
    if magic is None:
        return "unknown"
    return _NAMES.get(magic, f"0x{magic:x}")


def stores_in_place(path: str) -> bool:
    """Whether stores through a mapping of a file in directory ``path`` never allocate,
    once the blocks were written with ``pwrite`` (see the module docstring)."""
    return _type_of_path(path) in _IN_PLACE


def _type_of_path(path: str) -> Optional[int]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        return fs_type(fd)
    finally:
        os.close(fd)

"""Small checksummed files written atomically (``STATE``, ``HARDSTATE``).

Layout in docs/format.md ("Small checksummed files").  A save writes
``NAME.tmp``, fsyncs it, renames it over ``NAME`` and fsyncs the directory, so
after a crash a reader sees either the previous file or the new one, whole.
"""
from __future__ import annotations

import errno
import os
import struct
from typing import Optional

from . import _osio
from .errors import CorruptionError, StorageFullError
from .regular_file import open_regular

__all__ = ["write_small_file", "read_small_file", "RECORD_LOG_STATE", "RECORD_HARD_STATE"]

MAGIC = b"FLOGMETA"
VERSION = 1
RECORD_LOG_STATE = 1
RECORD_HARD_STATE = 2
_HEAD = struct.Struct("<8sIII")  # magic, version, record type, body length
_HEAD_SIZE = _HEAD.size + 4  # + crc
_MAX_BODY = 1 << 16


def _crc32c(data: bytes) -> int:
    from ._impl import core

    return core.crc32c(data)


def encode_small_file(record_type: int, body: bytes) -> bytes:
    head = _HEAD.pack(MAGIC, VERSION, record_type, len(body))
    crc = _crc32c(head + body)
    return head + struct.pack("<I", crc) + body


def decode_small_file(data: bytes, record_type: int, path: str = "<memory>") -> bytes:
    if len(data) < _HEAD_SIZE:
        raise CorruptionError("small file is shorter than its header", path, len(data))
    magic, version, rtype, length = _HEAD.unpack_from(data, 0)
    if magic != MAGIC:
        raise CorruptionError("bad magic", path, 0)
    if version != VERSION:
        raise CorruptionError(f"unsupported format version {version}", path, 8)
    if rtype != record_type:
        raise CorruptionError(f"record type {rtype}, expected {record_type}", path, 12)
    if length > _MAX_BODY or _HEAD_SIZE + length != len(data):
        raise CorruptionError(f"body length {length} does not match file size {len(data)}", path, 16)
    (crc,) = struct.unpack_from("<I", data, _HEAD.size)
    body = data[_HEAD_SIZE:]
    if _crc32c(data[: _HEAD.size] + body) != crc:
        raise CorruptionError("checksum mismatch", path, _HEAD.size)
    return body


def write_small_file(dir_path: str, name: str, record_type: int, body: bytes) -> None:
    """Atomically replace ``dir_path/name`` with a file holding ``body``."""
    data = encode_small_file(record_type, body)
    final = os.path.join(dir_path, name)
    tmp = final + ".tmp"
    try:
        fd = open_regular(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _osio.pwrite_all(fd, data, 0)
            _osio.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        # Nothing is renamed yet, so the old file stands: a full disk is a
        # clean StorageFullError (callers need not treat the store as broken).
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFullError(exc.errno, f"no space left to write {name}: {exc.strerror}", final) from exc
        raise
    os.replace(tmp, final)
    _osio.fsync_dir(dir_path)


def read_small_file(dir_path: str, name: str, record_type: int) -> Optional[bytes]:
    """The body of ``dir_path/name``, or None when the file does not exist.

    Anything but a regular file under that name (a FIFO would block the read
    forever) is CorruptionError."""
    path = os.path.join(dir_path, name)
    try:
        fd = open_regular(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    with open(fd, "rb") as f:
        data = f.read(_MAX_BODY + _HEAD_SIZE + 1)
    return decode_small_file(data, record_type, path)

"""LevelDB engine (the ``plyvel`` package).

Layout: one database; log keys are ``b"L"`` + the index as 8 bytes big-endian
(value: term u64 LE, kind u8, payload), meta keys are ``b"M"`` + a name (purge
boundary, hard state).  Log keys sort by index and all sort before the meta
keys, so a range read is one ordered iterator.

Writes: one ``write_batch`` per operation, so each is atomic.  LevelDB has no
range delete: suffix replacement, truncation, purge and reset iterate over
the keys to remove (keys only) and delete them in the same batch as the rest
of the operation.

Durability: ``durable=True`` writes every batch with ``sync=True`` (the log
file is fsynced before the write returns) and ``is_write_durable()`` is True.
``durable=False`` writes with ``sync=False`` (surviving a crash of the process
but not of the machine); ``flush()`` writes an empty batch with ``sync=True``,
which fsyncs the log file and with it every earlier write.
"""
from __future__ import annotations

from typing import Any, List, Optional

import plyvel

from .._types import LogId
from ._base import (
    DEFAULT_MAX_ENTRY_SIZE,
    KEY,
    KINDS,
    VALUE_HEADER,
    BaseEngine,
    BaseLogStore,
    BaseMetaStore,
    decode_boundary,
    encode_boundary,
    entry_class,
    prepare_directory,
)

__all__ = ["LevelEngine", "open_leveldb"]

_LOG = b"L"
_LOG_END = b"M"  # first key after every log key
_BOUNDARY_KEY = b"Mpurge_boundary"
_HARD_STATE_KEY = b"Mhard_state"


def _key(index: int) -> bytes:
    return _LOG + KEY.pack(index)


class LevelLogStore(BaseLogStore):
    engine_name = "leveldb"

    def __init__(self, db: Any, path: str, *, durable: bool, max_entry_size: int):
        super().__init__(durable=durable, max_entry_size=max_entry_size)
        self._db = db
        self._path = path
        first = last = 0
        for key in db.iterator(prefix=_LOG, include_value=False):
            first = KEY.unpack_from(key, 1)[0]
            break
        for key in db.iterator(prefix=_LOG, reverse=True, include_value=False):
            last = KEY.unpack_from(key, 1)[0]
            break
        self._set_loaded_state(first, last, decode_boundary(db.get(_BOUNDARY_KEY), path))

    def _delete_keys(self, wb: Any, start: bytes, stop: bytes) -> None:
        delete = wb.delete
        for key in self._db.iterator(start=start, stop=stop, include_value=False):
            delete(key)

    def _write_batch(self, delete_from: Optional[int], batch: List[Any]) -> None:
        with self._db.write_batch(transaction=True, sync=self._durable) as wb:
            if delete_from is not None:
                self._delete_keys(wb, _key(delete_from), _LOG_END)
            put, pack_key, pack_header = wb.put, KEY.pack, VALUE_HEADER.pack
            for e in batch:
                put(_LOG + pack_key(e.index), pack_header(e.term, e.kind) + e.payload)

    def _delete_from(self, index: int) -> None:
        with self._db.write_batch(transaction=True, sync=self._durable) as wb:
            self._delete_keys(wb, _key(index), _LOG_END)

    def _purge_upto(self, cutoff: LogId) -> None:
        with self._db.write_batch(transaction=True, sync=self._durable) as wb:
            self._delete_keys(wb, _LOG, _key(cutoff.index) + b"\x00")
            wb.put(_BOUNDARY_KEY, encode_boundary(cutoff))

    def _clear(self) -> None:
        with self._db.write_batch(transaction=True, sync=self._durable) as wb:
            self._delete_keys(wb, _LOG, _LOG_END)
            wb.delete(_BOUNDARY_KEY)

    def _read_one(self, index: int) -> Optional[Any]:
        value = self._db.get(_LOG + KEY.pack(index))
        if value is None:
            return None
        term, kind = VALUE_HEADER.unpack_from(value)
        return entry_class()(index, term, value[9:], KINDS[kind])

    def _read_range(self, start: int, end: int) -> List[Any]:
        cls, kinds, unpack, unpack_key = entry_class(), KINDS, VALUE_HEADER.unpack_from, KEY.unpack_from
        out: List[Any] = []
        append = out.append
        for key, value in self._db.iterator(start=_key(start), stop=_key(end), include_stop=True):
            term, kind = unpack(value)
            append(cls(unpack_key(key, 1)[0], term, value[9:], kinds[kind]))
        return out

    def _sync(self) -> None:
        self._db.write_batch(sync=True).write()


class LevelMetaStore(BaseMetaStore):
    engine_name = "leveldb"
    _log_store: LevelLogStore

    def _put_hard_state(self, raw: bytes) -> None:
        store = self._log_store
        store._db.put(_HARD_STATE_KEY, raw, sync=True)  # the hard state is always durable

    def _get_hard_state(self) -> Optional[bytes]:
        return self._log_store._db.get(_HARD_STATE_KEY)


class LevelEngine(BaseEngine):
    name = "leveldb"
    persistent = True
    _log_store: LevelLogStore

    def _close_backend(self) -> None:
        self._log_store._db.close()


def open_leveldb(
    path: Any,
    *,
    durable: bool = False,
    max_entry_size: int = DEFAULT_MAX_ENTRY_SIZE,
    **db_options: Any,
) -> LevelEngine:
    """Open (creating if needed) a LevelDB database in directory ``path``.

    Other keyword arguments go to ``plyvel.DB`` (e.g. ``write_buffer_size``,
    ``lru_cache_size``).
    """
    directory = prepare_directory(path)
    db = plyvel.DB(directory, create_if_missing=True, **db_options)
    try:
        log = LevelLogStore(db, directory, durable=bool(durable), max_entry_size=max_entry_size)
    except BaseException:
        db.close()
        raise
    return LevelEngine(directory, bool(durable), log, LevelMetaStore(log))

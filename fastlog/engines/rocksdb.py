"""RocksDB engine (the ``rocksdict`` package, in raw-bytes mode).

Layout: the log lives in its own column family ``log`` (key: index as 8 bytes
big-endian, value: term u64 LE, kind u8, payload); the purge boundary and the
hard state live in the ``default`` column family.  Column families share the
write-ahead log, so one ``WriteBatch`` spanning both is atomic.

Writes: one ``WriteBatch`` per operation.  Suffix replacement and truncation
are a ``delete_range`` tombstone over the removed keys plus the puts; purge is
a ``delete_range`` plus the boundary; reset is a ``delete_range`` over every
key.  Range reads are one iterator with ``iterate_upper_bound`` set just past
the last key wanted.

Durability: ``durable=True`` writes every batch with ``WriteOptions.sync =
True`` (the WAL is fsynced before the write returns) and ``is_write_durable()``
is True.  ``durable=False`` writes with ``sync=False``: the WAL is written
(surviving a crash of the process) but fsynced only by ``flush()``
(``flush_wal(sync=True)``).
"""
from __future__ import annotations

from typing import Any, List, Optional

from rocksdict import Options, ReadOptions, Rdict, WriteBatch, WriteOptions

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

__all__ = ["RocksEngine", "open_rocksdb"]

_BOUNDARY_KEY = b"purge_boundary"
_HARD_STATE_KEY = b"hard_state"
_LOG_CF = "log"
_KEY_MIN = b""
_KEY_END = b"\xff" * 9  # sorts after every 8-byte key


def _options() -> Any:
    opt = Options(raw_mode=True)
    opt.create_if_missing(True)
    opt.create_missing_column_families(True)
    return opt


class RocksLogStore(BaseLogStore):
    engine_name = "rocksdb"

    def __init__(self, db: Any, path: str, *, durable: bool, max_entry_size: int):
        super().__init__(durable=durable, max_entry_size=max_entry_size)
        self._db = db
        self._path = path
        self._log = db.get_column_family(_LOG_CF)
        self._log_cf = db.get_column_family_handle(_LOG_CF)
        self._write_opt = WriteOptions()
        self._write_opt.sync = bool(durable)
        self._sync_opt = WriteOptions()
        self._sync_opt.sync = True
        it = self._log.iter()
        it.seek_to_first()
        first = KEY.unpack(it.key())[0] if it.valid() else 0
        it.seek_to_last()
        last = KEY.unpack(it.key())[0] if it.valid() else 0
        del it
        self._set_loaded_state(first, last, decode_boundary(db.get(_BOUNDARY_KEY), path))

    # Every batch operation names its column family explicitly: rocksdict's
    # WriteBatch.delete_range ignores set_default_column_family.
    def _write_batch(self, delete_from: Optional[int], batch: List[Any]) -> None:
        wb = WriteBatch(raw_mode=True)
        cf = self._log_cf
        if delete_from is not None:
            wb.delete_range(KEY.pack(delete_from), _KEY_END, cf)
        put, pack_key, pack_header = wb.put, KEY.pack, VALUE_HEADER.pack
        for e in batch:
            put(pack_key(e.index), pack_header(e.term, e.kind) + e.payload, cf)
        self._db.write(wb, self._write_opt)

    def _delete_from(self, index: int) -> None:
        wb = WriteBatch(raw_mode=True)
        wb.delete_range(KEY.pack(index), _KEY_END, self._log_cf)
        self._db.write(wb, self._write_opt)

    def _purge_upto(self, cutoff: LogId) -> None:
        wb = WriteBatch(raw_mode=True)
        # delete_range's end is exclusive: the key just above cutoff.index.
        wb.delete_range(_KEY_MIN, KEY.pack(cutoff.index) + b"\x00", self._log_cf)
        wb.put(_BOUNDARY_KEY, encode_boundary(cutoff))
        self._db.write(wb, self._write_opt)

    def _clear(self) -> None:
        wb = WriteBatch(raw_mode=True)
        wb.delete_range(_KEY_MIN, _KEY_END, self._log_cf)
        wb.delete(_BOUNDARY_KEY)
        self._db.write(wb, self._write_opt)

    def _read_one(self, index: int) -> Optional[Any]:
        value = self._log.get(KEY.pack(index))
        if value is None:
            return None
        term, kind = VALUE_HEADER.unpack_from(value)
        return entry_class()(index, term, value[9:], KINDS[kind])

    def _read_range(self, start: int, end: int) -> List[Any]:
        opt = ReadOptions()
        opt.set_iterate_upper_bound(KEY.pack(end) + b"\x00")
        cls, kinds, unpack, unpack_key = entry_class(), KINDS, VALUE_HEADER.unpack_from, KEY.unpack
        out: List[Any] = []
        append = out.append
        for key, value in self._log.items(from_key=KEY.pack(start), read_opt=opt):
            term, kind = unpack(value)
            append(cls(unpack_key(key)[0], term, value[9:], kinds[kind]))
        return out

    def _sync(self) -> None:
        self._db.flush_wal(True)


class RocksMetaStore(BaseMetaStore):
    engine_name = "rocksdb"
    _log_store: RocksLogStore

    def _put_hard_state(self, raw: bytes) -> None:
        store = self._log_store
        store._db.put(_HARD_STATE_KEY, raw, store._sync_opt)  # the hard state is always durable

    def _get_hard_state(self) -> Optional[bytes]:
        return self._log_store._db.get(_HARD_STATE_KEY)


class RocksEngine(BaseEngine):
    name = "rocksdb"
    persistent = True
    _log_store: RocksLogStore

    def _close_backend(self) -> None:
        # RocksDB's directory lock is released only when the database and every
        # column family object are gone.
        store = self._log_store
        store._log = None
        store._log_cf = None
        store._db.close()


def open_rocksdb(path: Any, *, durable: bool = False, max_entry_size: int = DEFAULT_MAX_ENTRY_SIZE) -> RocksEngine:
    """Open (creating if needed) a RocksDB database in directory ``path``."""
    directory = prepare_directory(path)
    db = Rdict(directory, _options(), column_families={_LOG_CF: _options()})
    try:
        log = RocksLogStore(db, directory, durable=bool(durable), max_entry_size=max_entry_size)
    except BaseException:
        db.close()
        raise
    return RocksEngine(directory, bool(durable), log, RocksMetaStore(log))

"""LMDB engine (the ``lmdb`` package).

Layout: one environment in the engine directory with two named databases,
``log`` (key: index as 8 bytes big-endian, value: term u64 LE, kind u8,
payload) and ``meta`` (purge boundary and hard state).  Keys sort by index, so
a range read is a cursor ``set_range`` followed by an ordered walk.

Writes: one write transaction per batch; the batch goes in with
``Cursor.putmulti(..., append=True)`` (LMDB's fast path for keys above every
existing one; a suffix replacement deletes the old suffix first in the same
transaction).  Purge walks the cursor from the first key and deletes (LMDB has
no range delete) and stores the boundary in the same transaction; reset
empties the ``log`` database with ``drop(delete=False)``.  A full map is grown
(doubled) and the transaction retried.

Durability: ``durable=True`` opens with ``sync=True, metasync=True``: every
commit is flushed to disk before it returns, and ``is_write_durable()`` is
True.  ``durable=False`` opens with ``sync=False, metasync=False``: commits are
atomic and survive a crash of the process; after a crash of the machine before
the next ``flush()`` (``Environment.sync(True)``) the last transactions may be
lost (and, per LMDB's documentation, the file damaged on a file system that
reorders writes).  The hard state is synced on every save in both modes.
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional

import lmdb as _lmdb

from .._types import LogId
from ..errors import FastlogError
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

__all__ = ["LmdbEngine", "open_lmdb"]

_BOUNDARY_KEY = b"purge_boundary"
_HARD_STATE_KEY = b"hard_state"
DEFAULT_MAP_SIZE = 1 << 34  # 16 GiB of address space; the file only grows as data is written


class LmdbLogStore(BaseLogStore):
    engine_name = "lmdb"

    def __init__(self, env: Any, path: str, *, durable: bool, max_entry_size: int):
        super().__init__(durable=durable, max_entry_size=max_entry_size)
        self._env = env
        self._path = path
        self._log_db = env.open_db(b"log")
        self._meta_db = env.open_db(b"meta")
        with env.begin(db=self._log_db) as txn:
            cur = txn.cursor()
            first = KEY.unpack(cur.key())[0] if cur.first() else 0
            last = KEY.unpack(cur.key())[0] if cur.last() else 0
            boundary = decode_boundary(txn.get(_BOUNDARY_KEY, db=self._meta_db), path)
        self._set_loaded_state(first, last, boundary)

    def _write(self, work: Callable[[Any], None]) -> None:
        """Run ``work(txn)`` in one write transaction, growing the map when it is full."""
        env = self._env
        while True:
            try:
                with env.begin(write=True) as txn:
                    work(txn)
                return
            except _lmdb.MapFullError:
                env.set_mapsize(env.info()["map_size"] * 2)

    def _delete_suffix(self, txn: Any, index: int) -> None:
        cur = txn.cursor(db=self._log_db)
        if cur.set_range(KEY.pack(index)):
            while cur.delete():
                pass

    def _write_batch(self, delete_from: Optional[int], batch: List[Any]) -> None:
        pack_key, pack_header = KEY.pack, VALUE_HEADER.pack
        items = [(pack_key(e.index), pack_header(e.term, e.kind) + e.payload) for e in batch]

        def work(txn: Any) -> None:
            if delete_from is not None:
                self._delete_suffix(txn, delete_from)
            _consumed, added = txn.cursor(db=self._log_db).putmulti(items, append=True)
            if added != len(items):
                raise FastlogError(f"lmdb stored {added} of {len(items)} entries (keys out of order)")

        self._write(work)

    def _delete_from(self, index: int) -> None:
        self._write(lambda txn: self._delete_suffix(txn, index))

    def _purge_upto(self, cutoff: LogId) -> None:
        stop = KEY.pack(cutoff.index)

        def work(txn: Any) -> None:
            cur = txn.cursor(db=self._log_db)
            if cur.first():
                while cur.key() and cur.key() <= stop:
                    if not cur.delete():
                        break
            txn.put(_BOUNDARY_KEY, encode_boundary(cutoff), db=self._meta_db)

        self._write(work)

    def _clear(self) -> None:
        def work(txn: Any) -> None:
            txn.drop(self._log_db, delete=False)
            txn.delete(_BOUNDARY_KEY, db=self._meta_db)

        self._write(work)

    def _read_one(self, index: int) -> Optional[Any]:
        with self._env.begin(db=self._log_db) as txn:
            value = txn.get(KEY.pack(index))
        if value is None:
            return None
        term, kind = VALUE_HEADER.unpack_from(value)
        return entry_class()(index, term, value[9:], KINDS[kind])

    def _read_range(self, start: int, end: int) -> List[Any]:
        cls, kinds, unpack, unpack_key = entry_class(), KINDS, VALUE_HEADER.unpack_from, KEY.unpack
        out: List[Any] = []
        append = out.append
        stop = KEY.pack(end)
        with self._env.begin(db=self._log_db) as txn:
            cur = txn.cursor()
            if not cur.set_range(KEY.pack(start)):
                return out
            for key, value in cur.iternext():
                if key > stop:
                    break
                term, kind = unpack(value)
                append(cls(unpack_key(key)[0], term, value[9:], kinds[kind]))
        return out

    def _sync(self) -> None:
        self._env.sync(True)


class LmdbMetaStore(BaseMetaStore):
    engine_name = "lmdb"
    _log_store: LmdbLogStore

    def _put_hard_state(self, raw: bytes) -> None:
        store = self._log_store
        store._write(lambda txn: txn.put(_HARD_STATE_KEY, raw, db=store._meta_db))
        if not store._durable:
            store._env.sync(True)  # the hard state is always durable

    def _get_hard_state(self) -> Optional[bytes]:
        store = self._log_store
        with store._env.begin(db=store._meta_db) as txn:
            return txn.get(_HARD_STATE_KEY)


class LmdbEngine(BaseEngine):
    name = "lmdb"
    persistent = True
    _log_store: LmdbLogStore

    def _close_backend(self) -> None:
        self._log_store._env.close()


def open_lmdb(
    path: Any,
    *,
    durable: bool = False,
    max_entry_size: int = DEFAULT_MAX_ENTRY_SIZE,
    map_size: int = DEFAULT_MAP_SIZE,
    **env_options: Any,
) -> LmdbEngine:
    """Open (creating if needed) an LMDB environment in directory ``path``.

    ``map_size`` is the initial map size (grown automatically when full);
    other keyword arguments go to ``lmdb.open`` (e.g. ``writemap=True``).
    """
    directory = prepare_directory(path)
    options = dict(meminit=False)
    options.update(env_options)
    env = _lmdb.open(
        directory,
        map_size=map_size,
        max_dbs=2,
        subdir=True,
        sync=bool(durable),
        metasync=bool(durable),
        **options,
    )
    try:
        log = LmdbLogStore(env, directory, durable=bool(durable), max_entry_size=max_entry_size)
    except BaseException:
        env.close()
        raise
    return LmdbEngine(directory, bool(durable), log, LmdbMetaStore(log))

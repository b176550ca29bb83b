"""SQLite engine (stdlib ``sqlite3``), in WAL mode.

Layout (one database file ``log.sqlite3`` in the engine directory):

* ``log(idx INTEGER PRIMARY KEY, term INTEGER, kind INTEGER, payload BLOB)``:
  the index is the rowid, so the table is a B-tree clustered on the index and
  a range read is one ordered scan.  SQLite integers are signed 64-bit, so the
  index is stored as ``index - 2**63`` (order-preserving over the whole u64
  range) and the term as its two's-complement i64 (terms below 2**63, i.e.
  all real ones, are stored as they are).
* ``meta(key TEXT PRIMARY KEY, value BLOB)``: the purge boundary and the hard
  state, written in the same transactions as the log changes they belong to.

Writes: one ``BEGIN IMMEDIATE ... COMMIT`` transaction per batch, rows inserted
with ``executemany``; a suffix replacement, a purge (``DELETE ... WHERE idx <=``
plus the boundary) or a reset is one transaction too, so each is atomic.

Durability: ``durable=True`` sets ``PRAGMA synchronous=FULL``: every commit
fsyncs the WAL before returning, and ``is_write_durable()`` is True.
``durable=False`` sets ``synchronous=NORMAL``: commits survive a crash of the
process but not of the machine until the next checkpoint, so
``is_write_durable()`` is False; ``flush()`` runs ``PRAGMA
wal_checkpoint(FULL)`` on a second connection, which fsyncs the WAL and then the
database file.
"""
from __future__ import annotations

import os
import sqlite3
import threading
from typing import Any, List, Optional

from .._types import LogId
from ..errors import FastlogError
from ._base import (
    DEFAULT_MAX_ENTRY_SIZE,
    KINDS,
    BaseEngine,
    BaseLogStore,
    BaseMetaStore,
    decode_boundary,
    encode_boundary,
    entry_class,
    prepare_directory,
)

__all__ = ["SqliteEngine", "open_sqlite", "DB_FILE"]

DB_FILE = "log.sqlite3"
_OFFSET = 1 << 63
_I64_MAX = (1 << 63) - 1
_U64 = 1 << 64
_BOUNDARY_KEY = "purge_boundary"
_HARD_STATE_KEY = "hard_state"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS log ("
    " idx INTEGER PRIMARY KEY, term INTEGER NOT NULL, kind INTEGER NOT NULL, payload BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
)
_INSERT = "INSERT INTO log (idx, term, kind, payload) VALUES (?, ?, ?, ?)"
_DELETE_FROM = "DELETE FROM log WHERE idx >= ?"
_DELETE_UPTO = "DELETE FROM log WHERE idx <= ?"
_SELECT_ONE = "SELECT term, kind, payload FROM log WHERE idx = ?"
_SELECT_RANGE = "SELECT idx, term, kind, payload FROM log WHERE idx BETWEEN ? AND ? ORDER BY idx"
_PUT_META = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"
_GET_META = "SELECT value FROM meta WHERE key = ?"


def _term_out(term: int) -> int:
    return term + _U64 if term < 0 else term


class SqliteLogStore(BaseLogStore):
    engine_name = "sqlite"

    def __init__(self, conn: sqlite3.Connection, db_path: str, *, durable: bool, max_entry_size: int, timeout: float):
        super().__init__(durable=durable, max_entry_size=max_entry_size)
        self._conn = conn
        self._db_path = db_path
        self._timeout = timeout
        self._checkpoint_conn: Optional[sqlite3.Connection] = None
        self._checkpoint_lock = threading.Lock()
        low, high = conn.execute("SELECT min(idx), max(idx) FROM log").fetchone()
        row = conn.execute(_GET_META, (_BOUNDARY_KEY,)).fetchone()
        boundary = decode_boundary(row[0] if row else None, db_path)
        if low is None:
            self._set_loaded_state(0, 0, boundary)
        else:
            self._set_loaded_state(low + _OFFSET, high + _OFFSET, boundary)

    # -- transactions -----------------------------------------------------------
    def _transaction(self, *steps: Any) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, args, many in steps:
                if many:
                    conn.executemany(sql, args)
                else:
                    conn.execute(sql, args)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _write_batch(self, delete_from: Optional[int], batch: List[Any]) -> None:
        off = _OFFSET
        rows = [
            (e.index - off, e.term if e.term <= _I64_MAX else e.term - _U64, e.kind, e.payload) for e in batch
        ]
        if delete_from is None:
            self._transaction((_INSERT, rows, True))
        else:
            self._transaction((_DELETE_FROM, (delete_from - off,), False), (_INSERT, rows, True))

    def _delete_from(self, index: int) -> None:
        self._transaction((_DELETE_FROM, (index - _OFFSET,), False))

    def _purge_upto(self, cutoff: LogId) -> None:
        self._transaction(
            (_DELETE_UPTO, (cutoff.index - _OFFSET,), False),
            (_PUT_META, (_BOUNDARY_KEY, encode_boundary(cutoff)), False),
        )

    def _clear(self) -> None:
        self._transaction(("DELETE FROM log", (), False), ("DELETE FROM meta WHERE key = ?", (_BOUNDARY_KEY,), False))

    # -- reads ------------------------------------------------------------------
    def _read_one(self, index: int) -> Optional[Any]:
        row = self._conn.execute(_SELECT_ONE, (index - _OFFSET,)).fetchone()
        if row is None:
            return None
        term, kind, payload = row
        return entry_class()(index, term if term >= 0 else term + _U64, payload, KINDS[kind])

    def _read_range(self, start: int, end: int) -> List[Any]:
        off = _OFFSET
        rows = self._conn.execute(_SELECT_RANGE, (start - off, end - off)).fetchall()
        cls = entry_class()
        kinds = KINDS
        return [cls(i + off, t if t >= 0 else t + _U64, p, kinds[k]) for i, t, k, p in rows]

    # -- durability -------------------------------------------------------------
    def _sync(self) -> None:
        # A FULL checkpoint fsyncs the WAL, copies it into the database file and
        # fsyncs that: everything committed before it is then durable.  It runs
        # on its own connection so it can run in a worker thread.
        with self._checkpoint_lock:
            conn = self._checkpoint_conn
            if conn is None:
                conn = sqlite3.connect(
                    self._db_path, isolation_level=None, check_same_thread=False, timeout=self._timeout
                )
                conn.execute("PRAGMA synchronous=FULL")
                self._checkpoint_conn = conn
            busy, _frames, _done = conn.execute("PRAGMA wal_checkpoint(FULL)").fetchone()
            if busy:
                raise FastlogError(f"sqlite checkpoint of {self._db_path} could not complete (database busy)")

    def _close_connections(self) -> None:
        with self._checkpoint_lock:
            if self._checkpoint_conn is not None:
                self._checkpoint_conn.close()
                self._checkpoint_conn = None
        self._conn.close()


class SqliteMetaStore(BaseMetaStore):
    engine_name = "sqlite"
    _log_store: SqliteLogStore

    def _put_hard_state(self, raw: bytes) -> None:
        store = self._log_store
        conn = store._conn
        if store._durable:
            conn.execute(_PUT_META, (_HARD_STATE_KEY, raw))
            return
        # The hard state is always durable: this one commit fsyncs the WAL.
        conn.execute("PRAGMA synchronous=FULL")
        try:
            conn.execute(_PUT_META, (_HARD_STATE_KEY, raw))
        finally:
            conn.execute("PRAGMA synchronous=NORMAL")

    def _get_hard_state(self) -> Optional[bytes]:
        row = self._log_store._conn.execute(_GET_META, (_HARD_STATE_KEY,)).fetchone()
        return None if row is None else row[0]


class SqliteEngine(BaseEngine):
    name = "sqlite"
    persistent = True
    _log_store: SqliteLogStore

    def _close_backend(self) -> None:
        self._log_store._close_connections()


def open_sqlite(
    path: Any,
    *,
    durable: bool = False,
    max_entry_size: int = DEFAULT_MAX_ENTRY_SIZE,
    cache_size_kib: int = 65536,
    mmap_size: int = 0,
    timeout: float = 30.0,
) -> SqliteEngine:
    """Open (creating if needed) a SQLite engine in directory ``path``.

    ``cache_size_kib`` sets the page cache (``PRAGMA cache_size``), ``mmap_size``
    enables memory-mapped reads (``PRAGMA mmap_size``, off by default),
    ``timeout`` is the busy timeout in seconds.
    """
    directory = prepare_directory(path)
    db_path = os.path.join(directory, DB_FILE)
    conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False, timeout=timeout)
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise FastlogError(f"sqlite refused WAL mode for {db_path} (journal_mode={mode})")
        conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        conn.execute(f"PRAGMA cache_size=-{int(cache_size_kib)}")
        if mmap_size:
            conn.execute(f"PRAGMA mmap_size={int(mmap_size)}")
        for statement in _SCHEMA:
            conn.execute(statement)
        log = SqliteLogStore(conn, db_path, durable=bool(durable), max_entry_size=max_entry_size, timeout=timeout)
    except BaseException:
        conn.close()
        raise
    return SqliteEngine(directory, bool(durable), log, SqliteMetaStore(log))

"""A PySyncObj journal stored in fastlog.

PySyncObj (``pip install pysyncobj``) keeps its Raft log in a *journal*: an
object created by ``pysyncobj.syncobj.createJournal(conf.journalFile)``.  Its
own ``FileJournal`` keeps every entry in a Python list, writes no checksums,
syncs its file only when the node shuts down and rewrites the whole file on
every log compaction.
:class:`FastlogJournal` implements the same interface on a :class:`fastlog.Log`:

* entries live in fastlog segments (checksummed, recovered after a crash) and
  are read from there, not from a Python list;
* compaction (``deleteEntriesTo``) is :meth:`fastlog.Log.purge`, which drops
  whole segments instead of rewriting the log;
* the current term, the vote and the commit index live in a small checksummed
  file replaced atomically with fsync (the same mechanism as fastlog's
  ``HARDSTATE``).

Make ``SyncObj`` use it with :func:`install` / :func:`uninstall` or the
:func:`use_fastlog_journal` context manager, and pass
``transportClass=FastlogTCPTransport`` so entries are fsynced once per batch,
before the node sends anything; see docs/pysyncobj.md.

Index mapping
-------------
PySyncObj addresses its journal by *position* (0 is the oldest entry it still
holds) and stores the Raft index inside each ``(command, idx, term)`` tuple.
The journal stores entry ``(command, idx, term)`` at fastlog index ``idx``, so
position ``p`` is fastlog index ``first + p`` where ``first`` is the index of
the oldest entry kept.  This needs consecutive indexes, which is what
PySyncObj always writes; :meth:`FastlogJournal.add` refuses a gap or an
out-of-order index in a non-empty journal instead of storing it silently.
"""
from __future__ import annotations

import operator
import os
import pickle as _pickle
import socket
import struct
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, List, Optional, Tuple, Union

try:
    import pysyncobj.journal as _ps_journal
    import pysyncobj.syncobj as _ps_syncobj
    from pysyncobj.transport import TCPTransport as _TCPTransport
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "fastlog.integrations.pysyncobj needs PySyncObj: pip install 'fastlog[pysyncobj]'"
    ) from exc

from .._types import LogId
from ..errors import ClosedError, CorruptionError, InvalidIndexError, PoisonedError
from ..log import Log
from ..smallfile import read_small_file, write_small_file

__all__ = [
    "FastlogJournal",
    "FastlogTCPTransport",
    "JournalEntry",
    "STATE_FILE_NAME",
    "LOG_DIR_NAME",
    "DEFAULT_JOURNAL_SEGMENT_SIZE",
    "RECORD_PYSYNCOBJ_STATE",
    "journal_factory",
    "install",
    "uninstall",
    "is_installed",
    "use_fastlog_journal",
    "free_loopback_ports",
]

#: ``(command, idx, term)``: one PySyncObj journal entry.
JournalEntry = Tuple[bytes, int, int]

PathLike = Union[str, "os.PathLike[str]"]
#: What :func:`install` accepts: None (``journalFile`` is the directory), a base
#: directory, or a callable mapping ``journalFile`` to a directory (or None).
JournalTarget = Union[None, PathLike, Callable[[Optional[str]], Optional[PathLike]]]

#: Subdirectory of a journal directory that holds the fastlog log.
LOG_DIR_NAME = "log"
#: File (in the journal directory) holding term, vote and commit index.
STATE_FILE_NAME = "PYSYNCOBJ_STATE"
#: Record type of that file in the small-file header (docs/format.md).
RECORD_PYSYNCOBJ_STATE = 16

_STATE_VERSION = 1
# body version u8, current term u64, commit index u64, vote kind u8, vote length u32
_STATE_HEAD = struct.Struct("<BQQBI")
_VOTE_NONE, _VOTE_STR, _VOTE_PICKLE = 0, 1, 2
_U64_MAX = (1 << 64) - 1

_SYNC_MODES = ("auto", "always", "periodic")
#: Segment size of a journal's log unless told otherwise.  Smaller than the
#: log's own default: PySyncObj compacts its journal every few thousand entries,
#: and a compacted segment is only deleted once all of it is below the cut.
DEFAULT_JOURNAL_SEGMENT_SIZE = 16 << 20
_READ_CHUNK = 1024


def _encode_vote(vote: Any) -> Tuple[int, bytes]:
    if vote is None:
        return _VOTE_NONE, b""
    if isinstance(vote, str):
        return _VOTE_STR, vote.encode("utf-8")
    # PySyncObj's TCP nodes use "host:port" strings; a custom node class may
    # use any picklable id.
    return _VOTE_PICKLE, _pickle.dumps(vote, protocol=4)


def _decode_vote(kind: int, data: bytes, path: str) -> Any:
    try:
        if kind == _VOTE_NONE and not data:
            return None
        if kind == _VOTE_STR:
            return data.decode("utf-8")
        if kind == _VOTE_PICKLE:
            return _pickle.loads(data)
    except Exception as exc:
        raise CorruptionError(f"undecodable vote ({exc})", path, None) from exc
    raise CorruptionError(f"bad vote encoding {kind} with {len(data)} bytes", path, None)


def _check_u64(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0 or value > _U64_MAX:
        raise ValueError(f"{name} must be in 0..2**64-1, got {value}")
    return int(value)


def _as_command_bytes(command: Any) -> bytes:
    if type(command) is bytes:
        return command
    if isinstance(command, (bytes, bytearray, memoryview)):
        return bytes(command)
    raise TypeError(f"PySyncObj journal commands must be bytes, not {type(command).__name__}")


class FastlogJournal(_ps_journal.Journal):
    """PySyncObj's journal interface on a fastlog :class:`~fastlog.Log`.

    ``directory`` is created if needed; it holds the log (in ``log/``) and the
    term / vote / commit-index file.  Reopening the same directory recovers all
    of it.  A directory is locked while open: a second journal on it raises
    :class:`fastlog.errors.LockedError`.

    ``sync`` decides when appended entries become durable.  PySyncObj sends
    its answer to an AppendEntries (and counts the leader's own copy) right
    after its ``add`` calls, with no hook in between; Raft needs the entries
    durable before that.

    ``"auto"`` (default)
        as ``"always"``, until a :class:`FastlogTCPTransport` attaches to the
        journal (pass ``transportClass=FastlogTCPTransport`` to ``SyncObj``);
        from then on the transport calls :meth:`sync_entries` before every
        message it sends, so one fsync covers a whole batch of entries and
        nothing is acknowledged before it is durable.  This is the setup to use.
    ``"always"``
        every :meth:`add` and :meth:`deleteEntriesFrom` returns only once the
        change is on stable storage: one fsync per entry, whatever the
        transport.  Correct but slow (PySyncObj adds entries one at a time).
    ``"periodic"``
        entries are written to the mapped segment at once (they survive a crash
        of the process) and fsynced by :meth:`sync_entries` (called by
        ``FastlogTCPTransport`` when attached) and at the latest by
        :meth:`onOneSecondTimer`, :meth:`flush` and :meth:`_destroy`.  Without
        the transport, a power loss can lose up to about a second of
        acknowledged entries -- still stronger than PySyncObj's own
        ``FileJournal``, which syncs only when the node shuts down.

    Term and vote are always written durably before :meth:`setCurrentTerm`
    returns (PySyncObj sends the vote right after).  The commit index is only
    a hint for the restart (Raft recomputes it), so it is saved by the
    one-second timer, :meth:`flush` and :meth:`_destroy`, never above the
    durable end of the log.  Compaction (:meth:`deleteEntriesTo`) and
    :meth:`clear` are durable when they return.

    The remaining keyword arguments are passed to :class:`fastlog.Log`;
    ``segment_size`` defaults to 16 MiB here, which also bounds a command's
    size (a little under the segment size).
    """

    def __init__(
        self,
        directory: PathLike,
        *,
        sync: str = "auto",
        segment_size: int = DEFAULT_JOURNAL_SEGMENT_SIZE,
        max_entry_size: Optional[int] = None,
        verify_reads: bool = False,
        implementation: Optional[str] = None,
    ) -> None:
        if sync not in _SYNC_MODES:
            raise ValueError(f"sync must be one of {_SYNC_MODES}, got {sync!r}")
        self._directory = os.path.abspath(os.fspath(directory))
        self._sync = sync
        # True: changes wait for sync_entries() (the transport) or the timer;
        # False: every change is fsynced before the call returns.
        self._deferred = sync == "periodic"
        os.makedirs(self._directory, exist_ok=True)
        # The journal decides when to fsync (see sync_entries), so the log never syncs on its own.
        log_options: dict = {"sync": "none", "verify_reads": verify_reads, "segment_size": segment_size}
        if max_entry_size is not None:
            log_options["max_entry_size"] = max_entry_size
        if implementation is not None:
            log_options["implementation"] = implementation
        self._log = Log(os.path.join(self._directory, LOG_DIR_NAME), **log_options)
        self._entry_cls = self._log.Entry
        self._state_lock = threading.Lock()
        self._closed = False
        # Count of changes to the entries, and that count at the last fsync.
        self._writes = 0
        self._synced_writes = 0
        try:
            self._load_positions()
            self._load_state()
        except BaseException:
            self._log.close()
            raise

    # -- recovery ---------------------------------------------------------
    def _load_positions(self) -> None:
        first = self._log.first_index()
        if first == 0:
            self._first = self._log.last_index() + 1
            self._count = 0
        else:
            self._first = first
            self._count = self._log.last_index() - first + 1
        self._first_cache: Optional[JournalEntry] = None
        self._last_cache: Optional[JournalEntry] = None

    def _load_state(self) -> None:
        path = os.path.join(self._directory, STATE_FILE_NAME)
        body = read_small_file(self._directory, STATE_FILE_NAME, RECORD_PYSYNCOBJ_STATE)
        term, commit, vote = 0, 1, None
        if body is not None:
            if len(body) < _STATE_HEAD.size:
                raise CorruptionError("journal state is too short", path, 0)
            version, term, commit, vote_kind, vote_len = _STATE_HEAD.unpack_from(body, 0)
            if version != _STATE_VERSION:
                raise CorruptionError(f"unsupported journal state version {version}", path, 0)
            if _STATE_HEAD.size + vote_len != len(body):
                raise CorruptionError("journal state length does not match its vote", path, 0)
            vote = _decode_vote(vote_kind, bytes(body[_STATE_HEAD.size :]), path)
        self._term = term
        self._voted_for = vote
        # Entries past the durable end may be gone after a crash: never hand
        # PySyncObj a commit index beyond the log it can actually apply.
        if self._count:
            commit = min(commit, self._first + self._count - 1)
        self._commit = commit
        self._saved = (term, commit, vote)

    def _write_state(self) -> None:
        """Persist term, vote and commit index (fsync + atomic rename)."""
        with self._state_lock:
            commit = min(self._commit, max(self._log.durable_index(), 1))
            state = (self._term, commit, self._voted_for)
            if state == self._saved:
                return
            vote_kind, vote_bytes = _encode_vote(self._voted_for)
            body = _STATE_HEAD.pack(_STATE_VERSION, self._term, commit, vote_kind, len(vote_bytes)) + vote_bytes
            write_small_file(self._directory, STATE_FILE_NAME, RECORD_PYSYNCOBJ_STATE, body)
            self._saved = state

    # -- entries ----------------------------------------------------------
    def add(self, command: bytes, idx: int, term: int) -> None:
        """Append ``(command, idx, term)`` as the newest entry.

        ``idx`` must follow the newest entry's index.  In an empty journal any
        index >= 1 is accepted (after :meth:`clear`, PySyncObj restarts the
        journal at a snapshot's index).
        """
        payload = _as_command_bytes(command)
        idx = _check_u64("idx", idx)
        term = _check_u64("term", term)
        if self._count == 0:
            boundary = self._log.purge_boundary()
            if boundary is not None and idx <= boundary.index:
                # Restarting below the compacted prefix: forget the old boundary.
                self._log.reset()
        elif idx != self._first + self._count:
            raise InvalidIndexError(
                f"journal entries must have consecutive indexes: got {idx} after {self._first + self._count - 1}"
            )
        self._log.append([self._entry_cls(idx, term, payload)])
        self._writes += 1
        entry = (payload, idx, term)
        if self._count == 0:
            self._first = idx
            self._first_cache = entry
        self._count += 1
        self._last_cache = entry
        if not self._deferred:
            # A failed fsync raises here (and poisons the log): SyncObj's tick
            # stops before it can acknowledge the entry.
            self.sync_entries()

    def clear(self) -> None:
        """Remove every entry (and the purge boundary)."""
        self._log.reset()
        self._first = 1
        self._count = 0
        self._first_cache = self._last_cache = None

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        """Remove the entries at positions ``>= entryFrom`` (``del journal[entryFrom:]``)."""
        start = slice(operator.index(entryFrom), None).indices(self._count)[0]
        if start >= self._count:
            return
        self._log.truncate(self._first + start)
        self._writes += 1
        self._count = start
        self._last_cache = None
        if start == 0:
            self._first_cache = None
        if not self._deferred:
            self.sync_entries()

    def deleteEntriesTo(self, entryTo: int) -> None:
        """Remove the entries at positions ``< entryTo`` (log compaction).

        The log keeps ``(index, term)`` of the last removed entry as its purge
        boundary; whole segments below it are deleted, nothing is rewritten.
        """
        stop = slice(operator.index(entryTo), None).indices(self._count)[0]
        if stop <= 0:
            return
        cutoff = self._first + stop - 1
        cutoff_term = self._log.term_at(cutoff)
        if cutoff_term is None:
            raise CorruptionError(f"entry {cutoff} is missing from the log", self._log.path, None)
        self._log.purge(LogId(index=cutoff, term=cutoff_term))
        self._first += stop
        self._count -= stop
        self._first_cache = None
        if self._count == 0:
            self._last_cache = None

    def _read(self, index: int) -> JournalEntry:
        e = self._log.entry(index)
        if e is None:
            raise CorruptionError(f"entry {index} is missing from the log", self._log.path, None)
        return (e.payload, e.index, e.term)

    def _read_range(self, start: int, end: int) -> List[JournalEntry]:
        """Entries at fastlog indexes ``start..end`` inclusive, all of which must exist."""
        entries = self._log.get_entries(start, end)
        if len(entries) != end - start + 1:
            raise CorruptionError(
                f"entries {start}..{end} are incomplete in the log ({len(entries)} found)", self._log.path, None
            )
        return [(e.payload, e.index, e.term) for e in entries]

    def __getitem__(self, item: Union[int, slice]) -> Any:
        """``journal[i]`` (negative counts from the end) or ``journal[a:b:c]`` (a list)."""
        if self._closed:
            raise ClosedError(f"journal {self._directory} is closed")
        n = self._count
        if isinstance(item, slice):
            start, stop, step = item.indices(n)
            if step == 1:
                if start >= stop:
                    return []
                return self._read_range(self._first + start, self._first + stop - 1)
            return [self[i] for i in range(start, stop, step)]
        pos = operator.index(item)
        if pos < 0:
            pos += n
        if pos < 0 or pos >= n:
            raise IndexError("journal index out of range")
        if pos == n - 1:
            if self._last_cache is None:
                self._last_cache = self._read(self._first + pos)
            return self._last_cache
        if pos == 0:
            if self._first_cache is None:
                self._first_cache = self._read(self._first)
            return self._first_cache
        return self._read(self._first + pos)

    def __iter__(self) -> Iterator[JournalEntry]:
        pos = 0
        while pos < self._count:
            end = min(self._count, pos + _READ_CHUNK)
            yield from self._read_range(self._first + pos, self._first + end - 1)
            pos = end

    def __len__(self) -> int:
        return self._count

    # -- hard state -------------------------------------------------------
    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        self._commit = _check_u64("raftCommitIndex", raftCommitIndex)

    def getRaftCommitIndex(self) -> int:
        return self._commit

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:
        """Record term and vote; durable when this returns."""
        self._term = _check_u64("term", term)
        self._voted_for = votedForNodeId
        self._write_state()

    def getCurrentTerm(self) -> int:
        return self._term

    def getVotedForNodeId(self) -> Any:
        return self._voted_for

    # -- durability -------------------------------------------------------
    def onOneSecondTimer(self) -> None:
        """Called by SyncObj about once a second: fsync pending entries, save the commit index."""
        if self._closed:
            return
        self.flush()

    def sync_entries(self) -> None:
        """Make every change to the entries durable (cheap when nothing changed).

        :class:`FastlogTCPTransport` calls this before each message it sends.
        """
        writes = self._writes
        if writes != self._synced_writes:
            self._log.flush()
            self._synced_writes = writes

    def defer_sync_to_sender(self) -> bool:
        """Called by :class:`FastlogTCPTransport` when it attaches: from now on
        it calls :meth:`sync_entries` before sending, so ``sync="auto"`` stops
        fsyncing every entry.  Returns whether the journal now defers."""
        if self._sync == "auto":
            self.sync_entries()
            self._deferred = True
        return self._deferred

    @property
    def deferred(self) -> bool:
        """True while changes to the entries wait for :meth:`sync_entries`."""
        return self._deferred

    def flush(self) -> None:
        """Make every entry and the current commit index durable."""
        self.sync_entries()
        self._write_state()

    def _destroy(self) -> None:
        """Flush and close (SyncObj calls this when it is destroyed)."""
        if self._closed:
            return
        try:
            if not self._log.closed:
                self.flush()
        except PoisonedError:
            pass  # the failed write was raised when it happened; just let go of the files
        finally:
            self._closed = True
            self._log.close()

    close = _destroy

    def __enter__(self) -> "FastlogJournal":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._destroy()

    # -- introspection ----------------------------------------------------
    @property
    def directory(self) -> str:
        return self._directory

    @property
    def log(self) -> Log:
        """The underlying log (for inspection; do not write to it)."""
        return self._log

    @property
    def sync(self) -> str:
        return self._sync

    @property
    def closed(self) -> bool:
        return self._closed

    def first_index(self) -> int:
        """Raft index of position 0 (of the next entry when the journal is empty)."""
        return self._first

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self._count} entries from {self._first}"
        return f"<FastlogJournal {self._directory!r} {state}, term {self._term}>"


# -- making SyncObj use it ---------------------------------------------------
_install_lock = threading.Lock()
_replaced: Optional[Callable[..., Any]] = None  # createJournal that install() replaced


def _resolve_directory(target: JournalTarget, journal_file: Optional[str]) -> Optional[str]:
    if target is None:
        return None if journal_file is None else os.fspath(journal_file)
    if callable(target):
        chosen = target(journal_file)
        return None if chosen is None else os.fspath(chosen)
    if journal_file is None:
        return None
    # A relative journalFile names a subdirectory of the base directory.
    return os.path.join(os.fspath(target), os.fspath(journal_file))


def journal_factory(target: JournalTarget = None, **journal_options: Any) -> Callable[..., Any]:
    """A replacement for ``pysyncobj.syncobj.createJournal``.

    ``SyncObj`` calls it with its ``conf.journalFile``.  ``target`` maps that
    value to a fastlog journal directory:

    * ``None``: ``journalFile`` itself is the directory;
    * a path: ``journalFile`` is a subdirectory of it (an absolute
      ``journalFile`` is used as it is);
    * a callable: ``target(journalFile)`` returns the directory.

    When the result is None (no ``journalFile``, or the callable said so) the
    journal is PySyncObj's in-memory ``MemoryJournal``, exactly as without
    fastlog.  ``journal_options`` go to :class:`FastlogJournal`.
    """
    if target is not None and not callable(target):
        os.fspath(target)  # fail now on a bad type, not inside SyncObj

    def createJournal(journalFile: Optional[str] = None) -> Any:
        directory = _resolve_directory(target, journalFile)
        if directory is None:
            return _ps_journal.MemoryJournal()
        return FastlogJournal(directory, **journal_options)

    createJournal.fastlog_factory = True  # type: ignore[attr-defined]
    return createJournal


def install(target: JournalTarget = None, **journal_options: Any) -> None:
    """Make every ``SyncObj`` created from now on use :class:`FastlogJournal`.

    Replaces ``pysyncobj.syncobj.createJournal`` (see :func:`journal_factory`
    for ``target``).  Calling it again replaces the previous fastlog factory;
    :func:`uninstall` restores PySyncObj's own function.  Objects already
    created keep their journals.
    """
    global _replaced
    factory = journal_factory(target, **journal_options)
    with _install_lock:
        current = _ps_syncobj.createJournal
        if not getattr(current, "fastlog_factory", False):
            _replaced = current
        _ps_syncobj.createJournal = factory


def uninstall() -> None:
    """Restore the ``createJournal`` that :func:`install` replaced (no-op if not installed)."""
    global _replaced
    with _install_lock:
        if getattr(_ps_syncobj.createJournal, "fastlog_factory", False):
            _ps_syncobj.createJournal = _replaced if _replaced is not None else _ps_journal.createJournal
        _replaced = None


def is_installed() -> bool:
    """True while ``SyncObj`` creates fastlog journals."""
    return bool(getattr(_ps_syncobj.createJournal, "fastlog_factory", False))


@contextmanager
def use_fastlog_journal(target: JournalTarget = None, **journal_options: Any) -> Iterator[Callable[..., Any]]:
    """Within the block, ``SyncObj`` uses fastlog journals; afterwards the
    previous ``createJournal`` (fastlog or not) is back.  Yields the factory.

    Only the construction of a ``SyncObj`` looks the factory up, so the objects
    may outlive the block.
    """
    global _replaced
    factory = journal_factory(target, **journal_options)
    with _install_lock:
        previous = _ps_syncobj.createJournal
        previous_replaced = _replaced
        if not getattr(previous, "fastlog_factory", False):
            _replaced = previous
        _ps_syncobj.createJournal = factory
    try:
        yield factory
    finally:
        with _install_lock:
            _ps_syncobj.createJournal = previous
            _replaced = previous_replaced


class FastlogTCPTransport(_TCPTransport):
    """PySyncObj's TCP transport that makes the journal durable before sending.

    Pass it as ``SyncObj(..., transportClass=FastlogTCPTransport)``.  When the
    node's journal is a :class:`FastlogJournal`, the entries written so far are
    fsynced before any message leaves the node (an AppendEntries answer, a
    vote, the leader's own AppendEntries), once for the whole batch.  That is
    the ordering Raft needs -- nothing is acknowledged before it is durable --
    without one fsync per entry.  With any other journal it behaves exactly
    like ``TCPTransport``.
    """

    def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any) -> None:
        super().__init__(syncObj, selfNode, otherNodes)
        # SyncObj creates its journal before its transport.
        journal = getattr(syncObj, "_SyncObj__raftLog", None)
        self._fastlog_journal: Optional[FastlogJournal] = None
        if isinstance(journal, FastlogJournal):
            self._fastlog_journal = journal
            journal.defer_sync_to_sender()

    def send(self, node: Any, message: Any) -> bool:
        journal = self._fastlog_journal
        if journal is not None and not journal.closed:
            journal.sync_entries()
        return super().send(node, message)


def free_loopback_ports(count: int) -> List[int]:
    """``count`` TCP ports that were free on 127.0.0.1 a moment ago.

    For examples, tests and benchmarks that start SyncObj nodes on loopback
    (another process may still take a port before a node binds it).
    """
    socks: List[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()

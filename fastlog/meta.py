"""The MetaStore: Raft's hard state (current term and vote) in one small file.

``HARDSTATE`` lives in the log directory and is written atomically through
:mod:`fastlog.smallfile` (write ``HARDSTATE.tmp``, fsync, rename, fsync the
directory), so after any crash :meth:`FileMetaStore.load_hard_state` returns
either the previous or the new hard state, never a mix.  The body layout is in
docs/format.md.
"""
from __future__ import annotations

import os
import struct
from typing import Optional, Union

from . import smallfile
from ._types import HardState, VotedFor
from .errors import ClosedError, CorruptionError, EntryTypeError, ForkedError, PoisonedError

__all__ = ["FileMetaStore", "HARD_STATE_FILE", "encode_hard_state", "decode_hard_state"]

HARD_STATE_FILE = "HARDSTATE"

# current_term u64, has_vote u8, voted_for_id u64, voted_for_term u64, committed u8, reserved u64
_BODY = struct.Struct("<QBQQBQ")
_BODY_START = 24  # offset of the body inside the small file (docs/format.md)
_HAS_VOTE_AT = 8
_COMMITTED_AT = 25
_RESERVED_AT = 26


def encode_hard_state(state: HardState) -> bytes:
    """The 34-byte HARDSTATE body of ``state``."""
    if not isinstance(state, HardState):
        raise EntryTypeError(f"expected a HardState, not {type(state).__name__}")
    vote = state.voted_for
    if vote is None:
        return _BODY.pack(state.current_term, 0, 0, 0, 0, 0)
    return _BODY.pack(state.current_term, 1, vote.voted_for_id, vote.voted_for_term, int(vote.committed), 0)


def decode_hard_state(body: bytes, path: str = "<memory>") -> HardState:
    """Parse a HARDSTATE body; anything a correct writer cannot produce is corruption."""
    if len(body) != _BODY.size:
        raise CorruptionError(f"hard state body is {len(body)} bytes, expected {_BODY.size}", path, _BODY_START)
    term, has_vote, vote_id, vote_term, committed, reserved = _BODY.unpack(body)
    if has_vote not in (0, 1):
        raise CorruptionError(f"bad has_vote flag {has_vote}", path, _BODY_START + _HAS_VOTE_AT)
    if committed not in (0, 1):
        raise CorruptionError(f"bad committed flag {committed}", path, _BODY_START + _COMMITTED_AT)
    if reserved != 0:
        raise CorruptionError("reserved bytes are not zero", path, _BODY_START + _RESERVED_AT)
    if not has_vote:
        if vote_id or vote_term or committed:
            raise CorruptionError("vote fields set without a vote", path, _BODY_START + _HAS_VOTE_AT)
        return HardState(current_term=term, voted_for=None)
    vote = VotedFor(voted_for_id=vote_id, voted_for_term=vote_term, committed=bool(committed))
    return HardState(current_term=term, voted_for=vote)


class FileMetaStore:
    """Hard state persisted in ``<directory>/HARDSTATE``.

    Every :meth:`save_hard_state` is durable when it returns (two fsyncs), so
    :meth:`flush` and :meth:`flush_async` have nothing left to do; they still
    raise when the store is closed or a save failed, because then the last
    state handed in is not known to be on disk.

    The directory must be kept from concurrent writers by the caller; the
    storage engine does it with the log's directory lock.
    """

    def __init__(self, directory: Union[str, "os.PathLike[str]"], *, read_only: bool = False):
        self._dir = os.fspath(directory)
        self._read_only = read_only
        self._closed = False
        self._failure: Optional[BaseException] = None
        self._pid = os.getpid()  # a forked child must not write the parent's hard state

    @property
    def path(self) -> str:
        """The file holding the hard state."""
        return os.path.join(self._dir, HARD_STATE_FILE)

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._pid != os.getpid():
            raise ForkedError(f"meta store {self._dir} was opened by process {self._pid}, a parent of this one")
        if self._closed:
            raise ClosedError("the meta store is closed")

    def _check_usable(self) -> None:
        self._check_open()
        if self._failure is not None:
            raise PoisonedError(
                "an earlier hard state save failed; reopen the store to see what is on disk"
            ) from self._failure

    def save_hard_state(self, state: HardState) -> None:
        """Atomically and durably replace the stored hard state."""
        self._check_usable()
        if self._read_only:
            raise PermissionError(f"meta store {self._dir} is open read-only")
        body = encode_hard_state(state)  # validates before touching the disk
        try:
            smallfile.write_small_file(self._dir, HARD_STATE_FILE, smallfile.RECORD_HARD_STATE, body)
        except OSError as exc:
            # The rename may or may not have reached the disk: refuse to guess.
            self._failure = exc
            raise

    def load_hard_state(self) -> Optional[HardState]:
        """The stored hard state, or None when none was ever saved."""
        self._check_open()
        body = smallfile.read_small_file(self._dir, HARD_STATE_FILE, smallfile.RECORD_HARD_STATE)
        if body is None:
            return None
        return decode_hard_state(body, self.path)

    def flush(self) -> None:
        """Nothing to do: a save is durable before it returns."""
        self._check_usable()

    async def flush_async(self) -> None:
        """Nothing to do: a save is durable before it returns."""
        self._check_usable()

    def close(self) -> None:
        self._closed = True

    def __repr__(self) -> str:
        return f"FileMetaStore({self._dir!r})"

    def __enter__(self) -> "FileMetaStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> "FileMetaStore":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

"""FastlogJournal against PySyncObj's own journals.

The entry operations are checked against ``MemoryJournal`` (same results for
the same operation sequences, compaction included); term / vote / commit index
against ``FileJournal``'s defaults and persistence.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any, Callable, List, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pysyncobj = pytest.importorskip("pysyncobj")

import pysyncobj.syncobj as ps_syncobj  # noqa: E402
from pysyncobj.journal import FileJournal, Journal, MemoryJournal  # noqa: E402

from fastlog import _osio  # noqa: E402
from fastlog.errors import ClosedError, CorruptionError, InvalidIndexError, LockedError, PoisonedError  # noqa: E402
from fastlog.integrations import pysyncobj as fl_ps  # noqa: E402
from fastlog.integrations.pysyncobj import FastlogJournal  # noqa: E402
from fastlog.smallfile import read_small_file  # noqa: E402

SMALL_SEGMENT = 8192  # the smallest segment: compaction and reads cross many files


@pytest.fixture
def impl(core_module) -> str:
    return core_module.IMPLEMENTATION


def open_journal(path: Any, impl: str, **kw: Any) -> FastlogJournal:
    kw.setdefault("sync", "periodic")
    kw.setdefault("segment_size", SMALL_SEGMENT)
    return FastlogJournal(path, implementation=impl, **kw)


def all_entries(j: Journal) -> List[Tuple[bytes, int, int]]:
    return [j[i] for i in range(len(j))]


def assert_same(fj: FastlogJournal, mj: MemoryJournal) -> None:
    n = len(mj)
    assert len(fj) == n
    assert all_entries(fj) == all_entries(mj)
    assert fj[:] == mj[:]
    assert list(fj) == list(mj[:])
    if n:
        for i in (0, -1, n - 1, -n, n // 2):
            assert fj[i] == mj[i]
    for i in (n, -n - 1, n + 5):
        with pytest.raises(IndexError):
            mj[i]
        with pytest.raises(IndexError):
            fj[i]


# -- scripted sequences ---------------------------------------------------


def fill(journals: List[Journal], first: int, count: int, term_every: int = 7) -> None:
    for j in journals:
        for i in range(first, first + count):
            j.add(b"cmd-%d" % i + b"x" * (i % 50), i, i // term_every)


def test_is_a_pysyncobj_journal(tmp_path, impl):
    with open_journal(tmp_path / "j", impl) as j:
        assert isinstance(j, Journal)
        assert len(j) == 0
        assert j[:] == [] and j[5:1] == []
        with pytest.raises(IndexError):
            j[0]
        with pytest.raises(IndexError):
            j[-1]


def test_append_and_index_like_memory_journal(tmp_path, impl):
    fj, mj = open_journal(tmp_path / "j", impl), MemoryJournal()
    fill([fj, mj], 1, 300)
    assert_same(fj, mj)
    for s in (slice(3, 9), slice(-5, None), slice(None, -290), slice(10, 3), slice(0, 300, 7),
              slice(None, None, -1), slice(-3, -40, -4), slice(250, 10_000), slice(-10_000, 2)):
        assert fj[s] == mj[s], s
    with pytest.raises(TypeError):
        fj["1"]
    fj.close()


def test_compaction_like_memory_journal(tmp_path, impl):
    fj, mj = open_journal(tmp_path / "j", impl), MemoryJournal()
    fill([fj, mj], 1, 1000)
    for cut in (0, 1, 17, 250, -700):
        fj.deleteEntriesTo(cut)
        mj.deleteEntriesTo(cut)
        assert_same(fj, mj)
    fill([fj, mj], 1001, 200)
    assert_same(fj, mj)
    assert fj.first_index() == mj[0][1]
    fj.close()


def test_compaction_deletes_whole_segments_without_rewriting(tmp_path, impl):
    fj = open_journal(tmp_path / "j", impl)
    fill([fj], 1, 2000)
    before = fj.log.segments()
    assert len(before) > 3
    kept_path = before[-1]["path"]
    inode = os.stat(kept_path).st_ino
    fj.deleteEntriesTo(1500)
    after = fj.log.segments()
    assert len(after) < len(before)
    assert not os.path.exists(before[0]["path"])
    assert os.stat(kept_path).st_ino == inode  # untouched, not rewritten
    assert fj[0][1] == 1501
    fj.close()


def test_delete_from_like_memory_journal(tmp_path, impl):
    fj, mj = open_journal(tmp_path / "j", impl), MemoryJournal()
    fill([fj, mj], 1, 500)
    for start in (490, 10_000, -30, 200):
        fj.deleteEntriesFrom(start)
        mj.deleteEntriesFrom(start)
        assert_same(fj, mj)
        nxt = mj[-1][1] + 1
        fill([fj, mj], nxt, 20, term_every=3)
        assert_same(fj, mj)
    fj.close()


def test_emptying_then_restarting_at_any_index(tmp_path, impl):
    fj, mj = open_journal(tmp_path / "j", impl), MemoryJournal()
    fill([fj, mj], 1, 100)
    for j in (fj, mj):
        j.deleteEntriesTo(100)  # everything compacted away
    assert_same(fj, mj)
    fill([fj, mj], 101, 5)
    assert_same(fj, mj)
    for j in (fj, mj):
        j.deleteEntriesFrom(0)
    assert_same(fj, mj)
    fill([fj, mj], 40, 5)  # below the old compaction point
    assert_same(fj, mj)
    for j in (fj, mj):
        j.clear()
    assert_same(fj, mj)
    fill([fj, mj], 7000, 5)
    assert_same(fj, mj)
    fj.close()


def test_snapshot_reload_pattern(tmp_path, impl):
    """What SyncObj does when it installs a snapshot: clear, then two entries."""
    fj, mj = open_journal(tmp_path / "j", impl), MemoryJournal()
    fill([fj, mj], 1, 50)
    for j in (fj, mj):
        j.clear()
        j.add(b"\x00", 900, 4)
        j.add(b"\x01abc", 901, 5)
    assert_same(fj, mj)
    assert fj[0] == (b"\x00", 900, 4) and fj[1] == (b"\x01abc", 901, 5)
    fj.close()
    with open_journal(tmp_path / "j", impl) as again:
        assert_same(again, mj)


def test_entries_survive_reopen(tmp_path, impl):
    mj = MemoryJournal()
    fj = open_journal(tmp_path / "j", impl)
    fill([fj, mj], 1, 700)
    for j in (fj, mj):
        j.deleteEntriesTo(123)
        j.deleteEntriesFrom(400)
    fill([fj, mj], mj[-1][1] + 1, 10, term_every=2)
    fj._destroy()
    fj._destroy()  # idempotent, as SyncObj may call it late
    with open_journal(tmp_path / "j", impl) as again:
        assert_same(again, mj)


def test_commands_are_bytes(tmp_path, impl):
    with open_journal(tmp_path / "j", impl) as fj:
        fj.add(bytearray(b"ab"), 1, 0)
        fj.add(memoryview(b"cd"), 2, 0)
        assert fj[:] == [(b"ab", 1, 0), (b"cd", 2, 0)]
        assert all(type(e[0]) is bytes for e in fj[:])
        with pytest.raises(TypeError):
            fj.add("text", 3, 0)
        with pytest.raises(TypeError):
            fj.add(b"x", "3", 0)
        assert len(fj) == 2


def test_gap_and_reorder_are_refused(tmp_path, impl):
    with open_journal(tmp_path / "j", impl) as fj:
        fill([fj], 1, 10)
        with pytest.raises(InvalidIndexError):
            fj.add(b"x", 12, 1)
        with pytest.raises(InvalidIndexError):
            fj.add(b"x", 5, 1)
        with pytest.raises(ValueError):
            fj.add(b"x", -1, 1)
        assert len(fj) == 10 and fj[-1][1] == 10
        fj.add(b"ok", 11, 9)
        assert fj[-1] == (b"ok", 11, 9)


def test_closed_and_locked(tmp_path, impl):
    fj = open_journal(tmp_path / "j", impl)
    fill([fj], 1, 3)
    with pytest.raises(LockedError):
        open_journal(tmp_path / "j", impl)
    fj._destroy()
    assert fj.closed
    with pytest.raises(ClosedError):
        fj.add(b"x", 4, 0)
    with pytest.raises(ClosedError):
        fj[1]
    fj.onOneSecondTimer()  # SyncObj may still tick once: harmless


def test_failed_fsync_is_raised_and_stops_writes(tmp_path, impl, monkeypatch):
    fj = open_journal(tmp_path / "j", impl, sync="always")
    fill([fj], 1, 5)

    def failing(fd):
        raise OSError(5, "injected I/O error")

    monkeypatch.setattr(_osio, "fdatasync", failing)
    with pytest.raises(OSError):
        fj.add(b"x", 6, 1)  # SyncObj's tick stops here: nothing is acknowledged
    monkeypatch.undo()
    assert len(fj) == 6 and fj[-1] == (b"x", 6, 1)  # the journal still matches the log
    with pytest.raises(PoisonedError):
        fj.add(b"y", 7, 1)
    fj._destroy()  # SyncObj's shutdown still releases the directory
    assert fj.closed
    with open_journal(tmp_path / "j", impl) as again:  # reopening recovers what is on disk
        assert again[:5] == [(b"cmd-%d" % i + b"x" * (i % 50), i, i // 7) for i in range(1, 6)]


def test_failed_state_write_is_raised(tmp_path, impl, monkeypatch):
    fj = open_journal(tmp_path / "j", impl)

    def failing(fd):
        raise OSError(28, "injected: no space")

    monkeypatch.setattr(_osio, "fsync", failing)
    with pytest.raises(OSError):
        fj.setCurrentTerm(4, "127.0.0.1:1")  # SyncObj must not send the vote
    monkeypatch.undo()
    fj.setCurrentTerm(4, "127.0.0.1:1")  # retried once the disk works again
    fj.close()
    with open_journal(tmp_path / "j", impl) as again:
        assert (again.getCurrentTerm(), again.getVotedForNodeId()) == (4, "127.0.0.1:1")


def test_bad_options(tmp_path, impl):
    with pytest.raises(ValueError):
        FastlogJournal(tmp_path / "j", sync="sometimes", implementation=impl)


# -- term, vote and commit index -------------------------------------------


def test_hard_state_defaults_match_file_journal(tmp_path, impl):
    pj = FileJournal(str(tmp_path / "pj"))
    with open_journal(tmp_path / "j", impl) as fj:
        assert fj.getCurrentTerm() == pj.getCurrentTerm() == 0
        assert fj.getVotedForNodeId() is pj.getVotedForNodeId() is None
        assert fj.getRaftCommitIndex() == pj.getRaftCommitIndex() == 1
    pj._destroy()


@pytest.mark.parametrize("vote", [None, "127.0.0.1:4321", "node-é", ("tuple", 3), 17])
def test_hard_state_survives_reopen_like_file_journal(tmp_path, impl, vote):
    pj = FileJournal(str(tmp_path / "pj"))
    fj = open_journal(tmp_path / "j", impl, sync="always")
    for j in (pj, fj):
        j.add(b"\x00", 1, 0)
        j.add(b"a", 2, 5)
        j.add(b"b", 3, 6)
        j.setCurrentTerm(6, vote)
        j.setRaftCommitIndex(3)
        j.onOneSecondTimer()
        j._destroy()
    pj, fj = FileJournal(str(tmp_path / "pj")), open_journal(tmp_path / "j", impl)
    for j in (pj, fj):
        assert j.getCurrentTerm() == 6
        assert j.getVotedForNodeId() == vote
        assert j.getRaftCommitIndex() == 3
        assert j[:] == [(b"\x00", 1, 0), (b"a", 2, 5), (b"b", 3, 6)]
        j._destroy()


def test_term_and_vote_are_durable_when_set(tmp_path, impl, monkeypatch):
    fj = open_journal(tmp_path / "j", impl)
    synced: List[str] = []
    real_fsync, real_dir = _osio.fsync, _osio.fsync_dir
    monkeypatch.setattr(_osio, "fsync", lambda fd: (synced.append("file"), real_fsync(fd))[1])
    monkeypatch.setattr(_osio, "fsync_dir", lambda p: (synced.append("dir"), real_dir(p))[1])
    fj.setCurrentTerm(3, "127.0.0.1:1")
    assert synced == ["file", "dir"]
    body = read_small_file(fj.directory, fl_ps.STATE_FILE_NAME, fl_ps.RECORD_PYSYNCOBJ_STATE)
    assert body is not None and b"127.0.0.1:1" in body
    synced.clear()
    fj.setCurrentTerm(3, "127.0.0.1:1")  # unchanged: nothing to write
    assert synced == []
    fj.close()


def test_commit_index_saved_by_the_timer(tmp_path, impl):
    fj = open_journal(tmp_path / "j", impl)
    fill([fj], 1, 20)
    fj.setRaftCommitIndex(15)
    assert fj.getRaftCommitIndex() == 15
    path = fj.directory
    assert read_small_file(path, fl_ps.STATE_FILE_NAME, fl_ps.RECORD_PYSYNCOBJ_STATE) is None
    fj.onOneSecondTimer()
    assert read_small_file(path, fl_ps.STATE_FILE_NAME, fl_ps.RECORD_PYSYNCOBJ_STATE) is not None
    assert fj.log.durable_index() == 20
    fj.close()
    with open_journal(tmp_path / "j", impl) as again:
        assert again.getRaftCommitIndex() == 15


def test_commit_index_never_beyond_the_log_on_reopen(tmp_path, impl):
    fj = open_journal(tmp_path / "j", impl, sync="always")
    fill([fj], 1, 20)
    fj.setRaftCommitIndex(20)
    fj.flush()
    fj.deleteEntriesFrom(10)  # entries 11.. are gone
    fj.log.close()  # a crash: the journal never saves its state again
    with open_journal(tmp_path / "j", impl) as again:
        assert again[-1][1] == 10
        assert again.getRaftCommitIndex() == 10


def test_sync_always_makes_each_add_durable(tmp_path, impl, monkeypatch):
    fj = open_journal(tmp_path / "j", impl, sync="always")
    fj.add(b"\x00", 1, 0)
    calls: List[int] = []
    real = _osio.fdatasync
    monkeypatch.setattr(_osio, "fdatasync", lambda fd: (calls.append(fd), real(fd))[1])
    fj.add(b"a", 2, 1)
    assert calls
    assert fj.log.durable_index() == 2
    fj.close()


def test_sync_auto_is_always_until_a_sender_takes_over(tmp_path, impl, monkeypatch):
    fj = open_journal(tmp_path / "j", impl, sync="auto")
    assert not fj.deferred
    fj.add(b"\x00", 1, 0)
    assert fj.log.durable_index() == 1
    assert fj.defer_sync_to_sender()
    calls: List[int] = []
    real = _osio.fdatasync
    monkeypatch.setattr(_osio, "fdatasync", lambda fd: (calls.append(fd), real(fd))[1])
    fill([fj], 2, 10)
    assert not calls and fj.log.durable_index() == 1
    fj.sync_entries()
    assert calls and fj.log.durable_index() == 11
    calls.clear()
    fj.sync_entries()  # nothing new: no fsync
    assert not calls
    fj.close()


def test_only_auto_hands_over_to_the_sender(tmp_path, impl):
    with open_journal(tmp_path / "a", impl, sync="always") as fj:
        assert not fj.defer_sync_to_sender()
        fj.add(b"x", 1, 0)
        assert fj.log.durable_index() == 1
    with open_journal(tmp_path / "p", impl, sync="periodic") as fj:
        assert fj.defer_sync_to_sender()


def test_transport_syncs_the_journal_before_sending(tmp_path, impl, monkeypatch):
    from pysyncobj.transport import TCPTransport

    fj = open_journal(tmp_path / "j", impl, sync="periodic")
    sent: List[Tuple[int, Any]] = []
    monkeypatch.setattr(
        TCPTransport,
        "send",
        lambda self, node, msg: sent.append((None if fj.log.closed else fj.log.durable_index(), msg)) or True,
    )
    transport = object.__new__(fl_ps.FastlogTCPTransport)  # no sockets: only send() is under test
    transport._fastlog_journal = fj
    fill([fj], 1, 25)
    assert fj.log.durable_index() == 0
    assert transport.send("peer", {"type": "next_node_idx"})
    assert sent == [(25, {"type": "next_node_idx"})]
    fj.close()
    assert transport.send("peer", "after close")  # a closed journal is skipped


def test_sync_periodic_defers_to_the_timer(tmp_path, impl, monkeypatch):
    fj = open_journal(tmp_path / "j", impl, sync="periodic")
    fill([fj], 1, 1)  # creating the first segment syncs its header
    calls: List[int] = []
    real = _osio.fdatasync
    monkeypatch.setattr(_osio, "fdatasync", lambda fd: (calls.append(fd), real(fd))[1])
    fill([fj], 2, 29)
    assert not calls
    assert fj.log.durable_index() < 30
    fj.onOneSecondTimer()
    assert calls
    assert fj.log.durable_index() == 30
    fj.close()


def test_damaged_state_file_is_reported(tmp_path, impl):
    fj = open_journal(tmp_path / "j", impl)
    fj.setCurrentTerm(2, None)
    fj.close()
    path = tmp_path / "j" / fl_ps.STATE_FILE_NAME
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptionError):
        open_journal(tmp_path / "j", impl)
    # the failed open released the log directory again
    path.unlink()
    open_journal(tmp_path / "j", impl).close()


# -- random operation sequences ---------------------------------------------

_op = st.one_of(
    st.tuples(st.just("add"), st.integers(1, 40), st.integers(0, 2)),
    st.tuples(st.just("from"), st.integers(-60, 60)),
    st.tuples(st.just("to"), st.integers(-60, 60)),
    st.tuples(st.just("restart_at"), st.integers(1, 500)),
    st.tuples(st.just("clear")),
    st.tuples(st.just("reopen")),
    st.tuples(st.just("slice"), st.integers(-70, 70) | st.none(), st.integers(-70, 70) | st.none(),
              st.sampled_from([None, 1, 2, 3, -1, -2, 5])),
    st.tuples(st.just("item"), st.integers(-70, 70)),
)


def _result(fn: Callable[[], Any]) -> Any:
    try:
        return ("ok", fn())
    except IndexError:
        return ("IndexError",)


@settings(max_examples=60)
@given(ops=st.lists(_op, max_size=40))
def test_random_sequences_match_memory_journal(core_module, ops):
    impl = core_module.IMPLEMENTATION
    with tempfile.TemporaryDirectory() as d:
        fj, mj = open_journal(d, impl), MemoryJournal()
        term = 0
        try:
            for op in ops:
                kind = op[0]
                if kind == "add":
                    _, count, bump = op
                    term += bump
                    nxt = mj[-1][1] + 1 if len(mj) else 1
                    for j in (fj, mj):
                        for i in range(nxt, nxt + count):
                            j.add(b"%d:%d" % (i, term), i, term)
                elif kind == "restart_at":
                    if len(mj) == 0:
                        for j in (fj, mj):
                            j.add(b"r", op[1], term)
                elif kind == "from":
                    fj.deleteEntriesFrom(op[1])
                    mj.deleteEntriesFrom(op[1])
                elif kind == "to":
                    fj.deleteEntriesTo(op[1])
                    mj.deleteEntriesTo(op[1])
                elif kind == "clear":
                    fj.clear()
                    mj.clear()
                elif kind == "reopen":
                    fj.close()
                    fj = open_journal(d, impl)
                elif kind == "slice":
                    s = slice(op[1], op[2], op[3])
                    assert fj[s] == mj[s]
                elif kind == "item":
                    assert _result(lambda: fj[op[1]]) == _result(lambda: mj[op[1]])
                assert len(fj) == len(mj)
            assert_same(fj, mj)
        finally:
            fj.close()


# -- installing the factory -------------------------------------------------


@pytest.fixture
def pristine_factory():
    original = ps_syncobj.createJournal
    yield original
    ps_syncobj.createJournal = original


def test_install_and_uninstall(tmp_path, impl, pristine_factory):
    assert not fl_ps.is_installed()
    fl_ps.install(tmp_path, sync="periodic", implementation=impl, segment_size=SMALL_SEGMENT)
    assert fl_ps.is_installed()
    j = ps_syncobj.createJournal("node-a")
    assert isinstance(j, FastlogJournal)
    assert j.directory == str(tmp_path / "node-a")
    j.close()
    assert isinstance(ps_syncobj.createJournal(None), MemoryJournal)
    fl_ps.install(lambda jf: tmp_path / "other", implementation=impl, segment_size=SMALL_SEGMENT)
    j = ps_syncobj.createJournal(None)
    assert j.directory == str(tmp_path / "other")
    j.close()
    fl_ps.uninstall()
    assert ps_syncobj.createJournal is pristine_factory
    assert not fl_ps.is_installed()
    fl_ps.uninstall()  # no-op
    assert ps_syncobj.createJournal is pristine_factory


def test_journal_file_is_the_directory_without_target(tmp_path, impl, pristine_factory):
    with fl_ps.use_fastlog_journal(implementation=impl, segment_size=SMALL_SEGMENT) as factory:
        assert ps_syncobj.createJournal is factory
        j = ps_syncobj.createJournal(str(tmp_path / "jf"))
        assert j.directory == str(tmp_path / "jf")
        j.close()
        assert isinstance(ps_syncobj.createJournal(None), MemoryJournal)
    assert ps_syncobj.createJournal is pristine_factory


def test_context_managers_nest_and_restore(tmp_path, impl, pristine_factory):
    with fl_ps.use_fastlog_journal(tmp_path / "a", implementation=impl) as outer:
        with fl_ps.use_fastlog_journal(tmp_path / "b", implementation=impl) as inner:
            assert ps_syncobj.createJournal is inner
        assert ps_syncobj.createJournal is outer
        fl_ps.uninstall()  # uninstall inside the block restores PySyncObj's own
        assert ps_syncobj.createJournal is pristine_factory
    assert ps_syncobj.createJournal is pristine_factory
    with pytest.raises(RuntimeError):
        with fl_ps.use_fastlog_journal(tmp_path):
            raise RuntimeError("boom")
    assert ps_syncobj.createJournal is pristine_factory


def test_bad_target_fails_early(pristine_factory):
    with pytest.raises(TypeError):
        fl_ps.install(42)  # type: ignore[arg-type]
    assert ps_syncobj.createJournal is pristine_factory

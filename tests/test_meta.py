"""The MetaStore: hard state save / load, atomicity, corruption, bad input."""
from __future__ import annotations

import asyncio
import os
import struct

import pytest

import fastlog
from fastlog import _osio
from fastlog.errors import ClosedError, CorruptionError, EntryTypeError, PoisonedError
from fastlog.meta import HARD_STATE_FILE, FileMetaStore, decode_hard_state, encode_hard_state
from fastlog.protocols import MetaStore
from fastlog.smallfile import RECORD_HARD_STATE, encode_small_file

VOTE = fastlog.VotedFor(voted_for_id=7, voted_for_term=3, committed=True)
STATE = fastlog.HardState(current_term=3, voted_for=VOTE)


def test_implements_the_protocol(tmp_path):
    assert isinstance(FileMetaStore(tmp_path), MetaStore)


def test_load_without_save_is_none(tmp_path):
    assert FileMetaStore(tmp_path).load_hard_state() is None


@pytest.mark.parametrize(
    "state",
    [
        fastlog.HardState(current_term=0, voted_for=None),
        fastlog.HardState(current_term=5, voted_for=None),
        STATE,
        fastlog.HardState(current_term=9, voted_for=fastlog.VotedFor(voted_for_id=1, voted_for_term=9, committed=False)),
        fastlog.HardState(
            current_term=fastlog.MAX_INDEX,
            voted_for=fastlog.VotedFor(voted_for_id=fastlog.MAX_INDEX, voted_for_term=fastlog.MAX_INDEX, committed=True),
        ),
    ],
)
def test_save_load_round_trip(tmp_path, state):
    store = FileMetaStore(tmp_path)
    store.save_hard_state(state)
    assert store.load_hard_state() == state
    assert FileMetaStore(tmp_path).load_hard_state() == state  # a fresh reader sees it too


def test_later_save_replaces_earlier(tmp_path):
    store = FileMetaStore(tmp_path)
    store.save_hard_state(fastlog.HardState(current_term=1, voted_for=None))
    store.save_hard_state(STATE)
    assert store.load_hard_state() == STATE
    assert sorted(os.listdir(tmp_path)) == [HARD_STATE_FILE]  # no temporary file left


def test_body_layout_matches_the_format(tmp_path):
    body = encode_hard_state(STATE)
    assert len(body) == 34
    assert struct.unpack("<QBQQBQ", body) == (3, 1, 7, 3, 1, 0)
    assert encode_hard_state(fastlog.HardState(current_term=4, voted_for=None)) == struct.pack("<QBQQBQ", 4, 0, 0, 0, 0, 0)


def test_save_is_fsynced_then_renamed_then_dir_fsynced(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_fsync_dir = _osio.fsync, _osio.fsync_dir

    def fsync(fd):
        calls.append(("fsync", os.listdir(tmp_path)))
        real_fsync(fd)

    def fsync_dir(path):
        calls.append(("fsync_dir", os.listdir(tmp_path)))
        real_fsync_dir(path)

    monkeypatch.setattr(_osio, "fsync", fsync)
    monkeypatch.setattr(_osio, "fsync_dir", fsync_dir)
    FileMetaStore(tmp_path).save_hard_state(STATE)
    assert [c[0] for c in calls] == ["fsync", "fsync_dir"]
    assert calls[0][1] == [HARD_STATE_FILE + ".tmp"]  # data synced before the rename
    assert calls[1][1] == [HARD_STATE_FILE]  # the rename made durable by the directory sync


def test_failed_fsync_keeps_old_state_and_poisons(tmp_path, monkeypatch):
    store = FileMetaStore(tmp_path)
    store.save_hard_state(STATE)

    def failing(fd):
        raise OSError(5, "injected I/O error")

    monkeypatch.setattr(_osio, "fsync", failing)
    with pytest.raises(OSError, match="injected"):
        store.save_hard_state(fastlog.HardState(current_term=4, voted_for=None))
    monkeypatch.undo()
    assert store.load_hard_state() == STATE  # the rename never happened
    with pytest.raises(PoisonedError) as info:
        store.save_hard_state(fastlog.HardState(current_term=5, voted_for=None))
    assert isinstance(info.value.__cause__, OSError)
    with pytest.raises(PoisonedError):
        store.flush()
    with pytest.raises(PoisonedError):
        asyncio.run(store.flush_async())


@pytest.mark.parametrize("bad", [None, 3, "term", (3, None), {"current_term": 1}])
def test_bad_input_type(tmp_path, bad):
    store = FileMetaStore(tmp_path)
    store.save_hard_state(STATE)
    with pytest.raises(EntryTypeError):
        store.save_hard_state(bad)
    with pytest.raises(TypeError):  # EntryTypeError is also a TypeError
        store.save_hard_state(bad)
    assert store.load_hard_state() == STATE


def _damage(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x40]))


@pytest.mark.parametrize("offset", [0, 9, 13, 17, 21, 24, 32, 40, 57])
def test_flipped_byte_is_corruption(tmp_path, offset):
    store = FileMetaStore(tmp_path)
    store.save_hard_state(STATE)
    _damage(store.path, offset)
    with pytest.raises(CorruptionError) as info:
        store.load_hard_state()
    assert info.value.path == store.path
    assert info.value.offset is not None


@pytest.mark.parametrize("size", [0, 10, 24, 40])
def test_short_file_is_corruption(tmp_path, size):
    store = FileMetaStore(tmp_path)
    store.save_hard_state(STATE)
    with open(store.path, "r+b") as f:
        f.truncate(size)
    with pytest.raises(CorruptionError):
        store.load_hard_state()


def test_wrong_record_type_is_corruption(tmp_path):
    (tmp_path / HARD_STATE_FILE).write_bytes(encode_small_file(1, encode_hard_state(STATE)))
    with pytest.raises(CorruptionError):
        FileMetaStore(tmp_path).load_hard_state()


@pytest.mark.parametrize(
    "fields, offset",
    [
        ((1, 2, 0, 0, 0, 0), 32),  # has_vote is a flag
        ((1, 1, 1, 1, 2, 0), 49),  # committed is a flag
        ((1, 1, 1, 1, 1, 9), 50),  # reserved must be zero
        ((1, 0, 5, 0, 0, 0), 32),  # vote fields without a vote
    ],
)
def test_checksummed_but_impossible_body_is_corruption(tmp_path, fields, offset):
    body = struct.pack("<QBQQBQ", *fields)
    (tmp_path / HARD_STATE_FILE).write_bytes(encode_small_file(RECORD_HARD_STATE, body))
    with pytest.raises(CorruptionError) as info:
        FileMetaStore(tmp_path).load_hard_state()
    assert info.value.offset == offset


def test_body_of_wrong_length_is_corruption():
    with pytest.raises(CorruptionError):
        decode_hard_state(encode_hard_state(STATE) + b"\0")


def test_flush_is_a_durable_no_op(tmp_path, monkeypatch):
    store = FileMetaStore(tmp_path)
    store.save_hard_state(STATE)
    synced = []
    monkeypatch.setattr(_osio, "fsync", lambda fd: synced.append(fd))
    monkeypatch.setattr(_osio, "fsync_dir", lambda path: synced.append(path))
    store.flush()
    asyncio.run(store.flush_async())
    assert synced == []  # nothing was pending


def test_closed_store_refuses(tmp_path):
    store = FileMetaStore(tmp_path)
    store.close()
    with pytest.raises(ClosedError):
        store.save_hard_state(STATE)
    with pytest.raises(ClosedError):
        store.load_hard_state()
    with pytest.raises(ClosedError):
        store.flush()

"""Damaged files never crash the process and are never cut silently.

After a clean close every record is durable, so damage to a record is a
CorruptionError naming the file and the record's offset; damage where nothing
was ever written (the zero region) is either harmless or reported; damage in
the unsynced tail of a crashed log is cut off.  Both implementations must
reach the same verdict on every damaged directory.  The last part drives
``fastlog verify`` / ``repair`` over the same kinds of damage.
"""
from __future__ import annotations

import importlib
import os
import random
import shutil
import struct
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

import fastlog
from fastlog import EntryKind, HardState, LogId, VotedFor, tools
from fastlog.errors import CorruptionError
from fastlog.meta import FileMetaStore

SEG = 64 << 10
DATA_START = 4096


def _implementations() -> List[str]:
    names = ["python"]
    if os.environ.get("FASTLOG_NO_EXTENSIONS", "").strip().lower() not in ("1", "true", "yes", "on"):
        try:
            importlib.import_module("fastlog_ext._core")
            names.append("c")
        except ImportError:
            if os.environ.get("FASTLOG_REQUIRE_EXTENSION"):
                raise
    return names


IMPLS = _implementations()


def payload(i: int) -> bytes:
    return (b"%d|" % i) * (1 + (i * 37) % 1000)


def build_log(path: Path, *, purge: bool = False, close: bool = True) -> Optional[fastlog.Log]:
    log = fastlog.Log(path, segment_size=SEG)
    kinds = [EntryKind.COMMAND, EntryKind.NOOP, EntryKind.CONFIG]
    log.append([log.Entry(index=i, term=1 + i // 40, payload=payload(i) if i % 3 != 1 else b"",
                          kind=kinds[i % 3] if i % 3 != 1 else EntryKind.NOOP) for i in range(1, 120)])
    if purge:
        log.purge(LogId(index=10, term=log.term_at(10)))
    FileMetaStore(path).save_hard_state(HardState(current_term=7, voted_for=VotedFor(voted_for_id=3, voted_for_term=7)))
    if close:
        log.close()
        return None
    return log


def frames(data: bytes) -> List[Tuple[int, int]]:
    """(offset, frame size) of every record of a segment."""
    out = []
    off = DATA_START
    while off + 32 <= len(data) and data[off:off + 32] != bytes(32):
        (length,) = struct.unpack_from("<I", data, off + 4)
        size = 32 + ((length + 7) & ~7)
        out.append((off, size))
        off += size
    return out


def outcome(path: Path, impl: str, read_only: bool = True) -> Tuple[Any, ...]:
    """('ok', boundary, entries) or ('corrupt', file name, offset); anything else fails the test."""
    try:
        with fastlog.Log(path, segment_size=SEG, read_only=read_only, implementation=impl) as log:
            first, last = log.first_index(), log.last_index()
            entries = tuple((e.index, e.term, int(e.kind), bytes(e.payload)) for e in log.get_entries(first, last)) if first else ()
            b = log.purge_boundary()
            return ("ok", None if b is None else (b.index, b.term), entries)
    except CorruptionError as exc:
        assert exc.path is not None and exc.offset is not None, f"CorruptionError without a location: {exc}"
        return ("corrupt", os.path.basename(exc.path), exc.offset)


def same_everywhere(path: Path) -> Tuple[Any, ...]:
    results = {impl: outcome(path, impl) for impl in IMPLS}
    first = results[IMPLS[0]]
    for impl, res in results.items():
        assert res == first, f"{impl} disagrees: {res[:3]!r} vs {first[:3]!r}"
    return first


def flip(path: Path, offset: int, bit: int = 0) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ (1 << bit)]))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    d = tmp_path_factory.mktemp("pristine") / "log"
    build_log(d)
    files = {p.name: p.read_bytes() for p in d.iterdir()}
    return {"dir": d, "files": files, "good": outcome(d, IMPLS[0])}


def restore(pristine: Dict[str, Any], dest: Path) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name, data in pristine["files"].items():
        (dest / name).write_bytes(data)
    return dest


def segment_names(pristine: Dict[str, Any]) -> List[str]:
    return sorted(n for n in pristine["files"] if n.endswith(".seg"))


def test_the_pristine_log_reads_back(pristine: Dict[str, Any]) -> None:
    kind, boundary, entries = same_everywhere(pristine["dir"])
    assert kind == "ok" and len(entries) == 119 and len(segment_names(pristine)) >= 3


def test_a_bit_flip_in_any_record_is_reported_where_it_is(pristine: Dict[str, Any], tmp_path: Path) -> None:
    rng = random.Random(5)
    checked = 0
    for name in segment_names(pristine):
        data = pristine["files"][name]
        for off, size in frames(data):
            (length,) = struct.unpack_from("<I", data, off + 4)
            # one byte of the frame header, one of the payload, and the padding if any
            targets = [off + rng.randrange(32)]
            if length:
                targets.append(off + 32 + rng.randrange(length))
            if size > 32 + length:
                targets.append(off + 32 + length + rng.randrange(size - 32 - length))
            for target in targets:
                d = restore(pristine, tmp_path / "img")
                flip(d / name, target, rng.randrange(8))
                res = same_everywhere(d)
                checked += 1
                if target >= off + 32 + length:
                    # zero padding is outside the checksum: harmless, or reported
                    assert res == pristine["good"] or res == ("corrupt", name, off), res[:3]
                else:
                    assert res == ("corrupt", name, off), f"flip at {name}+{target} gave {res[:3]!r}"
    assert checked > 200


@pytest.mark.parametrize("field_offset", range(0, 64, 1))
def test_a_bit_flip_in_a_segment_header_is_reported(pristine: Dict[str, Any], tmp_path: Path, field_offset: int) -> None:
    for name in segment_names(pristine):
        d = restore(pristine, tmp_path / "img")
        flip(d / name, field_offset, field_offset % 8)
        kind, where, offset = same_everywhere(d)[:3]
        assert kind == "corrupt", f"header byte {field_offset} of {name}: {kind}"
        # a damaged header may also show up as a broken chain at the end of the segment before it
        assert where in segment_names(pristine)
        assert where == name and offset < 64 or segment_names(pristine).index(where) == segment_names(pristine).index(name) - 1


def test_damage_where_nothing_was_written_is_harmless_or_reported(pristine: Dict[str, Any], tmp_path: Path) -> None:
    rng = random.Random(11)
    names = segment_names(pristine)
    for name in names:
        data = pristine["files"][name]
        fr = frames(data)
        end = fr[-1][0] + fr[-1][1]
        spots = [rng.randrange(64, DATA_START) for _ in range(3)]  # rest of the header page
        spots += [end, end + 1, end + 31, rng.randrange(end, len(data)), len(data) - 1]
        for spot in spots:
            if spot >= len(data):
                continue
            d = restore(pristine, tmp_path / "img")
            flip(d / name, spot, 3)
            res = same_everywhere(d)
            assert res == pristine["good"] or res[:2] == ("corrupt", name), f"{name}+{spot}: {res[:3]!r}"
            if name == names[-1] and spot >= end:
                # past the end of the last segment: a torn tail, cut on a writable open
                assert res == pristine["good"]
                assert outcome(d, IMPLS[-1], read_only=False) == pristine["good"]
                assert (d / name).read_bytes()[end:] == bytes(len(data) - end), "the junk was not zeroed"


def test_overwritten_runs_of_bytes_never_crash(pristine: Dict[str, Any], tmp_path: Path) -> None:
    rng = random.Random(23)
    names = sorted(pristine["files"])
    for _ in range(150):
        name = rng.choice(names)
        size = len(pristine["files"][name])
        if size == 0:
            continue
        d = restore(pristine, tmp_path / "img")
        start = rng.randrange(size)
        junk = bytes(rng.randrange(256) for _ in range(rng.choice([1, 4, 8, 16, 64, 700])))
        with open(d / name, "r+b") as f:
            f.seek(start)
            f.write(junk[: size - start])
        res = same_everywhere(d)
        assert res[0] in ("ok", "corrupt")
        if res[0] == "ok":
            # only bytes outside every checksum changed: the log reads back whole
            assert res == pristine["good"]
        # the hard state either loads unchanged or is reported
        try:
            hs = FileMetaStore(d).load_hard_state()
            assert hs == HardState(current_term=7, voted_for=VotedFor(voted_for_id=3, voted_for_term=7))
        except CorruptionError as exc:
            assert exc.path and exc.path.endswith("HARDSTATE")


@pytest.mark.parametrize("name", ["STATE", "HARDSTATE"])
def test_every_bit_of_the_small_files_is_checked(pristine: Dict[str, Any], tmp_path: Path, name: str) -> None:
    size = len(pristine["files"][name])
    for off in range(size):
        d = restore(pristine, tmp_path / "img")
        flip(d / name, off, off % 8)
        if name == "STATE":
            res = same_everywhere(d)
            assert res[:2] == ("corrupt", "STATE"), f"STATE byte {off}: {res[:3]!r}"
        else:
            with pytest.raises(CorruptionError) as info:
                FileMetaStore(d).load_hard_state()
            assert info.value.path.endswith("HARDSTATE")
    # cut short, grown, emptied
    for mutate in (lambda b: b[:-1], lambda b: b + b"\0", lambda b: b""):
        d = restore(pristine, tmp_path / "img")
        (d / name).write_bytes(mutate(pristine["files"][name]))
        if name == "STATE":
            assert same_everywhere(d)[:2] == ("corrupt", "STATE")
        else:
            with pytest.raises(CorruptionError):
                FileMetaStore(d).load_hard_state()


def test_a_damaged_hard_state_stops_the_engine(pristine: Dict[str, Any], tmp_path: Path) -> None:
    d = restore(pristine, tmp_path / "img")
    flip(d / "HARDSTATE", 30)
    with pytest.raises(CorruptionError):
        with fastlog.open(d, segment_size=SEG) as engine:
            engine.meta_store().load_hard_state()


# ---------------------------------------------------------------------------
# The unsynced tail of a crashed log
# ---------------------------------------------------------------------------


def crash_copy(src: Path, dest: Path) -> None:
    """What the disk holds if power fails now and every written page had reached it."""
    dest.mkdir(parents=True)
    for p in src.iterdir():
        (dest / p.name).write_bytes(p.read_bytes())


@pytest.mark.parametrize("impl", IMPLS)
def test_damage_past_synced_end_is_a_torn_tail(tmp_path: Path, impl: str) -> None:
    src = tmp_path / "live"
    log = fastlog.Log(src, segment_size=SEG, implementation=impl)
    log.append([log.Entry(index=i, term=1, payload=payload(i)) for i in range(1, 30)])
    log.flush()
    log.flush()  # the claim written by the first flush is now on disk too
    durable = log.durable_index()
    log.append([log.Entry(index=i, term=1, payload=payload(i)) for i in range(30, 45)])
    crash_copy(src, tmp_path / "image")
    log.close()
    seg_name = sorted(p.name for p in (tmp_path / "image").glob("*.seg"))[-1]
    data = (tmp_path / "image" / seg_name).read_bytes()
    (synced_end,) = struct.unpack_from("<Q", data, 40)
    fr = frames(data)
    unsynced = [(o, s) for o, s in fr if o >= synced_end]
    synced = [(o, s) for o, s in fr if o + s <= synced_end]
    assert unsynced and synced
    rng = random.Random(3)
    for off, size in unsynced[:6]:
        d = tmp_path / "torn"
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(tmp_path / "image", d)
        flip(d / seg_name, off + rng.randrange(size), rng.randrange(8))
        with fastlog.Log(d, segment_size=SEG, implementation=impl) as reopened:
            last = reopened.last_index()
            assert durable <= last < 44, "the torn tail was not cut where the damage is"
            got = reopened.get_entries(1, last)
            assert [e.payload for e in got] == [payload(i) for i in range(1, last + 1)]
    for off, _size in synced[-3:]:
        d = tmp_path / "rot"
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(tmp_path / "image", d)
        flip(d / seg_name, off + 8, 1)  # the index field
        with pytest.raises(CorruptionError) as info:
            fastlog.Log(d, segment_size=SEG, implementation=impl)
        assert info.value.path.endswith(seg_name) and info.value.offset == off


# ---------------------------------------------------------------------------
# fastlog verify / repair / inspect / dump
# ---------------------------------------------------------------------------


def run_cli(*args: str, stdin: str = "") -> Tuple[int, str]:
    import subprocess

    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "fastlog", *args], input=stdin, capture_output=True, text=True, env=env, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


def test_verify_and_inspect_an_intact_log(pristine: Dict[str, Any], tmp_path: Path) -> None:
    d = restore(pristine, tmp_path / "img")
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    report = tools.verify(str(d))
    assert report.ok and report.last_index == 119 and len(report.segments) == len(segment_names(pristine))
    info = tools.inspect(str(d))
    assert info["first_index"] == 1 and info["last_index"] == 119 and info["purge_boundary"] is None
    assert info["hard_state"]["current_term"] == 7
    assert sum(s["count"] for s in info["segments"]) == 119
    assert [e.index for e in tools.dump(str(d), 5, 9)] == [5, 6, 7, 8, 9]
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before, "a read-only tool changed a file"
    code, out = run_cli("verify", str(d))
    assert code == 0 and "OK" in out
    code, out = run_cli("inspect", str(d))
    assert code == 0 and "1..119" in out and "term 7" in out
    code, out = run_cli("dump", str(d), "--start", "3", "--end", "4", "--hex")
    assert code == 0 and len([ln for ln in out.splitlines() if ln[:1].isdigit()]) == 2 and payload(3).hex()[:20] in out


def test_verify_reports_damage_and_repair_cuts_before_it(pristine: Dict[str, Any], tmp_path: Path) -> None:
    names = segment_names(pristine)
    mid = names[1]
    data = pristine["files"][mid]
    fr = frames(data)
    off = fr[4][0]
    d = restore(pristine, tmp_path / "img")
    flip(d / mid, off + 40, 2)
    code, out = run_cli("verify", str(d))
    assert code == 1 and "DAMAGE" in out and mid in out and str(off) in out
    code, out = run_cli("repair", str(d), stdin="n\n")
    assert code == 2 and "will cut" in out and "nothing changed" in out
    assert outcome(d, IMPLS[0])[:3] == ("corrupt", mid, off)
    first_dropped = int(mid.split(".")[0]) + 4
    code, out = run_cli("repair", "--yes", str(d))
    assert code == 0, out
    assert f"from index {first_dropped}" in out
    for n in names[2:]:
        assert f"delete {n}" in out and not (d / n).exists()
    assert tools.verify(str(d)).ok
    res = same_everywhere(d)
    assert res[0] == "ok" and res[2] == pristine["good"][2][: first_dropped - 1]
    with fastlog.Log(d, segment_size=SEG) as log:  # and it takes new entries again
        log.append([log.Entry(index=first_dropped, term=9, payload=b"after repair")])
    assert same_everywhere(d)[2][-1][3] == b"after repair"


def test_repair_drops_a_segment_whose_header_is_damaged(pristine: Dict[str, Any], tmp_path: Path) -> None:
    names = segment_names(pristine)
    d = restore(pristine, tmp_path / "img")
    flip(d / names[1], 30)  # prev_crc
    report = tools.verify(str(d))
    assert not report.ok
    plan = tools.plan_repair(str(d))
    assert plan.drop_files == names[1:] and plan.keep_last_index == int(names[1].split(".")[0]) - 1
    tools.repair(str(d), plan)
    assert same_everywhere(d)[2] == pristine["good"][2][: plan.keep_last_index]


def test_repair_refuses_a_damaged_hard_state(pristine: Dict[str, Any], tmp_path: Path) -> None:
    d = restore(pristine, tmp_path / "img")
    flip(d / "HARDSTATE", 40)
    code, out = run_cli("verify", str(d))
    assert code == 1 and "HARDSTATE: DAMAGED" in out
    code, out = run_cli("repair", "--yes", str(d))
    assert code == 1 and "cannot repair" in out
    assert (d / "HARDSTATE").read_bytes() != pristine["files"]["HARDSTATE"]  # left for a human


def test_tools_on_a_log_that_is_open(tmp_path: Path) -> None:
    # verify reads a live log (tests/test_live_read.py); repair of an intact
    # log has nothing to do, and would need the writer's lock to change anything.
    with fastlog.Log(tmp_path / "log", segment_size=SEG) as log:
        log.append([log.Entry(index=1, term=1, payload=b"x")])
        code, out = run_cli("verify", str(tmp_path / "log"))
        assert code == 0, out
        code, out = run_cli("repair", "--yes", str(tmp_path / "log"))
        assert code == 0, out
        log.append([log.Entry(index=2, term=1, payload=b"y")])


def test_tools_on_something_that_is_not_a_log(tmp_path: Path) -> None:
    code, out = run_cli("verify", str(tmp_path / "missing"))
    assert code == 2 and "error" in out
    code, out = run_cli("dump", str(tmp_path / "missing"))
    assert code == 2


def test_verify_never_crashes_on_random_damage(pristine: Dict[str, Any], tmp_path: Path) -> None:
    """verify reports every damaged directory that reopening refuses, and only those."""
    rng = random.Random(41)
    names = sorted(pristine["files"])
    for _ in range(40):
        d = restore(pristine, tmp_path / "img")
        name = rng.choice([n for n in names if pristine["files"][n]])
        flip(d / name, rng.randrange(len(pristine["files"][name])), rng.randrange(8))
        refused = outcome(d, IMPLS[0])[0] == "corrupt"
        hard_state_bad = name == "HARDSTATE"
        report = tools.verify(str(d))
        assert report.ok == (not refused and not hard_state_bad), (name, report.lines())
        if not report.ok and not hard_state_bad and name != "STATE":
            tools.repair(str(d))
            assert tools.verify(str(d)).ok
            assert outcome(d, IMPLS[0])[0] == "ok"


def test_verify_lists_a_torn_tail_without_calling_it_damage(tmp_path: Path) -> None:
    src = tmp_path / "live"
    log = fastlog.Log(src, segment_size=SEG, claim_interval=0.0, zero_ahead=False)
    log.append([log.Entry(index=i, term=1, payload=payload(i)) for i in range(1, 10)])
    log.flush()
    log.flush()
    log.append([log.Entry(index=i, term=1, payload=payload(i)) for i in range(10, 14)])
    crash_copy(src, tmp_path / "image")
    log.close()
    d = tmp_path / "image"
    seg_name = sorted(p.name for p in d.glob("*.seg"))[-1]
    data = (d / seg_name).read_bytes()
    (synced_end,) = struct.unpack_from("<Q", data, 40)
    off = [o for o, _ in frames(data) if o >= synced_end][1]
    flip(d / seg_name, off + 40, 0)  # tear the second unsynced record
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    report = tools.verify(str(d))
    assert report.ok, report.lines()
    seg = next(s for s in report.segments if s.name == seg_name)
    assert seg.status == "torn tail" and str(off) in seg.detail
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
    assert not tools.plan_repair(str(d)).needed
    code, out = run_cli("verify", str(d))
    assert code == 0 and "torn tail" in out

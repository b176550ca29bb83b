"""The operator's command line: ``fastlog verify | repair | inspect | dump``.

Every case runs the real command line in a child process (``python -m
fastlog``, the console script's entry point) and checks its exit status,
stdout and stderr, once per core (the child gets FASTLOG_NO_EXTENSIONS=1 or
FASTLOG_REQUIRE_EXTENSION=1).  Option parsing and the help texts are checked
once: argparse answers before any core is loaded.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Dict, List, Sequence

import pytest

import fastlog
from fastlog import EntryKind, LogId, tools
from fastlog._core_api import REC_HEADER_SIZE, SEG_DATA_START
from fastlog.cli import build_parser

SEG = 64 * 1024
ENTRIES = 600
PAYLOAD = 200  # a multiple of 8: every record takes REC_HEADER_SIZE + PAYLOAD bytes
COMMANDS = ("verify", "dump", "inspect", "repair")
# The directory of the fastlog package under test, for the children's import path.
PACKAGE_PARENT = str(Path(fastlog.__file__).resolve().parent.parent)


def payload(i: int) -> bytes:
    return (b"entry %06d " % i * 20)[:PAYLOAD]


def kind(i: int) -> EntryKind:
    if i == 1:
        return EntryKind.NOOP
    return EntryKind.CONFIG if i % 50 == 0 else EntryKind.COMMAND


def child_env(impl: str) -> Dict[str, str]:
    env = dict(os.environ)
    env.pop("FASTLOG_NO_EXTENSIONS", None)
    env.pop("FASTLOG_REQUIRE_EXTENSION", None)
    env["FASTLOG_NO_EXTENSIONS" if impl == "python" else "FASTLOG_REQUIRE_EXTENSION"] = "1"
    env["PYTHONPATH"] = PACKAGE_PARENT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def command(args: Sequence[str]) -> List[str]:
    return [sys.executable, "-m", "fastlog", *args]


def run(impl: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(command(args), input=stdin, capture_output=True, text=True, env=child_env(impl),
                          timeout=120)


def run_many(impl: str, arg_lists: Sequence[Sequence[str]]) -> List[subprocess.CompletedProcess]:
    """Run several command lines at once (they only read) and collect their results."""
    procs = [subprocess.Popen(command(a), stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                              text=True, env=child_env(impl)) for a in arg_lists]
    results = []
    for a, p in zip(arg_lists, procs):
        out, err = p.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(command(a), p.returncode, out, err))
    return results


@pytest.fixture(scope="module")
def images(core_module: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """Log directories written by the core under test: intact, purged, damaged, empty."""
    impl = core_module.IMPLEMENTATION
    root = tmp_path_factory.mktemp(f"cli-{impl}")
    intact = root / "intact"
    with fastlog.Log(intact, segment_size=SEG, implementation=impl) as log:
        log.append([log.Entry(index=i, term=1 + i // 100, payload=payload(i), kind=kind(i))
                    for i in range(1, ENTRIES + 1)])
        log.flush()
    purged = root / "purged"
    shutil.copytree(intact, purged)
    with fastlog.Log(purged, segment_size=SEG, implementation=impl) as log:
        log.purge(LogId(index=100, term=2))
    damaged = root / "damaged"
    shutil.copytree(intact, damaged)
    first_segment = sorted(damaged.glob("*.seg"))[0]
    record_of_40 = SEG_DATA_START + 39 * (REC_HEADER_SIZE + PAYLOAD)
    with open(first_segment, "r+b") as f:  # one flipped payload byte of entry 40
        f.seek(record_of_40 + REC_HEADER_SIZE + 5)
        byte = f.read(1)[0]
        f.seek(record_of_40 + REC_HEADER_SIZE + 5)
        f.write(bytes([byte ^ 0x10]))
    empty_log = root / "empty-log"
    fastlog.Log(empty_log, segment_size=SEG, implementation=impl).close()
    return {"intact": intact, "purged": purged, "damaged": damaged, "empty-log": empty_log, "root": root}


@pytest.fixture()
def impl(core_module: ModuleType) -> str:
    return core_module.IMPLEMENTATION


def entry_lines(stdout: str) -> List[List[str]]:
    return [line.split("\t") for line in stdout.splitlines()[1:]]


# ---------------------------------------------------------------------------
# what is a log directory, and the one wording of each failure
# ---------------------------------------------------------------------------


def test_every_command_refuses_what_is_not_a_log_in_the_same_words(impl: str, images: Dict[str, Path],
                                                                   tmp_path: Path) -> None:
    readme_only = tmp_path / "readme-only"
    readme_only.mkdir()
    (readme_only / "readme.txt").write_text("not a log\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    foreign_state = tmp_path / "foreign-state"
    foreign_state.mkdir()
    (foreign_state / "STATE").write_text("some other program's state\n")
    missing = tmp_path / "missing"
    cases = {
        readme_only: f"not a fastlog log directory: {readme_only} (it holds no STATE file and no segment files)",
        empty: f"not a fastlog log directory: {empty} (it is empty)",
        foreign_state: f"not a fastlog log directory: {foreign_state} (its STATE file is not a fastlog log "
                       "state and it has no segment files)",
        readme_only / "readme.txt": f"not a fastlog log directory: {readme_only / 'readme.txt'} "
                                    "(it is a file, not a directory)",
        missing: f"no such directory: {missing}",
    }
    # Every command on the two cases every command must refuse (nothing there,
    # nothing in it); the other kinds of stranger once each.
    runs = [(cmd, path) for path in (missing, empty) for cmd in COMMANDS]
    runs += [("verify", readme_only), ("dump", foreign_state), ("inspect", readme_only / "readme.txt")]
    arg_lists = [[cmd, str(path)] + (["--yes"] if cmd == "repair" else []) for cmd, path in runs]
    before = {p: sorted(os.listdir(p)) for p in (readme_only, empty, foreign_state)}
    for args, res in zip(arg_lists, run_many(impl, arg_lists)):
        expected = f"fastlog {args[0]}: error: {cases[Path(args[1])]}\n"
        assert (res.returncode, res.stdout, res.stderr) == (2, "", expected), args
    assert {p: sorted(os.listdir(p)) for p in before} == before, "a refused directory was changed"
    assert not missing.exists()


def test_a_log_without_entries_is_a_log(impl: str, images: Dict[str, Path]) -> None:
    d = str(images["empty-log"])
    verify, dump = run_many(impl, [["verify", d], ["dump", d]])
    assert verify.returncode == 0 and "OK" in verify.stdout, verify
    assert dump.returncode == 0 and dump.stdout == "index\tterm\tkind\tbytes\tpayload\n", dump
    assert dump.stderr == "fastlog dump: note: the log holds no entries\nfastlog dump: 0 entries printed\n"


def test_a_log_in_use_is_read_live_and_never_repaired(impl: str, images: Dict[str, Path], tmp_path: Path) -> None:
    """verify, dump and inspect read a log a writer has open (a live view);
    repair never changes it: an intact log needs nothing, and anything to cut
    is refused in the one wording for a directory in use."""
    d = tmp_path / "live"
    shutil.copytree(images["intact"], d)
    with fastlog.Log(d, segment_size=SEG, implementation=impl):
        before = {p.name: p.read_bytes() for p in d.iterdir() if p.name != "LOCK"}
        arg_lists = [[cmd, str(d)] + (["--yes"] if cmd == "repair" else []) for cmd in COMMANDS]
        for args, res in zip(arg_lists, run_many(impl, arg_lists)):
            if args[0] == "repair":
                in_use = f"fastlog repair: error: log directory in use: {d} (a store has it open; close it first)\n"
                assert res.returncode == 0 or (res.returncode, res.stderr) == (2, in_use), (args, res)
            else:
                assert res.returncode == 0 and "Traceback" not in res.stderr, (args, res)
        assert {p.name: p.read_bytes() for p in d.iterdir() if p.name != "LOCK"} == before


def test_damage_is_reported_in_the_same_words(impl: str, images: Dict[str, Path], tmp_path: Path) -> None:
    d = images["damaged"]
    seg = sorted(d.glob("*.seg"))[0]
    offset = SEG_DATA_START + 39 * (REC_HEADER_SIZE + PAYLOAD)
    where = f"record checksum mismatch [{seg} @ offset {offset}]"
    verify, inspect, dump = run_many(impl, [["verify", str(d)], ["inspect", str(d)], ["dump", str(d)]])
    damaged = f"log directory damaged: {d}: {where}"
    assert verify.returncode == 1 and "DAMAGED" in verify.stdout
    assert verify.stderr == f"fastlog verify: error: {damaged}; `fastlog repair` cuts the log before it\n"
    tail = ("; entries after index 39 cannot be read; `fastlog verify` lists all damage, "
            "`fastlog repair` cuts the log before it\n")
    assert inspect.returncode == 1 and "1..39" in inspect.stdout
    assert inspect.stderr == f"fastlog inspect: error: {damaged}{tail}"
    # dump prints what verifies, then says why it stopped, and fails.
    assert dump.returncode == 1
    assert [int(cols[0]) for cols in entry_lines(dump.stdout)] == list(range(1, 40))
    assert dump.stderr.splitlines() == [
        "fastlog dump: 39 entries printed (COMMAND 38, NOOP 1)",
        f"fastlog dump: error: {damaged}{tail}".rstrip("\n"),
    ]
    # A range wholly behind the damage: nothing printed, the same error.
    behind = run(impl, "dump", str(d), "--start", "500", "--end", "510")
    assert behind.returncode == 1 and entry_lines(behind.stdout) == []
    assert behind.stderr.splitlines()[-1] == f"fastlog dump: error: {damaged}{tail}".rstrip("\n")


# ---------------------------------------------------------------------------
# dump
# ---------------------------------------------------------------------------


def test_dump_prints_a_header_every_entry_and_the_counts(impl: str, images: Dict[str, Path]) -> None:
    d = str(images["intact"])
    full, part, bare = run_many(impl, [["dump", d, "--width", "0", "--hex"],
                                       ["dump", d, "--start", "49", "--end", "51"],
                                       ["dump", d, "--start", "50", "--end", "50", "--no-header"]])
    assert full.returncode == 0 and full.stdout.splitlines()[0] == "index\tterm\tkind\tbytes\tpayload"
    rows = entry_lines(full.stdout)
    assert [r[0] for r in rows] == [str(i) for i in range(1, ENTRIES + 1)]
    assert all(r == [str(i), str(1 + i // 100), kind(i).name, str(PAYLOAD), payload(i).hex()]
               for i, r in enumerate(rows, 1))
    assert full.stderr == f"fastlog dump: {ENTRIES} entries printed (COMMAND {ENTRIES - 13}, CONFIG 12, NOOP 1)\n"
    assert part.returncode == 0 and [r[:3] for r in entry_lines(part.stdout)] == [
        ["49", "1", "COMMAND"], ["50", "1", "CONFIG"], ["51", "1", "COMMAND"]]
    assert part.stderr == "fastlog dump: 3 entries printed (COMMAND 2, CONFIG 1)\n"
    assert bare.returncode == 0 and bare.stdout.startswith("50\t1\tCONFIG\t200\tb'entry 000050 ")


def test_dump_json_is_one_object_per_entry_with_the_whole_payload(impl: str, images: Dict[str, Path]) -> None:
    d = str(images["intact"])
    b64, hexed = run_many(impl, [["dump", d, "--json", "--start", "95", "--end", "105"],
                                 ["dump", d, "--json", "--hex", "--start", "100", "--end", "100"]])
    assert b64.returncode == 0
    records = [json.loads(line) for line in b64.stdout.splitlines()]
    assert [r["index"] for r in records] == list(range(95, 106))
    for r in records:
        i = r["index"]
        assert r == {"index": i, "term": 1 + i // 100, "kind": kind(i).name, "bytes": PAYLOAD,
                     "payload_base64": base64.b64encode(payload(i)).decode()}
    assert b64.stderr == "fastlog dump: 11 entries printed (COMMAND 10, CONFIG 1)\n"
    assert hexed.returncode == 0 and json.loads(hexed.stdout)["payload_hex"] == payload(100).hex()


def test_dump_says_which_requested_entries_are_purged_or_past_the_end(impl: str, images: Dict[str, Path]) -> None:
    d = str(images["purged"])
    purged = "were purged (the purge boundary is index 100, term 2)"
    straddle, gone, past, beyond, everything = run_many(impl, [
        ["dump", d, "--start", "98", "--end", "102"],
        ["dump", d, "--start", "10", "--end", "20"],
        ["dump", d, "--start", "598", "--end", "700"],
        ["dump", d, "--start", "900"],
        ["dump", d],
    ])
    assert straddle.returncode == 0 and [r[0] for r in entry_lines(straddle.stdout)] == ["101", "102"]
    assert straddle.stderr.splitlines() == [f"fastlog dump: note: entries 98..100 {purged}",
                                            "fastlog dump: 2 entries printed (COMMAND 2)"]
    assert gone.returncode == 3 and entry_lines(gone.stdout) == []
    assert gone.stderr.splitlines() == [f"fastlog dump: note: entries 10..20 {purged}",
                                        "fastlog dump: 0 entries printed"]
    assert past.returncode == 0 and [r[0] for r in entry_lines(past.stdout)] == ["598", "599", "600"]
    assert "fastlog dump: note: entries 601..700 are past the end of the log (its last index is 600)" in past.stderr
    assert beyond.returncode == 3 and entry_lines(beyond.stdout) == []
    assert "fastlog dump: note: nothing from index 900 on: the log ends at index 600" in beyond.stderr
    # No range asked for: the purged prefix is no news, and nothing is missing.
    assert everything.returncode == 0 and len(entry_lines(everything.stdout)) == 500
    assert everything.stderr == "fastlog dump: 500 entries printed (COMMAND 490, CONFIG 10)\n"


def test_dump_into_a_pipe_that_closes_ends_quietly(impl: str, images: Dict[str, Path]) -> None:
    """`fastlog dump DIR | head -2`: no traceback, no "Broken pipe", exit status 0.

    Seen failing on a deliberately broken build: with the BrokenPipeError
    handling taken out of the command line, the child printed "fastlog dump:
    error: Broken pipe" and exited with 2.
    """
    # 600 lines of 400+ hex characters: far more than a pipe buffers.
    proc = subprocess.Popen(command(["dump", str(images["intact"]), "--hex", "--width", "0"]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(impl))
    assert proc.stdout is not None and proc.stderr is not None
    head = [proc.stdout.readline(), proc.stdout.readline()]
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, err
    assert head[0] == b"index\tterm\tkind\tbytes\tpayload\n" and head[1].startswith(b"1\t1\tNOOP\t")
    assert err == b"", err


def test_dump_options_are_checked_before_anything_is_read(tmp_path: Path) -> None:
    """Parsed by argparse (exit status 2, usage on stderr) before any core is loaded, so
    one run covers both cores."""
    d = str(tmp_path / "never-read")
    cases = {
        ("--start", "-5"): "argument --start: must be a non-negative integer, not -5",
        ("--end", "ten"): "argument --end: not an integer: 'ten'",
        ("--start", "10", "--end", "5"): "--start 10 is after --end 5",
        ("--limit", "-2"): "argument --limit: must be a non-negative integer, not -2",
    }
    arg_lists = [["dump", d, *opts] for opts in cases]
    for (opts, message), res in zip(cases.items(), run_many("python", arg_lists)):
        assert res.returncode == 2 and res.stdout == "", opts
        assert res.stderr.startswith("usage: fastlog dump") and res.stderr.endswith(f"fastlog dump: error: {message}\n")
    assert not os.path.exists(d)


def test_every_help_lists_the_exit_statuses() -> None:
    parser = build_parser()
    assert "exit status" in parser.format_help()
    subparsers = next(a for a in parser._actions if isinstance(a, __import__("argparse")._SubParsersAction))
    for name, sub in subparsers.choices.items():
        text = sub.format_help()
        assert "exit status" in text and "  0  " in text, name
        if name in COMMANDS:
            assert "not a fastlog log directory" in text and "in use" in text and "damaged" in text, name
    res = run("python", "dump", "--help")
    assert res.returncode == 0 and "exit status:" in res.stdout and "payload_base64" in res.stdout


def test_the_console_script_runs(images: Dict[str, Path]) -> None:
    """The installed ``fastlog`` script (not only ``python -m fastlog``) reaches the same code."""
    script = shutil.which("fastlog", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("no fastlog console script next to this interpreter (package not installed)")
    res = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout == f"fastlog {fastlog.__version__}\n"
    res = subprocess.run([script, "verify", str(images["root"])], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "not a fastlog log directory" in res.stderr


# ---------------------------------------------------------------------------
# repair: short writes
# ---------------------------------------------------------------------------


def test_repair_finishes_its_writes_when_pwrite_writes_less(impl: str, images: Dict[str, Path], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """pwrite may write fewer bytes than asked; repair must write the rest.

    Seen failing on a deliberately broken build: with _pwrite_all reduced to a
    single os.pwrite call whose count is ignored (the code before this test),
    the bytes after the cut stayed non-zero ("the zeroing after the cut stopped
    early"), and the next test's pwrite that writes nothing went unnoticed.
    """
    d = tmp_path / "damaged"
    shutil.copytree(images["damaged"], d)
    real_pwrite = os.pwrite
    calls = []

    def short_pwrite(fd: int, data: bytes, offset: int) -> int:
        calls.append(len(data))
        return real_pwrite(fd, memoryview(data)[:7], offset)  # at most 7 bytes a call

    monkeypatch.setattr(os, "pwrite", short_pwrite)
    plan = tools.repair(str(d), implementation=impl)
    monkeypatch.undo()
    assert plan.cut_file and max(calls) > 7, "no short write happened"
    seg = d / plan.cut_file
    assert not any(seg.read_bytes()[plan.cut_offset:]), "the zeroing after the cut stopped early"
    assert tools.verify(str(d), implementation=impl).ok
    with fastlog.Log(d, segment_size=SEG, implementation=impl, read_only=True) as log:
        assert log.last_index() == 39 and log.entry(39).payload == payload(39)


def test_repair_fails_loudly_when_pwrite_writes_nothing(impl: str, images: Dict[str, Path], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "damaged"
    shutil.copytree(images["damaged"], d)
    monkeypatch.setattr(os, "pwrite", lambda fd, data, offset: 0)
    with pytest.raises(OSError, match="pwrite wrote nothing"):
        tools.repair(str(d), implementation=impl)

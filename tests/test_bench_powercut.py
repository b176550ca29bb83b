"""``fastlog bench --power-cuts N``: the power-cut column of the benchmark.

The tests that cut the power need LazyFS (root, /dev/fuse, the binary built
by ``make lazyfs``); without it they skip with one line saying why.  They cut
a few times only: docs/benchmarks.md has the figures of a real run.

The harness was seen failing on a deliberately broken build, and
:func:`test_broken_writer_is_caught` keeps it so: a fastlog writer that
acknowledges without calling ``flush_async()`` (``skip-flush``), or whose
flush runs with fastlog's ``fdatasync`` made a no-op (``no-fdatasync``), must
show acknowledged entries lost on both cores.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
from core_modules import CORE_NAMES

from fastlog.bench.powercut import (
    BROKEN_BUILDS,
    lazyfs_problem,
    payload_for,
    run_power_cuts,
    select_engines,
    term_for,
)
from fastlog.cli import main

_problem: list[str | None] = []


def _lazyfs_or_skip() -> None:
    if not _problem:
        _problem.append(lazyfs_problem())
    if _problem[0] is not None:
        pytest.skip(f"power cuts need LazyFS: {_problem[0]}")


@pytest.fixture
def fastlog_engine(core_module: ModuleType) -> str:
    """The registry name of fastlog on the core under test (``fastlog`` is the compiled
    one unless FASTLOG_NO_EXTENSIONS=1, when only the pure-Python core is tested)."""
    return "fastlog-python" if core_module.IMPLEMENTATION == "python" else "fastlog"


def test_payloads_tell_entries_apart() -> None:
    assert payload_for(7, 100) != payload_for(8, 100)
    assert len(payload_for(7, 100)) == 100 and payload_for(7, 100)[:40] == payload_for(7, 40)
    assert term_for(999) == 1 and term_for(1000) == 2


def test_engine_selection() -> None:
    chosen, skipped = select_engines(["raw", "memory", "fastlog-python"])
    assert chosen == ["fastlog-python"]
    assert set(skipped) == {"raw", "memory"}
    with pytest.raises(ValueError, match="unknown engine"):
        select_engines(["nosuchengine"])
    assert main(["bench", "--power-cuts", "1", "--workloads", "none", "--engines", "nosuchengine"]) == 2
    assert main(["bench", "--power-cuts", "0", "--workloads", "none"]) == 2


def test_without_lazyfs_one_line_and_no_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No LazyFS: the section says why, stderr has one line about it, the exit status is 0."""
    monkeypatch.setenv("FASTLOG_LAZYFS", str(tmp_path / "no-lazyfs-here"))
    out = tmp_path / "cuts.json"
    code = main(["bench", "--power-cuts", "3", "--workloads", "none", "--engines", "fastlog-python",
                 "--json", str(out)])
    captured = capsys.readouterr()
    assert code == 0
    assert "not run: LazyFS cannot run here" in captured.out
    assert len([line for line in captured.err.splitlines() if line.startswith("power cuts:")]) == 1
    assert json.loads(out.read_text())["power_cuts"]["unavailable"]


def test_bench_with_power_cuts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A speed workload, then two cuts under fastlog (each core under test), SQLite and
    PySyncObj's journal (when installed), through the command line: the section is
    printed, the JSON holds it, fastlog lost nothing it acknowledged."""
    _lazyfs_or_skip()
    out = tmp_path / "bench.json"
    ours = [{"python": "fastlog-python", "c": "fastlog"}[name] for name in CORE_NAMES]
    engines = ",".join(ours + ["sqlite", "pysyncobj"])
    code = main(["bench", "--power-cuts", "2", "--engines", engines, "--workloads", "append",
                 "--entries", "1000", "--batch-size", "100", "--range-size", "100", "--truncate-ops", "0",
                 "--purge-ops", "0", "--repeat", "1",
                 "--no-baseline",
                 "--workdir", str(tmp_path), "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "Power cuts on LazyFS" in printed
    document = json.loads(out.read_text())
    assert "append" in document["results"][ours[0]]
    cuts = document["power_cuts"]["engines"]
    for name in ours:
        tally = cuts[name]
        assert tally["cuts"] == 2 and tally["acknowledged_entries"] > 0
        assert tally["lost_acknowledged_entries"] == 0 and tally["failed_reopens"] == 0, tally["problems"]
        assert tally["median_recovery_seconds"] is not None
    assert cuts["sqlite"]["cuts"] == 2


@pytest.mark.parametrize("broken", BROKEN_BUILDS)
def test_broken_writer_is_caught(fastlog_engine: str, broken: str) -> None:
    """The harness's own check: with the fastlog writer broken on purpose the cuts
    must find acknowledged entries lost."""
    _lazyfs_or_skip()
    run = run_power_cuts([fastlog_engine], 1, broken=broken, progress=None)
    tally = run.tallies[fastlog_engine]
    assert tally.cuts == 1 and tally.acknowledged > 0
    assert tally.lost > 0, f"{broken}: {tally.acknowledged} acknowledged, none lost"


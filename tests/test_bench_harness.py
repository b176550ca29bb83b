"""The comparison harness (``fastlog bench``), the command line and bench/compare.py.

Tiny sizes: these check that the harness runs, checks data and reports; the
speed figures themselves are not asserted.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, List

import pytest

from fastlog.bench import BenchConfig, evaluate_targets, format_table, format_targets, run_bench
from fastlog.bench.subjects import Subject
from fastlog.bench.workloads import WORKLOAD_IDS, parse_workloads
from fastlog.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent


def tiny_config(**overrides: Any) -> BenchConfig:
    values = dict(
        entries=1200,
        batch_size=200,
        range_size=300,
        range_reads=2,
        single_reads=100,
        durable_batch=8,
        durable_batches=3,
        writers=4,
        writes_per_writer=2,
        truncate_ops=1,
        purge_ops=1,
        repeat=1,
    )
    values.update(overrides)
    return BenchConfig(**values)


# -- command line -------------------------------------------------------------------


def test_cli_lists_bench_and_tolerates_missing_command_modules():
    parser = build_parser(["fastlog.bench.command", "fastlog.no_such_command_module"])
    args = parser.parse_args(["bench", "--quick", "--engines", "memory"])
    assert args.handler is not None and args.quick and args.engines == "memory"


def test_cli_without_command_prints_help(capsys):
    assert main([]) == 2
    assert "bench" in capsys.readouterr().err


def test_bench_list(capsys):
    assert main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    assert "memory" in out and "range" in out and "targets:" in out


def test_bench_rejects_bad_options(capsys):
    assert main(["bench", "--workloads", "nonsense"]) == 2
    assert main(["bench", "--engines", "no-such-engine", "--workloads", "append", "--repeat", "1",
                 "--entries", "1000", "--range-size", "100", "--truncate-ops", "0", "--purge-ops", "0"]) == 2
    assert "unknown" in capsys.readouterr().err


def test_parse_workloads():
    assert parse_workloads(None) == WORKLOAD_IDS
    assert parse_workloads("all") == WORKLOAD_IDS
    assert parse_workloads("range,append") == ["append", "range"]
    with pytest.raises(ValueError):
        parse_workloads("append,bogus")


def test_config_validation():
    with pytest.raises(ValueError):
        tiny_config(range_size=5000).validate()
    with pytest.raises(ValueError):
        tiny_config(truncate_ops=4, purge_ops=3).validate()
    with pytest.raises(ValueError):
        tiny_config(repeat=0).validate()


# -- a whole run ---------------------------------------------------------------------


def test_run_checks_data_and_reports(tmp_path):
    config = tiny_config(engines=["fastlog", "memory", "raw"], workdir=str(tmp_path))
    results = run_bench(config, progress=None)
    for engine in ("fastlog", "memory"):
        for workload in WORKLOAD_IDS:
            result = results.get(engine, workload)
            assert result is not None
            assert result.status in ("ok", "n/a"), (engine, workload, result.wrong, result.errors)
    assert results.get("fastlog", "append").status == "ok"
    assert results.get("fastlog", "single-sync").status == "ok"
    assert results.get("fastlog", "memory").status == "ok"
    assert results.get("memory", "reopen").status == "n/a"  # nothing persists
    assert results.get("raw", "durable").status == "ok"
    assert not results.wrong_data

    table = format_table(results)
    assert "batched appends" in table and "1.00x" in table and "raw os.write" in table
    assert "targets" in format_targets(results)
    assert any(row["met"] is not None for row in evaluate_targets(results))

    path = tmp_path / "out" / "bench.json"
    results.write_json(str(path))
    data = json.loads(path.read_text())
    samples = data["results"]["fastlog"]["append"]["samples"]
    assert len(samples) == 1 and samples[0] > 0
    assert data["config"]["entries"] == 1200
    assert list(tmp_path.iterdir()) == [tmp_path / "out"]  # engine directories were removed


class _CorruptingStore:
    """A log store that hands back a damaged first entry from every range read."""

    def __init__(self, inner: Any):
        self._inner = inner

    def get_entries(self, start: int, end: int) -> List[Any]:
        got = self._inner.get_entries(start, end)
        if got:
            e = got[0]
            got[0] = type(e)(e.index, e.term, bytes([e.payload[0] ^ 1]) + e.payload[1:], e.kind)
        return got

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _CorruptingEngine:
    def __init__(self, inner: Any):
        self._inner = inner

    def log_store(self) -> _CorruptingStore:
        return _CorruptingStore(self._inner.log_store())

    def meta_store(self) -> Any:
        return self._inner.meta_store()

    async def close(self) -> None:
        await self._inner.close()


def test_wrong_data_is_flagged(tmp_path):
    from fastlog.engines import get_engine

    corrupt = Subject(
        "corrupt", "engine", "memory engine returning damaged ranges",
        opener=lambda path: _CorruptingEngine(get_engine("memory").open(path)),
        extra={"persistent": False},
    )
    config = tiny_config(engines=["memory"], workloads=["append", "range", "truncate", "memory"],
                         workdir=str(tmp_path))
    results = run_bench(config, progress=None, extra_subjects=[corrupt])
    assert results.get("memory", "append").status == "ok"
    assert results.get("corrupt", "append").status == "wrong"
    assert results.get("corrupt", "range").status == "wrong"
    assert results.get("corrupt", "memory").status == "n/a"
    assert "corrupt/append" in results.wrong_data
    assert "WRONG DATA" in format_table(results)


def test_chart(tmp_path):
    pytest.importorskip("matplotlib")
    from fastlog.bench import write_chart

    results = run_bench(tiny_config(engines=["memory", "raw"], workloads=["append", "range"]), progress=None)
    path = tmp_path / "chart.png"
    assert write_chart(results, str(path)) is None
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_python_dash_m_fastlog(tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, "-m", "fastlog", "bench", "--engines", "memory", "--workloads", "append,range",
         "--entries", "1000", "--range-size", "100", "--batch-size", "100", "--repeat", "1",
         "--truncate-ops", "0", "--purge-ops", "0", "--json", str(out)],
        capture_output=True, text=True, cwd=str(ROOT), timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "range reads" in proc.stdout and "[1/1] memory" in proc.stderr
    assert json.loads(out.read_text())["results"]["memory"]["range"]["status"] == "ok"


# -- bench/compare.py ------------------------------------------------------------------


def _benchmark_file(path: Path, timings: dict) -> str:
    data = {
        "machine_info": {"node": "n"},
        "benchmarks": [
            {"name": name, "fullname": f"bench/x.py::{name}", "stats": {"median": t, "min": t, "mean": t}}
            for name, t in timings.items()
        ],
    }
    path.write_text(json.dumps(data))
    return str(path)


def _compare(*args: str):
    return subprocess.run([sys.executable, str(ROOT / "bench" / "compare.py"), *args],
                          capture_output=True, text=True, timeout=60)


def test_compare_detects_regressions(tmp_path):
    base = _benchmark_file(tmp_path / "base.json", {"a": 1.0e-3, "b": 2.0e-3, "gone": 1.0})
    same = _benchmark_file(tmp_path / "same.json", {"a": 1.05e-3, "b": 1.0e-3, "new": 1.0})
    slower = _benchmark_file(tmp_path / "slow.json", {"a": 1.2e-3, "b": 2.0e-3})

    ok = _compare(base, same)
    assert ok.returncode == 0, ok.stdout
    assert "faster" in ok.stdout and "only in" in ok.stdout

    bad = _compare(base, slower)
    assert bad.returncode == 1 and "REGRESSION" in bad.stdout

    assert _compare(base, slower, "--threshold", "25").returncode == 0
    assert _compare(base, same, "--strict").returncode == 1
    (tmp_path / "junk.json").write_text("{}")
    assert _compare(base, str(tmp_path / "junk.json")).returncode == 2

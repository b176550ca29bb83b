"""The engine comparison harness behind ``fastlog bench``.

Typical use is the command line (``fastlog bench --quick``); from Python::

    from fastlog.bench import BenchConfig, run_bench, format_table
    results = run_bench(BenchConfig.quick(engines=["fastlog", "sqlite3"]))
    print(format_table(results))

See docs/benchmarks.md for the workloads, the method and how to read the table.
"""
from .report import evaluate_targets, format_table, format_targets, write_chart
from .runner import BenchConfig, BenchResults, WorkloadResult, run_bench
from .workloads import TARGETS, WORKLOAD_IDS, WORKLOADS

__all__ = [
    "BenchConfig",
    "BenchResults",
    "WorkloadResult",
    "run_bench",
    "format_table",
    "format_targets",
    "evaluate_targets",
    "write_chart",
    "WORKLOADS",
    "WORKLOAD_IDS",
    "TARGETS",
]

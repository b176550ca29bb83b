"""A PySyncObj replicated counter: ops/s with fastlog journals against PySyncObj's own.

Three ``SyncObj`` nodes run in this process on 127.0.0.1, each holding a
``ReplCounter``.  One round sends ``ops`` increments to the leader at once and
times them until every node has applied all of them.  The journals compared:

``file``
    PySyncObj's ``FileJournal`` (no checksums, no sync while running);
``fastlog``
    ``FastlogJournal()`` with ``FastlogTCPTransport``: entries are fsynced
    before any message leaves a node, one fsync per batch (the recommended
    setup: Raft-durable);
``fastlog-always``
    ``FastlogJournal()`` with PySyncObj's own transport: one fsync per entry
    (also Raft-durable);
``memory``
    PySyncObj's ``MemoryJournal`` (nothing on disk), the ceiling.

Log compaction is switched off so that the figures compare the journals'
append and read paths.

Run ``python bench/bench_pysyncobj.py [--ops N] [--rounds R]`` to print the
figures; :func:`print_figures` does the same from Python.  Under pytest the
``test_*`` functions are pytest-benchmark benchmarks (one small round with
``--benchmark-disable``).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional, Sequence

import pytest

pytest.importorskip("pysyncobj")

import pysyncobj.syncobj as ps_syncobj  # noqa: E402
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf  # noqa: E402
from pysyncobj.batteries import ReplCounter  # noqa: E402
from pysyncobj.journal import createJournal as pysyncobj_create_journal  # noqa: E402
from pysyncobj.transport import TCPTransport  # noqa: E402

if __name__ == "__main__":  # run as a script from a source checkout
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastlog.integrations.pysyncobj import (  # noqa: E402
    FastlogTCPTransport,
    free_loopback_ports,
    journal_factory,
)

JOURNALS = ("file", "fastlog", "fastlog-always", "memory")
DEFAULT_OPS = 5000
QUICK_OPS = 200
TIMEOUT = 120.0
SEGMENT_SIZE = 16 << 20



class CounterCluster:
    """Three counter nodes on loopback with the chosen journal (a context manager)."""

    def __init__(self, journal: str, base_dir: str) -> None:
        if journal not in JOURNALS:
            raise ValueError(f"journal must be one of {JOURNALS}, got {journal!r}")
        self.journal = journal
        addrs = [f"127.0.0.1:{p}" for p in free_loopback_ports(3)]
        transport = FastlogTCPTransport if journal == "fastlog" else TCPTransport
        if journal in ("fastlog", "fastlog-always"):
            factory = journal_factory(None, segment_size=SEGMENT_SIZE)
        else:
            factory = pysyncobj_create_journal
        self.nodes: List[SyncObj] = []
        self.counters: List[ReplCounter] = []
        previous = ps_syncobj.createJournal
        ps_syncobj.createJournal = factory
        try:
            for i, addr in enumerate(addrs):
                counter = ReplCounter()
                conf = SyncObjConf(
                    journalFile=None if journal == "memory" else os.path.join(base_dir, f"node{i}"),
                    logCompactionMinEntries=1 << 30,
                    logCompactionMinTime=1 << 30,
                    connectionRetryTime=0.5,
                )
                node = SyncObj(addr, [a for a in addrs if a != addr], conf=conf, consumers=[counter],
                               transportClass=transport)
                self.nodes.append(node)
                self.counters.append(counter)
        except BaseException:
            self.close()
            raise
        finally:
            ps_syncobj.createJournal = previous
        self._wait(lambda: self.leader() is not None, "a leader")

    def leader(self) -> Optional[int]:
        for i, node in enumerate(self.nodes):
            if node._isLeader():
                return i
        return None

    def _wait(self, predicate, what: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            time.sleep(0.002)

    def run(self, ops: int) -> float:
        """Send ``ops`` increments to the leader; seconds until every node applied them."""
        leader = self.leader()
        if leader is None:
            self._wait(lambda: self.leader() is not None, "a leader")
            leader = self.leader()
        counter = self.counters[leader]
        target = counter.get() + ops
        done = threading.Semaphore(0)
        failed: List[int] = []

        def on_result(result, error) -> None:
            if error != FAIL_REASON.SUCCESS:
                failed.append(error)
            done.release()

        start = time.perf_counter()
        for _ in range(ops):
            counter.add(1, callback=on_result)
        for _ in range(ops):
            if not done.acquire(timeout=TIMEOUT):
                raise TimeoutError("increments were not acknowledged")
        if failed:
            raise RuntimeError(f"{len(failed)} increments failed (reasons {sorted(set(failed))})")
        self._wait(lambda: all(c.get() == target for c in self.counters), "every node to apply the increments")
        return time.perf_counter() - start

    def close(self) -> None:
        for node in self.nodes:
            node.destroy()
        for node in self.nodes:
            while node.tick_thread_alive():
                time.sleep(0.01)
        self.nodes = []

    def __enter__(self) -> "CounterCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def measure(journal: str, ops: int = DEFAULT_OPS, base_dir: Optional[str] = None) -> float:
    """Replicated increments per second for one fresh cluster with ``journal``."""
    with tempfile.TemporaryDirectory(prefix="fastlog-bench-", dir=base_dir) as d:
        with CounterCluster(journal, d) as cluster:
            return ops / cluster.run(ops)


def compare(ops: int = DEFAULT_OPS, rounds: int = 3, journals: Sequence[str] = JOURNALS,
            base_dir: Optional[str] = None) -> Dict[str, float]:
    """Median ops/s of each journal; the rounds interleave the journals so that
    a slow moment of the shared machine does not hit one journal alone."""
    samples: Dict[str, List[float]] = {j: [] for j in journals}
    for _ in range(rounds):
        for journal in journals:
            samples[journal].append(measure(journal, ops, base_dir))
    return {j: statistics.median(v) for j, v in samples.items()}


def print_figures(ops: int = DEFAULT_OPS, rounds: int = 3, base_dir: Optional[str] = None) -> Dict[str, float]:
    """Measure every journal in this run and print ops/s and the ratio to FileJournal."""
    from fastlog._impl import IMPLEMENTATION

    figures = compare(ops, rounds, JOURNALS, base_dir)
    base = figures.get("file")
    print(f"PySyncObj replicated counter, 3 nodes on 127.0.0.1, {ops} increments per round, "
          f"median of {rounds} rounds (fastlog core: {IMPLEMENTATION})")
    for journal, value in figures.items():
        ratio = f"{value / base:5.2f}x FileJournal" if base else ""
        print(f"  {journal:15} {value:10.0f} ops/s  {ratio}")
    return figures


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="PySyncObj replicated counter: fastlog vs FileJournal")
    parser.add_argument("--ops", type=int, default=DEFAULT_OPS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", help="where the journals go (default: the system temporary directory)")
    args = parser.parse_args(argv)
    print_figures(args.ops, args.rounds, args.dir)
    return 0


# -- pytest-benchmark -------------------------------------------------------------


@pytest.mark.parametrize("journal", JOURNALS)
def test_replicated_counter(benchmark, tmp_path, journal):
    ops = QUICK_OPS if benchmark.disabled else DEFAULT_OPS
    with CounterCluster(journal, str(tmp_path)) as cluster:
        seconds = benchmark.pedantic(cluster.run, args=(ops,), rounds=1 if benchmark.disabled else 3, iterations=1)
        assert all(c.get() == cluster.counters[0].get() for c in cluster.counters)
    benchmark.extra_info["ops"] = ops
    benchmark.extra_info["ops_per_s"] = ops / seconds


if __name__ == "__main__":
    sys.exit(main())

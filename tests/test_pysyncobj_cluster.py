"""Three PySyncObj nodes on 127.0.0.1 replicating a counter through fastlog journals.

One node is stopped while the others go on, then restarted from its directory:
it must come back with the log and term it had on disk, catch up, and every
node must end with the same state and the same log.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import pytest

pytest.importorskip("pysyncobj")

import pysyncobj.syncobj as ps_syncobj  # noqa: E402
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf  # noqa: E402
from pysyncobj.batteries import ReplCounter  # noqa: E402

from fastlog.integrations.pysyncobj import FastlogJournal, use_fastlog_journal  # noqa: E402

pytestmark = pytest.mark.timeout(120)

PHASE_TIMEOUT = 30.0  # seconds any one step may take before the test gives up
SEGMENT = 256 << 10


def free_ports(count: int) -> List[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_for(predicate, what: str, timeout: float = PHASE_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.02)


def journal_snapshot(j: FastlogJournal) -> Dict[str, Any]:
    return {
        "len": len(j),
        "first": j[0] if len(j) else None,
        "last": j[-1] if len(j) else None,
        "term": j.getCurrentTerm(),
        "vote": j.getVotedForNodeId(),
    }


class Cluster:
    def __init__(self, base_dir: str, impl: str, sync: str) -> None:
        self.base_dir = base_dir
        self.addrs = [f"127.0.0.1:{p}" for p in free_ports(3)]
        self.names = [f"node{i}" for i in range(3)]
        self.nodes: List[Optional[SyncObj]] = [None, None, None]
        self.counters: List[Optional[ReplCounter]] = [None, None, None]
        self.opened: Dict[str, List[Dict[str, Any]]] = {n: [] for n in self.names}
        self.impl = impl
        self.sync = sync

    def start(self, i: int) -> None:
        name = self.names[i]
        counter = ReplCounter()
        conf = SyncObjConf(
            journalFile=name,
            fullDumpFile=os.path.join(self.base_dir, name + ".snapshot"),
            logCompactionMinEntries=800,  # compaction (deleteEntriesTo) happens during the run
            useFork=False,
            connectionRetryTime=0.3,
        )
        with use_fastlog_journal(self.base_dir, sync=self.sync, implementation=self.impl,
                                 segment_size=SEGMENT) as factory:
            # Record what each journal held the moment it was opened.
            def recording_factory(journal_file: Optional[str] = None):
                j = factory(journal_file)
                self.opened[journal_file].append(journal_snapshot(j))
                return j

            ps_syncobj.createJournal = recording_factory
            node = SyncObj(self.addrs[i], [a for a in self.addrs if a != self.addrs[i]], conf=conf,
                           consumers=[counter])
        self.nodes[i], self.counters[i] = node, counter

    def stop(self, i: int) -> None:
        node = self.nodes[i]
        self.nodes[i] = self.counters[i] = None
        if node is not None:
            node.destroy_synchronous()

    def stop_all(self) -> None:
        """Stop every node at once: stopping them one by one would let the
        survivors elect a new leader (a new term and NO_OP entry) meanwhile."""
        running = [n for n in self.nodes if n is not None]
        self.nodes = [None, None, None]
        self.counters = [None, None, None]
        for node in running:
            node.destroy()
        deadline = time.monotonic() + PHASE_TIMEOUT
        for node in running:
            while node.tick_thread_alive():
                assert time.monotonic() < deadline, "a node did not stop"
                time.sleep(0.01)

    def leader(self) -> Optional[int]:
        for i, node in enumerate(self.nodes):
            if node is not None and node._isLeader():
                return i
        return None

    def increment(self, i: int, ops: int) -> Tuple[int, int]:
        """Send ``ops`` increments to node ``i``; (acknowledged, failed)."""
        done = threading.Semaphore(0)
        failed: List[int] = []

        def on_result(result, error):
            if error != FAIL_REASON.SUCCESS:
                failed.append(error)
            done.release()

        counter = self.counters[i]
        for _ in range(ops):
            counter.add(1, callback=on_result)
        deadline = time.monotonic() + PHASE_TIMEOUT
        for n in range(ops):
            assert done.acquire(timeout=max(0.0, deadline - time.monotonic())), f"only {n}/{ops} answered"
        return ops - len(failed), len(failed)

    def status(self, i: int) -> Dict[str, Any]:
        return self.nodes[i].getStatus()


@pytest.fixture
def impl(core_module) -> str:
    return core_module.IMPLEMENTATION


@pytest.mark.parametrize("sync", ["always"])
def test_three_nodes_replicate_and_a_restarted_node_catches_up(tmp_path, impl, sync):
    cluster = Cluster(str(tmp_path), impl, sync)
    try:
        for i in range(3):
            cluster.start(i)
        wait_for(lambda: cluster.leader() is not None, "a leader")
        leader = cluster.leader()

        ok1, failed1 = cluster.increment(leader, 2000)
        assert failed1 == 0
        wait_for(lambda: all(c.get() == 2000 for c in cluster.counters), "2000 increments on every node")

        # Stop a follower; record what its directory holds.
        victim = (leader + 1) % 3
        victim_name = cluster.names[victim]
        term_before = cluster.status(victim)["raft_term"]
        cluster.stop(victim)
        with FastlogJournal(os.path.join(cluster.base_dir, victim_name), implementation=impl) as j:
            on_disk = journal_snapshot(j)
        assert on_disk["term"] == term_before >= 1
        assert on_disk["last"][1] >= 2001  # the NO_OPs plus 2000 increments
        assert on_disk["first"][1] > 1  # compaction ran

        # The others keep going without it.
        ok2, failed2 = cluster.increment(leader, 1500)
        assert failed2 == 0
        others = [i for i in range(3) if i != victim]
        wait_for(lambda: all(cluster.counters[i].get() == 3500 for i in others), "3500 on the running nodes")

        # Restart from the directory: the journal comes back exactly as it was.
        cluster.start(victim)
        assert cluster.opened[victim_name][-1] == on_disk
        wait_for(lambda: cluster.counters[victim].get() == 3500, "the restarted node to catch up")

        def settled() -> bool:
            st = [cluster.status(i) for i in range(3)]
            commits = {s["commit_idx"] for s in st}
            return len(commits) == 1 and all(s["last_applied"] == s["commit_idx"] for s in st)

        wait_for(settled, "all nodes to agree on the commit index")
        assert [c.get() for c in cluster.counters] == [3500, 3500, 3500]
        terms = [cluster.status(i)["raft_term"] for i in range(3)]
    finally:
        cluster.stop_all()

    # Every journal on disk ends at the same entry and agrees wherever they overlap.
    journals = [FastlogJournal(os.path.join(cluster.base_dir, n), implementation=impl) for n in cluster.names]
    try:
        lasts = {j[-1] for j in journals}
        assert len(lasts) == 1
        start = max(j[0][1] for j in journals)
        tails = [j[start - j[0][1]:] for j in journals]
        assert tails[0] == tails[1] == tails[2]
        assert [j.getCurrentTerm() for j in journals] == terms
    finally:
        for j in journals:
            j.close()


def test_single_node_restart_replays_its_journal(tmp_path, impl):
    """A one-node cluster: what it applied comes back from its own journal alone."""
    port = free_ports(1)[0]
    addr = f"127.0.0.1:{port}"

    def start():
        counter = ReplCounter()
        conf = SyncObjConf(journalFile="solo", autoTick=False, raftMinTimeout=0.05, raftMaxTimeout=0.1,
                           appendEntriesPeriod=0.01)
        with use_fastlog_journal(tmp_path, implementation=impl, segment_size=SEGMENT):
            node = SyncObj(addr, [], conf=conf, consumers=[counter])
        return node, counter

    def tick_until(node, pred, what):
        deadline = time.monotonic() + PHASE_TIMEOUT
        while not pred():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            node.doTick(0.01)

    node, counter = start()
    try:
        tick_until(node, node._isLeader, "leadership")
        for _ in range(100):
            counter.add(1)
        tick_until(node, lambda: counter.get() == 100, "100 increments")
        term = node.getStatus()["raft_term"]
    finally:
        node.destroy()

    node, counter = start()
    try:
        # Replayed from the journal up to the saved commit index, before any election.
        tick_until(node, lambda: counter.get() == 100, "the journal replay")
        assert node.getStatus()["raft_term"] >= term
        tick_until(node, node._isLeader, "leadership again")
        counter.add(5)
        tick_until(node, lambda: counter.get() == 105, "one more increment")
    finally:
        node.destroy()

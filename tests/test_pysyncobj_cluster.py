"""Three PySyncObj nodes on 127.0.0.1 replicating operations through fastlog journals.

The replicated state is the set of operation ids applied (idempotent, so an
operation whose outcome was unknown after a leader change can simply be sent
again).  One node is stopped while the others go on, then restarted from its
directory: it must come back with the log and term it had on disk, catch up,
and every node must end with the same state and the same log.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Dict, List, Optional

import pytest

pytest.importorskip("pysyncobj")

import pysyncobj.syncobj as ps_syncobj  # noqa: E402
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf  # noqa: E402
from pysyncobj.batteries import ReplCounter, ReplSet  # noqa: E402

from pysyncobj.transport import TCPTransport  # noqa: E402

from fastlog.integrations.pysyncobj import (  # noqa: E402
    FastlogJournal,
    FastlogTCPTransport,
    free_loopback_ports,
    use_fastlog_journal,
)

pytestmark = pytest.mark.timeout(120)

PHASE_TIMEOUT = 30.0  # seconds any one step may take before the test gives up
SEGMENT = 256 << 10



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
    def __init__(self, base_dir: str, sync: str, transport: type, compact_above: int) -> None:
        self.base_dir = base_dir
        self.addrs = [f"127.0.0.1:{p}" for p in free_loopback_ports(3)]
        self.names = [f"node{i}" for i in range(3)]
        self.nodes: List[Optional[SyncObj]] = [None, None, None]
        self.states: List[Optional[ReplSet]] = [None, None, None]
        self.opened: Dict[str, List[Dict[str, Any]]] = {n: [] for n in self.names}
        self.sync = sync
        self.transport = transport
        self.compact_above = compact_above

    def start(self, i: int) -> None:
        name = self.names[i]
        state = ReplSet()
        conf = SyncObjConf(
            journalFile=name,
            fullDumpFile=os.path.join(self.base_dir, name + ".snapshot"),
            logCompactionMinEntries=self.compact_above,  # compaction (deleteEntriesTo) happens during the run
            useFork=False,
            connectionRetryTime=0.3,
        )
        with use_fastlog_journal(self.base_dir, sync=self.sync, segment_size=SEGMENT) as factory:
            # Record what each journal held the moment it was opened.
            def recording_factory(journal_file: Optional[str] = None):
                j = factory(journal_file)
                self.opened[journal_file].append(journal_snapshot(j))
                return j

            ps_syncobj.createJournal = recording_factory
            node = SyncObj(self.addrs[i], [a for a in self.addrs if a != self.addrs[i]], conf=conf,
                           consumers=[state], transportClass=self.transport)
        self.nodes[i], self.states[i] = node, state

    def stop(self, i: int) -> None:
        node = self.nodes[i]
        self.nodes[i] = self.states[i] = None
        if node is not None:
            node.destroy_synchronous()

    def stop_all(self) -> None:
        """Stop every node at once: stopping them one by one would let the
        survivors elect a new leader (a new term and NO_OP entry) meanwhile."""
        running = [n for n in self.nodes if n is not None]
        self.nodes = [None, None, None]
        self.states = [None, None, None]
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

    def replicate(self, op_ids: range) -> int:
        """Apply every operation through the current leader, sending again the
        ones that failed (e.g. after a leader change); returns the resends."""
        pending = list(op_ids)
        resent = 0
        deadline = time.monotonic() + PHASE_TIMEOUT
        while pending:
            wait_for(lambda: self.leader() is not None, "a leader", max(0.0, deadline - time.monotonic()))
            state = self.states[self.leader()]
            done = threading.Semaphore(0)
            failed: List[int] = []

            def on_result(result, error, op_id):
                if error != FAIL_REASON.SUCCESS:
                    failed.append(op_id)
                done.release()

            for op_id in pending:
                state.add(op_id, callback=lambda r, e, op_id=op_id: on_result(r, e, op_id))
            for n in range(len(pending)):
                left = max(0.0, deadline - time.monotonic())
                assert done.acquire(timeout=left), f"only {n}/{len(pending)} operations answered"
            resent += len(failed)
            pending = failed
        return resent

    def applied(self, i: int) -> int:
        return len(self.states[i])

    def status(self, i: int) -> Dict[str, Any]:
        return self.nodes[i].getStatus()


# The cluster runs on the default implementation only: what is under test here is
# the journal and its use by SyncObj; the cores are compared in the unit tests.
# One fsync per entry ("always") is much slower under PySyncObj, hence fewer operations.
@pytest.mark.parametrize(
    "sync, transport, first_ops, later_ops",
    [("auto", FastlogTCPTransport, 2000, 1500), ("always", TCPTransport, 1000, 500)],
    ids=["auto+fastlog-transport", "always"],
)
def test_three_nodes_replicate_and_a_restarted_node_catches_up(tmp_path, sync, transport, first_ops, later_ops):
    total = first_ops + later_ops
    cluster = Cluster(str(tmp_path), sync, transport, compact_above=first_ops * 2 // 5)
    try:
        for i in range(3):
            cluster.start(i)
        journals_defer = [n._SyncObj__raftLog.deferred for n in cluster.nodes]
        assert journals_defer == [transport is FastlogTCPTransport] * 3
        wait_for(lambda: cluster.leader() is not None, "a leader")

        cluster.replicate(range(first_ops))
        wait_for(lambda: all(cluster.applied(i) == first_ops for i in range(3)), "the operations on every node")

        # Stop a follower once it has compacted its journal; record what its directory holds.
        leader = cluster.leader()
        victim = (leader + 1) % 3 if leader is not None else 0
        victim_name = cluster.names[victim]
        wait_for(lambda: cluster.status(victim)["log_len"] < first_ops * 3 // 4, "log compaction on the follower")
        cluster.stop(victim)
        with FastlogJournal(os.path.join(cluster.base_dir, victim_name)) as j:
            on_disk = journal_snapshot(j)
        assert on_disk["term"] >= 1
        assert on_disk["last"][1] >= first_ops + 1  # the NO_OPs plus the operations
        assert on_disk["first"][1] > 1  # compacted: deleteEntriesTo ran

        # The others keep going without it.
        cluster.replicate(range(first_ops, total))
        others = [i for i in range(3) if i != victim]
        wait_for(lambda: all(cluster.applied(i) == total for i in others), "all operations on the running nodes")

        # Restart from the directory: the journal comes back exactly as it was.
        cluster.start(victim)
        assert cluster.opened[victim_name][-1] == on_disk
        assert cluster.status(victim)["raft_term"] >= on_disk["term"]
        wait_for(lambda: cluster.applied(victim) == total, "the restarted node to catch up")

        def settled() -> bool:
            st = [cluster.status(i) for i in range(3)]
            commits = {s["commit_idx"] for s in st}
            return len(commits) == 1 and all(s["last_applied"] == s["commit_idx"] for s in st)

        wait_for(settled, "all nodes to agree on the commit index")
        assert [cluster.states[i].rawData() for i in range(3)] == [set(range(total))] * 3
        terms = [cluster.status(i)["raft_term"] for i in range(3)]
        commit = cluster.status(0)["commit_idx"]
    finally:
        cluster.stop_all()

    # On disk, every journal holds everything committed, and the journals agree
    # wherever they overlap.  (A late election may still have added a NO_OP on
    # one node just before the stop: the ends need not be equal.)
    journals = [FastlogJournal(os.path.join(cluster.base_dir, n)) for n in cluster.names]
    try:
        assert all(j[-1][1] >= commit for j in journals)
        start = max(j[0][1] for j in journals)
        end = min(j[-1][1] for j in journals)
        assert start < end
        overlaps = [j[start - j[0][1] : end - j[0][1] + 1] for j in journals]
        assert overlaps[0] == overlaps[1] == overlaps[2]
        assert [o[0][1] for o in overlaps] == [start] * 3 and [o[-1][1] for o in overlaps] == [end] * 3
        assert all(j.getCurrentTerm() >= t for j, t in zip(journals, terms))
    finally:
        for j in journals:
            j.close()


def test_single_node_restart_replays_its_journal(tmp_path):
    """A one-node cluster: what it applied comes back from its own journal alone."""
    port = free_loopback_ports(1)[0]
    addr = f"127.0.0.1:{port}"

    def start():
        counter = ReplCounter()
        conf = SyncObjConf(journalFile="solo", autoTick=False, raftMinTimeout=0.05, raftMaxTimeout=0.1,
                           appendEntriesPeriod=0.01)
        with use_fastlog_journal(tmp_path, segment_size=SEGMENT):
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

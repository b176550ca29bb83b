#!/usr/bin/env python3
"""A replicated counter: three PySyncObj nodes on 127.0.0.1 with fastlog journals.

Run it as a script::

    python examples/replicated_counter.py --ops 2000

It starts three ``SyncObj`` nodes in this process (ports picked free at run
time), sends ``--ops`` increments through the cluster, waits until every node
has applied all of them, stops the nodes and prints each node's counter, Raft
term and journal.  With ``--dir`` the journals stay on disk; running again
with the same directory (and ``--ports`` from the first run) restarts the
cluster from them and the counter continues where it stopped.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from typing import List, Optional, Sequence

try:
    import fastlog  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf
from pysyncobj.batteries import ReplCounter

from fastlog.integrations.pysyncobj import (
    FastlogJournal,
    FastlogTCPTransport,
    free_loopback_ports,
    use_fastlog_journal,
)



def start_node(name: str, addr: str, peers: Sequence[str], base_dir: str, **conf_options: object):
    """One SyncObj holding a ReplCounter; its journal is ``base_dir/name``.

    Call inside ``use_fastlog_journal(base_dir)`` so the journal is fastlog's.
    ``FastlogTCPTransport`` fsyncs the journal before each message the node
    sends (one fsync per batch instead of one per entry).
    The counter is a consumer, not an attribute set after ``SyncObj.__init__``:
    the node starts applying its journal during ``__init__``.
    """
    counter = ReplCounter()
    conf = SyncObjConf(
        journalFile=name,
        fullDumpFile=os.path.join(base_dir, name + ".snapshot"),
        connectionRetryTime=0.5,
        **conf_options,
    )
    node = SyncObj(addr, [p for p in peers if p != addr], conf=conf, consumers=[counter],
                   transportClass=FastlogTCPTransport)
    return node, counter


def wait_for(predicate, timeout: float, what: str, poll: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(poll)


def leader_of(nodes) -> Optional[SyncObj]:
    for node in nodes:
        if node is not None and node._isLeader():
            return node
    return None


def increment(node: SyncObj, counter: ReplCounter, ops: int, timeout: float) -> int:
    """Send ``ops`` increments through ``node``; return how many were acknowledged."""
    done = threading.Semaphore(0)
    failed = []

    def on_result(result, error) -> None:
        if error != FAIL_REASON.SUCCESS:
            failed.append(error)
        done.release()

    for _ in range(ops):
        counter.add(1, callback=on_result)
    deadline = time.monotonic() + timeout
    for _ in range(ops):
        if not done.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise TimeoutError(f"increments not acknowledged within {timeout:.0f}s")
    return ops - len(failed)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=2000, help="increments to send (default 2000)")
    parser.add_argument("--dir", help="keep the journals here (default: a temporary directory)")
    parser.add_argument("--ports", help="three comma-separated ports (default: free ones)")
    parser.add_argument("--sync", choices=("auto", "always", "periodic"), default="auto",
                        help="journal sync mode (default auto: fsync before each message sent)")
    parser.add_argument("--timeout", type=float, default=60.0, help="give up after this many seconds")
    args = parser.parse_args(argv)

    tmp = None
    base_dir = args.dir
    if base_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="fastlog-counter-")
        base_dir = tmp.name
    os.makedirs(base_dir, exist_ok=True)
    ports = [int(p) for p in args.ports.split(",")] if args.ports else free_loopback_ports(3)
    addrs = [f"127.0.0.1:{p}" for p in ports]
    names = [f"node{i}" for i in range(3)]

    nodes: List[SyncObj] = []
    try:
        with use_fastlog_journal(base_dir, sync=args.sync, segment_size=4 << 20):
            for name, addr in zip(names, addrs):
                nodes.append(start_node(name, addr, addrs, base_dir))
        start = time.monotonic()
        wait_for(lambda: leader_of(n for n, _ in nodes) is not None, args.timeout, "a leader")
        leader = leader_of(n for n, _ in nodes)
        counter = nodes[[n for n, _ in nodes].index(leader)][1]
        before = counter.get()
        acked = increment(leader, counter, args.ops, args.timeout)
        target = before + args.ops
        wait_for(lambda: all(c.get() == target for _, c in nodes), args.timeout, "every node to apply everything")
        elapsed = time.monotonic() - start
        print(f"{acked} of {args.ops} increments acknowledged in {elapsed:.2f}s")
        for name, (node, c) in zip(names, nodes):
            status = node.getStatus()
            role = "leader" if node._isLeader() else "follower"
            print(f"{name} {node.selfNode.id:>21} {role:8} counter={c.get()} term={status['raft_term']} "
                  f"commit={status['commit_idx']} journal_entries={status['log_len']}")
    finally:
        # Stop all nodes together, so no survivor starts an election meanwhile.
        for node, _ in nodes:
            node.destroy()
        for node, _ in nodes:
            while node.tick_thread_alive():
                time.sleep(0.01)

    for name in names:
        with FastlogJournal(os.path.join(base_dir, name)) as journal:
            last = journal[-1] if len(journal) else None
            print(f"{name} on disk: {len(journal)} entries {journal.first_index()}..{last[1] if last else '-'}, "
                  f"term {journal.getCurrentTerm()}, commit index {journal.getRaftCommitIndex()}")
    print(f"final counter: {target}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Real power cuts under fastlog, on LazyFS.

Each test forks writers onto a LazyFS mount, SIGKILLs them at random
moments, drops every byte that was not fsynced (``lazyfs::clear-cache``) and
checks the reopened directory against the model of tests/crash/crashsim.py:
every acknowledged entry, the purge boundary, the hard state and the
PySyncObj journal's term and vote.  See powercut.py for a round, and
docs/durability.md ("How this is tested") for what it shows.

Scale: FASTLOG_POWER_CUTS (the default run's cuts per writer test, 24) and
FASTLOG_POWER_CUTS_SLOW (the ``slow`` test: that many writer rounds per writer kind and core, 30).
"""
from __future__ import annotations

import pytest
from core_modules import CORE_NAMES, import_core
from crashsim import env_int, report
from fastlog.testing.lazyfs import LazyFS
from powercut import CutCounts, Workload, repair_rounds, run_for, torn_rounds
from powercut_writers import BROKEN_FDATASYNC_ENV

CUTS = env_int("FASTLOG_POWER_CUTS", 24)
CUTS_SLOW = env_int("FASTLOG_POWER_CUTS_SLOW", 30)


@pytest.fixture(params=CORE_NAMES)
def impl(request: pytest.FixtureRequest) -> str:
    """The implementation name for ``implementation=`` (skips when the compiled core is missing)."""
    return import_core(request.param).IMPLEMENTATION


def _report(request: pytest.FixtureRequest, impl: str, counts: CutCounts, what: str) -> None:
    extra = counts.extra
    report(
        request.config,
        f"power cuts on LazyFS ({impl} core)",
        "{cuts} power cuts: {recovery_cuts} while a child recovered the torn log ({during_recovery} landed "
        "mid-recovery), {repairs} during `fastlog repair` ({mid_repair} mid-repair), {torn} by torn-op/torn-seq "
        "faults ({torn_missed} more faults not reached: plain cuts); {acks} acknowledgements replayed, "
        "{acked} acknowledged entries checked, {lost} lost",
        cuts=counts.cuts,
        acks=counts.acks,
        acked=counts.acked,
        lost=counts.lost,
        recovery_cuts=extra.get("recovery_cuts", 0),
        during_recovery=extra.get("during_recovery", 0),
        repairs=extra.get("repairs", 0),
        mid_repair=extra.get("mid_repair", 0),
        torn=extra.get("torn", 0),
        torn_missed=extra.get("torn_missed", 0),
    )
    print(f"  {what}: {counts.cuts} cuts, {counts.acked} acknowledged entries checked, {counts.lost} lost")


def _assert_kept(counts: CutCounts) -> None:
    assert not counts.failures, "\n".join(counts.failures[:5])
    assert counts.lost == 0


def test_log_writer(request: pytest.FixtureRequest, lazyfs: LazyFS, impl: str) -> None:
    """The sync ``Log``: appends (with rollover), flushes, replaces, truncates, purges,
    resets and hard-state saves; every other cut is followed by two more cuts
    while a child recovers the torn directory."""
    counts = run_for(lazyfs, "log", impl, seed=1, rounds=CUTS, recovery_every=2)
    _report(request, impl, counts, "sync Log")
    _assert_kept(counts)
    assert counts.acked > 0 and counts.extra.get("recovery_cuts", 0) > 0


def test_log_writer_sync_always(request: pytest.FixtureRequest, lazyfs: LazyFS, impl: str) -> None:
    """``sync="always"``: every append, replace and truncate is acknowledged when it returns."""
    counts = run_for(lazyfs, "log", impl, seed=2, rounds=max(2, CUTS // 3), options={"sync_always": True})
    _report(request, impl, counts, "sync Log, sync=always")
    _assert_kept(counts)


def test_engine_group_commit(request: pytest.FixtureRequest, lazyfs: LazyFS, impl: str) -> None:
    """The asyncio engine, eight writer tasks sharing fsyncs through ``flush_async()``;
    an entry counts as acknowledged once the ``flush_async()`` covering it returned."""
    counts = run_for(lazyfs, "engine", impl, seed=3, rounds=CUTS, recovery_every=4)
    _report(request, impl, counts, "asyncio engine")
    _assert_kept(counts)
    assert counts.acked > 0


def test_meta_store(request: pytest.FixtureRequest, lazyfs: LazyFS, impl: str) -> None:
    """``save_hard_state`` is durable when it returns: after a cut the hard state is
    the last one saved, or the one being saved when the power went."""
    counts = run_for(lazyfs, "meta", impl, seed=4, rounds=max(2, CUTS // 2))
    _report(request, impl, counts, "MetaStore")
    _assert_kept(counts)
    assert counts.acks > 0


@pytest.mark.parametrize("journal_sync", ["always", "periodic"])
def test_pysyncobj_journal(request: pytest.FixtureRequest, lazyfs: LazyFS, impl: str, journal_sync: str) -> None:
    """PySyncObj's journal: entries, compaction, clear, term and vote, commit index."""
    pytest.importorskip("pysyncobj")
    counts = run_for(lazyfs, "journal", impl, seed=5, rounds=max(2, CUTS // 2), options={"journal_sync": journal_sync})
    _report(request, impl, counts, f"PySyncObj journal, sync={journal_sync}")
    _assert_kept(counts)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["log", "engine"])
def test_many_power_cuts(request: pytest.FixtureRequest, lazyfs: LazyFS, impl: str, kind: str) -> None:
    """The longer run: FASTLOG_POWER_CUTS_SLOW rounds of the sync Log and of the engine."""
    counts = run_for(lazyfs, kind, impl, seed=11, rounds=CUTS_SLOW, recovery_every=3)
    _report(request, impl, counts, f"{kind}, many cuts")
    _assert_kept(counts)


def test_broken_build_is_caught(lazyfs: LazyFS, impl: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness has teeth: with ``fdatasync`` a no-op in the writer (the broken
    build, FASTLOG_POWERCUT_NO_FDATASYNC=1), power cuts must lose acknowledged
    entries and the checker must say so.  Seen failing with the sync Log and the
    engine on both cores: "acknowledged entry N missing"."""
    monkeypatch.setenv(BROKEN_FDATASYNC_ENV, "1")
    total = CutCounts()
    for kind, seed in (("log", 21), ("engine", 22)):
        w = Workload(lazyfs, kind, impl, seed)
        for k in range(4):
            # Long enough for flushes to be acknowledged before the cut.
            w.run_writer(0.15)
            w.cut()
            w.check(f"broken cut {k + 1}", broken=True)
        total.lost += w.counts.lost
        total.failures += w.counts.failures
        assert w.counts.failures, f"{kind}: a no-op fdatasync went unnoticed over {w.counts.cuts} power cuts"
    print("\n".join(total.failures[:4]))
    assert total.lost > 0
    assert any("acknowledged entry" in f for f in total.failures), total.failures[:3]


def test_power_cut_during_repair(request: pytest.FixtureRequest, lazyfs: LazyFS, impl: str) -> None:
    """``fastlog repair`` on a log with durable damage, power cut at a random moment
    of it: the log is the prefix the repair keeps, or still reports the damage."""
    counts = repair_rounds(lazyfs, impl, seed=6, rounds=max(2, CUTS // 3))
    _report(request, impl, counts, "repair")
    _assert_kept(counts)


def test_broken_repair_is_caught(lazyfs: LazyFS, impl: str) -> None:
    """The repair check has teeth: a repair that deletes the damaged segment and
    writes it anew (instead of cutting it in place) is caught when the power goes
    in between (the child is killed right after the delete): entries the repair
    keeps are missing.  Seen failing on both cores.
    (Cutting the damaged segment before deleting the later ones is not such a
    bug: the log then reports the same damage and a second repair finishes.)"""
    counts = repair_rounds(lazyfs, impl, seed=31, rounds=3, runner="repair_by_rewriting", kill_on="gone")
    print("\n".join(counts.failures[:2]))
    assert counts.failures, f"a repair that rewrites the segment went unnoticed over {counts.cuts} power cuts"


@pytest.mark.parametrize("kind", ["log", "engine"])
def test_torn_writes(request: pytest.FixtureRequest, lazyfs: LazyFS, impl: str, kind: str) -> None:
    """LazyFS's torn-op and torn-seq faults on the segment being written, each followed
    by a cut while a child recovers.  Seen failing on the broken build
    (FASTLOG_POWERCUT_NO_FDATASYNC=1, compiled core): the first torn-op round of
    both writers reopened with CorruptionError "data ends early" (a header claim
    had reached the disk, the records it claimed had not)."""
    counts = torn_rounds(lazyfs, kind, impl, seed=7, rounds=max(2, CUTS // 4))
    _report(request, impl, counts, f"torn writes, {kind}")
    _assert_kept(counts)

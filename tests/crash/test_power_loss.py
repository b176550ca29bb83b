"""Power-loss simulation: crash images at every sync point, checked against the promise.

See crashsim.py for the model.  Budgets (images per test) scale with the
environment variable FASTLOG_CRASH_IMAGES (the total for the default run) and
FASTLOG_CRASH_IMAGES_SLOW (the total of the ``slow`` test).
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Dict, Tuple

import pytest

import fastlog
from fastlog import LogId

from crashsim import KINDS, CrashStats, LogModel, check_points, describe_kinds, env_int, kind_key, report
from workloads import (
    LOG_VARIANTS,
    SEGMENT_SIZE,
    random_workload,
    record,
    record_engine,
    recovery_run,
    scripted_workloads,
)

IMPL = fastlog.IMPLEMENTATION
SCRIPTED = scripted_workloads()
VARIANTS = sorted(LOG_VARIANTS)
RANDOM_SEEDS = list(range(18))
ALWAYS_SEEDS = [0, 1]
MIDWAY = ["rollover", "purge_segments", "reset_and_restart"]
ENGINE_SEEDS = [0, 1, 2, 3]
N_DEFAULT_TESTS = (
    len(SCRIPTED) * len(VARIANTS) + len(RANDOM_SEEDS) + len(ALWAYS_SEEDS) + len(MIDWAY) + len(ENGINE_SEEDS)
)

# The compiled core reopens an image in well under a millisecond; pure Python is slower.
DEFAULT_TOTAL = env_int("FASTLOG_CRASH_IMAGES", 12000 if IMPL == "c" else 6000)
SLOW_TOTAL = env_int("FASTLOG_CRASH_IMAGES_SLOW", 60000 if IMPL == "c" else 15000)
PER_TEST = max(50, DEFAULT_TOTAL // N_DEFAULT_TESTS)
# Crash images whose recovery is itself recorded and crashed, and images checked of each.
RECOVERY_IMAGES = 12
RECOVERY_RUNS = 4

TOPIC = f"power-loss simulation ({IMPL} core)"
TEMPLATE = (
    "{images} crash images checked ({distinct} distinct directories reopened) "
    "at {points} crash points of {workloads} workloads; {torn} lost only unacknowledged entries"
)
KIND_TOPIC = f"power-loss image kinds ({IMPL} core)"


def open_options(sync: str = "none") -> Dict[str, Any]:
    return {"segment_size": SEGMENT_SIZE, "sync": sync}


def report_stats(request: pytest.FixtureRequest, stats: CrashStats) -> None:
    report(
        request.config,
        TOPIC,
        TEMPLATE,
        images=stats.images,
        distinct=stats.distinct_images,
        points=stats.crash_points,
        workloads=1,
        torn=stats.torn_cut,
    )
    counts = {kind_key(k): stats.kinds.get(k, 0) for k in KINDS}
    report(request.config, KIND_TOPIC, describe_kinds, recoveries=stats.recoveries, **counts)


def check_recorded(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    name: str,
    rec: Any,
    model: LogModel,
    budget: int,
    *,
    sync: str = "none",
    with_meta: bool = True,
    seed: int = 0,
    reader: str = "log",
    recovery_runs: int = RECOVERY_RUNS,
    recovery_ignore: Any = (),
) -> CrashStats:
    stats = check_points(
        rec.points, model, tmp_path, budget, seed, open_options(sync), describe=name, check_hard_state=with_meta,
        recovery=recovery_run(open_options(sync), ignore=recovery_ignore), recovery_runs=recovery_runs,
        recovery_images=RECOVERY_IMAGES, reader=reader,
    )
    report_stats(request, stats)
    return stats


def run_and_check(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    name: str,
    body: Any,
    budget: int,
    *,
    variant: str = "eager claims",
    sync: str = "none",
    with_meta: bool = True,
    reopen_midway: bool = False,
    seed: int = 0,
) -> CrashStats:
    rec, model = record(
        tmp_path / "log", body, variant=variant, sync=sync, with_meta=with_meta, reopen_midway=reopen_midway
    )
    return check_recorded(request, tmp_path, name, rec, model, budget, sync=sync, with_meta=with_meta, seed=seed)


def assert_kept(stats: CrashStats) -> None:
    assert stats.images > 0
    assert not stats.failures, f"{stats.failed} of {stats.images} crash images broke the promise:\n" + "\n".join(
        stats.failures
    )


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", sorted(SCRIPTED))
def test_scripted_workload(request: pytest.FixtureRequest, tmp_path: Path, name: str, variant: str) -> None:
    assert_kept(run_and_check(request, tmp_path, f"{name} ({variant})", SCRIPTED[name], PER_TEST, variant=variant))


@pytest.mark.parametrize("seed", RANDOM_SEEDS)
def test_random_workload(request: pytest.FixtureRequest, tmp_path: Path, seed: int) -> None:
    variant = VARIANTS[seed % len(VARIANTS)]
    body = lambda d: random_workload(d, random.Random(seed), 60)  # noqa: E731
    assert_kept(run_and_check(request, tmp_path, f"random seed {seed} ({variant})", body, PER_TEST, variant=variant, seed=seed))


@pytest.mark.parametrize("seed", ALWAYS_SEEDS)
def test_random_workload_sync_always(request: pytest.FixtureRequest, tmp_path: Path, seed: int) -> None:
    """Under sync="always" every append is acknowledged when it returns."""
    body = lambda d: random_workload(d, random.Random(1000 + seed), 40)  # noqa: E731
    assert_kept(run_and_check(request, tmp_path, f"always seed {seed}", body, PER_TEST, sync="always", seed=seed))


@pytest.mark.parametrize("name", MIDWAY)
def test_workload_across_reopen(request: pytest.FixtureRequest, tmp_path: Path, name: str) -> None:
    """The same work again after a clean close and reopen (recovery of a recovered log)."""
    assert_kept(
        run_and_check(request, tmp_path, f"{name} twice", SCRIPTED[name], PER_TEST, variant="zero ahead", reopen_midway=True)
    )


def engine_case(seed: int) -> Tuple[str, str]:
    """(variant, sync) of an engine run: every variant, and sync="always" every fourth seed."""
    return VARIANTS[seed % len(VARIANTS)], ("always" if seed % 4 == 3 else "none")


@pytest.mark.parametrize("seed", ENGINE_SEEDS)
def test_engine_workload(request: pytest.FixtureRequest, tmp_path: Path, seed: int) -> None:
    """The asyncio engine (``fastlog.open``): persist_entries, bursts of concurrent writers
    sharing a flush_async (group commit), replace_range, truncate, purge, reset and
    save_hard_state; images are reopened through ``fastlog.open`` too.  The flushes run
    on the engine's worker thread while the event loop appends, so crash points fall
    wherever the threads' timing puts them."""
    variant, sync = engine_case(seed)
    rec, model = record_engine(tmp_path / "log", 500 + seed, 50, variant=variant, sync=sync)
    assert_kept(check_recorded(request, tmp_path, f"engine seed {seed} ({variant}, sync={sync})", rec, model,
                               PER_TEST, sync=sync, seed=seed, reader="engine"))


@pytest.mark.slow
def test_many_random_workloads(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    seeds = list(range(100, 100 + max(1, SLOW_TOTAL // 2500)))
    total = CrashStats()
    for seed in seeds:
        sync = "always" if seed % 5 == 0 else "none"
        variant = VARIANTS[seed % len(VARIANTS)]
        work = tmp_path / f"seed{seed}"
        work.mkdir()
        if seed % 4 == 1:
            rec, model = record_engine(work / "log", seed, 70, variant=variant, sync=sync)
            stats = check_recorded(request, work, f"engine seed {seed} ({variant})", rec, model, 2500, sync=sync,
                                   seed=seed, reader="engine", recovery_runs=40)
        else:
            body = lambda d, seed=seed: random_workload(d, random.Random(seed), 70)  # noqa: E731
            rec, model = record(work / "log", body, variant=variant, sync=sync, with_meta=True)
            stats = check_recorded(request, work, f"random seed {seed} ({variant})", rec, model, 2500, sync=sync,
                                   seed=seed, recovery_runs=40)
        total.add(stats)
        if total.failures:
            break
    assert_kept(total)


# ---------------------------------------------------------------------------
# The harness has teeth: a store that skips a sync is caught
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("skipped", ["fdatasync", "fsync_dir"])
def test_harness_catches_a_missing_sync(tmp_path: Path, skipped: str) -> None:
    """Pretending one kind of sync did nothing must make the checker find lost entries.

    Without fdatasync every kind of image but all-new catches it (torn images too);
    without the directory fsync the older listings do (a new segment's name is not
    durable), and some random mixes and torn images."""
    body = SCRIPTED["rollover"]
    rec, model = record(tmp_path / "log", body, ignore=[skipped])
    stats = check_points(rec.points, model, tmp_path, 400, 0, open_options(), describe=f"without {skipped}")
    assert stats.failed > 0, f"ignoring {skipped} went unnoticed over {stats.images} images"
    # Lost entries show either as such or, where a new segment's header sync was
    # skipped, as a zero header over records, which recovery reports as damage.
    assert any("acknowledged entry" in f or "CorruptionError" in f for f in stats.failures)
    catching = "older listing" if skipped == "fsync_dir" else "torn"
    assert stats.failed_kinds.get(catching), f"no {catching} image caught it: {stats.failed_kinds}"


@pytest.mark.parametrize("skipped", ["fdatasync", "fsync_dir"])
def test_harness_catches_a_broken_recovery(request: pytest.FixtureRequest, tmp_path: Path, skipped: str) -> None:
    """A recovery that cuts a torn tail and zeroes it without syncing the zeros, or that
    deletes stale segments without syncing the directory, must be caught by the images
    of a crash during or after that recovery (while the same runs with a correct
    recovery keep the promise: the tests above)."""
    total = CrashStats()
    cases = [("batch_spans_rollover", "lazy claims"), ("rollover", "lazy claims"), ("rollover", "eager claims")]
    for n, (name, variant) in enumerate(cases):
        work = tmp_path / f"case{n}"
        work.mkdir()
        rec, model = record(work / "log", SCRIPTED[name], variant=variant, with_meta=True)
        stats = check_points(
            rec.points, model, work, 300, n, open_options(), describe=f"{name} ({variant}), recovery without {skipped}",
            check_hard_state=True, recovery=recovery_run(open_options(), ignore=[skipped]), recovery_runs=10,
            recovery_images=RECOVERY_IMAGES,
        )
        total.add(stats)
        if total.failed:
            break
    caught = {k: v for k, v in total.failed_kinds.items() if k in ("during recovery", "after recovery")}
    assert caught, f"a recovery without {skipped} went unnoticed over {total.recoveries} recoveries, {total.images} images"


def test_model_rejects_a_mix_of_states() -> None:
    model = LogModel()
    model.begin_append([(1, 1, 1, b"a"), (2, 1, 1, b"b"), (3, 1, 1, b"c")])
    model.flushed()
    model.begin_append([(2, 2, 1, b"B"), (3, 2, 1, b"C")])
    pos = model.position()
    from crashsim import Recovered

    old = Recovered(entries=((1, 1, 1, b"a"), (2, 1, 1, b"b"), (3, 1, 1, b"c")), last_index=3, first_index=1)
    new = Recovered(entries=((1, 1, 1, b"a"), (2, 2, 1, b"B")), last_index=2, first_index=1)
    mix = Recovered(entries=((1, 1, 1, b"a"), (2, 2, 1, b"B"), (3, 1, 1, b"c")), last_index=3, first_index=1)
    lost = Recovered(entries=(), last_index=0, first_index=0)
    assert model.check(old, pos) is None
    assert model.check(new, pos) is None
    assert model.check(mix, pos) is not None
    # entry 1 was acknowledged and no operation since removed it
    assert model.check(lost, pos) is not None


# ---------------------------------------------------------------------------
# Regressions found by the simulator, pinned down without randomness
# ---------------------------------------------------------------------------


def test_flush_syncs_the_segment_a_rolling_batch_started_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fastlog._osio as osio

    synced = []
    real = osio.fdatasync
    monkeypatch.setattr(osio, "fdatasync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real(fd)))
    with fastlog.Log(tmp_path, segment_size=SEGMENT_SIZE) as log:
        log.append([log.Entry(index=i, term=1, payload=b"x" * 3000) for i in range(1, 6)])
        log.flush()
        log.flush()
        first_segment = log.segments()[0]["path"]
        log.append([log.Entry(index=i, term=1, payload=b"y" * 3000) for i in range(6, 40)])
        assert len(log.segments()) > 1
        synced.clear()
        log.flush()
        assert first_segment in synced, "the batch wrote records into the first segment but flush skipped it"


def test_segment_created_but_never_preallocated(tmp_path: Path) -> None:
    """A crash right after creating the next segment file can leave it empty."""
    with fastlog.Log(tmp_path, segment_size=SEGMENT_SIZE) as log:
        log.append([log.Entry(index=i, term=1, payload=b"p") for i in range(1, 4)])
    (tmp_path / "00000000000000000004.seg").write_bytes(b"")
    with fastlog.Log(tmp_path, segment_size=SEGMENT_SIZE) as log:
        assert log.last_index() == 3
        assert [e.index for e in log.get_entries(1, 3)] == [1, 2, 3]
        log.append([log.Entry(index=4, term=1, payload=b"q")])
    with fastlog.Log(tmp_path, segment_size=SEGMENT_SIZE) as log:
        assert log.entry(4).payload == b"q"


def test_unsynced_segments_with_zero_headers_are_dropped(tmp_path: Path) -> None:
    """A batch that spanned two new segments, neither synced: both headers may be zero."""
    with fastlog.Log(tmp_path, segment_size=SEGMENT_SIZE) as log:
        log.append([log.Entry(index=i, term=1, payload=b"p" * 100) for i in range(1, 4)])
    for name in ("00000000000000000004.seg", "00000000000000000020.seg"):
        (tmp_path / name).write_bytes(bytes(SEGMENT_SIZE))
    with fastlog.Log(tmp_path, segment_size=SEGMENT_SIZE) as log:
        assert log.last_index() == 3
    assert sorted(p.name for p in tmp_path.glob("*.seg")) == ["00000000000000000001.seg"]


def test_purge_makes_the_entries_it_keeps_durable_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """STATE is written durably by purge; an earlier unflushed replace must reach the disk before it."""
    import fastlog._osio as osio

    order = []
    real_fdatasync, real_fsync = osio.fdatasync, osio.fsync
    monkeypatch.setattr(osio, "fdatasync", lambda fd: (order.append("segment"), real_fdatasync(fd)))
    monkeypatch.setattr(osio, "fsync", lambda fd: (order.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))), real_fsync(fd)))
    with fastlog.Log(tmp_path, segment_size=SEGMENT_SIZE) as log:
        log.append([log.Entry(index=i, term=1, payload=b"a") for i in range(1, 10)])
        log.flush()
        log.append([log.Entry(index=i, term=2, payload=b"b") for i in range(3, 8)])  # replace 3..
        order.clear()
        log.purge(LogId(index=5, term=2))
        assert "segment" in order and "STATE.tmp" in order
        assert order.index("segment") < order.index("STATE.tmp")

"""Turns benchmark results into the text table, the target summary and the PNG chart."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from .subjects import BASELINE, REFERENCE
from .workloads import TARGETS, WORKLOADS, Target, Workload

if TYPE_CHECKING:  # pragma: no cover
    from .runner import BenchResults

__all__ = [
    "format_value",
    "format_table",
    "evaluate_targets",
    "format_targets",
    "write_chart",
    "filesystem_comparison",
    "format_filesystems",
    "write_filesystem_chart",
    "format_headline",
    "format_power_cuts",
]

_BASELINE_LABELS = {
    "append": "raw os.write",
    "append-steady": "raw os.write",
    "range": "raw os.pread",
    "single": "raw os.pread",
    "durable": "raw os.write+fdatasync",
    "concurrent": "raw os.write+fdatasync x1",
}


def _si(value: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def _seconds(value: float) -> str:
    if value >= 1:
        return f"{value:.3g} s"
    if value >= 1e-3:
        return f"{value * 1e3:.3g} ms"
    return f"{value * 1e6:.3g} us"


def format_value(workload: Workload, value: Optional[float]) -> str:
    """A median in its unit, short: "6.2 M entries/s", "3.1 ms", "301 B/entry", "12 MiB"."""
    if value is None:
        return "-"
    unit = workload.unit
    if unit in ("entries/s", "ops/s"):
        return f"{_si(value)} {unit}"
    if unit == "s":
        return _seconds(value)
    if unit == "B/entry":
        return f"{value:.0f} B/entry"
    if unit == "B":
        return f"{value / (1 << 20):.1f} MiB"
    return f"{value:.4g} {unit}"


def _spread(samples: List[float]) -> str:
    """Half the min..max range relative to the median, e.g. "±3%"."""
    if len(samples) < 2:
        return ""
    ordered = sorted(samples)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    if not median:
        return ""
    return f"±{(ordered[-1] - ordered[0]) / 2 / abs(median) * 100:.0f}%"


def _median_of(details: List[Dict[str, Any]], key: str) -> Optional[float]:
    values = sorted(d[key] for d in details if d.get(key) is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def _count(n: int) -> str:
    """10000 -> "10k", 1000000 -> "1M"."""
    for limit, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= limit and n % limit == 0:
            return f"{n // limit}{suffix}"
    return f"{n:,}"


def _mib(value: float) -> str:
    return f"{'+' if value >= 0 else ''}{value / (1 << 20):.1f} MiB"


def _label(engine: str, workload: str) -> str:
    if engine == BASELINE:
        return _BASELINE_LABELS.get(workload, "raw file")
    return engine


def _extra(workload: str, result: Any) -> str:
    """A second figure worth showing next to the median, from the details."""
    details = result.details
    if not details:
        return ""
    if workload in ("append", "durable"):
        first = sorted(d["first_batch_seconds"] for d in details if "first_batch_seconds" in d)
        after = sorted(d["rate_after_first_batch"] for d in details if d.get("rate_after_first_batch"))
        text = f"1st batch {_seconds(first[len(first) // 2])}" if first else ""
        if after:
            text += f", then {_si(after[len(after) // 2])}/s"
        return text
    if workload == "range":
        per_call = sorted(d["seconds_per_call"] for d in details if "seconds_per_call" in d)
        if per_call:
            return f"{_seconds(per_call[len(per_call) // 2])}/call"
    if workload == "concurrent":
        parts = []
        first = sorted(d["first_ack_seconds"] for d in details if "first_ack_seconds" in d)
        if first:
            parts.append(f"1st ack {_seconds(first[len(first) // 2])}")
        rounds = sorted(d["fsync_rounds"] for d in details if "fsync_rounds" in d)
        if rounds:
            parts.append(f"{rounds[len(rounds) // 2]} syncs")
        return ", ".join(parts)
    if workload in ("truncate", "purge"):
        secs = sorted(d["seconds"] / d["calls"] for d in details if d.get("calls"))
        if secs:
            return f"{_seconds(secs[len(secs) // 2])}/call"
    if workload == "leader":
        p50 = _median_of(details, "flush_median_seconds")
        p99 = _median_of(details, "flush_p99_seconds")
        readers = _median_of(details, "follower_entries_per_second")
        parts = []
        if p50 is not None and p99 is not None:
            parts.append(f"flush p50 {_seconds(p50)} p99 {_seconds(p99)}")
        if readers is not None:
            parts.append(f"followers {_si(readers)}/s")
        return ", ".join(parts)
    if workload == "follower":
        per_round = _median_of(details, "seconds_per_round")
        if per_round is not None:
            return f"{_seconds(per_round)}/round"
    if workload == "snapshot":
        purge = _median_of(details, "purge_median_seconds")
        if purge is not None:
            return f"purge {_seconds(purge)}/call"
    if workload == "recovery-scale":
        parts = []
        for scale in sorted({d["scale"] for d in details if "scale" in d}):
            rows = [d for d in details if d.get("scale") == scale]
            reopen = _median_of(rows, "seconds")
            added = _median_of(rows, "rss_delta")
            if reopen is not None and added is not None:
                parts.append(f"{_count(scale)}: {_seconds(reopen)} RSS {_mib(added)}")
        return ", ".join(parts)
    if workload == "memory":
        rss = sorted(d["peak_rss_delta"] for d in details if "peak_rss_delta" in d)
        if rss:
            return f"RSS +{rss[len(rss) // 2] / (1 << 20):.1f} MiB"
    return ""


def format_table(results: "BenchResults") -> str:
    """The comparison table: one block per workload, one row per engine."""
    cfg = results.config
    env = results.environment
    lines = [
        f"fastlog bench: {cfg.entry_size}-byte entries, batches of {cfg.batch_size}, log of "
        f"{cfg.entries:,} entries; every figure is the median of {cfg.repeat} run{'s' if cfg.repeat != 1 else ''}",
        f"{env.get('platform', '')}, Python {env.get('python', '')}, {env.get('cpus', '?')} CPUs, "
        f"work directory on {env.get('filesystem', '?')}",
        "'vs fastlog': the engine's figure relative to fastlog's (higher is better for the engine; "
        "fastlog = 1.00x).",
    ]
    name_width = max([len(_label(s.name, w)) for s in results.subjects for w in cfg.workloads] + [12])
    for workload_id in cfg.workloads:
        workload = WORKLOADS[workload_id]
        ref = results.get(REFERENCE, workload_id)
        ref_median = ref.median if ref is not None and ref.status == "ok" else None
        direction = "higher is better" if workload.higher_is_better else "lower is better"
        lines.append("")
        lines.append(f"{workload.title} [{workload.unit}, {direction}]")
        rows: List[Tuple[str, ...]] = []
        for subject in results.subjects:
            result = results.get(subject.name, workload_id)
            if result is None:
                continue
            if result.status == "n/a" and subject.is_baseline:
                continue  # the baseline simply has no such workload
            median = result.median
            if result.status == "n/a":
                value, ratio, spread, note = "-", "", "", f"n/a: {result.unavailable or 'not measured'}"
            else:
                value = format_value(workload, median)
                spread = _spread(result.samples)
                if median is not None and ref_median is not None:
                    ratio = f"{workload.speedup(median, ref_median):.2f}x"
                else:
                    ratio = ""
                if result.status == "wrong":
                    note = "WRONG DATA: " + result.wrong[0]
                elif result.status == "error":
                    note = "ERROR: " + result.errors[0]
                else:
                    note = "data ok" if not subject.is_baseline else "(no engine)"
                extra = _extra(workload_id, result)
                if extra:
                    note = f"{extra:<28} {note}"
            rows.append((_label(subject.name, workload_id), value, spread, ratio, note))
        if not rows:
            lines.append("  (no engine ran this workload)")
            continue
        lines.append(f"  {'engine':<{name_width}}  {'median':>20}  {'spread':>6}  {'vs fastlog':>10}  notes")
        for name, value, spread, ratio, note in rows:
            lines.append(f"  {name:<{name_width}}  {value:>20}  {spread:>6}  {ratio:>10}  {note}")
    if results.skipped:
        lines.append("")
        for name, reason in results.skipped.items():
            lines.append(f"skipped engine {name}: {reason}")
    return "\n".join(lines)


def _ok_median(results: "BenchResults", engine: str, workload: str) -> Optional[float]:
    result = results.get(engine, workload)
    if result is None or result.status != "ok":
        return None
    return result.median


def _evaluate(results: "BenchResults", target: Target) -> Dict[str, Any]:
    workload_id = target.workload
    fastlog = _ok_median(results, REFERENCE, workload_id)
    if fastlog is None and target.fallback_workload:
        workload_id = target.fallback_workload
        fastlog = _ok_median(results, REFERENCE, workload_id)
    workload = WORKLOADS[workload_id]
    out: Dict[str, Any] = {
        "target": target.text,
        "workload": workload_id,
        "against": target.against,
        "minimum": target.minimum,
        "fastlog": fastlog,
        "met": None,
    }
    if fastlog is None:
        out["why"] = f"no valid {REFERENCE} result for {workload_id}"
        return out
    if target.against == "absolute":
        if target.seconds_per_call:
            per_call = results.config.range_size / fastlog
            out["value"] = per_call
            out["seconds_per_call"] = True
            out["met"] = per_call < target.minimum
        else:
            out["value"] = fastlog
            out["met"] = fastlog >= target.minimum
        return out
    if target.against == "peer":
        medians = [
            (s.name, _ok_median(results, s.name, workload_id)) for s in results.subjects if s.is_peer
        ]
        peers = [(name, value) for name, value in medians if value is not None]
        if not peers:
            out["why"] = "no peer engine has a valid result"
            return out
        pick = max if workload.higher_is_better else min
        best_name, best = pick(peers, key=lambda p: p[1])
        out["other"], out["other_value"] = best_name, best
    else:
        other = _ok_median(results, BASELINE, workload_id)
        if other is None:
            out["why"] = "the raw baseline did not run"
            return out
        out["other"], out["other_value"] = _BASELINE_LABELS.get(workload_id, BASELINE), other
    ratio = workload.speedup(fastlog, out["other_value"])
    out["value"] = ratio
    out["met"] = ratio >= target.minimum
    return out


def evaluate_targets(results: "BenchResults") -> List[Dict[str, Any]]:
    """Every target whose workload ran, with fastlog's figure, the comparison and met/not met."""
    chosen = set(results.config.workloads)
    return [
        _evaluate(results, t)
        for t in TARGETS
        if t.workload in chosen or (t.fallback_workload and t.fallback_workload in chosen)
    ]


def format_targets(results: "BenchResults") -> str:
    rows = evaluate_targets(results)
    if not rows:
        return ""
    lines = ["targets (same run):"]
    for row in rows:
        workload = WORKLOADS[row["workload"]]
        if row["met"] is None:
            lines.append(f"  [ -- ] {row['target']}: {row.get('why', 'not measured')}")
            continue
        mark = "met " if row["met"] else "MISS"
        if row["against"] == "absolute":
            if row.get("seconds_per_call"):
                shown = _seconds(row["value"]) + " per call"
            else:
                shown = format_value(workload, row["value"])
            lines.append(f"  [{mark}] {row['target']}: fastlog {shown}")
        else:
            lines.append(
                f"  [{mark}] {row['target']}: fastlog {format_value(workload, row['fastlog'])} vs "
                f"{row['other']} {format_value(workload, row['other_value'])} = {row['value']:.2f}x"
            )
    return "\n".join(lines)


def _axis_label(workload: Workload, value: float) -> str:
    if value <= 0:
        return "0"
    if workload.unit == "s":
        return _seconds(value)
    if workload.unit == "B":
        return f"{value:g} MiB"  # the chart plots memory in MiB
    return _si(value)


def _style_panel(ax: Any, workload: Workload, values: List[float]) -> None:
    """What every chart panel shows the same way: the axis in the workload's unit, a log
    scale when the bars differ more than 50-fold, the title with which way is better."""
    from matplotlib.ticker import FuncFormatter

    scale_values = [v for v in values if v > 0]
    if scale_values and max(scale_values) / min(scale_values) > 50:
        ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos, w=workload: _axis_label(w, v)))
    better = "higher is better" if workload.higher_is_better else "lower is better"
    ax.set_title(f"{workload.title} ({workload.unit}, {better})", fontsize=9)
    ax.tick_params(labelsize=8)


def write_chart(results: "BenchResults", path: str) -> Optional[str]:
    """Write a PNG bar chart (one panel per workload); return a message instead if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'fastlog[chart]'): no chart written"
    from pathlib import Path

    panels = []
    for workload_id in results.config.workloads:
        workload = WORKLOADS[workload_id]
        bars = []
        for subject in results.subjects:
            result = results.get(subject.name, workload_id)
            if result is None or result.median is None:
                continue
            bars.append((_label(subject.name, workload_id), result.median, result.status, subject.name))
        if bars:
            panels.append((workload, bars))
    if not panels:
        return "nothing to chart"
    cols = 2 if len(panels) > 1 else 1
    rows = math.ceil(len(panels) / cols)
    height_per = max(1.6, 0.32 * max(len(b) for _, b in panels) + 0.9)
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, height_per * rows + 0.4), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (workload, bars) in zip(axes.flat, panels):
        labels = [b[0] for b in bars][::-1]
        values = [b[1] for b in bars][::-1]
        if workload.unit == "B":  # plot memory in MiB so the axis has round numbers
            values = [v / (1 << 20) for v in values]
        colours = []
        for _, _, status, engine in bars[::-1]:
            if status == "wrong":
                colours.append("#d62728")
            elif engine == REFERENCE:
                colours.append("#1f77b4")
            elif engine == BASELINE:
                colours.append("#7f7f7f")
            else:
                colours.append("#9ecae1")
        ax.barh(labels, values, color=colours)
        _style_panel(ax, workload, values)
        for y, value in enumerate(values):
            shown = value * (1 << 20) if workload.unit == "B" else value
            ax.text(value, y, " " + format_value(workload, shown), va="center", fontsize=7)
        ax.margins(x=0.25)
    cfg = results.config
    fig.suptitle(
        f"fastlog bench: {cfg.entry_size}-byte entries, log of {cfg.entries:,} entries, "
        f"median of {cfg.repeat} run{'s' if cfg.repeat != 1 else ''} (red: wrong data)",
        fontsize=10,
    )
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# -- one run per file system ------------------------------------------------------------


def _best_peer(results: "BenchResults", workload_id: str) -> Optional[Tuple[str, float]]:
    workload = WORKLOADS[workload_id]
    peers = [(s.name, _ok_median(results, s.name, workload_id)) for s in results.subjects if s.is_peer]
    valid = [(name, value) for name, value in peers if value is not None]
    if not valid:
        return None
    pick = max if workload.higher_is_better else min
    return pick(valid, key=lambda p: p[1])


def filesystem_comparison(run: Any) -> List[Dict[str, Any]]:
    """Per workload and file system: fastlog's median and its ratio to the best peer and to raw.

    Ratios are oriented like the targets: above 1 means fastlog is better.
    """
    rows: List[Dict[str, Any]] = []
    for workload_id in run.config.workloads:
        workload = WORKLOADS[workload_id]
        per_fs: Dict[str, Any] = {}
        for fstype, results in run.results.items():
            mine = _ok_median(results, REFERENCE, workload_id)
            cell: Dict[str, Any] = {"fastlog": mine}
            peer = _best_peer(results, workload_id)
            if mine is not None and peer is not None:
                cell["best_peer"], cell["best_peer_value"] = peer
                cell["vs_best_peer"] = workload.speedup(mine, peer[1])
            raw = _ok_median(results, BASELINE, workload_id)
            if mine is not None and raw is not None:
                cell["raw"] = raw
                cell["vs_raw"] = workload.speedup(mine, raw)
            per_fs[fstype] = cell
        rows.append({"workload": workload_id, "title": workload.title, "filesystems": per_fs})
    return rows


def format_filesystems(run: Any) -> str:
    """One table per file system, then fastlog's ratios side by side."""
    parts: List[str] = []
    for fstype, results in run.results.items():
        parts.append(f"===== {fstype} =====")
        parts.append(format_table(results))
        targets = format_targets(results)
        if targets:
            parts.append("")
            parts.append(targets)
        parts.append("")
    for fstype, reason in run.skipped.items():
        parts.append(f"skipped file system {fstype}: {reason}")
    if not run.results:
        return "\n".join(parts)
    names = list(run.results)
    width = 26
    parts.append("")
    parts.append("fastlog per file system: its median, then fastlog / best peer and fastlog / raw file "
                 "(above 1.00x: fastlog better)")
    header = f"  {'workload':<15}" + "".join(f"{fs:>{width}}" for fs in names)
    parts.append(header)
    for row in filesystem_comparison(run):
        workload = WORKLOADS[row["workload"]]
        cells = []
        for fs in names:
            cell = row["filesystems"][fs]
            if cell["fastlog"] is None:
                cells.append(f"{'-':>{width}}")
                continue
            text = format_value(workload, cell["fastlog"]).replace(" entries/s", "/s").replace(" ops/s", "/s")
            ratios = []
            if "vs_best_peer" in cell:
                ratios.append(f"{cell['vs_best_peer']:.2f}x")
            if "vs_raw" in cell:
                ratios.append(f"raw {cell['vs_raw']:.2f}x")
            if ratios:
                text += " " + " ".join(ratios)
            cells.append(f"{text:>{width}}")
        parts.append(f"  {workload.id:<15}" + "".join(cells))
    return "\n".join(parts)


def write_filesystem_chart(run: Any, path: str) -> Optional[str]:
    """A PNG with one panel per workload: every engine's median, one bar per file system."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'fastlog[chart]'): no chart written"
    from pathlib import Path

    names = list(run.results)
    if not names:
        return "no file system ran: nothing to chart"
    panels = []
    for workload_id in run.config.workloads:
        engines: List[str] = []
        for results in run.results.values():
            for s in results.subjects:
                r = results.get(s.name, workload_id)
                if r is not None and r.median is not None and s.name not in engines:
                    engines.append(s.name)
        if engines:
            panels.append((WORKLOADS[workload_id], engines))
    if not panels:
        return "nothing to chart"
    cols = 2 if len(panels) > 1 else 1
    rows = math.ceil(len(panels) / cols)
    height_per = max(2.0, 0.3 * len(names) * max(len(e) for _, e in panels) / 2 + 1.0)
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, height_per * rows + 0.6), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#7f7f7f"]
    bar = 0.8 / len(names)
    for ax, (workload, engines) in zip(axes.flat, panels):
        scale_values: List[float] = []
        for k, fstype in enumerate(names):
            results = run.results[fstype]
            values = []
            for engine in engines:
                r = results.get(engine, workload.id)
                v = r.median if r is not None and r.median is not None else 0.0
                values.append(v / (1 << 20) if workload.unit == "B" else v)
            scale_values += [v for v in values if v > 0]
            ys = [len(engines) - 1 - i - (k - (len(names) - 1) / 2) * bar for i in range(len(engines))]
            ax.barh(ys, values, height=bar, color=colours[k % len(colours)], label=fstype)
        ax.set_yticks(range(len(engines)))
        ax.set_yticklabels([_label(e, workload.id) for e in engines][::-1])
        _style_panel(ax, workload, scale_values)
        ax.legend(fontsize=7)
    cfg = run.config
    fig.suptitle(f"fastlog bench per file system: {cfg.entry_size}-byte entries, log of {cfg.entries:,} entries, "
                 f"median of {cfg.repeat} run{'s' if cfg.repeat != 1 else ''}", fontsize=10)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


#: The summary's row order: the steady state leads, the never-flushed fast path follows it.
_HEADLINE_ORDER = ("append-steady", "append", "durable", "leader", "concurrent", "follower", "snapshot",
                   "range", "single", "single-sync", "reopen", "recovery-scale", "disk", "memory")


def format_headline(results: "BenchResults") -> str:
    """A Markdown table like the README's: fastlog, the best peer (and its ratio), the raw baseline."""
    cfg = results.config
    lines = [
        f"| workload ({cfg.entry_size}-byte entries, {cfg.entries:,}-entry log) | fastlog | best peer | raw file baseline |",
        "| --- | --- | --- | --- |",
    ]
    for workload_id in _HEADLINE_ORDER:
        if workload_id not in cfg.workloads:
            continue
        workload = WORKLOADS[workload_id]
        mine = _ok_median(results, REFERENCE, workload_id)
        if mine is None:
            continue
        peer = _best_peer(results, workload_id)
        peer_text = ""
        if peer is not None:
            ratio = workload.speedup(mine, peer[1])
            peer_text = f"{peer[0]} {format_value(workload, peer[1])} ({ratio:.1f}x)" if ratio >= 0.95 else \
                f"{peer[0]} {format_value(workload, peer[1])} ({ratio:.2f}x)"
        raw = _ok_median(results, BASELINE, workload_id)
        raw_text = f"{_BASELINE_LABELS.get(workload_id, 'raw')} {format_value(workload, raw)}" if raw is not None else ""
        title = workload.title
        if workload_id == "recovery-scale":
            title += f" ({_count(max(cfg.scales))} entries)"
        lines.append(f"| {title} | {format_value(workload, mine)} | {peer_text} | {raw_text} |")
    return "\n".join(lines)


def format_power_cuts(run: Any) -> str:
    """The power-cut section (:mod:`fastlog.bench.powercut`): one row per engine."""
    lines = [
        f"Power cuts on LazyFS [{run.cuts} per engine; lost = acknowledged entries missing or wrong after a cut; "
        "recovery = reopen + read of the last entry; last log = entries found by the last reopen]"
    ]
    if run.unavailable is not None:
        lines.append(f"  not run: LazyFS cannot run here: {run.unavailable}")
        return "\n".join(lines)
    width = max([len(name) for name in run.tallies] + [12])
    lines.append(f"  {'engine':<{width}}  {'cuts':>5}  {'acknowledged':>12}  {'lost':>6}  {'failed reopens':>14}  "
                 f"{'median recovery':>15}  {'last log':>9}  durable commit")
    for name, t in run.tallies.items():
        median = t.median_recovery
        recovery = "-" if median is None else _seconds(median)
        lines.append(f"  {name:<{width}}  {t.cuts:>5}  {t.acknowledged:>12,}  {t.lost:>6,}  {t.failed_reopens:>14}  "
                     f"{recovery:>15}  {t.last_entries:>9,}  {t.commit}")
    for name, t in run.tallies.items():
        if t.stray:
            lines.append(f"  {name}: {t.stray} entries past the acknowledged ones came back wrong")
        for problem in t.problems[:3]:
            lines.append(f"  {name}: {problem}")
    for name, reason in run.skipped.items():
        lines.append(f"  skipped {name}: {reason}")
    return "\n".join(lines)

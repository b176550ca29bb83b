"""What the benchmark measures: engines from :mod:`fastlog.engines`, and the raw file baseline.

An engine subject opens a :class:`fastlog.protocols.StorageEngine` in a
directory.  The baseline is not an engine: it is the plain ``os.write`` /
``os.pread`` / ``os.fdatasync`` work of the same workloads, the ceiling any
engine writing the same bytes to one file would have.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

__all__ = [
    "Subject",
    "BASELINE",
    "REFERENCE",
    "OWN_ENGINES",
    "load_subjects",
    "entry_class_of",
    "sync_entry_reader",
    "describe_sync_reader",
]

#: Name of the raw file baseline in ``--engines`` and in the results.
BASELINE = "raw"
#: The engine every ratio is taken against.
REFERENCE = "fastlog"
#: Engines that are fastlog itself or a reference, never a "peer" in the targets.
OWN_ENGINES = ("fastlog", "fastlog-python", "memory")


@dataclass
class Subject:
    """One column of the comparison: an engine (opened per workload) or the raw baseline."""

    name: str
    #: "engine" or "baseline".
    kind: str
    description: str = ""
    #: Opens the engine in a directory: ``opener(path) -> StorageEngine``.
    opener: Optional[Callable[[str], Any]] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    @property
    def opener_is_registered(self) -> bool:
        """Whether a child process can open this engine by name (the memory workload needs that)."""
        return bool(self.extra.get("registered"))

    @property
    def is_baseline(self) -> bool:
        return self.kind == "baseline"

    @property
    def is_peer(self) -> bool:
        return self.kind == "engine" and self.name not in OWN_ENGINES

    def open(self, path: str) -> Any:
        assert self.opener is not None, f"{self.name} is not an engine"
        return self.opener(path)


def _registry_subjects() -> Tuple[List[Subject], Dict[str, str]]:
    """Engines of :mod:`fastlog.engines`: (available subjects, {missing name: reason})."""
    from .. import engines

    subjects = [
        Subject(
            name=spec.name,
            kind="engine",
            description=spec.description,
            opener=_opener_for(spec),
            extra={"persistent": spec.persistent, "supports_durable": spec.supports_durable, "registered": True},
        )
        for spec in engines.available_engines()
    ]
    return subjects, dict(engines.missing_engines())


def _opener_for(spec: Any) -> Callable[[str], Any]:
    """Opens the engine in its default mode: writes are made durable by flush()/flush_async()."""

    def opener(path: str) -> Any:
        return spec.open(path, durable=False)

    return opener


def load_subjects(names: Optional[List[str]], baseline: bool = True) -> Tuple[List[Subject], Dict[str, str]]:
    """The subjects to measure, in the requested order, and the skipped ones with a reason.

    ``names`` None means every available engine (and the baseline when
    ``baseline``).  A requested name that does not exist raises ValueError; one
    whose package is missing is skipped with its reason.
    """
    subjects, missing = _registry_subjects()
    by_name = {s.name: s for s in subjects}
    base = Subject(BASELINE, "baseline", "raw os.write / os.pread / os.fdatasync on one file")
    if names is None:
        chosen = list(subjects)
        # fastlog first, so progress shows the reference early.
        chosen.sort(key=lambda s: (s.name != REFERENCE,))
        if baseline:
            chosen.append(base)
        return chosen, missing
    chosen = []
    skipped: Dict[str, str] = {}
    for name in names:
        if name == BASELINE:
            chosen.append(base)
        elif name in by_name:
            chosen.append(by_name[name])
        elif name in missing:
            skipped[name] = missing[name]
        else:
            known = sorted(set(by_name) | set(missing) | {BASELINE})
            raise ValueError(f"unknown engine {name!r}; known engines: {', '.join(known)}")
    return chosen, skipped


def entry_class_of(store: Any) -> type:
    """The entry class to build batches with: the store's own, else fastlog's."""
    cls = getattr(store, "Entry", None)
    if isinstance(cls, type):
        return cls
    from .._impl import core

    return core.Entry


def sync_entry_reader(store: Any) -> Optional[Callable[[int], Any]]:
    """A synchronous ``entry(index)`` of the store, if it has one.

    Looks for ``store.entry_sync`` and for the synchronous log under the store
    (``store.log.entry``, as :class:`fastlog.engine.FileLogStore` has).
    """
    fn = getattr(store, "entry_sync", None)
    if callable(fn) and not inspect.iscoroutinefunction(fn):
        return fn
    log = getattr(store, "log", None)
    fn = getattr(log, "entry", None) if log is not None else None
    if callable(fn) and not inspect.iscoroutinefunction(fn):
        return fn
    return None


def describe_sync_reader(store: Any) -> str:
    if callable(getattr(store, "entry_sync", None)):
        return f"{type(store).__name__}.entry_sync"
    return f"{type(store).__name__}.log.entry"

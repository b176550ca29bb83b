"""Storage engines behind one protocol, and a registry to find them.

Every engine implements :mod:`fastlog.protocols` (StorageEngine / LogStore /
MetaStore) with the same semantics, checked by :mod:`fastlog.testing`.  Each is
opened through one uniform factory::

    from fastlog.engines import get_engine

    spec = get_engine("lmdb")
    if not spec.available:
        print(spec.name, "is missing:", spec.missing_reason)
    engine = spec.open(path, durable=True)     # synchronous; returns a StorageEngine
    store = engine.log_store()
    await store.persist_entries(entries)
    await engine.close()

``open(path, *, durable=False, **options)``: ``path`` is a directory (created
when missing); ``durable=True`` makes every write durable before it returns
(``is_write_durable()`` then says True), ``durable=False`` leaves durability
to ``flush()`` / ``flush_async()``.  Engine-specific keyword options are listed
in docs/engines.md.  Reopening the same path sees what was stored, except for
the ``memory`` engine (``spec.persistent`` is False).

Engines (in display order): ``fastlog`` (the compiled implementation, or the
pure-Python one under ``FASTLOG_NO_EXTENSIONS=1``), ``fastlog-python``,
``memory``, ``sqlite``, ``lmdb``, ``rocksdb`` (rocksdict), ``leveldb`` (plyvel).
The third-party ones are the optional extra ``pip install fastlog[peers]``;
when a package is missing the registry says so instead of failing.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..errors import FastlogError

__all__ = [
    "EngineSpec",
    "EngineUnavailableError",
    "ENGINE_NAMES",
    "engines",
    "available_engines",
    "missing_engines",
    "get_engine",
    "open_engine",
]


class EngineUnavailableError(FastlogError, ImportError):
    """The engine's package (or fastlog's compiled extension) is not installed."""


def _probe_modules(*modules: str, hint: str) -> Callable[[], Optional[str]]:
    def probe() -> Optional[str]:
        for module in modules:
            try:
                importlib.import_module(module)
            except Exception as exc:  # ImportError, or a broken shared library
                return f"cannot import {module} ({type(exc).__name__}: {exc}); {hint}"
        return None

    return probe


def _probe_fastlog_default() -> Optional[str]:
    from .fastlog_engines import default_implementation

    if default_implementation() == "python":
        return _probe_modules("fastlog.engine", hint="fastlog itself is broken")()
    return _probe_modules(
        "fastlog.engine",
        "fastlog_ext._core",
        hint="build the compiled extension (`make build`), or set FASTLOG_NO_EXTENSIONS=1",
    )()


def _fastlog_description() -> str:
    from .fastlog_engines import default_implementation

    if default_implementation() == "python":
        return "fastlog, pure-Python implementation (FASTLOG_NO_EXTENSIONS=1)"
    return "fastlog, compiled implementation (Cython + C)"


@dataclass(frozen=True)
class EngineSpec:
    """One registered engine: how to open it and whether it can be opened here."""

    name: str
    summary: str
    module: str  # module holding the opener
    opener: str  # name of the opener function in ``module``
    persistent: bool = True  # data survives close + reopen of the same path
    supports_durable: bool = True  # durable=True can be honoured
    requires: Tuple[str, ...] = ()  # pip packages needed
    fixed_options: Tuple[Tuple[str, Any], ...] = ()  # passed to the opener on every open
    probe: Optional[Callable[[], Optional[str]]] = field(default=None, compare=False, repr=False)
    describe: Optional[Callable[[], str]] = field(default=None, compare=False, repr=False)

    @property
    def description(self) -> str:
        return self.describe() if self.describe is not None else self.summary

    @property
    def missing_reason(self) -> Optional[str]:
        """Why the engine cannot be opened in this environment, or None when it can."""
        cached = _probe_cache.get(self.name, _UNPROBED)
        if cached is _UNPROBED:
            cached = self.probe() if self.probe is not None else None
            _probe_cache[self.name] = cached
        return cached  # type: ignore[return-value]

    @property
    def available(self) -> bool:
        return self.missing_reason is None

    def open(self, path: Any, *, durable: bool = False, **options: Any) -> Any:
        """Open (creating if needed) the engine in directory ``path``; returns a StorageEngine."""
        reason = self.missing_reason
        if reason is not None:
            raise EngineUnavailableError(f"engine {self.name!r} is not available: {reason}")
        opener = getattr(importlib.import_module(self.module), self.opener)
        merged = dict(self.fixed_options)
        merged.update(options)
        return opener(path, durable=durable, **merged)


_UNPROBED = object()
_probe_cache: Dict[str, Any] = {}


def _specs() -> List[EngineSpec]:
    peers_hint = "install the peers extra: pip install 'fastlog[peers]'"
    return [
        EngineSpec(
            name="fastlog",
            summary="fastlog (segmented mmap log with CRC framing)",
            module="fastlog.engines.fastlog_engines",
            opener="open_fastlog",
            probe=_probe_fastlog_default,
            describe=_fastlog_description,
        ),
        EngineSpec(
            name="fastlog-python",
            summary="fastlog, pure-Python implementation of the same format",
            module="fastlog.engines.fastlog_engines",
            opener="open_fastlog",
            fixed_options=(("implementation", "python"),),
            probe=_probe_modules("fastlog.engine", "fastlog._pycore", hint="fastlog itself is broken"),
        ),
        EngineSpec(
            name="memory",
            summary="in-memory reference (a Python list; nothing persists)",
            module="fastlog.engines.memory",
            opener="open_memory",
            persistent=False,
            supports_durable=False,
        ),
        EngineSpec(
            name="sqlite",
            summary="SQLite (stdlib sqlite3), WAL mode",
            module="fastlog.engines.sqlite",
            opener="open_sqlite",
            probe=_probe_modules("sqlite3", hint="this Python was built without sqlite3"),
        ),
        EngineSpec(
            name="lmdb",
            summary="LMDB (lmdb)",
            module="fastlog.engines.lmdb",
            opener="open_lmdb",
            requires=("lmdb",),
            probe=_probe_modules("lmdb", hint=peers_hint),
        ),
        EngineSpec(
            name="rocksdb",
            summary="RocksDB (rocksdict)",
            module="fastlog.engines.rocksdb",
            opener="open_rocksdb",
            requires=("rocksdict",),
            probe=_probe_modules("rocksdict", hint=peers_hint),
        ),
        EngineSpec(
            name="leveldb",
            summary="LevelDB (plyvel)",
            module="fastlog.engines.leveldb",
            opener="open_leveldb",
            requires=("plyvel",),
            probe=_probe_modules("plyvel", hint=peers_hint),
        ),
    ]


_REGISTRY: Dict[str, EngineSpec] = {spec.name: spec for spec in _specs()}

#: Every registered engine name, in display order.
ENGINE_NAMES: Tuple[str, ...] = tuple(_REGISTRY)


def engines() -> List[EngineSpec]:
    """Every registered engine, available or not, in display order."""
    return list(_REGISTRY.values())


def available_engines() -> List[EngineSpec]:
    """The engines that can be opened in this environment."""
    return [spec for spec in _REGISTRY.values() if spec.available]


def missing_engines() -> Dict[str, str]:
    """Engine name -> why it cannot be opened here, for every unavailable engine."""
    return {spec.name: spec.missing_reason for spec in _REGISTRY.values() if not spec.available}  # type: ignore[misc]


def get_engine(name: str) -> EngineSpec:
    """The engine registered as ``name`` (available or not; see ``.available``)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown engine {name!r}; known engines: {', '.join(ENGINE_NAMES)}") from None


def open_engine(name: str, path: Any, *, durable: bool = False, **options: Any) -> Any:
    """Shorthand for ``get_engine(name).open(path, durable=durable, **options)``."""
    return get_engine(name).open(path, durable=durable, **options)

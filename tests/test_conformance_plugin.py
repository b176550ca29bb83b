"""The conformance kit as a product: the pytest plugin, the public validators, the rules table.

The plugin runs in a subprocess on a small dict-based engine written into a
temporary directory (``DICT_ENGINE`` below, built only from public APIs), as a
third-party engine author would run it.  The same engine broken on purpose
shows that the suite catches the flaw and names the rule:

* a ``flush()`` that does nothing (``close()`` still saves) passes every plain
  and reopen case, and fails ``flush_persists_all_data[power-cut]``: this is
  the broken build the power-cut variant was seen failing on;
* a gap refused with ``ValueError`` instead of ``InvalidIndexError`` fails
  ``gap_rejected`` with "expected InvalidIndexError, got ValueError";
* an engine that forgets everything on reopen gives one ``test_persistence``
  skip (auto) or one failure naming the fix (``--fastlog-persistent=yes``).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Tuple

import pytest

from fastlog.errors import FastlogError
from fastlog.testing.validate import RULES, Rule, rules_table

# The plugin's machinery is the same whichever core an engine uses.
pytestmark = pytest.mark.core_independent

REPO = Path(__file__).resolve().parents[1]

DICT_ENGINE = '''\
"""A dict-based storage engine written from docs/engines.md, using only public fastlog APIs.

The log lives in a dict; ``flush()`` (and ``close()``) write the whole state
to ``state.json`` with an fsync and an atomic rename; ``save_hard_state``
does the same for ``hard_state.json`` before it returns.

``DICT_ENGINE_FLAW`` breaks it on purpose: ``noop_flush`` (flush does nothing,
close still saves), ``wrong_error`` (a gap raises ValueError), ``forgetful``
(nothing survives a reopen).
"""
import asyncio
import json
import os
import threading

from fastlog import Entry, HardState, LogId, VotedFor
from fastlog.testing.validate import (
    check_batch, check_closed, check_hard_state, check_index, check_log_id,
    check_replace_start, check_start, check_term_follows, check_truncate,
)


FLAW = os.environ.get("DICT_ENGINE_FLAW", "")
MAX_ENTRY_SIZE = 16 << 20


def _write_file(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_file(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


class DictLogStore:
    def __init__(self, path):
        self._file = os.path.join(path, "state.json")
        self.entries = {}
        self.boundary = None
        self.closed = False
        self._save_lock = threading.Lock()  # concurrent flush_async calls write one at a time
        saved = None if FLAW == "forgetful" else _read_file(self._file)
        if saved:
            self.entries = {int(i): (t, k, bytes.fromhex(p)) for i, t, k, p in saved["entries"]}
            if saved["boundary"] is not None:
                self.boundary = LogId(index=saved["boundary"][0], term=saved["boundary"][1])

    def _check(self):
        check_closed(self.closed, "dict log store")

    def _last_stored(self):
        return max(self.entries) if self.entries else 0

    def _term_at(self, index):
        if self.boundary is not None and index == self.boundary.index:
            return self.boundary.term
        found = self.entries.get(index)
        return None if found is None else found[0]

    def _entry(self, index):
        t, k, p = self.entries[index]
        return Entry(index, t, p, k)

    def _append(self, batch, stored_last):
        head = batch[0]
        if head.index > 1:
            check_term_follows(head, self._term_at(head.index - 1))
        if FLAW == "wrong_error" and stored_last and head.index > stored_last + 1:
            raise ValueError("gap")
        check_start(head.index, stored_last=stored_last, boundary=self.boundary)

    async def persist_entries(self, entries):
        self._check()
        batch = check_batch(entries, MAX_ENTRY_SIZE)
        if not batch:
            return
        self._append(batch, self._last_stored())
        for i in [i for i in self.entries if i >= batch[0].index]:
            del self.entries[i]
        for e in batch:
            self.entries[e.index] = (e.term, int(e.kind), bytes(e.payload))

    async def replace_range(self, from_index, new_entries):
        from_index = check_index("from_index", from_index)
        self._check()
        batch = check_batch(new_entries, MAX_ENTRY_SIZE, "new_entries")
        check_truncate(from_index, self.boundary)
        kept = {i: v for i, v in self.entries.items() if i < from_index}
        if batch:
            check_replace_start(from_index, batch[0].index, len(kept) != len(self.entries))
            saved = self.entries
            self.entries = kept
            try:
                self._append(batch, self._last_stored())
            finally:
                self.entries = saved
            kept = {i: v for i, v in kept.items() if i < batch[0].index}
            for e in batch:
                kept[e.index] = (e.term, int(e.kind), bytes(e.payload))
        self.entries = kept

    async def truncate(self, from_index):
        from_index = check_index("from_index", from_index)
        self._check()
        check_truncate(from_index, self.boundary)
        self.entries = {i: v for i, v in self.entries.items() if i < from_index}

    async def purge(self, cutoff_index):
        check_log_id("cutoff_index", cutoff_index)
        self._check()
        if self.boundary is not None and cutoff_index.index <= self.boundary.index:
            return
        self.entries = {i: v for i, v in self.entries.items() if i > cutoff_index.index}
        self.boundary = cutoff_index

    async def reset(self):
        self._check()
        self.entries = {}
        self.boundary = None

    async def entry(self, index):
        index = check_index("index", index)
        self._check()
        return self._entry(index) if index in self.entries else None

    def get_entries(self, start, end):
        start, end = check_index("start", start), check_index("end", end)
        self._check()
        return [self._entry(i) for i in sorted(self.entries) if start <= i <= end]

    def last_index(self):
        self._check()
        return max(self._last_stored(), self.boundary.index if self.boundary else 0)

    def load_purge_boundary(self):
        self._check()
        return self.boundary

    def is_write_durable(self):
        return False

    def _state(self):
        b = self.boundary
        return {
            "entries": [[i, t, k, p.hex()] for i, (t, k, p) in sorted(self.entries.items())],
            "boundary": None if b is None else [b.index, b.term],
        }

    def _save(self, state):
        with self._save_lock:
            _write_file(self._file, state)

    def save(self):
        self._save(self._state())

    def flush(self):
        self._check()
        if FLAW != "noop_flush":
            self.save()

    async def flush_async(self):
        self._check()
        if FLAW != "noop_flush":
            await asyncio.to_thread(self._save, self._state())


class DictMetaStore:
    def __init__(self, path, log):
        self._file = os.path.join(path, "hard_state.json")
        self._log = log
        self._saved = None  # the last state saved through this engine

    def save_hard_state(self, state):
        check_hard_state(state)
        self._log._check()
        v = state.voted_for
        vote = None if v is None else [v.voted_for_id, v.voted_for_term, v.committed]
        _write_file(self._file, [state.current_term, vote])
        self._saved = state

    def load_hard_state(self):
        self._log._check()
        if self._saved is not None:
            return self._saved
        raw = None if FLAW == "forgetful" else _read_file(self._file)
        if raw is None:
            return None
        term, vote = raw
        voted = None if vote is None else VotedFor(voted_for_id=vote[0], voted_for_term=vote[1], committed=vote[2])
        return HardState(current_term=term, voted_for=voted)

    def flush(self):
        self._log._check()

    async def flush_async(self):
        self._log._check()


class DictEngine:
    def __init__(self, path):
        os.makedirs(path, exist_ok=True)
        self._log = DictLogStore(path)
        self._meta = DictMetaStore(path, self._log)

    def log_store(self):
        return self._log

    def meta_store(self):
        return self._meta

    async def close(self):
        if not self._log.closed:
            self._log.save()
            self._log.closed = True


def open_engine(path):
    return DictEngine(path)
'''


def _lazyfs_usable() -> Optional[str]:
    from fastlog.testing.lazyfs import unavailable_reason

    return unavailable_reason()


def run_plugin(tmp_path: Path, *args: str, flaw: str = "", timeout: float = 240) -> Tuple[int, str, float]:
    """``pytest -p fastlog.testing.pytest_plugin ARGS`` in ``tmp_path``; (exit code, output, seconds)."""
    (tmp_path / "dict_engine.py").write_text(DICT_ENGINE)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["DICT_ENGINE_FLAW"] = flaw
    env.pop("PYTEST_ADDOPTS", None)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "fastlog.testing.pytest_plugin", "-p", "no:cacheprovider",
         "-q", "-rs", "--rootdir", str(tmp_path), *args],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
    )
    return done.returncode, done.stdout, time.monotonic() - started


def _counts(output: str) -> Dict[str, int]:
    return {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|error|errors)", output)}


def test_full_conformance_run_passes_on_a_third_party_engine(tmp_path: Path) -> None:
    """Every case, plain and reopened, the power cut (where LazyFS runs) and the model test."""
    code, output, seconds = run_plugin(tmp_path, "--fastlog-engine=dict_engine:open_engine")
    assert code == 0, output[-6000:]
    counts = _counts(output)
    from fastlog.testing import CASE_NAMES, POWER_CUT_CASES

    # test_persistence + 2 variants per case + the model test (+ the power-cut cases)
    ran = counts.get("passed", 0) + counts.get("skipped", 0)
    assert ran == 1 + 2 * len(CASE_NAMES) + len(POWER_CUT_CASES) + 1, output[-3000:]
    if _lazyfs_usable() is None:
        assert counts.get("skipped", 0) == 0, output[-3000:]
    assert seconds < 120, f"the full run took {seconds:.0f} s"


def test_noop_flush_fails_the_power_cut_variant(tmp_path: Path) -> None:
    """A flush that does nothing passes the reopen variant (close saves) and fails the power cut.

    Also seen on the bundled adapters: with ``BaseLogStore.flush`` / ``flush_async`` made
    no-ops, tests/test_conformance.py failed ``flush_persists_all_data-power-cut`` on sqlite,
    lmdb, rocksdb and leveldb ("expected 30, got 5": only what the hard-state save synced
    survived) while every ``flush_persists_all_data-reopen`` still passed.
    """
    reason = _lazyfs_usable()
    if reason is not None:
        pytest.skip(f"power-cut variant cannot run: {reason}")
    code, output, _ = run_plugin(
        tmp_path, "--fastlog-engine=dict_engine:open_engine", "--fastlog-power-cut=require",
        "-k", "flush_persists_all_data", flaw="noop_flush",
    )
    assert code == 1, output[-4000:]
    counts = _counts(output)
    assert counts.get("failed") == 1, output[-4000:]  # the plain and reopen variants pass: close() saves
    assert "flush_persists_all_data-power-cut" in output and "after a power cut" in output, output[-4000:]
    assert "entries after flush" in output, output[-4000:]


def test_wrong_exception_names_the_rule(tmp_path: Path) -> None:
    code, output, _ = run_plugin(
        tmp_path, "--fastlog-engine=dict_engine:open_engine", "-k", "gap_rejected and plain", flaw="wrong_error"
    )
    assert code == 1, output[-4000:]
    assert "gap_rejected" in output and "expected InvalidIndexError, got ValueError" in output, output[-4000:]


def test_a_forgetful_engine_gives_one_clear_message(tmp_path: Path) -> None:
    code, output, _ = run_plugin(
        tmp_path, "--fastlog-engine=dict_engine:open_engine", "--fastlog-power-cut=off", "-k", "not test_model",
        flaw="forgetful",
    )
    assert code == 0, output[-4000:]
    assert "keeps nothing across close and reopen" in output, output[-4000:]
    assert output.count("keeps nothing across close and reopen") == 1, output[-4000:]  # one summary line
    code, output, _ = run_plugin(
        tmp_path, "--fastlog-engine=dict_engine:open_engine", "--fastlog-persistent=yes", "--fastlog-power-cut=off",
        "-k", "not test_model", flaw="forgetful",
    )
    assert code == 1 and _counts(output).get("failed") == 1, output[-4000:]
    assert "--fastlog-persistent=no" in output, output[-4000:]


def test_the_plugin_is_inert_without_the_option(tmp_path: Path) -> None:
    (tmp_path / "test_other.py").write_text("def test_nothing():\n    pass\n")
    code, output, _ = run_plugin(tmp_path)
    assert code == 0 and _counts(output) == {"passed": 1}, output[-2000:]
    assert "fastlog" not in output.replace(str(tmp_path), ""), output[-2000:]


def test_an_unknown_factory_is_a_usage_error(tmp_path: Path) -> None:
    code, output, _ = run_plugin(tmp_path, "--fastlog-engine=dict_engine:no_such_factory")
    assert code == 4 and "no_such_factory" in output, output[-2000:]


def test_the_entry_point_names_the_plugin() -> None:
    text = (REPO / "pyproject.toml").read_text()
    # Named as the module, so `-p fastlog.testing.pytest_plugin` and the installed entry point
    # are one plugin (pytest refuses one module registered under two names).
    assert '[project.entry-points.pytest11]\n"fastlog.testing.pytest_plugin" = "fastlog.testing.pytest_plugin"' in text


# -- the public validators and the rules table ---------------------------------------


@pytest.mark.parametrize("rule", RULES, ids=[f"{r.method}: {r.bad_input}" for r in RULES])
def test_each_rule_raises_its_error(rule: Rule, core_module) -> None:
    """Seen failing with the gap check of ``check_start`` removed (on both cores), together
    with ``gap_rejected`` of tests/test_conformance.py on the bundled adapters."""
    with pytest.raises(FastlogError) as info:
        rule.demo()
    assert type(info.value) is rule.error
    if rule.error.__name__ != "ClosedError":
        assert isinstance(info.value, (TypeError, ValueError))


def test_the_docs_table_is_the_rules() -> None:
    docs = (REPO / "docs" / "engines.md").read_text()
    found = re.search(r"<!-- rules table: generated by python -m fastlog.testing.validate -->\n(.*?)<!-- end", docs, re.S)
    assert found, "docs/engines.md lost its rules table markers"
    assert found.group(1) == rules_table(), "regenerate it: python -m fastlog.testing.validate"


def test_the_bundled_adapters_call_the_public_validators() -> None:
    from fastlog.engines import _base
    from fastlog.testing import validate

    for name in ("check_batch", "check_index", "check_log_id", "check_start", "check_truncate", "check_term_follows"):
        assert getattr(_base, name) is getattr(validate, name), name

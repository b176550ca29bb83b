"""The documented API type-checks in user code under ``mypy --strict``.

The typed example (examples/typed_client.py) must check with no error, and a
script that misuses the API must be refused on exactly the lines marked
``# error`` in it.  Skipped when mypy is not installed.

Seen failing on a broken build: with ``Log.entry`` annotated ``Any`` again
(as it was), ``log.entry("x")`` and ``n: str = entry.index`` in the bad script
were no longer reported: ``test_misuse_is_reported`` failed with "missed lines
[16, 17, 19, 20]".
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Set

import pytest

# Type checking reads the stubs and sources, never runs a core.
pytestmark = pytest.mark.core_independent

pytest.importorskip("mypy", reason="mypy is not installed (pip install mypy, or the 'dev' extra)")

ROOT = Path(__file__).resolve().parent.parent

BAD_SCRIPT = textwrap.dedent(
    '''
    from __future__ import annotations

    import asyncio
    from typing import List

    import fastlog
    from fastlog import Entry, HardState, LogId


    def sync_misuse(path: str) -> None:
        with fastlog.Log(path) as log:
            log.append([Entry(index=1, term=1, payload=b"x")])
            entry = log.entry(1)
            assert entry is not None
            n: str = entry.index  # error
            log.entry("x")  # error
            log.append(["not an entry"])  # error
            missing: Entry = log.entry(2)  # error
            names: List[str] = log.get_entries(1, 2)  # error
            log.purge(5)  # error
            first: int = log[1:3]  # error
            Entry(index="1", term=1)  # error
            Entry(index=1, term=1, payload="text")  # error
            HardState(current_term="3")  # error
            LogId(index=1)  # error


    async def async_misuse(path: str) -> None:
        async with fastlog.open(path) as engine:
            logs = engine.log_store()
            await logs.persist_entries("nope")  # error
            got: Entry = await logs.entry(1)  # error
            async for e in logs.stream_entries(1, 2):
                t: bytes = e.term  # error
            engine.meta_store().save_hard_state(3)  # error
        fastlog.open(3)  # error


    asyncio.run(async_misuse("/tmp/x"))
    '''
)


def run_mypy(tmp_path: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    """mypy --strict as a user of the installed package runs it: no project
    configuration, and errors inside fastlog itself not reported (as for any
    installed package); MYPYPATH stands in for site-packages, since mypy cannot
    follow an editable install's import hook."""
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\n")
    cache = tmp_path.parent / "mypy-cache"  # shared by the runs of this session
    cmd = [
        sys.executable, "-m", "mypy", "--strict", "--config-file", str(config), "--follow-imports=silent",
        "--no-error-summary", "--show-column-numbers", "--hide-error-context", "--cache-dir", str(cache),
        *map(str, files),
    ]
    env = dict(os.environ, MYPYPATH=str(ROOT))
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def error_lines(output: str, name: str) -> Set[int]:
    lines = set()
    for line in output.splitlines():
        m = re.match(r"(.+?):(\d+):(\d+): error: ", line)
        if m and Path(m.group(1)).name == name:
            lines.add(int(m.group(2)))
    return lines


def test_typed_example_checks_clean(tmp_path: Path) -> None:
    result = run_mypy(tmp_path, ROOT / "examples" / "typed_client.py")
    assert result.returncode == 0, result.stdout + result.stderr


def test_misuse_is_reported(tmp_path: Path) -> None:
    script = tmp_path / "misuse.py"
    script.write_text(BAD_SCRIPT)
    marked = {n for n, text in enumerate(BAD_SCRIPT.splitlines(), 1) if text.endswith("# error")}
    result = run_mypy(tmp_path, script)
    assert result.returncode == 1, result.stdout + result.stderr
    found = error_lines(result.stdout, script.name)
    assert found == marked, (
        f"missed lines {sorted(marked - found)}, unexpected lines {sorted(found - marked)}\n{result.stdout}"
    )

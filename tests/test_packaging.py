"""The release as a user meets it: version, license metadata, the fallback
warning, the README's Quick start, and (under ``make sdist-check``) the sdist.

``make sdist-check`` builds the sdist, installs it in a fresh venv and runs
the sdist's own tests there, from outside any source tree; it sets
FASTLOG_SDIST (the archive) and FASTLOG_SOURCE_TREE (the checkout it came
from), which turn on the tests of the archive itself.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Dict, List, Optional

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = None

import fastlog

ROOT = Path(__file__).resolve().parent.parent  # a checkout, or an unpacked sdist
PACKAGE_PARENT = str(Path(fastlog.__file__).resolve().parent.parent)
SDIST = os.environ.get("FASTLOG_SDIST")
SOURCE_TREE = os.environ.get("FASTLOG_SOURCE_TREE")
needs_sdist = pytest.mark.skipif(not SDIST, reason="needs FASTLOG_SDIST (set by `make sdist-check`)")


def python_env(**changes: Optional[str]) -> Dict[str, str]:
    env = dict(os.environ)
    for name in ("FASTLOG_NO_EXTENSIONS", "FASTLOG_REQUIRE_EXTENSION"):
        env.pop(name, None)
    env["PYTHONPATH"] = PACKAGE_PARENT + os.pathsep + env.get("PYTHONPATH", "")
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def pyproject() -> dict:
    if tomllib is None:
        pytest.skip("tomllib needs Python 3.11")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


# ---------------------------------------------------------------------------
# one version, one license
# ---------------------------------------------------------------------------


def test_the_version_has_one_source() -> None:
    from importlib.metadata import PackageNotFoundError, version

    release = (ROOT / "VERSION").read_text().strip()
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]|rc)?\d*", release), release
    assert fastlog.__version__ == release
    try:
        assert version("fastlog") == release, "the installed metadata is stale: reinstall"
    except PackageNotFoundError:
        pass  # imported from a checkout that was never installed
    config = pyproject()
    assert "version" not in config["project"] and "version" in config["project"]["dynamic"]
    assert config["tool"]["setuptools"]["dynamic"]["version"] == {"file": "VERSION"}
    init = Path(fastlog.__file__).read_text()
    assert release not in init and "__version__ = \"" not in init


def test_the_license_is_declared_the_pep_639_way() -> None:
    config = pyproject()
    project = config["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]
    assert "setuptools>=77.0.3" in config["build-system"]["requires"]  # the first with all of PEP 639
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text


# ---------------------------------------------------------------------------
# the pure-Python fallback warns, once, and only where the extension was expected
# ---------------------------------------------------------------------------

_IMPORT_AND_REPORT = """
import json, sys, warnings
for name in {hidden!r}:
    sys.modules[name] = None  # as if it had not been built / installed
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")  # so "once" is fastlog's doing, not the filter's
    try:
        import fastlog
        from fastlog._impl import load_core
        load_core(), load_core()
        result = fastlog.IMPLEMENTATION
    except ImportError as exc:
        result = "ImportError: " + str(exc)
print(json.dumps({{"implementation": result,
                  "warnings": [[w.category.__name__, str(w.message)] for w in caught]}}))
"""


def _import_reports(cases: Dict[str, tuple]) -> Dict[str, dict]:
    procs = {}
    for name, (hidden, env) in cases.items():
        procs[name] = subprocess.Popen([sys.executable, "-c", _IMPORT_AND_REPORT.format(hidden=hidden)],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    reports = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        reports[name] = json.loads(out)
    return reports


def test_the_pure_python_fallback_warns_once_with_the_fix() -> None:
    """Seen failing on a deliberately broken build: with the call to _warn_fallback
    taken out of fastlog._impl (the silent fallback this replaces), the "not
    built" child reported no warning at all."""
    reports = _import_reports({
        "not built": (["fastlog_ext._core"], python_env()),
        "chosen at run time": (["fastlog_ext._core"], python_env(FASTLOG_NO_EXTENSIONS="1")),
        "a pure-Python install": (["fastlog_ext"], python_env()),
        "required": (["fastlog_ext._core"], python_env(FASTLOG_REQUIRE_EXTENSION="1")),
    })
    not_built = reports["not built"]
    assert not_built["implementation"] == "python"
    assert len(not_built["warnings"]) == 1, not_built
    category, message = not_built["warnings"][0]
    assert category == "FastlogWarning"
    assert "pure-Python core" in message and "40x slower" in message
    assert "make build" in message and "FASTLOG_NO_EXTENSIONS=1" in message
    for quiet in ("chosen at run time", "a pure-Python install"):
        assert reports[quiet] == {"implementation": "python", "warnings": []}, quiet
    assert reports["required"]["implementation"].startswith("ImportError")


def test_the_warning_class_is_a_fastlog_warning() -> None:
    from fastlog.errors import FastlogWarning

    assert issubclass(FastlogWarning, UserWarning) and "FastlogWarning" in fastlog.errors.__all__


# ---------------------------------------------------------------------------
# the README's Quick start, twice in a row
# ---------------------------------------------------------------------------


def quick_start_blocks() -> List[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Quick start"):]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_quick_start_runs_twice_in_a_row(core_module: ModuleType, tmp_path: Path) -> None:
    blocks = quick_start_blocks()
    assert len(blocks) == 2
    if core_module.IMPLEMENTATION == "python":
        env = python_env(FASTLOG_NO_EXTENSIONS="1")
    else:
        env = python_env(FASTLOG_REQUIRE_EXTENSION="1")
    outputs = []
    for _run in range(2):
        procs = [subprocess.Popen([sys.executable, "-c", block], cwd=tmp_path, env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for block in blocks]
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            outputs.append(out)
    sync_1, async_1, sync_2, async_2 = outputs
    assert (sync_1, sync_2) == ("entries 51 to 100\n", "entries 151 to 200\n")
    assert "Entry(index=1," in async_1 and "current_term=1" in async_1
    assert "Entry(index=2," in async_2 and "current_term=2" in async_2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raft-log", "raft-node"]


# ---------------------------------------------------------------------------
# the sdist (make sdist-check)
# ---------------------------------------------------------------------------


@needs_sdist
def test_the_tests_use_the_installed_package() -> None:
    import sysconfig

    installed = Path(fastlog.__file__).resolve()
    site_packages = Path(sysconfig.get_paths()["purelib"]).resolve()
    assert installed == site_packages / "fastlog" / "__init__.py", f"imported {installed}, not the installed package"
    assert not installed.is_relative_to(ROOT)
    assert fastlog.IMPLEMENTATION == "c"


@needs_sdist
def test_the_sdist_carries_every_tracked_file_and_the_generated_c() -> None:
    assert SDIST is not None
    with tarfile.open(SDIST) as tar:
        members = {m.name.split("/", 1)[1]: m for m in tar.getmembers() if "/" in m.name and m.isfile()}
        generated = tar.extractfile(members["fastlog_ext/_core.c"])
        assert generated is not None
        head = generated.read(4096).decode("utf-8", "replace")
    assert "Generated by Cython" in head and "fastlog_ext/_core.pyx" in head
    assert members["fastlog_ext/_core.c"].mtime >= members["fastlog_ext/_core.pyx"].mtime
    for needed in ("LICENSE", "VERSION", "CMakeLists.txt", "fastlog_ext/_core.pyx", "fastlog_ext/sources.txt",
                   "tests/conftest.py", "tests/core_modules.py", "tests/reference_crc.py", "tests/crash/conftest.py",
                   "tests/golden/segment_v1.seg", "tests_c/test_core.c", "docs/format.md"):
        assert needed in members, needed
    if SOURCE_TREE and (Path(SOURCE_TREE) / ".git").exists():
        tracked = subprocess.run(["git", "-C", SOURCE_TREE, "ls-files"], capture_output=True, text=True,
                                 check=True).stdout.split()
        missing = [name for name in tracked if name != ".gitignore" and name not in members]
        assert not missing, f"tracked files the sdist leaves out (add them to MANIFEST.in): {missing}"


def _pip_wheel(tmp_path: Path, env: Dict[str, str]) -> subprocess.CompletedProcess:
    assert SDIST is not None
    return subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--no-cache-dir", "-w", str(tmp_path / "wheels"), SDIST],
                          capture_output=True, text=True, env=env, timeout=600)


def _no_compiler_env(tmp_path: Path, **changes: Optional[str]) -> Dict[str, str]:
    """A PATH without gcc or cc, and a Cython that cannot be imported: the
    build must take the shipped _core.c and then find no compiler."""
    no_cython = tmp_path / "no-cython" / "Cython"
    no_cython.mkdir(parents=True)
    (no_cython / "__init__.py").write_text("raise ImportError('Cython hidden by the test')\n")
    empty_bin = tmp_path / "empty-bin"
    empty_bin.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CC", "CXX", "LDSHARED", "CFLAGS", "PYTHONPATH")}
    env.update(PATH=str(empty_bin), PYTHONPATH=str(no_cython.parent))
    env.pop("FASTLOG_NO_EXTENSIONS", None)
    for name, value in changes.items():
        if value is not None:
            env[name] = value
    return env


@needs_sdist
def test_without_a_compiler_the_build_stops_naming_the_way_out(tmp_path: Path) -> None:
    """Seen failing on a deliberately broken build: an sdist whose setup.py lets
    compiler failures through untranslated ended in the bare
    "error: [Errno 2] No such file or directory: 'gcc'" this replaces."""
    res = _pip_wheel(tmp_path, _no_compiler_env(tmp_path))
    output = res.stdout + res.stderr
    assert res.returncode != 0, output
    assert "fastlog: the C extension could not be built" in output, output
    assert "FASTLOG_NO_EXTENSIONS=1 pip install fastlog" in output, output
    assert "gcc" in output and "_core.c" in output, output  # it compiled the shipped C, not the .pyx
    assert "Traceback" not in output.split("fastlog: the C extension could not be built")[1], output


@needs_sdist
def test_without_a_compiler_fastlog_no_extensions_installs_pure_python(tmp_path: Path) -> None:
    res = _pip_wheel(tmp_path, _no_compiler_env(tmp_path, FASTLOG_NO_EXTENSIONS="1"))
    assert res.returncode == 0, res.stdout + res.stderr
    (wheel,) = (tmp_path / "wheels").glob("*.whl")
    assert wheel.name == f"fastlog-{fastlog.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = zf.read(f"fastlog-{fastlog.__version__}.dist-info/METADATA").decode()
    assert "fastlog/_pycore.py" in names and not [n for n in names if n.startswith("fastlog_ext/")]
    assert f"fastlog-{fastlog.__version__}.dist-info/licenses/LICENSE" in names
    assert "License-Expression: Apache-2.0" in metadata and "License-File: LICENSE" in metadata
    # Installed, it imports without a warning: the pure core was chosen, not fallen back to.
    # (This venv also has the compiled package; the probe hides its fastlog_ext, which a
    # venv holding only this wheel would not have.)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-cache-dir", "-q", "--target",
                    str(target), str(wheel)], check=True, capture_output=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTLOG_")}
    env["PYTHONPATH"] = str(target)
    probe = subprocess.run([sys.executable, "-c", _IMPORT_AND_REPORT.format(hidden=["fastlog_ext"])
                            + "print(fastlog.__file__)\n"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert probe.returncode == 0, probe.stderr
    report, path = probe.stdout.splitlines()
    assert json.loads(report) == {"implementation": "python", "warnings": []}
    assert Path(path).is_relative_to(target)
    shutil.rmtree(target)

"""Builds fastlog: the ``fastlog_ext._core`` extension (Cython binding + the C core).

Everything else (metadata, dependencies, version) is declared in pyproject.toml;
the version is read from VERSION, the C source list from fastlog_ext/sources.txt
(shared with CMakeLists.txt).

Where the binding's C code comes from:

* Cython installed (always so in an isolated build): ``_core.pyx`` is compiled
  to ``_core.c`` when the .pyx/.pxd is newer than the .c.
* No Cython: the ``_core.c`` that ``setup.py sdist`` generated and shipped.

``FASTLOG_NO_EXTENSIONS=1`` builds a pure-Python distribution: no extension and
no ``fastlog_ext`` package at all, which is how ``fastlog`` tells a deliberate
pure-Python install from a broken one.  Without it, a failed compile (no C
compiler, no Python headers) stops the build with a message naming that way out
rather than silently installing a core about 40x slower: pip does not show the
output of a build that succeeds, so a warning there would go unseen.
``FASTLOG_BUILD_EXTENSION=1`` builds the extension even when
``FASTLOG_NO_EXTENSIONS`` is set in the environment for other reasons.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.sdist import sdist
from setuptools.errors import CCompilerError, ExecError, PlatformError, SetupError

HERE = Path(__file__).resolve().parent
PYX = "fastlog_ext/_core.pyx"
GENERATED_C = "fastlog_ext/_core.c"
PURE_PACKAGES = ["fastlog", "fastlog.bench", "fastlog.engines", "fastlog.testing", "fastlog.integrations"]

NO_COMPILER_HELP = """
fastlog: the C extension could not be built:
    {reason}
Either install a C compiler and the Python headers (Debian/Ubuntu:
`apt-get install gcc python3-dev`) and run the install again, or install the
pure-Python core, which reads and writes the same files about 40x slower:
    FASTLOG_NO_EXTENSIONS=1 pip install fastlog
"""


def _env_flag(name: str) -> bool:
    # The same spelling rules as fastlog._impl, so one setting means one thing.
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def pure_python_build() -> bool:
    return _env_flag("FASTLOG_NO_EXTENSIONS") and not _env_flag("FASTLOG_BUILD_EXTENSION")


def c_sources() -> List[str]:
    names = []
    for line in (HERE / "fastlog_ext" / "sources.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.append(os.path.join("fastlog_ext", line))
    return names


def core_extension(binding_source: str) -> Extension:
    # Portable build: no -march=native; the CRC picks its instruction at run time.
    cflags = ["-O3", "-fno-strict-aliasing", "-Wall", "-Wno-unused-function"]
    if os.environ.get("FASTLOG_SANITIZE"):
        cflags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-O1", "-g"]
    return Extension(
        "fastlog_ext._core",
        sources=[binding_source] + c_sources(),
        include_dirs=["fastlog_ext"],
        depends=[str(p.relative_to(HERE)) for p in sorted((HERE / "fastlog_ext").glob("*.h"))]
        + ["fastlog_ext/_core.pxd"],
        extra_compile_args=cflags,
    )


def cythonize_core(force: bool = False) -> List[Extension]:
    from Cython.Build import cythonize

    return cythonize(
        [core_extension(PYX)],
        language_level=3,
        force=force,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True, "embedsignature": True},
    )


def extensions() -> List[Extension]:
    if pure_python_build():
        return []
    try:
        return cythonize_core()
    except ImportError:
        pass
    if (HERE / GENERATED_C).is_file():
        return [core_extension(GENERATED_C)]
    raise SetupError(
        f"neither Cython nor the generated {GENERATED_C} is available: install Cython>=3.0, "
        "or install the pure-Python core with FASTLOG_NO_EXTENSIONS=1"
    )


class BuildCore(build_ext):
    """build_ext whose compiler failures end in one message naming the ways out."""

    def run(self) -> None:
        try:
            super().run()
        except (CCompilerError, ExecError, PlatformError) as exc:
            raise SystemExit(NO_COMPILER_HELP.format(reason=exc)) from None


class SdistWithGeneratedC(sdist):
    """sdist that ships ``_core.c`` fresh, so the sdist builds where Cython is missing."""

    def run(self) -> None:
        try:
            cythonize_core()
        except ImportError:
            raise SetupError("making an sdist needs Cython>=3.0 (it ships the generated _core.c)") from None
        super().run()


setup(
    packages=PURE_PACKAGES if pure_python_build() else PURE_PACKAGES + ["fastlog_ext"],
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildCore, "sdist": SdistWithGeneratedC},
)

"""Builds the fastlog_ext._core extension (Cython + the C core).

The C source list lives in fastlog_ext/sources.txt and is shared with
CMakeLists.txt; the version lives in VERSION and is shared too.
"""
import os
import sys
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).resolve().parent


def c_sources():
    names = []
    for line in (HERE / "fastlog_ext" / "sources.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.append(os.path.join("fastlog_ext", line))
    return names


def extensions():
    if os.environ.get("FASTLOG_NO_EXTENSIONS") == "1" and os.environ.get("FASTLOG_BUILD_EXTENSION") != "1":
        return []
    import numpy
    from Cython.Build import cythonize

    # Portable build: no -march=native; the CRC picks its instruction at run time.
    cflags = ["-O3", "-fno-strict-aliasing", "-Wall", "-Wno-unused-function"]
    if os.environ.get("FASTLOG_SANITIZE"):
        cflags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-O1", "-g"]
    ext = Extension(
        "fastlog_ext._core",
        sources=["fastlog_ext/_core.pyx"] + c_sources(),
        include_dirs=["fastlog_ext", numpy.get_include()],
        depends=[str(p.relative_to(HERE)) for p in sorted((HERE / "fastlog_ext").glob("*.h"))]
        + ["fastlog_ext/_core.pxd"],
        extra_compile_args=cflags,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    return cythonize(
        [ext],
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True, "embedsignature": True},
    )


setup(ext_modules=extensions())

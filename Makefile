# fastlog: `make test` and `make bench` set up everything they need on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
EXTRAS := test,peers,chart,pysyncobj,profile,dev
CMAKE_BUILD := build/cmake

.PHONY: all venv build typecheck test test-c test-ext test-py bench bench-ci perf-gate profile fuzz asan fs-tools lazyfs clean

all: build

$(VENV)/.installed: pyproject.toml setup.py VERSION
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -U pip setuptools wheel "Cython>=3.0" "numpy>=1.24"
	$(PIP) install -q --no-build-isolation -e '.[$(EXTRAS)]'
	touch $@

venv: $(VENV)/.installed

# Rebuild the extension in place whenever a .pyx/.pxd/.c/.h changes.
build: venv
	$(PY) setup.py -q build_ext --inplace

# mypy --strict on the package (relaxations for internal modules in pyproject's [tool.mypy])
# and on a typed user of the public API; MYPYPATH finds the extension's stub from the source tree.
typecheck: venv
	MYPYPATH=. $(VENV)/bin/mypy --strict --cache-dir build/mypy-cache fastlog examples/typed_client.py

test-c:
	cmake -S . -B $(CMAKE_BUILD) -DCMAKE_BUILD_TYPE=Release > /dev/null
	cmake --build $(CMAKE_BUILD) -j2 > /dev/null
	ctest --test-dir $(CMAKE_BUILD) --output-on-failure

test-ext: build fs-tools
	FASTLOG_REQUIRE_EXTENSION=1 FASTLOG_REQUIRE_PEERS=1 $(PY) -m pytest -q -p no:cacheprovider --benchmark-disable

# The default core forced to pure Python: the tests that name their core ran
# against both cores in test-ext, so this run keeps the rest (tests/conftest.py).
test-py: build
	FASTLOG_NO_EXTENSIONS=1 FASTLOG_DEFAULT_CORE_ONLY=1 FASTLOG_REQUIRE_PEERS=1 \
	    $(PY) -m pytest -q -p no:cacheprovider --benchmark-disable -m "not slow"

# CI fuzzes the C decoder for a bounded time (FUZZ_SECONDS) as part of the suite.
FUZZ_SECONDS ?= 30

# The filesystem matrix (tests/fs/) formats XFS and btrfs images when it runs as root;
# this installs their mkfs tools when missing (and does nothing otherwise).
fs-tools:
	bash .ci/fs-tools.sh

# The power-cut tests (tests/powercut) run on LazyFS, a FUSE file system with its own page cache,
# built from ../shared/lazyfs (kept beside the clone) into build/lazyfs.  Without it, root or
# /dev/fuse those tests skip with one line, so this target never fails the build.
LAZYFS_SRC := ../shared/lazyfs

lazyfs:
	@mkdir -p build
	@if [ -x build/lazyfs/lazyfs ]; then :; \
	elif [ ! -f $(LAZYFS_SRC)/build.sh ]; then echo "lazyfs: $(LAZYFS_SRC) not found; the power-cut tests will skip"; \
	elif [ "$$(id -u)" != 0 ]; then echo "lazyfs: not root; the power-cut tests will skip"; \
	elif bash $(LAZYFS_SRC)/build.sh build/lazyfs > build/lazyfs-build.log 2>&1; then echo "lazyfs: built build/lazyfs/lazyfs"; \
	else echo "lazyfs: build failed (build/lazyfs-build.log); the power-cut tests will skip"; fi

# The checks that only compile and run C or mypy go two at a time (each keeps
# its output together); the test runs follow one after another.  fs-tools runs
# first, alone: it and fuzz may both need apt-get, which takes one at a time.
test: build fs-tools
	$(MAKE) --no-print-directory -j2 --output-sync=target typecheck test-c asan fuzz lazyfs
	$(MAKE) --no-print-directory test-ext test-py sdist-check perf-gate

# The release as a user gets it: build the sdist, install it (compiling the
# shipped C) in a fresh venv, and run the sdist's own tests against the installed
# package from outside any source tree (the unpacked copy loses its packages).
# tests/test_packaging.py also checks the archive and a build without a compiler.
# The long fault harnesses (power cuts, crash images, kills, full disks, the
# filesystem matrix) exercise the same code as in the tree and run there only.
SDIST_SKIP := --ignore=tests/powercut --ignore=tests/crash --ignore=tests/test_kill.py \
    --ignore=tests/test_full_disk.py --ignore=tests/fs
SDIST_CHECK := build/sdist-check
.PHONY: sdist-check
sdist-check: venv
	rm -rf $(SDIST_CHECK) && mkdir -p $(SDIST_CHECK)
	$(PY) -m build --sdist --outdir $(SDIST_CHECK)/dist . > $(SDIST_CHECK)/build.log 2>&1 \
	    || { cat $(SDIST_CHECK)/build.log; exit 1; }
	$(PYTHON) -m venv $(SDIST_CHECK)/venv
	$(SDIST_CHECK)/venv/bin/pip install -q -U pip "setuptools>=77.0.3"
	$(SDIST_CHECK)/venv/bin/pip install -q "$$(ls $(SDIST_CHECK)/dist/fastlog-*.tar.gz)[test]"
	mkdir -p $(SDIST_CHECK)/src
	tar -xzf $(SDIST_CHECK)/dist/fastlog-*.tar.gz -C $(SDIST_CHECK)/src --strip-components=1
	rm -rf $(SDIST_CHECK)/src/fastlog $(SDIST_CHECK)/src/fastlog_ext
	cd $(SDIST_CHECK)/src && FASTLOG_REQUIRE_EXTENSION=1 FASTLOG_SOURCE_TREE="$(CURDIR)" \
	    FASTLOG_SDIST="$$(ls $(CURDIR)/$(SDIST_CHECK)/dist/fastlog-*.tar.gz)" \
	    ../venv/bin/python -m pytest -q -p no:cacheprovider --benchmark-disable -m "not slow" $(SDIST_SKIP) tests

bench: build
	$(PY) -m fastlog bench --json bench-results/bench.json --chart bench-results/bench.png

bench-ci: build
	mkdir -p bench-results
	FASTLOG_REQUIRE_EXTENSION=1 $(PY) -m pytest bench -q -p no:cacheprovider --benchmark-only \
	    --benchmark-json=bench-results/benchmark.json

# Fails when fastlog's speed ratios (against the raw file and LMDB, same run) drop more than a
# third below those recorded in bench/gate.json; about half a minute (docs/benchmarks.md).
perf-gate: build
	mkdir -p bench-results
	FASTLOG_REQUIRE_EXTENSION=1 $(PY) -m fastlog.bench.gate bench/gate.json --json bench-results/perf-gate.json

profile: build
	mkdir -p profile
	$(VENV)/bin/py-spy record --native -o profile/append-read.svg -- $(PY) bench/profile_target.py

fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash .ci/fuzz.sh

asan:
	cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug -DFASTLOG_SANITIZE=ON > /dev/null
	cmake --build build/asan -j2 > /dev/null
	ctest --test-dir build/asan --output-on-failure

clean:
	rm -rf build fastlog_ext/_core.c fastlog_ext/*.so *.egg-info

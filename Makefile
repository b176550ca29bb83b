# fastlog: `make test` and `make bench` set up everything they need on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
EXTRAS := test,peers,chart,pysyncobj,profile,dev
CMAKE_BUILD := build/cmake

.PHONY: all venv build typecheck test test-c test-ext test-py bench bench-ci perf-gate profile fuzz asan fs-tools clean

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

test-py: build
	FASTLOG_NO_EXTENSIONS=1 FASTLOG_REQUIRE_PEERS=1 $(PY) -m pytest -q -p no:cacheprovider --benchmark-disable -m "not slow"

# CI fuzzes the C decoder for a bounded time (FUZZ_SECONDS) as part of the suite.
FUZZ_SECONDS ?= 30

test: build typecheck test-c asan fuzz test-ext test-py perf-gate

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

# mkfs tools for the full-disk tests on loop-mounted filesystems.
fs-tools:
	bash .ci/fs-tools.sh

fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash .ci/fuzz.sh

asan:
	cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug -DFASTLOG_SANITIZE=ON > /dev/null
	cmake --build build/asan -j2 > /dev/null
	ctest --test-dir build/asan --output-on-failure

clean:
	rm -rf build fastlog_ext/_core.c fastlog_ext/*.so *.egg-info

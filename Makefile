# fastlog: `make test` and `make bench` set up everything they need on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
EXTRAS := test,peers,chart,pysyncobj,profile,dev
CMAKE_BUILD := build/cmake

.PHONY: all venv build typecheck test test-c test-ext test-py fs-tools bench bench-ci profile fuzz asan clean

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

typecheck: venv
	$(VENV)/bin/mypy fastlog --ignore-missing-imports

test-c:
	cmake -S . -B $(CMAKE_BUILD) -DCMAKE_BUILD_TYPE=Release > /dev/null
	cmake --build $(CMAKE_BUILD) -j2 > /dev/null
	ctest --test-dir $(CMAKE_BUILD) --output-on-failure

test-ext: build
	FASTLOG_REQUIRE_EXTENSION=1 FASTLOG_REQUIRE_PEERS=1 $(PY) -m pytest -q -p no:cacheprovider --benchmark-disable

test-py: build
	FASTLOG_NO_EXTENSIONS=1 FASTLOG_REQUIRE_PEERS=1 $(PY) -m pytest -q -p no:cacheprovider --benchmark-disable -m "not slow"

# CI fuzzes the C decoder for a bounded time (FUZZ_SECONDS) as part of the suite.
FUZZ_SECONDS ?= 30

# The filesystem matrix (tests/fs/) formats XFS and btrfs images when it runs as root;
# this installs their mkfs tools when missing (and does nothing otherwise).
fs-tools:
	bash .ci/fs-tools.sh

test: build fs-tools test-c asan fuzz test-ext test-py

bench: build
	$(PY) -m fastlog bench --json bench-results/bench.json --chart bench-results/bench.png

bench-ci: build
	mkdir -p bench-results
	FASTLOG_REQUIRE_EXTENSION=1 $(PY) -m pytest bench -q -p no:cacheprovider --benchmark-only \
	    --benchmark-json=bench-results/benchmark.json

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

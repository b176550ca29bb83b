#!/usr/bin/env bash
# Fuzzes the C core with libFuzzer under AddressSanitizer and UBSan, for a
# bounded time: the record decoder and segment scanner (tests_c/fuzz_decode.c)
# and the frame-batch check and copy (tests_c/fuzz_frames.c).
#
#   FUZZ_SECONDS   how long to fuzz, split evenly between the targets (default 60)
#
# Installs clang and its libFuzzer runtime with apt-get only when they are
# missing.  Prints "fuzz: TARGET N runs, 0 crashes" per target; exits non-zero
# on a crash, with the crashing input kept under build/fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS="${FUZZ_SECONDS:-60}"
BUILD=build/fuzz

# True when clang can link a libFuzzer + ASan + UBSan binary.
have_libfuzzer() {
    command -v clang >/dev/null 2>&1 || return 1
    local tmp ok=1
    tmp="$(mktemp -d)"
    printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
        'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' >"$tmp/probe.c"
    if clang -fsanitize=fuzzer,address,undefined "$tmp/probe.c" -o "$tmp/probe" >/dev/null 2>&1; then
        ok=0
    fi
    rm -rf "$tmp"
    return "$ok"
}

apt_install() {
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "fuzz: need root or sudo to install $*" >&2; exit 2; }
        sudo="sudo"
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "$@" >/dev/null
}

if ! have_libfuzzer; then
    echo "fuzz: installing clang and its libFuzzer runtime with apt-get"
    if [ "$(id -u)" -ne 0 ]; then sudo apt-get update -q >/dev/null; else apt-get update -q >/dev/null; fi
    command -v clang >/dev/null 2>&1 || apt_install clang
    if ! have_libfuzzer; then
        # The runtime package is versioned like the compiler (clang 14 on Debian 12).
        major="$(clang --version | sed -n 's/.*clang version \([0-9][0-9]*\).*/\1/p' | head -n1)"
        apt_install "libclang-rt-${major:-14}-dev"
    fi
    have_libfuzzer || { echo "fuzz: clang cannot build libFuzzer targets" >&2; exit 2; }
fi

cmake -S . -B "$BUILD" -DCMAKE_C_COMPILER=clang -DFASTLOG_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j2 --target fuzz_decode fuzz_frames fuzz_corpus >/dev/null

# Seeds are regenerated from valid frames every run; the working corpora keep
# what earlier runs discovered.
rm -rf "$BUILD/seeds" "$BUILD/seeds-frames"
mkdir -p "$BUILD/seeds" "$BUILD/seeds-frames" "$BUILD/corpus" "$BUILD/corpus-frames" "$BUILD/artifacts"
"$BUILD/fuzz_corpus" "$BUILD/seeds" "$BUILD/seeds-frames" >/dev/null

share=$(( FUZZ_SECONDS / 2 ))
[ "$share" -ge 1 ] || share=1

# fuzz TARGET CORPUS SEEDS MAX_LEN: runs one target for its share of the time.
fuzz() {
    local target="$1" corpus="$2" seeds="$3" max_len="$4"
    local log="$BUILD/$target.log" rc runs artifact
    echo "fuzz: $target for ${share}s (log: $log)"
    set +e
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
        "$BUILD/$target" -max_total_time="$share" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$BUILD/artifacts/$target-" "$corpus" "$seeds" >"$log" 2>&1
    rc=$?
    set -e
    runs="$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n1)"
    if [ -z "$runs" ]; then
        runs="$(sed -n 's/^#\([0-9][0-9]*\).*/\1/p' "$log" | tail -n1)"
    fi
    if [ "$rc" -ne 0 ]; then
        tail -n 40 "$log" >&2
        artifact="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n1)"
        echo "fuzz: $target ${runs:-?} runs, 1 crash (exit $rc; input: ${artifact:-see $log})" >&2
        exit 1
    fi
    echo "fuzz: $target ${runs:-0} runs, 0 crashes"
}

fuzz fuzz_decode "$BUILD/corpus" "$BUILD/seeds" 16384
fuzz fuzz_frames "$BUILD/corpus-frames" "$BUILD/seeds-frames" 16384

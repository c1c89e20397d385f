#!/usr/bin/env bash
# libFuzzer runs of the parsers that read untrusted bytes (tests/fuzz/fuzz_*.c).
#
#   scripts/fuzz.sh              FUZZ_SECONDS (default 120) per target   (make fuzz)
#   scripts/fuzz.sh --smoke      15 s per target                         (make test)
#   scripts/fuzz.sh [--smoke] TARGET...   only these (e.g. fuzz_traceparent)
#
# Configures and builds its own clang build dir (OMS_FUZZ_BUILD_DIR, default
# build-fuzz; independent of OMS_BUILD_DIR, which holds the service binaries). Each
# target starts from its committed seeds in tests/fuzz/corpus/<name>/ (never written
# to) plus the inputs found by earlier runs in $OMS_FUZZ_BUILD_DIR/corpus/<name>/.
# A crash, leak, UB report or timeout fails the run; the reproducer is kept in
# $OMS_FUZZ_BUILD_DIR/artifacts/ and the command to replay it is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=${OMS_FUZZ_BUILD_DIR:-$ROOT/build-fuzz}
SECONDS_PER=${FUZZ_SECONDS:-120}
MAX_LEN=${FUZZ_MAX_LEN:-16384}
targets=()
for a in "$@"; do
    case "$a" in
    --smoke) SECONDS_PER=${FUZZ_SMOKE_SECONDS:-15} ;;
    -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $a" >&2; exit 2 ;;
    *) targets+=("${a#fuzz_}") ;;
    esac
done
case "$SECONDS_PER" in '' | *[!0-9]*) echo "fuzz.sh: FUZZ_SECONDS must be a number" >&2; exit 2 ;; esac

command -v clang >/dev/null || { echo "fuzz.sh: clang is missing (scripts/deps.sh installs clang libclang-rt-14-dev)" >&2; exit 1; }

child=
cleanup() {
    # Stop the fuzzer in flight (Ctrl-C, a failed build step, or set -e).
    if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
        kill -TERM "$child" 2>/dev/null || true
        wait "$child" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== fuzz: building libFuzzer targets in $BUILD"
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    CC=clang cmake -S . -B "$BUILD" -DOMS_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug >"$BUILD.configure.log" 2>&1 ||
        { cat "$BUILD.configure.log" >&2; exit 1; }
fi
cmake --build "$BUILD" --target fuzz_all -j"${JOBS:-2}" >"$BUILD/fuzz-build.log" 2>&1 ||
    { tail -n 40 "$BUILD/fuzz-build.log" >&2; exit 1; }

if [ ${#targets[@]} -eq 0 ]; then
    for d in tests/fuzz/corpus/*/; do targets+=("$(basename "$d")"); done
fi

export ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
mkdir -p "$BUILD/artifacts" "$BUILD/logs"
summary="$BUILD/fuzz-summary.txt"
printf '%-22s %8s %12s %10s %8s  %s\n' target seconds executions exec/s corpus result >"$summary"
# Inputs in a corpus directory (libFuzzer names them by hash; dot files are not inputs).
count_inputs() { find "$1" -mindepth 1 -maxdepth 1 ! -name '.*' | wc -l; }
failed=0
for t in "${targets[@]}"; do
    exe="$BUILD/fuzz_$t"
    seeds="tests/fuzz/corpus/$t"
    work="$BUILD/corpus/$t"
    log="$BUILD/logs/$t.log"
    [ -x "$exe" ] || { echo "fuzz.sh: no target fuzz_$t" >&2; failed=1; continue; }
    [ -d "$seeds" ] || { echo "fuzz.sh: no seed corpus $seeds" >&2; failed=1; continue; }
    mkdir -p "$work"
    echo "== fuzz_$t: ${SECONDS_PER}s from $(count_inputs "$seeds") seeds + $(count_inputs "$work") saved inputs"
    # New inputs go to the first directory (the build dir), so the committed seeds stay
    # as reviewed. -timeout: one input taking 10 s is a hang and fails the run.
    "$exe" "$work" "$seeds" -max_total_time="$SECONDS_PER" -max_len="$MAX_LEN" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$BUILD/artifacts/$t-" \
        >"$log" 2>&1 &
    child=$!
    rc=0
    wait "$child" || rc=$?
    child=
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    corpus=$(count_inputs "$work")
    if [ "$rc" -eq 0 ]; then
        result=ok
    else
        result="FAILED (exit $rc)"
        failed=1
        echo "---- fuzz_$t failed; end of $log:" >&2
        grep -E "ERROR|SUMMARY|runtime error|Test unit written|deadly signal" "$log" | head -n 20 >&2 || true
        tail -n 30 "$log" >&2
        for a in "$BUILD"/artifacts/"$t"-*; do
            [ -e "$a" ] && echo "reproducer kept: $a  (replay: $exe $a)" >&2
        done
    fi
    printf '%-22s %8s %12s %10s %8s  %s\n' "fuzz_$t" "$SECONDS_PER" "${runs:-?}" "${speed:-?}" \
        "$corpus" "$result" | tee -a "$summary"
done
echo "== fuzz summary ($summary)"
cat "$summary"
if [ "$failed" -ne 0 ]; then
    echo "== fuzz: FAILED" >&2
    exit 1
fi
echo "== fuzz: no crashes"

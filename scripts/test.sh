#!/usr/bin/env bash
# make test: lint (shellcheck + clang-format, scripts/lint.sh), unit tests (ctest,
# cmocka), then integration tests (pytest, real servers on private loopback ports in
# temporary directories).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMS_SOURCE_DIR=$PWD
export OMS_BUILD_DIR=${OMS_BUILD_DIR:-$PWD/build}
export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
export ASAN_OPTIONS="detect_leaks=1:strict_string_checks=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
# First and fast: a shell warning or a formatting slip fails the run in seconds.
scripts/lint.sh
echo "== unit tests ($OMS_BUILD_DIR)"
# --no-tests=error: a build without its unit tests is a failure, not a pass.
(cd "$OMS_BUILD_DIR" && ctest --no-tests=error --output-on-failure -j2)
echo "== integration tests"
scripts/test-integration.sh "$@"
# The same suite again with every service on PostgreSQL (one private server for the
# pass, a database per service per test): both storage drivers stay covered.
echo "== integration tests on PostgreSQL"
OMS_TEST_DB=postgres scripts/test-integration.sh "$@"
# Further suites join here as they exist (each is a separate script so it can be run alone).
if [ -x scripts/test-browser.sh ]; then echo "== browser tests"; scripts/test-browser.sh; fi
if [ -x scripts/fuzz.sh ]; then echo "== fuzz smoke"; scripts/fuzz.sh --smoke; fi
if [ -x scripts/chaos.sh ]; then echo "== short fault run"; scripts/chaos.sh --short; fi
if [ -x bench/run.sh ]; then echo "== benchmark smoke (figures only, never fails on a number)"; QUICK=1 bench/run.sh; fi
echo "== all test suites passed"

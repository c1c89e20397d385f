#!/usr/bin/env bash
# Leak check: every service under valgrind memcheck over a short workload,
# then SIGTERM; fails on a definite leak or any memory error (tests/chaos/leaks.py).
# Takes a few minutes (memcheck is ~30x slower), so it is not part of `make test`.
#
#   OMS_BUILD_DIR=$PWD/build scripts/valgrind.sh    # a non-ASan build (valgrind and ASan exclude each other)
set -euo pipefail
cd "$(dirname "$0")/.."
export OMS_SOURCE_DIR=$PWD
export OMS_BUILD_DIR=${OMS_BUILD_DIR:-$PWD/build}
command -v valgrind >/dev/null || { echo "valgrind.sh: valgrind is missing (scripts/deps.sh)" >&2; exit 1; }
if grep -q "OMS_SANITIZE:BOOL=ON" "$OMS_BUILD_DIR/CMakeCache.txt" 2>/dev/null; then
    echo "valgrind.sh: $OMS_BUILD_DIR is an ASan build; use a plain one" >&2
    exit 2
fi
driver=
# cleanup runs from the EXIT trap; shellcheck 0.9 takes it for dead code because the
# script ends in `exit` (a known false positive of SC2317 with trap handlers).
# shellcheck disable=SC2317
cleanup() {
    if [ -n "$driver" ] && kill -0 "$driver" 2>/dev/null; then
        kill -TERM "$driver" 2>/dev/null || true # it stops its services and broker
        wait "$driver" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
/usr/bin/python3 tests/chaos/leaks.py &
driver=$!
rc=0
wait "$driver" || rc=$?
driver=
exit "$rc"

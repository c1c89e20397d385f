#!/usr/bin/env bash
# Integration tests only (pytest with Debian's python3: grpcio lives there).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMS_SOURCE_DIR=$PWD
export OMS_BUILD_DIR=${OMS_BUILD_DIR:-$PWD/build}
export LSAN_OPTIONS=${LSAN_OPTIONS:-"suppressions=$PWD/tests/lsan.supp:print_suppressions=0"}
exec /usr/bin/python3 -m pytest -p no:cacheprovider -q -ra tests/integration "$@"

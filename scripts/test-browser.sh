#!/usr/bin/env bash
# Browser tests only (README "Web pages"): pytest starts a private shop (RabbitMQ + the five
# services) and runs each scenario in tests/browser/*.mjs with npm playwright-core
# driving Debian's chromium headless (never a downloaded browser). Screenshots go to
# $OMS_BROWSER_SHOTS (default $OMS_BUILD_DIR/browser-shots).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMS_SOURCE_DIR=$PWD
export OMS_BUILD_DIR=${OMS_BUILD_DIR:-$PWD/build}
export OMS_BROWSER_SHOTS=${OMS_BROWSER_SHOTS:-$OMS_BUILD_DIR/browser-shots}
export LSAN_OPTIONS=${LSAN_OPTIONS:-"suppressions=$PWD/tests/lsan.supp:print_suppressions=0"}
export OMS_CHROMIUM=${OMS_CHROMIUM:-/usr/bin/chromium}

for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "test-browser: '$tool' not found (make deps installs nodejs)" >&2; exit 1; }
done
[ -x "$OMS_CHROMIUM" ] || { echo "test-browser: $OMS_CHROMIUM not found (make deps installs Debian's chromium)" >&2; exit 1; }
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "test-browser: npm ci (playwright-core; no browser is downloaded)"
  # playwright-core has no install script; the variable is a second guard.
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
fi
mkdir -p "$OMS_BROWSER_SHOTS"
echo "test-browser: screenshots in $OMS_BROWSER_SHOTS"
exec /usr/bin/python3 -m pytest -p no:cacheprovider -q -ra tests/browser "$@"

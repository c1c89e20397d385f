#!/usr/bin/env bash
# Installs the Debian packages OMS needs (README "Dependencies", plus test, lint and dev
# tools) when missing: as root directly, through sudo when that works without a
# password, or else prints the exact command and fails.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config clang-format shellcheck entr
  libgrpc-dev libprotobuf-c-dev protobuf-c-compiler
  rabbitmq-server librabbitmq-dev amqp-tools
  libsqlite3-dev sqlite3 libpq-dev postgresql etcd-server
  libmicrohttpd-dev libcurl4-openssl-dev libjansson-dev libssl-dev
  libcmocka-dev wrk prometheus libcjose-dev libargon2-dev
  clang libclang-rt-14-dev valgrind
  python3 python3-grpcio python3-grpc-tools python3-pytest python3-yaml python3-jwt python3-cryptography
  chromium nodejs
)
# Browser tests (tests/browser): npm installs playwright-core; Debian's npm package only
# when no npm came with nodejs (NodeSource's nodejs bundles npm and conflicts with it).
command -v npm >/dev/null 2>&1 || PKGS+=(npm)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
echo "deps: installing ${missing[*]}" >&2
if [ "$(id -u)" -eq 0 ]; then
  bash -c "$cmd"
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  sudo bash -c "$cmd"
else
  echo "deps: missing Debian packages; run as root:" >&2
  echo "  $cmd" >&2
  exit 1
fi

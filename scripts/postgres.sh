#!/usr/bin/env bash
# A private PostgreSQL 15 server in a directory, for tests and `make run INSTANCES=2`.
#
#   scripts/postgres.sh start DIR PORT   # initdb on first use, start, wait until ready
#   scripts/postgres.sh stop DIR         # fast shutdown (no-op when not running)
#   scripts/postgres.sh createdb DIR PORT NAME   # CREATE DATABASE unless it exists
#
# The server refuses to run as root, so as root it runs as the `postgres` system user
# (runuser); otherwise as the calling user. It listens on 127.0.0.1:PORT and puts its
# unix socket in DIR/sock. Every parent of DIR must be traversable by that user: a
# checkout under a 0700 home is not, so callers pass a directory under /tmp or var/
# of a world-traversable tree. Authentication is `trust` on loopback only (a test and
# development server; never expose it).
set -euo pipefail

BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
cmd=${1:-}
dir=${2:-}
if [ -z "$cmd" ] || [ -z "$dir" ]; then
  echo "usage: $0 start|stop|createdb DIR [PORT] [NAME]" >&2
  exit 2
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

if [ "$(id -u)" -eq 0 ]; then
  AS=(runuser -u postgres --)
  owner=postgres
else
  AS=()
  owner=$(id -un)
fi

pg_running() {
  "${AS[@]}" "$BIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1
}

case "$cmd" in
start)
  port=${3:?PORT required}
  mkdir -p "$dir/sock" "$dir/log" "$dir/data"
  chown "$owner" "$dir" "$dir/sock" "$dir/log" "$dir/data"
  chmod 700 "$dir/data"
  # The server user must be able to reach DIR; say so instead of letting initdb fail
  # with a bare "permission denied".
  if ! "${AS[@]}" test -x "$dir"; then
    echo "postgres.sh: $dir is not traversable by $owner (check the parents' modes)" >&2
    exit 1
  fi
  if [ ! -s "$dir/data/PG_VERSION" ]; then
    "${AS[@]}" "$BIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
      --no-sync >"$dir/log/initdb.log" 2>&1 || { cat "$dir/log/initdb.log" >&2; exit 1; }
  fi
  if pg_running; then
    exit 0
  fi
  # max_connections: every service instance opens a pool of 8; tests run several shops
  # at once. fsync off only when asked (tests): durability is not what they check.
  opts="-c listen_addresses=127.0.0.1 -p $port -k $dir/sock -c max_connections=${PG_MAX_CONNECTIONS:-400}"
  opts+=" -c shared_buffers=64MB"
  if [ -n "${PG_NO_FSYNC:-}" ]; then
    opts+=" -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  fi
  "${AS[@]}" "$BIN/pg_ctl" -D "$dir/data" -l "$dir/log/server.log" -w -t 30 -o "$opts" start \
    >/dev/null || { tail -n 30 "$dir/log/server.log" >&2; exit 1; }
  ;;
stop)
  if [ -s "$dir/data/PG_VERSION" ] && pg_running; then
    "${AS[@]}" "$BIN/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null
  fi
  ;;
createdb)
  port=${3:?PORT required}
  name=${4:?NAME required}
  case "$name" in *[!A-Za-z0-9_]*) echo "postgres.sh: bad database name $name" >&2; exit 2 ;; esac
  exists=$(psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = '$name'")
  if [ "$exists" != 1 ]; then
    psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -qc "CREATE DATABASE $name" >/dev/null
  fi
  ;;
*)
  echo "usage: $0 start|stop|createdb DIR [PORT] [NAME]" >&2
  exit 2
  ;;
esac

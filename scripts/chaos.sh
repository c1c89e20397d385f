#!/usr/bin/env bash
# Fault run (make chaos): a steady stream of orders paid through the local checkout while
# every service is kill -9'd once (and restarted), RabbitMQ is restarted and poisoned
# messages are published; then the invariants are checked (tests/chaos/chaos.py says
# which). Non-zero exit on any violation.
#
#   scripts/chaos.sh            ~150 s of load                         (make chaos)
#   scripts/chaos.sh --short    ~40 s of load, about a minute in all   (make test; SQLite only)
#   scripts/chaos.sh --cluster  the broker is a 3-node cluster with quorum queues and a
#                               node is kill -9'd instead of a broker restart (make chaos
#                               runs it after the single-node runs; CHAOS_CLUSTER=0 skips)
#   extra arguments go to chaos.py (--seed N, --rate R, --seconds S, --cluster)
#
# Uses the service binaries in OMS_BUILD_DIR (default build/). When scripts/postgres.sh
# exists, a second run puts every service on PostgreSQL and restarts the database too
# (not in --short unless CHAOS_PG=1); otherwise that part is skipped with a note.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMS_SOURCE_DIR=$PWD
export OMS_BUILD_DIR=${OMS_BUILD_DIR:-$PWD/build}
PY=/usr/bin/python3 # Debian's: grpcio and friends live there

for s in gateway orders stock payments kitchen; do
    [ -x "$OMS_BUILD_DIR/oms-$s" ] || { echo "chaos.sh: $OMS_BUILD_DIR/oms-$s missing (make build)" >&2; exit 1; }
done

dir=$(mktemp -d /tmp/oms-chaos-XXXXXX)
chmod 755 "$dir" # the PostgreSQL server user must be able to traverse it
driver=
cleanup() {
    local rc=$?
    if [ -n "$driver" ] && kill -0 "$driver" 2>/dev/null; then
        # The driver stops its services and the broker when terminated.
        kill -TERM "$driver" 2>/dev/null || true
        for _ in $(seq 1 300); do kill -0 "$driver" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$driver" 2>/dev/null || true
    fi
    # Whatever happened to the driver: the broker node (and a database) must not outlive us.
    for d in "$dir"/*/rabbitmq "$dir"/rabbitmq; do
        if [ -f "$d/env" ]; then scripts/rabbitmq.sh stop "$d" >/dev/null 2>&1 || true; fi
    done
    for d in "$dir"/*/cluster*; do
        if [ -d "$d/node1" ]; then scripts/rabbitmq.sh cluster-stop "$d" >/dev/null 2>&1 || true; fi
    done
    for d in "$dir"/oms-pg-*/pg; do
        if [ -d "$d" ]; then scripts/postgres.sh stop "$d" >/dev/null 2>&1 || true; fi
    done
    if [ "$rc" -eq 0 ]; then rm -rf "$dir"; else echo "chaos.sh: state kept in $dir" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

run() {
    TMPDIR=${TMPDIR:-/tmp} "$PY" tests/chaos/chaos.py "$@" &
    driver=$!
    local rc=0
    wait "$driver" || rc=$?
    driver=
    return "$rc"
}

short=0
cluster=0
for a in "$@"; do
    [ "$a" = --short ] && short=1
    [ "$a" = --cluster ] && cluster=1
done
if [ "$cluster" -eq 1 ]; then
    echo "== chaos (3-node RabbitMQ cluster, quorum queues, SQLite): binaries from $OMS_BUILD_DIR"
    run --dir "$dir/cluster" "$@"
    exit 0
fi

echo "== chaos (SQLite): binaries from $OMS_BUILD_DIR"
run --dir "$dir/sqlite" "$@"
# The short run (make test) keeps to SQLite, the default deployment, to stay near a
# minute; CHAOS_PG=1 adds the PostgreSQL run to it, CHAOS_PG=0 drops it from make chaos.
if [ ! -x scripts/postgres.sh ]; then
    echo "== chaos (PostgreSQL): skipped: scripts/postgres.sh is not there yet"
elif [ "${CHAOS_PG:-$((1 - short))}" = 0 ]; then
    echo "== chaos (PostgreSQL): skipped (--short runs it with CHAOS_PG=1; make chaos runs it)"
else
    echo "== chaos (PostgreSQL): the database restarts too"
    # TMPDIR: the harness makes the server's directory there, where cleanup finds it.
    TMPDIR=$dir run --dir "$dir/pgmode" --postgres "$@"
fi

# make chaos (not --short): the cluster variant too.
if [ "$short" -eq 0 ] && [ "${CHAOS_CLUSTER:-1}" != 0 ]; then
    echo "== chaos (3-node RabbitMQ cluster, quorum queues): a node is killed"
    run --dir "$dir/cluster" --cluster "$@"
fi

#!/usr/bin/env bash
# A private single-node etcd (Debian etcd-server 3.4) in a directory, for tests and
# `make run INSTANCES=2`.
#
#   scripts/etcd.sh start DIR PORT   # client URL http://127.0.0.1:PORT, peer PORT+1
#   scripts/etcd.sh stop DIR         # stops the node started in DIR (no-op otherwise)
#
# Data lives in DIR/data, the log in DIR/etcd.log, the PID in DIR/etcd.pid. Listens on
# loopback only. Ready when GET /health says {"health":"true"} (about a second).
set -euo pipefail

cmd=${1:-}
dir=${2:-}
if [ -z "$cmd" ] || [ -z "$dir" ]; then
  echo "usage: $0 start DIR PORT | stop DIR" >&2
  exit 2
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
pidfile=$dir/etcd.pid

running() {
  [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

case "$cmd" in
start)
  port=${3:?PORT required}
  peer=${ETCD_PEER_PORT:-$((port + 1))}
  if running; then
    exit 0
  fi
  client=http://127.0.0.1:$port
  # setsid: the node outlives neither this script's terminal signals nor its caller's
  # process group games; stop kills it by PID. The log goes to stderr, appended to
  # DIR/etcd.log together with anything else the process prints (a panic).
  ETCD_UNSUPPORTED_ARCH=${ETCD_UNSUPPORTED_ARCH:-} setsid etcd --name oms \
    --data-dir "$dir/data" \
    --listen-client-urls "$client" --advertise-client-urls "$client" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "oms=http://127.0.0.1:$peer" --initial-cluster-state new \
    --log-outputs stderr --logger zap \
    >>"$dir/etcd.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  for _ in $(seq 1 150); do
    if curl -sf --max-time 1 "$client/health" 2>/dev/null | grep -q '"health":"true"'; then
      exit 0
    fi
    if ! running; then
      echo "etcd.sh: etcd exited; see $dir/etcd.log" >&2
      tail -n 20 "$dir/etcd.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "etcd.sh: etcd not healthy after 15 s; see $dir/etcd.log" >&2
  kill "$(cat "$pidfile")" 2>/dev/null || true
  exit 1
  ;;
stop)
  if running; then
    pid=$(cat "$pidfile")
    kill "$pid"
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$pidfile"
  ;;
*)
  echo "usage: $0 start DIR PORT | stop DIR" >&2
  exit 2
  ;;
esac

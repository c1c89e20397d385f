#!/usr/bin/env bash
# make run: RabbitMQ (project-local unless one already answers) + the five services,
# state under var/, logs under var/log/. Ctrl-C stops everything cleanly. The stack
# itself (settings, start and stop functions) is in scripts/stack.sh, shared with
# scripts/dev.sh (make dev).
set -euo pipefail
# shellcheck source=scripts/stack.sh
source "$(dirname "$0")/stack.sh"

trap 'stop_all; exit 0' INT TERM
trap 'stop_all' EXIT

start_rabbitmq
start_tracestore
start_services
print_urls

# Wait until a service dies or Ctrl-C. `sleep & wait` (not a bare sleep) lets the
# INT trap run at once: Ctrl-C reaches the services too, and without it this loop
# could see them gone first and report a failure.
while :; do
  for pid in "${pids[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      # Ctrl-C reaches the services too, and one may be gone before this shell runs
      # its INT trap: a pending trap runs during this wait (a clean stop, exit 0).
      sleep 0.5 &
      wait $! || true
      echo "a service (pid $pid) exited; see var/log/. Stopping the rest." >&2
      exit 1
    fi
  done
  sleep 1 &
  wait $! || true
done

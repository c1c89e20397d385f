#!/usr/bin/env bash
# make bench: the whole system on private loopback ports with a private RabbitMQ node,
# measured in one run (bench/bench.py): ceilings of the parts, create-order throughput
# and latency, lifecycle latency, resource use, ratios. Prints a table and writes
# bench/results/<timestamp>.json and bench/results/latest.json.
#
#   QUICK=1 bench/run.sh        a few seconds, same code path (runs in `make test`)
#   OMS_BUILD_DIR=DIR           binaries to measure (default build)
#   BENCH_SECONDS=N             length of each create-order load (default 15)
#   BENCH_LIFECYCLE_N=N         orders in the lifecycle latency run (default 200)
#   BENCH_KEEP=1                keep the temporary directory with the service logs
#
# Never fails on a number; fails only when the system cannot be started. Everything
# it starts is stopped again, also on failure or Ctrl-C (bench.py stops the services
# and the broker in a finally block; each load tool runs with a timeout).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMS_SOURCE_DIR=$PWD
export OMS_BUILD_DIR=${OMS_BUILD_DIR:-$PWD/build}
exec /usr/bin/python3 bench/bench.py "$@"

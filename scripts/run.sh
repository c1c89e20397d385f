#!/usr/bin/env bash
# make run: RabbitMQ (project-local unless one already answers) + the five services,
# state under var/, logs under var/log/. Ctrl-C stops everything cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=${OMS_BUILD_DIR:-$ROOT/build}
VAR=$ROOT/var
mkdir -p "$VAR/log"

export RABBITMQ_HOST=${RABBITMQ_HOST:-127.0.0.1}
export RABBITMQ_PORT=${RABBITMQ_PORT:-5672}
RABBITMQ_MGMT_PORT=${RABBITMQ_MGMT_PORT:-15672}
export LOG_FORMAT=${LOG_FORMAT:-json}
export PUBLIC_URL=${PUBLIC_URL:-http://localhost:8080}
export GATEWAY_HTTP_ADDR=${GATEWAY_HTTP_ADDR:-$PUBLIC_URL}
export PAYMENTS_PUBLIC_URL=${PAYMENTS_PUBLIC_URL:-http://localhost:8081}
export STRIPE_WEBHOOK_SECRET=${STRIPE_WEBHOOK_SECRET:-whsec_local_$(hostname | md5sum | cut -c1-16)}
export PUBLIC_DIR=${PUBLIC_DIR:-$ROOT/gateway/public}

pids=()
started_rabbit=0
stopping=0

stop_all() {
  [ $stopping -eq 1 ] && return
  stopping=1
  echo
  echo "stopping..."
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ $started_rabbit -eq 1 ]; then scripts/rabbitmq.sh stop "$VAR/rabbitmq" || true; fi
  echo "stopped."
}
trap 'stop_all; exit 0' INT TERM
trap 'stop_all' EXIT

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

if port_open "$RABBITMQ_HOST" "$RABBITMQ_PORT"; then
  echo "using the RabbitMQ already answering on $RABBITMQ_HOST:$RABBITMQ_PORT"
else
  echo "starting RabbitMQ on 127.0.0.1:$RABBITMQ_PORT (state in var/rabbitmq, ~6 s)..."
  scripts/rabbitmq.sh start "$VAR/rabbitmq" "$RABBITMQ_PORT" "$RABBITMQ_MGMT_PORT"
  started_rabbit=1
fi

start() {
  local name=$1
  shift
  if [ ! -x "$BUILD/oms-$name" ]; then echo "  (oms-$name not built yet; skipped)"; return; fi
  env "$@" DATABASE_URL="${DATABASE_URL:-$VAR/$name.db}" "$BUILD/oms-$name" >>"$VAR/log/$name.log" 2>&1 &
  pids+=($!)
  echo "  $name (pid $!) -> var/log/$name.log"
}

wait_http() { # url seconds
  local deadline=$((SECONDS + $2))
  until curl -fsS -o /dev/null "$1" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then echo "  $1 did not come up; see var/log/" >&2; return 1; fi
    sleep 0.2
  done
}

echo "starting services..."
start stock
start orders
start payments
start kitchen
start gateway
wait_http http://127.0.0.1:8080/healthz 30

cat <<MSG

OMS is running:
  shop (pages + API)     $PUBLIC_URL/
  API example            curl -s $PUBLIC_URL/api/products
  local checkout         $PAYMENTS_PUBLIC_URL/ (reached from an order's payment link)
  RabbitMQ management    http://127.0.0.1:$RABBITMQ_MGMT_PORT/ (guest/guest)
  metrics                $PUBLIC_URL/metrics, 127.0.0.1:9000/metrics (orders), :9002 (stock), :9003 (kitchen)
  logs                   var/log/*.log
Press Ctrl-C to stop.
MSG

# Wait until a service dies or Ctrl-C.
while :; do
  for pid in "${pids[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "a service (pid $pid) exited; see var/log/. Stopping the rest." >&2
      exit 1
    fi
  done
  sleep 1
done

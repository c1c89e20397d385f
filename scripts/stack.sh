# shellcheck shell=bash
# The local stack that `make run` (scripts/run.sh) and `make dev` (scripts/dev.sh) both
# start: RabbitMQ (project-local unless one already answers), the trace store and the
# five services, state under var/, logs under var/log/. Sourced, never run: sourcing
# sets the environment and defines the functions below; it starts nothing.
#
#   start_rabbitmq      RabbitMQ under var/rabbitmq unless one answers already
#   start_tracestore    oms-tracestore, unless the user points traces elsewhere
#   start_services      the five services (INSTANCES=N: N of each), waits for the gateway
#   print_urls          the "OMS is running" banner
#   stop_service NAME   stops the one instance of NAME (INSTANCES=1) and forgets its PID
#   stop_all            stops everything started here, newest first (trap handler)
#
# Every process started here is a child of the sourcing shell; its PID is in pids (and
# in svc_pid[NAME] for a single-instance service), and the stop functions use only
# those PIDs.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  echo "$0: sourced by scripts/run.sh and scripts/dev.sh, not run directly" >&2
  exit 2
fi

cd "$(dirname "${BASH_SOURCE[0]}")/.." || return 1
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

# The five services in start order (stop order is the reverse).
OMS_SERVICES=(stock orders payments kitchen gateway)
pids=()
declare -A svc_pid=()
started_rabbit=0
started_cluster=0
# RABBITMQ_NODES=N (N >= 2): a project-local N-node RabbitMQ cluster under
# var/rabbitmq-cluster, the services connected to all nodes (RABBITMQ_ADDRS) with
# quorum (replicated) queues unless RABBITMQ_QUEUE_TYPE says otherwise.
RABBITMQ_NODES=${RABBITMQ_NODES:-1}
started_pg=0
started_etcd=0
stopping=0
# INSTANCES=N (N >= 2): N of each of orders, stock, payments and kitchen sharing a
# project-local PostgreSQL and finding each other through a project-local etcd.
INSTANCES=${INSTANCES:-1}

stop_all() {
  [ "$stopping" -eq 1 ] && return
  stopping=1
  echo
  echo "stopping..."
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$started_rabbit" -eq 1 ]; then scripts/rabbitmq.sh stop "$VAR/rabbitmq" || true; fi
  if [ "$started_cluster" -eq 1 ]; then scripts/rabbitmq.sh cluster-stop "$VAR/rabbitmq-cluster" || true; fi
  if [ "$started_pg" -eq 1 ]; then scripts/postgres.sh stop "$PG_DIR" || true; fi
  if [ "$started_etcd" -eq 1 ]; then scripts/etcd.sh stop "$VAR/etcd" || true; fi
  echo "stopped."
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

start_rabbitmq() {
  if [ "$RABBITMQ_NODES" -gt 1 ]; then
    start_rabbitmq_cluster
    return
  fi
  if port_open "$RABBITMQ_HOST" "$RABBITMQ_PORT"; then
    echo "using the RabbitMQ already answering on $RABBITMQ_HOST:$RABBITMQ_PORT"
  else
    echo "starting RabbitMQ on 127.0.0.1:$RABBITMQ_PORT (state in var/rabbitmq, ~6 s)..."
    scripts/rabbitmq.sh start "$VAR/rabbitmq" "$RABBITMQ_PORT" "$RABBITMQ_MGMT_PORT"
    started_rabbit=1
  fi
}

start_rabbitmq_cluster() {
  local out
  if port_open 127.0.0.1 "$RABBITMQ_PORT"; then
    echo "RABBITMQ_NODES=$RABBITMQ_NODES needs 127.0.0.1:$RABBITMQ_PORT free (a broker answers there)" >&2
    exit 1
  fi
  echo "starting a $RABBITMQ_NODES-node RabbitMQ cluster from 127.0.0.1:$RABBITMQ_PORT (state in var/rabbitmq-cluster, ~20 s)..."
  started_cluster=1
  out=$(NODES=$RABBITMQ_NODES scripts/rabbitmq.sh cluster-start "$VAR/rabbitmq-cluster" "$RABBITMQ_PORT" "$RABBITMQ_MGMT_PORT" | tail -n 1)
  case "$out" in
    RABBITMQ_ADDRS=*) export RABBITMQ_ADDRS=${out#RABBITMQ_ADDRS=} ;;
    *) echo "the cluster did not report its addresses: $out" >&2; exit 1 ;;
  esac
  export RABBITMQ_QUEUE_TYPE=${RABBITMQ_QUEUE_TYPE:-quorum}
  echo "cluster up: RABBITMQ_ADDRS=$RABBITMQ_ADDRS, $RABBITMQ_QUEUE_TYPE queues"
}

start() {
  local name=$1
  shift
  if [ ! -x "$BUILD/oms-$name" ]; then echo "  (oms-$name not built yet; skipped)"; return; fi
  env "$@" DATABASE_URL="${DATABASE_URL:-$VAR/$name.db}" "$BUILD/oms-$name" >>"$VAR/log/$name.log" 2>&1 &
  pids+=($!)
  svc_pid[$name]=$!
  echo "  $name (pid $!) -> var/log/$name.log"
}

# SIGTERM to the instance of NAME that start began, then up to 10 s for it to exit
# (SIGKILL after that); its PID leaves pids and svc_pid. A no-op when none runs.
stop_service() {
  local name=$1 pid=${svc_pid[$1]:-} i
  if [ -z "$pid" ]; then return 0; fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "svc_pid[$name]"
  for i in "${!pids[@]}"; do
    if [ "${pids[i]}" = "$pid" ]; then unset "pids[i]"; fi
  done
  pids=("${pids[@]}")
}

wait_http() { # url seconds
  local deadline=$((SECONDS + $2))
  until curl -fsS -o /dev/null "$1" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then echo "  $1 did not come up; see var/log/" >&2; return 1; fi
    sleep 0.2
  done
}

# Traces: a local store (oms-tracestore, OTLP/HTTP on :4318) unless the user points
# the services at a collector of their own (Jaeger etc.), which then works unchanged.
start_tracestore() {
  TRACE_URL=""
  if [ -z "${OTEL_EXPORTER_OTLP_ENDPOINT:-}${OTEL_EXPORTER_OTLP_TRACES_ENDPOINT:-}${JAEGER_ADDR:-}" ] &&
    [ -x "$BUILD/oms-tracestore" ]; then
    export TRACESTORE_ADDR=${TRACESTORE_ADDR:-127.0.0.1:4318}
    TRACESTORE_DB=${TRACESTORE_DB:-$VAR/traces.db} "$BUILD/oms-tracestore" >>"$VAR/log/tracestore.log" 2>&1 &
    pids+=($!)
    echo "  tracestore (pid $!) -> var/log/tracestore.log"
    export OTEL_EXPORTER_OTLP_ENDPOINT=http://$TRACESTORE_ADDR
    TRACE_URL=http://$TRACESTORE_ADDR
    wait_http "$TRACE_URL/healthz" 10
  fi
  if [ -n "$TRACE_URL" ]; then
    TRACE_MSG="$TRACE_URL/trace.html?order_id=ORDER_ID  or  $BUILD/oms-trace ORDER_ID"
  else
    TRACE_MSG="exported to ${OTEL_EXPORTER_OTLP_TRACES_ENDPOINT:-${OTEL_EXPORTER_OTLP_ENDPOINT:-${JAEGER_ADDR:-nowhere (oms-tracestore not built)}}}"
  fi
}

# Several instances: PostgreSQL (one database per service, shared by its instances)
# and etcd (DISCOVERY=etcd), both under var/ unless they already answer. Instance k
# (1-based) of a service listens on its usual ports + 10*(k-1): orders 2000/9000,
# 2010/9010, ...; stock 2002/9002; payments 2001/8081; kitchen 2003/9003.
start_scaled() {
  PG_PORT=${PG_PORT:-5433}
  PG_DIR=${PG_DIR:-$VAR/postgres}
  if ! port_open 127.0.0.1 "$PG_PORT"; then
    echo "starting PostgreSQL on 127.0.0.1:$PG_PORT (state in ${PG_DIR#"$ROOT"/})..."
    scripts/postgres.sh start "$PG_DIR" "$PG_PORT"
    started_pg=1
  fi
  ETCD_PORT=${ETCD_PORT:-2379}
  if ! port_open 127.0.0.1 "$ETCD_PORT"; then
    echo "starting etcd on 127.0.0.1:$ETCD_PORT (state in var/etcd)..."
    scripts/etcd.sh start "$VAR/etcd" "$ETCD_PORT"
    started_etcd=1
  fi
  export DISCOVERY=etcd ETCD_ENDPOINTS=${ETCD_ENDPOINTS:-http://127.0.0.1:$ETCD_PORT}
  local name k off base admin
  for name in stock orders payments kitchen; do
    scripts/postgres.sh createdb "$PG_DIR" "$PG_PORT" "oms_$name"
    case $name in
    orders) base=2000 admin=9000 ;; stock) base=2002 admin=9002 ;;
    payments) base=2001 admin=8081 ;; kitchen) base=2003 admin=9003 ;;
    esac
    for ((k = 1; k <= INSTANCES; k++)); do
      off=$((10 * (k - 1)))
      if [ ! -x "$BUILD/oms-$name" ]; then echo "  (oms-$name not built yet; skipped)"; break; fi
      local adminvar=ADMIN_ADDR
      [ "$name" = payments ] && adminvar=PAYMENTS_HTTP_ADDR
      env GRPC_ADDR=127.0.0.1:$((base + off)) "$adminvar=127.0.0.1:$((admin + off))" \
        DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/oms_$name" \
        "$BUILD/oms-$name" >>"$VAR/log/$name-$k.log" 2>&1 &
      pids+=($!)
      echo "  $name #$k (pid $!, gRPC :$((base + off))) -> var/log/$name-$k.log"
    done
  done
  start gateway
}

# The first staff account: when the gateway's database has none, "admin" with
# OMS_ADMIN_PASSWORD or a random password shown once in the banner.
STAFF_MSG=""
first_staff() {
  local staff=$BUILD/oms-staff pw accounts
  [ -x "$staff" ] || return 0
  accounts=$(DATABASE_URL=$VAR/gateway.db "$staff" list | tail -n +2) || return 1
  if [ -n "$accounts" ]; then
    STAFF_MSG="back office            $PUBLIC_URL/staff/ (menu, stock, orders, today, audit; accounts: build/oms-staff list)"
    return 0
  fi
  pw=${OMS_ADMIN_PASSWORD:-$(head -c 18 /dev/urandom | base64 | tr '+/' 'xy')}
  printf '%s\n' "$pw" | DATABASE_URL=$VAR/gateway.db "$staff" add admin >/dev/null || return 1
  if [ -n "${OMS_ADMIN_PASSWORD:-}" ]; then
    STAFF_MSG="back office            $PUBLIC_URL/staff/ as admin (password from OMS_ADMIN_PASSWORD)"
  else
    STAFF_MSG="back office            $PUBLIC_URL/staff/ as admin, password $pw (shown once: build/oms-staff passwd admin to change)"
  fi
}

start_services() {
  local name
  first_staff
  echo "starting services..."
  if [ "$INSTANCES" -gt 1 ]; then
    start_scaled
  else
    for name in "${OMS_SERVICES[@]}"; do start "$name"; done
  fi
  wait_http http://127.0.0.1:8080/healthz 30
}

print_urls() {
  cat <<MSG

OMS is running:
  shop (pages + API)     $PUBLIC_URL/   (kitchen display for staff: $PUBLIC_URL/kitchen)
  API example            curl -s $PUBLIC_URL/api/products
  local checkout         $PAYMENTS_PUBLIC_URL/ (reached from an order's payment link)
  RabbitMQ management    http://127.0.0.1:$RABBITMQ_MGMT_PORT/ (guest/guest)
  metrics                $PUBLIC_URL/metrics, 127.0.0.1:9000/metrics (orders), :9002 (stock), :9003 (kitchen)
  logs                   var/log/*.log
  traces                 $TRACE_MSG
  $STAFF_MSG
Press Ctrl-C to stop.
MSG
}

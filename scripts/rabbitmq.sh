#!/usr/bin/env bash
# A private RabbitMQ node with all its state under one directory, for development and
# tests, started without systemd and apart from any system-wide node.
#
#   scripts/rabbitmq.sh start DIR PORT [MGMT_PORT]   start (or confirm running), wait ready
#   scripts/rabbitmq.sh stop DIR                     stop the node and its epmd
#   scripts/rabbitmq.sh cluster-start DIR PORT [MGMT_PORT]
#                                                    a cluster of NODES nodes (default 3)
#   scripts/rabbitmq.sh cluster-stop DIR             stop every node of it and its epmd
#
# Why the detour around /usr/sbin/rabbitmq*: as root those wrappers switch to the
# rabbitmq user with another HOME, so the CLI reads another Erlang cookie. We call
# /usr/lib/rabbitmq/bin directly with one environment shared by server and CLI.
#
# Every port is derived from PORT so nodes on different ports never share anything:
#   AMQP PORT (127.0.0.1), Erlang distribution PORT+20000, private epmd PORT+30000.
# The CLI tools' own distribution listener takes an ephemeral port (0), so concurrent
# rabbitmqctl calls for different nodes cannot collide on RabbitMQ's fixed CLI range.
# PORT must therefore be 1024..35535.
#
# A cluster (cluster-start) lives in DIR/node1 .. DIR/nodeN, one node directory each as
# above, with node names oms1@localhost .. omsN@localhost, one Erlang cookie (DIR/cookie)
# and one private epmd. Node i listens for AMQP on PORT+i-1, for the management API on
# MGMT_PORT+i-1 (default PORT+10000, so 5672 gives RabbitMQ's usual 15672), for Erlang
# distribution on PORT+20000+i-1, and the epmd on PORT+20000+N, all on 127.0.0.1 and all
# below 32768, out of the kernel's ephemeral range (PORT: 1024..12767-N). The nodes boot
# in parallel; nodes 2..N then join_cluster node 1 (once: DIR/nodeI/joined). The last
# line printed is RABBITMQ_ADDRS=127.0.0.1:PORT,... for the clients. Each node's beam
# pid is in DIR/nodeI/rabbit.pid (tests kill one with it to force a failover; running
# cluster-start again restarts such a node and it rejoins by itself).
#
# Every command is idempotent; all work as root and as an ordinary user.
set -euo pipefail

die() { echo "rabbitmq.sh: $*" >&2; exit 1; }

usage() {
    echo "usage: $0 start DIR PORT [MGMT_PORT] | stop DIR" >&2
    echo "       [NODES=3] $0 cluster-start DIR PORT [MGMT_PORT] | cluster-stop DIR" >&2
    exit 2
}

RMQ_BIN=/usr/lib/rabbitmq/bin

# Exports the node's environment for DIR/PORT/MGMT_PORT and writes it to DIR/env.
# A cluster node also passes its NAME and the cluster's EPMD_PORT.
setup_env() {
    local dir=$1 port=$2 mgmt=${3:-} name=${4:-oms$2@localhost} epmd=${5:-$(($2 + 30000))}
    export PATH="$RMQ_BIN:$PATH"
    export HOME="$dir/home"
    export RABBITMQ_NODENAME="$name"
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT="$port"
    export RABBITMQ_DIST_PORT=$((port + 20000))
    export RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf"
    export RABBITMQ_CONFIG_FILE="$dir/rabbitmq"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
    export RABBITMQ_MNESIA_BASE="$dir/mnesia"
    export RABBITMQ_LOG_BASE="$dir/log"
    export RABBITMQ_PID_FILE="$dir/rabbit.pid"
    # A node that dies at boot writes a crash dump; keep it out of the caller's cwd.
    export ERL_CRASH_DUMP="$dir/log/erl_crash.dump"
    export ERL_EPMD_ADDRESS=127.0.0.1
    export ERL_EPMD_PORT="$epmd"
    export RABBITMQ_CTL_DIST_PORT_MIN=0
    export RABBITMQ_CTL_DIST_PORT_MAX=0
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
    export RABBITMQ_CTL_ERL_ARGS="$RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"
    export OMS_RMQ_PORT="$port" OMS_RMQ_MGMT_PORT="$mgmt"

    # printf %q so `stop` can source the file back verbatim.
    {
        local v
        for v in PATH HOME RABBITMQ_NODENAME RABBITMQ_NODE_IP_ADDRESS RABBITMQ_NODE_PORT \
            RABBITMQ_DIST_PORT RABBITMQ_CONF_ENV_FILE RABBITMQ_CONFIG_FILE \
            RABBITMQ_ENABLED_PLUGINS_FILE RABBITMQ_MNESIA_BASE RABBITMQ_LOG_BASE \
            RABBITMQ_PID_FILE ERL_CRASH_DUMP ERL_EPMD_ADDRESS ERL_EPMD_PORT RABBITMQ_CTL_DIST_PORT_MIN \
            RABBITMQ_CTL_DIST_PORT_MAX RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS \
            RABBITMQ_CTL_ERL_ARGS OMS_RMQ_PORT OMS_RMQ_MGMT_PORT; do
            printf 'export %s=%q\n' "$v" "${!v}"
        done
    } >"$dir/env.tmp"
    mv "$dir/env.tmp" "$dir/env"
}

# 0 when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# 0 when process $1 is alive and its command line contains $2 (a pid file left by a
# crashed node may name a pid that now belongs to somebody else).
pid_is() {
    [[ "$1" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$1" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2"
}

# The beam's pid from the pid file, when that process is alive and is our node (its
# command line names our HOME, which is unique to DIR).
node_pid() {
    local pid
    [ -s "$RABBITMQ_PID_FILE" ] || return 1
    pid=$(cat "$RABBITMQ_PID_FILE" 2>/dev/null) || return 1
    pid_is "$pid" "$HOME" || return 1
    echo "$pid"
}

log_tail() {
    local f
    for f in "$RABBITMQ_LOG_BASE/console.out" "$RABBITMQ_LOG_BASE/$RABBITMQ_NODENAME.log"; do
        if [ -f "$f" ]; then
            echo "---- tail of $f" >&2
            tail -n 30 "$f" >&2
        fi
    done
}

epmd_bin() {
    command -v epmd || echo /usr/lib/erlang/bin/epmd
}

kill_epmd() {
    # epmd outlives the node. -kill talks to the epmd on ERL_EPMD_PORT only, i.e. ours;
    # it refuses while a live node is registered there and fails harmlessly when no
    # epmd runs, so it can never take a running node's epmd away.
    "$(epmd_bin)" -kill >/dev/null 2>&1 || true
}

# 0 when $2 is a port number in $3..$4; else dies naming $1.
check_port() {
    if ! [[ "$2" =~ ^[0-9]+$ ]] || [ "$2" -lt "$3" ] || [ "$2" -gt "$4" ]; then
        die "$1 must be $3..$4 ($5), got '$2'"
    fi
}

cmd_start() {
    if [ $# -lt 2 ] || [ $# -gt 3 ]; then usage; fi
    local dir=$1 port=$2 mgmt=${3:-}
    check_port PORT "$port" 1024 35535 "dist and epmd ports are derived from it"
    if [ -n "$mgmt" ]; then
        check_port MGMT_PORT "$mgmt" 1024 65535 "management API"
    fi
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    mkdir -p "$dir/home" "$dir/log" "$dir/mnesia"
    setup_env "$dir" "$port" "$mgmt"
    node_start "$dir" "$port" "$mgmt"
}

# Starts the node whose environment setup_env exported (DIR, PORT, MGMT_PORT as given
# to it) and waits until it accepts AMQP connections; exits 1 (after stopping what it
# started) when it cannot.
node_start() {
    local dir=$1 port=$2 mgmt=$3
    if node_pid >/dev/null && port_open "$port"; then
        echo "rabbitmq.sh: node $RABBITMQ_NODENAME already running on 127.0.0.1:$port"
        return 0
    fi

    # Empty on purpose: keeps /etc/rabbitmq/rabbitmq-env.conf out.
    : >"$RABBITMQ_CONF_ENV_FILE"
    {
        # guest/guest from loopback only (the default, stated so nobody widens it here).
        echo "loopback_users.guest = true"
        # Classic queues v2 (3.10+): the new index and store; in `make bench` it cut the
        # broker's CPU per message. Applies to queues declared from now on.
        echo "classic_queue.default_version = 2"
        if [ -n "$mgmt" ]; then
            echo "management.tcp.ip = 127.0.0.1"
            echo "management.tcp.port = $mgmt"
        fi
    } >"$dir/rabbitmq.conf"
    # What `rabbitmq-plugins enable --offline rabbitmq_management` writes, without
    # booting a CLI VM for it (seconds per node on a busy machine).
    if [ -n "$mgmt" ]; then
        echo "[rabbitmq_management]." >"$RABBITMQ_ENABLED_PLUGINS_FILE"
    else
        echo "[]." >"$RABBITMQ_ENABLED_PLUGINS_FILE"
    fi

    # Fail fast, before touching anything shared, when another process holds our ports
    # (a clash would otherwise surface as a 60 s wait, and stopping the failed node
    # would kill the other owner's epmd).
    local p
    for p in "$port" "$RABBITMQ_DIST_PORT" ${mgmt:+"$mgmt"}; do
        if port_open "$p"; then
            die "127.0.0.1:$p is already in use by another process (PORT=$port)"
        fi
    done

    rm -f "$RABBITMQ_PID_FILE"
    # setsid: the node must not die with the caller's terminal or process group.
    # run from DIR: Mnesia writes its core dumps into the current directory
    (cd "$dir" && exec setsid "$RMQ_BIN/rabbitmq-server" >"$RABBITMQ_LOG_BASE/console.out" 2>&1 </dev/null) &
    local launcher=$!
    echo "$launcher" >"$dir/launcher.pid"

    # rabbitmqctl wait only gives up after its timeout; a node that dies at boot (bad
    # config, port taken meanwhile) is noticed through the launcher exiting instead.
    rabbitmqctl -q wait --timeout 60 "$RABBITMQ_PID_FILE" >/dev/null 2>&1 &
    local waiter=$! rc=0
    while kill -0 "$waiter" 2>/dev/null; do
        if ! kill -0 "$launcher" 2>/dev/null; then
            kill "$waiter" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    wait "$waiter" || rc=$?
    if [ "$rc" -ne 0 ] || ! kill -0 "$launcher" 2>/dev/null; then
        echo "rabbitmq.sh: node $RABBITMQ_NODENAME did not start (see log below)" >&2
        log_tail
        cmd_stop_env "$dir"
        exit 1
    fi
    # `wait` returns when the app runs; the listener is up at the same time, but check
    # the port itself since that is what clients need.
    local _
    for _ in $(seq 1 100); do
        port_open "$port" && break
        sleep 0.1
    done
    if ! port_open "$port"; then
        echo "rabbitmq.sh: node is up but 127.0.0.1:$port does not accept connections" >&2
        log_tail
        cmd_stop_env "$dir"
        exit 1
    fi
    echo "rabbitmq.sh: node $RABBITMQ_NODENAME ready on 127.0.0.1:$port${mgmt:+ (management :$mgmt)}"
}

# Stops the node whose environment is already exported.
cmd_stop_env() {
    local dir=$1 pid _
    if pid=$(node_pid); then
        if ! rabbitmqctl -q shutdown --timeout 60 >/dev/null 2>&1; then
            echo "rabbitmq.sh: rabbitmqctl shutdown failed; killing beam $pid" >&2
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 100); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    # The launcher shell (if it did not exec the beam) exits with the node; make sure.
    if [ -s "$dir/launcher.pid" ]; then
        pid=$(cat "$dir/launcher.pid")
        if pid_is "$pid" rabbitmq-server; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
        rm -f "$dir/launcher.pid"
    fi
    rm -f "$RABBITMQ_PID_FILE"
    kill_epmd
}

cmd_stop() {
    [ $# -eq 1 ] || usage
    local dir=$1
    if [ ! -f "$dir/env" ]; then
        echo "rabbitmq.sh: no node in $dir (no env file); nothing to stop"
        return 0
    fi
    dir=$(cd "$dir" && pwd)
    # shellcheck disable=SC1091
    . "$dir/env"
    cmd_stop_env "$dir"
    echo "rabbitmq.sh: node $RABBITMQ_NODENAME stopped"
}

# ---- cluster ---------------------------------------------------------------------------

# Node i of the cluster in DIR: exports its environment (see the header for the ports).
cluster_node_env() {
    local dir=$1 i=$2 port=$3 mgmt=$4 n=$5
    setup_env "$dir/node$i" $((port + i - 1)) $((mgmt + i - 1)) "oms$i@localhost" \
        $((port + 20000 + n))
}

# Starts node i (in a subshell of the caller: setup_env exports). Its HOME gets the
# cluster's cookie before the node or any CLI call reads it.
cluster_node_start() {
    local dir=$1 i=$2 port=$3 mgmt=$4 n=$5
    mkdir -p "$dir/node$i/home" "$dir/node$i/log" "$dir/node$i/mnesia"
    rm -f "$dir/node$i/home/.erlang.cookie"
    install -m 400 "$dir/cookie" "$dir/node$i/home/.erlang.cookie"
    cluster_node_env "$dir" "$i" "$port" "$mgmt" "$n"
    node_start "$dir/node$i" $((port + i - 1)) $((mgmt + i - 1))
}

# Node i (a fresh, running node) leaves its own one-node cluster and joins node 1's
# (join_cluster resets the node first). The CLI's chatter goes to the node's log dir and
# is shown only when the join fails.
cluster_node_join() {
    local dir=$1 i=$2 out
    # shellcheck disable=SC1090
    . "$dir/node$i/env"
    out="$RABBITMQ_LOG_BASE/join.out"
    if rabbitmqctl -q stop_app >"$out" 2>&1 &&
        rabbitmqctl -q join_cluster oms1@localhost >>"$out" 2>&1 &&
        rabbitmqctl -q start_app >>"$out" 2>&1; then
        touch "$dir/node$i/joined"
        return 0
    fi
    cat "$out" >&2
    return 1
}

# Names of the running members as node 1 sees them, one per line.
cluster_running() {
    local dir=$1
    # shellcheck disable=SC1091
    . "$dir/node1/env"
    rabbitmqctl -q cluster_status --formatter json 2>/dev/null |
        grep -o '"running_nodes":\[[^]]*\]' | grep -o 'oms[0-9]*@localhost'
}

cmd_cluster_start() {
    if [ $# -lt 2 ] || [ $# -gt 3 ]; then usage; fi
    local dir=$1 port=$2 mgmt=${3:-} n=${NODES:-3}
    check_port NODES "$n" 2 9 "nodes in the cluster"
    check_port PORT "$port" 1024 $((12767 - n)) "every derived port stays below 32768"
    mgmt=${mgmt:-$((port + 10000))}
    check_port MGMT_PORT "$mgmt" 1024 $((65536 - n)) "management API of node 1"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [ ! -s "$dir/cookie" ]; then
        # Any shared secret will do; the nodes only listen on loopback.
        (umask 077 && od -An -N20 -tx1 /dev/urandom | tr -d ' \n' | tr a-f A-F >"$dir/cookie")
    fi
    local i
    for i in $(seq 1 "$n"); do
        mkdir -p "$dir/node$i"
    done

    # One epmd for all nodes, started before them so they do not race to start it.
    (cluster_node_env "$dir" 1 "$port" "$mgmt" "$n" && "$(epmd_bin)" -daemon) ||
        die "cannot start epmd on 127.0.0.1:$((port + 20000 + n))"

    local pid rc=0
    local -a pids=()
    for i in $(seq 1 "$n"); do
        (cluster_node_start "$dir" "$i" "$port" "$mgmt" "$n") &
        pids+=("$!")
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || rc=1
    done
    if [ "$rc" -ne 0 ]; then
        cluster_stop_dir "$dir"
        die "cluster in $dir did not start (see above)"
    fi

    # The joins run together too: each is a schema change that node 1 serialises.
    pids=()
    for i in $(seq 2 "$n"); do
        [ -f "$dir/node$i/joined" ] && continue
        (cluster_node_join "$dir" "$i") &
        pids+=("$!")
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || rc=1
    done
    if [ "$rc" -ne 0 ]; then
        cluster_stop_dir "$dir"
        die "a node could not join oms1@localhost (see above)"
    fi
    local running
    running=$( (cluster_running "$dir") | wc -l)
    if [ "$running" -ne "$n" ]; then
        cluster_stop_dir "$dir"
        die "cluster in $dir has $running of $n nodes running"
    fi

    local addrs=""
    for i in $(seq 1 "$n"); do
        addrs="$addrs${addrs:+,}127.0.0.1:$((port + i - 1))"
    done
    echo "rabbitmq.sh: cluster of $n nodes ready in $dir (management :$mgmt..:$((mgmt + n - 1)))"
    echo "RABBITMQ_ADDRS=$addrs"
}

# Stops every node of the cluster in DIR at once (each by its pid, cleanly; see
# cmd_stop_env), then the cluster's epmd. A node already gone (killed) is skipped.
cluster_stop_dir() {
    local dir=$1 envf pid
    local -a pids=()
    for envf in "$dir"/node*/env; do
        [ -f "$envf" ] || continue
        # shellcheck disable=SC1090
        (. "$envf" && cmd_stop_env "$(dirname "$envf")") &
        pids+=("$!")
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || true
    done
    # Each stop tried epmd while the others were still registered; now none is.
    if [ -f "$dir/node1/env" ]; then
        # shellcheck disable=SC1091
        (. "$dir/node1/env" && kill_epmd)
    fi
}

cmd_cluster_stop() {
    [ $# -eq 1 ] || usage
    local dir=$1
    if [ ! -f "$dir/node1/env" ]; then
        echo "rabbitmq.sh: no cluster in $dir (no node1/env); nothing to stop"
        return 0
    fi
    dir=$(cd "$dir" && pwd)
    cluster_stop_dir "$dir"
    echo "rabbitmq.sh: cluster in $dir stopped"
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case "$cmd" in
start) cmd_start "$@" ;;
stop) cmd_stop "$@" ;;
cluster-start) cmd_cluster_start "$@" ;;
cluster-stop) cmd_cluster_stop "$@" ;;
*) usage ;;
esac

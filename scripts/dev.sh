#!/usr/bin/env bash
# make dev: `make run` (the same stack, scripts/stack.sh) that follows your edits. entr
# watches the C sources, headers and the proto; a change under <service>/ rebuilds that
# service's binary (cmake --build --target oms-<service>) and restarts that service
# alone; a change under common/ or proto/ (or to CMakeLists.txt) rebuilds and restarts
# all five. RabbitMQ, the trace store and the other services stay up. A failed build
# restarts nothing (the last good binary keeps running) and prints the compiler's
# errors. Ctrl-C stops everything, by PID, as `make run` does.
#
# One instance of each service only (INSTANCES=1).
set -euo pipefail
# shellcheck source=scripts/stack.sh
source "$(dirname "$0")/stack.sh"

if [ "$INSTANCES" -ne 1 ]; then
  echo "dev.sh: make dev runs one instance of each service; use make run INSTANCES=$INSTANCES" >&2
  exit 2
fi
if ! command -v entr >/dev/null; then
  echo "dev.sh: entr is missing (Debian package entr; make deps installs it)" >&2
  exit 1
fi

JOBS=${JOBS:-2}
BUILD_LOG=$VAR/log/build.log
# Where a change means "every service": the shared library and the contract (and
# CMakeLists.txt).
SHARED_DIRS=(common proto)
WATCH_DIRS=()
for d in "${OMS_SERVICES[@]}" "${SHARED_DIRS[@]}"; do
  if [ -d "$ROOT/$d" ]; then WATCH_DIRS+=("$ROOT/$d"); fi
done
# Files modified after this one's mtime have changed since the last rebuild.
STAMP=$VAR/dev.stamp

# The watched files, absolute, one a line; arguments are extra find tests (-newer F).
source_files() {
  find "${WATCH_DIRS[@]}" -type f \( -name '*.c' -o -name '*.h' -o -name '*.proto' \) "$@" -print
  find "$ROOT/CMakeLists.txt" "$@" -print
}

# The watcher (run in the background, its output read by the loop below): prints
# "changed" on every event entr sees, and the path of each file that appeared or
# disappeared. entr names only the first file of an event (/_), and on a folder event
# a file that did not change at all; so it is only the trigger here, and the loop
# asks find which files are newer than STAMP. entr exits with 2 when a file appears
# in a watched folder (-d) and with 1 when a watched file is deleted; the list is
# then taken again. -n: no terminal; -p: no run at start. entr runs in its own
# session (setsid) so that Ctrl-C reaches only the main shell, which stops this
# watcher, which stops entr by PID.
watch_sources() {
  local entr_pid="" rc old new
  trap '' INT # Ctrl-C is the main shell's to handle; it stops us with SIGTERM
  trap 'if [ -n "$entr_pid" ]; then kill -TERM "$entr_pid" 2>/dev/null || true; fi; exit 0' TERM
  old=$(source_files | sort)
  while :; do
    printf '%s\n' "$old" | setsid entr -n -d -p echo changed 2>>"$VAR/log/entr.log" &
    entr_pid=$!
    rc=0
    wait "$entr_pid" || rc=$?
    entr_pid=""
    new=$(source_files | sort)
    if [ "$new" != "$old" ]; then
      comm -3 <(printf '%s\n' "$old") <(printf '%s\n' "$new") | sed 's/^\t//'
    elif [ "$rc" -ne 2 ]; then
      echo "dev.sh: entr exited with status $rc (var/log/entr.log); watching again in 1 s" >&2
      sleep 1
    fi
    old=$new
  done
}

watcher_pid=""
stop_watcher() {
  local i
  if [ -z "$watcher_pid" ]; then return 0; fi
  kill -TERM "$watcher_pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$watcher_pid" 2>/dev/null || break
    sleep 0.1
  done
  wait "$watcher_pid" 2>/dev/null || true
  watcher_pid=""
  exec 3<&-
  rm -f "$STAMP" "$STAMP.next"
}

trap 'stop_watcher; stop_all; exit 0' INT TERM
trap 'stop_watcher; stop_all' EXIT

# Sets `hit` to the services a changed file (path relative to ROOT) affects: its own
# service, all five for a shared folder or CMakeLists.txt, none for any other file.
hit=()
affected() {
  local top=${1%%/*} s
  hit=()
  if [ "$1" = CMakeLists.txt ]; then
    hit=("${OMS_SERVICES[@]}")
    return
  fi
  for s in "${SHARED_DIRS[@]}"; do
    if [ "$top" = "$s" ]; then
      hit=("${OMS_SERVICES[@]}")
      return
    fi
  done
  for s in "${OMS_SERVICES[@]}"; do
    if [ "$top" = "$s" ]; then hit=("$s"); fi
  done
}

# Rebuilds and restarts the services named in the associative array `why` (service ->
# the file that changed), in start order. Returns non-zero (and restarts nothing) when
# the build fails.
rebuild_and_restart() {
  local s targets=() list=()
  for s in "${OMS_SERVICES[@]}"; do
    if [ -n "${why[$s]:-}" ]; then
      targets+=("oms-$s")
      list+=("$s")
    fi
  done
  echo "building ${targets[*]} (log: var/log/build.log)..."
  if ! cmake --build "$BUILD" -j"$JOBS" --target "${targets[@]}" >"$BUILD_LOG" 2>&1; then
    echo "build failed; ${list[*]} keep running the last good binary. Errors:" >&2
    grep -m 30 -E 'error|Error' "$BUILD_LOG" >&2 || tail -n 30 "$BUILD_LOG" >&2
    return 1
  fi
  for s in "${list[@]}"; do
    stop_service "$s"
    start "$s"
    echo "restarted $s (${why[$s]} changed)"
  done
}

# A service that exits on its own is reported once; the next change under its folder
# (or common/, proto/) starts it again.
reap_exited() {
  local s pid
  for s in "${OMS_SERVICES[@]}"; do
    pid=${svc_pid[$s]:-}
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      stop_service "$s"
      echo "$s (pid $pid) exited; see var/log/$s.log. It starts again on the next change." >&2
    fi
  done
}

start_rabbitmq
start_tracestore
start_services
print_urls
touch "$STAMP"
exec 3< <(watch_sources)
watcher_pid=$!
echo "make dev: watching ${OMS_SERVICES[*]} ${SHARED_DIRS[*]} (*.c *.h *.proto) and CMakeLists.txt"

declare -A why
while :; do
  reap_exited
  rc=0
  read -r -t 1 -u 3 line || rc=$?
  if [ "$rc" -ne 0 ]; then
    # > 128: nothing changed within the second. Otherwise the watcher is gone.
    if [ "$rc" -gt 128 ]; then continue; fi
    echo "dev.sh: the file watcher stopped; stopping." >&2
    exit 1
  fi
  # One rebuild for a burst of events (a save that writes several files, a git
  # checkout): read on until the watcher has been quiet for half a second. Then the
  # changed files are the ones newer than STAMP, plus any that appeared or went.
  paths=()
  while :; do
    if [ "$line" != changed ]; then paths+=("$line"); fi
    read -r -t 0.5 -u 3 line || break
  done
  touch "$STAMP.next"
  mapfile -t -O "${#paths[@]}" paths < <(source_files -newer "$STAMP")
  mv -f "$STAMP.next" "$STAMP"
  why=()
  for path in "${paths[@]}"; do
    rel=${path#"$ROOT"/}
    affected "$rel"
    for s in "${hit[@]}"; do
      if [ -z "${why[$s]:-}" ]; then why[$s]=$rel; fi
    done
  done
  if [ ${#why[@]} -gt 0 ]; then rebuild_and_restart || true; fi
done

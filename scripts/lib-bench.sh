# shellcheck shell=bash
# shellcheck disable=SC2034 # REDIS_PID, PG_PID, *_ARGS are read by the callers
# scripts/lib-bench.sh -- functions shared by scripts/bench and
# scripts/bench-peer (sourced, not run).
#
# The caller sets, before using them:
#   BUILD     build directory (Release)
#   SVC       directory of the throwaway Redis + PostgreSQL
#   WORKERS   NOTISYNC_WORKERS for notisyncd
#   REDIS_MODE  single (default: the one Redis of scripts/services) or
#               cluster (a fresh 3-master + 3-replica Redis Cluster from
#               scripts/redis-cluster --aof in $SVC/cluster; notisyncd then
#               runs with redis_mode=cluster; issue 13)
# and gets:
#   BENCH                       the notisync-bench binary (build)
#   SVC_STARTED REDIS_PID PG_PID and the variables of $SVC/env (start_services)
#   REDIS_WATCH                 --watch arguments for every Redis process
#   NS_PID PORT SECRET          (start_notisyncd)

ME=${0##*/}         # name for log lines
NS_PID=${NS_PID:-}
SVC_STARTED=${SVC_STARTED:-0}
BENCH=${BENCH:-}
SECRET=${SECRET:-}
REDIS_MODE=${REDIS_MODE:-single}
REDIS_WATCH=()

log() { echo "$ME: $*" >&2; }
die() { log "$*"; exit 1; }

# True while PID $1 runs (a zombie counts as gone).
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != Z ]]
}

# Sends SIGTERM to PID $1 (named $2 in messages), waits up to $3 x 0.1 s
# [150], then SIGKILL; reaps it when it is our child.
stop_pid() {
  local pid=$1 name=$2 steps=${3:-150} i
  [[ -n $pid ]] || return 0
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < steps; i++)); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then
      log "$name $pid did not stop in $((steps / 10)) s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
}

# Prints a TCP port on 127.0.0.1 that nothing listens on.
free_port() {
  local p i
  for ((i = 0; i < 200; i++)); do
    p=$((20000 + RANDOM % 12000))
    # shellcheck disable=SC2016 # $0 is expanded by the inner bash
    if ! timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0"' "$p" 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  die "no free port"
}

# Machine busy percent over $1 seconds (all cores), from /proc/stat.
busy_pct() {
  local a b
  a=$(head -n1 /proc/stat)
  sleep "$1"
  b=$(head -n1 /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN {
    n = split(a, x, " "); split(b, y, " "); t = 0
    for (i = 2; i <= n; i++) t += y[i] - x[i]
    idle = (y[5] - x[5]) + (y[6] - x[6])
    printf("%.0f", (t > 0) ? 100 * (t - idle) / t : 0) }'
}

# Builds notisyncd and notisync-bench (Release) in $BUILD; sets BENCH.
# Until the top CMakeLists.txt has add_subdirectory(cmd/notisync-bench),
# notisync-bench is compiled directly with cc.
build() {
  local cc_flags
  log "building (Release) in $BUILD"
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DNS_TESTS=OFF >/dev/null
  if grep -q 'add_subdirectory(cmd/notisync-bench)' CMakeLists.txt; then
    cmake --build "$BUILD" -j"$(nproc)" --target notisyncd notisync-bench >/dev/null
    BENCH=$BUILD/cmd/notisync-bench/notisync-bench
  else
    cmake --build "$BUILD" -j"$(nproc)" --target notisyncd >/dev/null
    log "CMakeLists.txt has no add_subdirectory(cmd/notisync-bench): compiling it with cc"
    cc_flags="-std=gnu11 -O2 -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wstrict-prototypes -Wno-unused-parameter"
    BENCH=$BUILD/notisync-bench
    # shellcheck disable=SC2046,SC2086 # word splitting of flags is intended
    cc $cc_flags cmd/notisync-bench/*.c $(pkg-config --cflags --libs json-c libcrypto) \
      -o "$BENCH"
  fi
  "$BENCH" selftest >/dev/null || die "notisync-bench selftest failed"
}

# Starts a throwaway Redis + PostgreSQL in $SVC (scripts/services start),
# exports the variables of $SVC/env, sets REDIS_PID and PG_PID and writes
# $SVC/stats.sh (counters for notisync-bench --stat-cmd).
start_services() {
  scripts/services start "$SVC" >/dev/null
  SVC_STARTED=1
  set -a
  # shellcheck disable=SC1091 # written by scripts/services
  . "$SVC/env"
  set +a
  REDIS_PID=$(cat "$REDIS_PIDFILE")
  PG_PID=$(head -n1 "$PG_DATA/postmaster.pid")
  REDIS_WATCH=(--watch "redis=$REDIS_PID")
  local rports=$REDIS_PORT
  if [[ $REDIS_MODE == cluster ]]; then
    start_cluster
    rports=${NS_CLUSTER_MASTERS//,/ }
  fi
  cat >"$SVC/stats.sh" <<EOF
#!/bin/sh
# Counters for notisync-bench --stat-cmd: printed as "name value"
# (redis_commands: summed over the masters of a cluster).
for p in $rports; do redis-cli -h 127.0.0.1 -p \$p info stats; done |
  awk -F: '/^total_commands_processed:/ { n += \$2 } END { printf "redis_commands %d\n", n }'
psql "$NOTISYNC_DATABASE_URL" -Atc "select xact_commit, tup_inserted from
  pg_stat_database where datname = current_database()" |
  awk -F'|' '{ print "pg_commits", \$1; print "pg_rows_inserted", \$2 }'
EOF
  chmod +x "$SVC/stats.sh"
}

# REDIS_MODE=cluster: a fresh cluster in $SVC/cluster (appendonly, like the
# single Redis of scripts/services) replaces the single Redis, which is
# stopped; exports its NOTISYNC_REDIS_MODE/NOTISYNC_REDIS_URL and sets
# REDIS_WATCH to the six nodes (m = master, r = replica, by port).
start_cluster() {
  local p pid role
  scripts/services stop-redis "$SVC" >/dev/null
  scripts/redis-cluster start --aof "$SVC/cluster" >/dev/null
  set -a
  # shellcheck disable=SC1091 # written by scripts/redis-cluster
  . "$SVC/cluster/env"
  set +a
  REDIS_WATCH=()
  REDIS_PID=""
  for p in ${NS_CLUSTER_PORTS//,/ }; do
    pid=$(redis-cli -h 127.0.0.1 -p "$p" info server | tr -d '\r' | sed -n 's/^process_id://p')
    role=r
    [[ ,$NS_CLUSTER_MASTERS, == *,$p,* ]] && role=m
    REDIS_WATCH+=(--watch "redis-$role$p=$pid")
    REDIS_PID="$REDIS_PID${REDIS_PID:+,}$pid"
  done
}

# Stops Redis + PostgreSQL of $SVC if start_services started them (unless
# $1 is 1: keep them) and drops their data.
stop_services() {
  if [[ $SVC_STARTED -eq 1 && ${1:-0} -eq 0 && -d $SVC/cluster ]]; then
    if scripts/redis-cluster stop "$SVC/cluster" >/dev/null 2>&1; then
      rm -rf "${SVC:?}/cluster"
    else
      log "redis-cluster stop failed; left in $SVC/cluster"
    fi
  fi
  if [[ $SVC_STARTED -eq 1 && ${1:-0} -eq 0 ]]; then
    # The data (~400 MB after a full run) is throwaway: drop it once stopped.
    if scripts/services stop "$SVC" >/dev/null 2>&1; then
      rm -rf "${SVC:?}/redis" "${SVC:?}/pg"
    else
      log "services stop failed; data left in $SVC"
    fi
  fi
  SVC_STARTED=0
}

# Starts notisyncd (needs start_services) on a free loopback port with
# handshake_rate_per_ip=0 (the bench opens thousands of connections from a
# few loopback addresses) and log_level=warn, output to file $1; waits until
# /health answers.  Sets PORT and NS_PID; SECRET is generated if empty.
start_notisyncd() {
  local logf=$1 i
  PORT=$(free_port)
  if [[ -z $SECRET ]]; then
    SECRET=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
  fi
  NOTISYNC_LISTEN=127.0.0.1:$PORT NOTISYNC_JWT_SECRET=$SECRET \
    NOTISYNC_HANDSHAKE_RATE_PER_IP=0 NOTISYNC_LOG_LEVEL=warn \
    NOTISYNC_WORKERS=$WORKERS \
    "$BUILD/notisyncd" >"$logf" 2>&1 &
  NS_PID=$!
  for ((i = 0; i < 300; i++)); do
    if curl -sf --max-time 1 "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; then
      break
    fi
    alive "$NS_PID" || die "notisyncd exited: $(tail -n 5 "$logf")"
    sleep 0.1
  done
  curl -sf --max-time 1 "http://127.0.0.1:$PORT/health" >/dev/null ||
    die "notisyncd not healthy after 30 s"
}

stop_notisyncd() {
  stop_pid "$NS_PID" notisyncd
  NS_PID=""
}

# Sets the arrays LAT_ARGS, TS_ARGS, TB_ARGS (notisync-bench options of the
# pipeline scenarios latency, throughput-single, throughput-batch) for the
# full run, or the small one when $1 is 1.
pipeline_args() {
  if [[ $1 -eq 1 ]]; then
    LAT_ARGS=(--users 100 --devices 3 --rate 100 --duration 3 --concurrency 32)
    TS_ARGS=(--users 100 --devices 3 --duration 3 --concurrency 16)
    TB_ARGS=(--users 100 --devices 3 --duration 3 --concurrency 8 --batch 100)
  else
    LAT_ARGS=(--users 1000 --devices 3 --rate 500 --duration 20 --concurrency 32)
    TS_ARGS=(--users 1000 --devices 3 --duration 15 --concurrency 16)
    TB_ARGS=(--users 1000 --devices 3 --duration 15 --concurrency 8 --batch 100)
  fi
}

# Report helpers.  fmt: $1 with $2 decimals, "–" when empty.
fmt() {
  if [[ -z $1 ]]; then
    echo "–"
  else
    awk -v a="$1" -v d="${2:-0}" 'BEGIN { printf("%." d "f", a) }'
  fi
}
# $1 / $2 with two decimals, "–" when either is empty or $2 is 0.
ratio() {
  [[ -z $1 || -z $2 ]] && { echo "–"; return; }
  awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "–" }'
}
# "met" / "**NOT met**" for $1 $2 $3 (e.g. 4.2 '<' 10; the operator is one
# of < <= >=); "not run" if $1 is empty.
verdict() {
  [[ -z $1 ]] && { echo "not run"; return; }
  awk -v a="$1" -v op="$2" -v b="$3" 'BEGIN {
    ok = (op == "<") ? a < b : (op == "<=") ? a <= b : a >= b
    print ok ? "met" : "**NOT met**" }'
}

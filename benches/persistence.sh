#!/usr/bin/env bash
# Persistence cost: Meridian vs redis-server with the same fsync policy, then restart time.
#
# 1. Throughput: for each MODE in "off everysec always", one Meridian and one redis-server
#    (`appendonly yes` + the same `appendfsync`, or `appendonly no` for off), both pinned to
#    SERVER_CPU with data directories under WORK (a tmpdir on the same filesystem as TMPDIR:
#    point TMPDIR at the disk you care about, fsync on tmpfs is nearly free). redis-benchmark
#    runs pinned to CLIENT_CPU, SET and INCR at -P 1 and -P 16; the two servers alternate which
#    goes first each round; the median rps over ROUNDS is reported.
# 2. Restart: KEYS distinct keys loaded through `redis-cli --pipe` into each server with
#    `appendonly yes`; the server is stopped and the time until it answers PING again is
#    measured, once replaying the log alone and once after a compaction (BGSAVE for Meridian,
#    BGREWRITEAOF for Redis).
#
# Usage:  benches/persistence.sh
# Env:    ROUNDS=3 N=100000 CLIENTS=50 DATA_SIZE=32 KEYSPACE=100000 KEYS=1000000
#         MODES="off everysec always" PIPELINES="1 16" TESTS="set incr"
#         SERVER_CPU=0 CLIENT_CPU=1 MERIDIAN_BIN=path (skip the build)
#         REDIS_SERVER=redis-server REDIS_BENCHMARK=redis-benchmark REDIS_CLI=redis-cli
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROUNDS="${ROUNDS:-3}"
N="${N:-100000}"
CLIENTS="${CLIENTS:-50}"
DATA_SIZE="${DATA_SIZE:-32}"
KEYSPACE="${KEYSPACE:-100000}"
KEYS="${KEYS:-1000000}"
MODES="${MODES:-off everysec always}"
PIPELINES="${PIPELINES:-1 16}"
TESTS="${TESTS:-set incr}"
SERVER_CPU="${SERVER_CPU:-0}"
CLIENT_CPU="${CLIENT_CPU:-1}"
REDIS_SERVER="${REDIS_SERVER:-redis-server}"
REDIS_BENCHMARK="${REDIS_BENCHMARK:-redis-benchmark}"
REDIS_CLI="${REDIS_CLI:-redis-cli}"

die() { echo "persistence: $*" >&2; exit 1; }
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
for tool in "$REDIS_SERVER" "$REDIS_BENCHMARK" "$REDIS_CLI" taskset python3 timeout; do
    command -v "$tool" >/dev/null 2>&1 || die "missing tool: $tool"
done
build_meridian

WORK="$(mktemp -d "${TMPDIR:-/tmp}/meridian-persist.XXXXXX")"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server KIND MODE DIR PORT: starts meridian or redis with the persistence of MODE; sets PID.
start_server() {
    local kind=$1 mode=$2 dir=$3 port=$4 aof=yes fsync=$2
    [[ "$mode" == off ]] && { aof=no; fsync=everysec; }
    mkdir -p "$dir"
    if [[ "$kind" == meridian ]]; then
        taskset -c "$SERVER_CPU" "$MERIDIAN_BIN" --port "$port" --bind 127.0.0.1 --io-threads 1 \
            --dir "$dir" --save "" --appendonly "$aof" --appendfsync "$fsync" >>"$dir/server.log" 2>&1 &
    else
        taskset -c "$SERVER_CPU" "$REDIS_SERVER" --port "$port" --bind 127.0.0.1 --dir "$dir" \
            --save "" --appendonly "$aof" --appendfsync "$fsync" --daemonize no --logfile "" \
            >>"$dir/server.log" 2>&1 &
    fi
    PID=$!
    PIDS+=("$PID")
    wait_ready "$port" "$PID" "$kind" "$dir/server.log"
}

stop_server() {
    kill "$1" 2>/dev/null || true
    for _ in $(seq 600); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    wait "$1" 2>/dev/null || true
}

# bench PORT TEST PIPELINE → rps
bench() {
    local n=$N
    (($3 > 1)) && n=$((N * 10))
    taskset -c "$CLIENT_CPU" "$REDIS_BENCHMARK" -h 127.0.0.1 -p "$1" -t "$2" -n "$n" -c "$CLIENTS" \
        -d "$DATA_SIZE" -r "$KEYSPACE" -P "$3" --csv 2>/dev/null |
        grep -iv '^"test"' | head -1 | python3 -c 'import csv,sys; print(next(csv.reader(sys.stdin))[1])'
}

RAW="$WORK/raw.csv"
: >"$RAW"
for mode in $MODES; do
    mp="$(free_port)"; start_server meridian "$mode" "$WORK/m-$mode" "$mp"; mpid=$PID
    rp="$(free_port)"; start_server redis "$mode" "$WORK/r-$mode" "$rp"; rpid=$PID
    for round in $(seq "$ROUNDS"); do
        for p in $PIPELINES; do
            for t in $TESTS; do
                if ((round % 2)); then order="meridian redis"; else order="redis meridian"; fi
                for s in $order; do
                    port=$mp; [[ $s == redis ]] && port=$rp
                    rps="$(bench "$port" "$t" "$p")"
                    echo "$mode,$p,$t,$s,$rps" | tee -a "$RAW" >&2
                done
            done
        done
    done
    stop_server "$mpid"; stop_server "$rpid"
done

echo
echo "## Throughput (median rps over $ROUNDS rounds, $CLIENTS clients, ${DATA_SIZE}-byte values)"
python3 - "$RAW" <<'EOF'
import csv, statistics, sys
cells = {}
for mode, p, t, s, rps in csv.reader(open(sys.argv[1])):
    cells.setdefault((mode, int(p), t.upper()), {}).setdefault(s, []).append(float(rps))
print("| appendfsync | test | P | Meridian rps | Redis rps | M/R |")
print("|---|---|---|---:|---:|---:|")
for (mode, p, t), v in cells.items():
    m, r = statistics.median(v["meridian"]), statistics.median(v["redis"])
    print(f"| {mode} | {t} | {p} | {m:,.0f} | {r:,.0f} | {m / r:.2f} |")
EOF

# ----- restart time with KEYS keys -----
python3 - "$KEYS" >"$WORK/load.resp" <<'EOF'
import sys
out = sys.stdout.buffer
for i in range(int(sys.argv[1])):
    k, v = b"key:%d" % i, b"value:%024d" % i
    out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(v), v))
EOF

# restart KIND DIR PORT: stop, start again; RESTART_S = seconds until PING answers again
restart() {
    local t0 t1
    stop_server "$PID"
    t0="$(date +%s%N)"
    start_server "$1" everysec "$2" "$3"
    t1="$(date +%s%N)"
    RESTART_S="$(python3 -c "print(f'{($t1 - $t0) / 1e9:.2f}')")"
}

echo
echo "## Restart time with $KEYS keys (appendonly yes, everysec)"
echo "| server | log only s | after compaction s |"
echo "|---|---:|---:|"
for kind in meridian redis; do
    port="$(free_port)"; dir="$WORK/restart-$kind"
    start_server "$kind" everysec "$dir" "$port"
    "$REDIS_CLI" -p "$port" --pipe <"$WORK/load.resp" >/dev/null
    keys="$("$REDIS_CLI" -p "$port" dbsize)"
    [[ "$keys" == "$KEYS" ]] || die "$kind holds $keys keys, expected $KEYS"
    restart "$kind" "$dir" "$port"; log_only=$RESTART_S
    if [[ $kind == meridian ]]; then "$REDIS_CLI" -p "$port" bgsave >/dev/null
    else "$REDIS_CLI" -p "$port" bgrewriteaof >/dev/null; fi
    for _ in $(seq 600); do
        info="$("$REDIS_CLI" -p "$port" info persistence | tr -d '\r')"
        grep -q '^rdb_bgsave_in_progress:0' <<<"$info" && grep -q '^aof_rewrite_in_progress:0' <<<"$info" && break
        sleep 0.1
    done
    restart "$kind" "$dir" "$port"; compacted=$RESTART_S
    [[ "$("$REDIS_CLI" -p "$port" dbsize)" == "$KEYS" ]] || die "$kind lost keys over restarts"
    echo "| $kind | $log_only | $compacted |"
    stop_server "$PID"
done

#!/usr/bin/env bash
# Meridian vs redis-server, same box, same single core, same client.
#
# Both servers are pinned to SERVER_CPU (default core 0) and only one of them is ever under load:
# the other sits idle while its rival is measured. redis-benchmark is pinned to CLIENT_CPU
# (default core 1). For every round, pipeline depth and test, each server gets one
# redis-benchmark run; the order of the two servers alternates so drift on a shared box hits
# both alike. The table reports the median over rounds.
#
# Usage:  benches/redis_compare.sh
# Env:
#   ROUNDS=3            interleaved rounds (median reported)
#   N=100000            requests per run at -P 1
#   N_PIPELINED=10*N    requests per run at -P 16 (pipelined runs are ~10x faster)
#   TESTS="set get incr mset"   PIPELINES="1 16"
#   CLIENTS=50 DATA_SIZE=32 KEYSPACE=100000
#   SERVER_CPU=0 CLIENT_CPU=1
#   MERIDIAN_BIN=path   skip the cargo build and use this binary
#   REDIS_SERVER=redis-server REDIS_BENCHMARK=redis-benchmark REDIS_CLI=redis-cli
#   RUN_TIMEOUT=300     seconds one redis-benchmark run may take before the script fails
#   OUT_DIR=bench-results
#   QUIET_WAIT=0.05     runs whose server waited longer than this share of wall time for its core
#                       (another process held it) are left out of the second, "quiet" table
#
# Re-render the tables of an earlier run:  benches/redis_compare.sh --report bench-results/compare-<ts>.csv
#
# Besides rps and p99 (from redis-benchmark --csv), the script reads the server's CPU time from
# /proc/<pid>/stat before and after each run and reports server CPU microseconds per request:
# the least noise-sensitive number on a shared machine, and the check of §5.5 of the perf
# anchors (a server well below 100% CPU during a run means the client, not the server, limited it).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROUNDS="${ROUNDS:-3}"
N="${N:-100000}"
N_PIPELINED="${N_PIPELINED:-$((N * 10))}"
TESTS="${TESTS:-set get incr mset}"
PIPELINES="${PIPELINES:-1 16}"
CLIENTS="${CLIENTS:-50}"
DATA_SIZE="${DATA_SIZE:-32}"
KEYSPACE="${KEYSPACE:-100000}"
SERVER_CPU="${SERVER_CPU:-0}"
CLIENT_CPU="${CLIENT_CPU:-1}"
REDIS_SERVER="${REDIS_SERVER:-redis-server}"
REDIS_BENCHMARK="${REDIS_BENCHMARK:-redis-benchmark}"
REDIS_CLI="${REDIS_CLI:-redis-cli}"
RUN_TIMEOUT="${RUN_TIMEOUT:-300}"
QUIET_WAIT="${QUIET_WAIT:-0.05}"
OUT_DIR="${OUT_DIR:-$ROOT/bench-results}"

die() { echo "redis_compare: $*" >&2; exit 1; }
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"

for tool in "$REDIS_SERVER" "$REDIS_BENCHMARK" "$REDIS_CLI" taskset python3 timeout; do
    command -v "$tool" >/dev/null 2>&1 || die "missing tool: $tool"
done
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
[[ "$N" =~ ^[1-9][0-9]*$ && "$N_PIPELINED" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer"

# render_tables RAW.csv: the median table over all runs, then over quiet runs only (the server's
# run-queue wait below QUIET_WAIT of wall time: nothing else was competing for its core).
render_tables() {
    python3 - "$1" "$QUIET_WAIT" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
quiet = float(sys.argv[2])
order = {"SET": 0, "GET": 1, "INCR": 2, "MSET": 3}
def med(rs, k):
    return statistics.median(float(r[k]) for r in rs)
def ratio(a, b):
    return f"{a / b:.2f}" if b else "n/a"
def table(rows, with_n):
    cells = {}
    for r in rows:
        cells.setdefault((int(r["pipeline"]), r["test"]), {}).setdefault(r["server"], []).append(r)
    n_col = " runs M / R |" if with_n else ""
    print("| test | P | Meridian rps | Redis rps | rps ratio M/R | Meridian p99 ms | Redis p99 ms | p99 ratio M/R "
          "| Meridian CPU µs/req | Redis CPU µs/req | CPU ratio M/R | server on-CPU M / R | server runq wait M / R |" + n_col)
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if with_n else ""))
    for (p, t) in sorted(cells, key=lambda k: (k[0], order.get(k[1], 9), k[1])):
        m, r = cells[(p, t)].get("meridian", []), cells[(p, t)].get("redis", [])
        if not m or not r:
            print(f"| {t} | {p} | " + " | ".join(["–"] * 11) + " |" + (f" {len(m)} / {len(r)} |" if with_n else ""))
            continue
        mr, rr = med(m, "rps"), med(r, "rps")
        mp, rp = med(m, "p99_ms"), med(r, "p99_ms")
        mc, rc = med(m, "cpu_us_per_req"), med(r, "cpu_us_per_req")
        mu, ru = med(m, "cpu_util"), med(r, "cpu_util")
        mw, rw = med(m, "wait_share"), med(r, "wait_share")
        print(f"| {t} | {p} | {mr:,.0f} | {rr:,.0f} | {ratio(mr, rr)} | {mp:.3f} | {rp:.3f} | {ratio(mp, rp)} "
              f"| {mc:.2f} | {rc:.2f} | {ratio(mc, rc)} | {mu:.0%} / {ru:.0%} | {mw:.0%} / {rw:.0%} |"
              + (f" {len(m)} / {len(r)} |" if with_n else ""))
print("All runs (median over rounds):\n")
table(rows, False)
print(f"\nQuiet runs only (server runq wait < {quiet:.0%} of wall time; median over those runs):\n")
table([r for r in rows if float(r["wait_share"]) < quiet], True)
EOF
}

# Re-render the tables of an earlier run: benches/redis_compare.sh --report bench-results/compare-<ts>.csv
if [[ "${1:-}" == "--report" ]]; then
    [[ -f "${2:-}" ]] || die "usage: $0 --report RAW.csv"
    render_tables "$2"
    exit 0
fi

# ----- build -----
build_meridian

# ----- processes and cleanup -----
WORK="$(mktemp -d "${TMPDIR:-/tmp}/meridian-compare.XXXXXX")"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        # Bounded wait: SIGKILL whatever has not exited after ~5 s.
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM



# "<on-cpu ns> <runnable-but-waiting ns>" summed over a process's threads (/proc schedstat):
# nanosecond CPU time, and how long the scheduler kept the server off a core it wanted.
sched_ns() {
    { cat /proc/"$1"/task/*/schedstat 2>/dev/null || true; } | awk '{ r += $1; w += $2 } END { printf "%.0f %.0f\n", r, w }'
}

M_PORT="$(free_port)"
# Meridian reads MERIDIAN_<PARAM> variables as configuration and rejects unknown ones, so the
# script's own MERIDIAN_BIN must not reach it (other MERIDIAN_* settings pass through on purpose).
taskset -c "$SERVER_CPU" "$MERIDIAN_BIN" --port "$M_PORT" --bind 127.0.0.1 --io-threads 1 \
    --save "" --appendonly no >"$WORK/meridian.log" 2>&1 &
M_PID=$!
PIDS+=("$M_PID")
wait_ready "$M_PORT" "$M_PID" meridian "$WORK/meridian.log"

R_PORT="$(free_port)"
taskset -c "$SERVER_CPU" "$REDIS_SERVER" --port "$R_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --daemonize no --logfile "" >"$WORK/redis.log" 2>&1 &
R_PID=$!
PIDS+=("$R_PID")
wait_ready "$R_PORT" "$R_PID" redis-server "$WORK/redis.log"

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "meridian pid $M_PID port $M_PORT; redis-server pid $R_PID port $R_PORT; servers on cpu $SERVER_CPU, client on cpu $CLIENT_CPU" >&2
echo "load average before: $LOAD_BEFORE (anything well above 0 means other work shares the cores)" >&2

RAW="$WORK/raw.csv"
echo "round,pipeline,test,server,rps,p99_ms,cpu_us_per_req,cpu_util,wait_share" >"$RAW"

# run_one ROUND PIPELINE TEST SERVER PORT PID
run_one() {
    local round=$1 p=$2 test=$3 server=$4 port=$5 pid=$6 n out t0 t1 c0 c1 line
    n=$N
    if ((p > 1)); then n=$N_PIPELINED; fi
    kill -0 "$pid" 2>/dev/null || die "$server (pid $pid) is gone"
    c0="$(sched_ns "$pid")"
    t0="$(date +%s%N)"
    if ! out="$(timeout "$RUN_TIMEOUT" taskset -c "$CLIENT_CPU" "$REDIS_BENCHMARK" -h 127.0.0.1 -p "$port" \
        -t "$test" -n "$n" -c "$CLIENTS" -d "$DATA_SIZE" -r "$KEYSPACE" -P "$p" --csv 2>"$WORK/bench.err")"; then
        cat "$WORK/bench.err" >&2
        die "redis-benchmark failed or timed out ($server, $test, -P $p)"
    fi
    t1="$(date +%s%N)"
    c1="$(sched_ns "$pid")"
    # Data row: "SET","123.45",... (MSET is named "MSET (10 keys)").
    line="$(printf '%s\n' "$out" | grep -v '^"test"' | grep -i "^\"$test" | head -1 || true)"
    [[ -n "$line" ]] || { printf '%s\n' "$out" >&2; die "no csv row for $test from $server"; }
    python3 - "$line" "$round" "$p" "$test" "$server" "$n" "$c0" "$c1" "$t0" "$t1" >>"$RAW" <<'EOF'
import csv, sys
line, rnd, p, test, server, n, c0, c1, t0, t1 = sys.argv[1:]
row = next(csv.reader([line]))
rps, p99 = float(row[1]), float(row[6])
(r0, w0), (r1, w1) = map(int, c0.split()), map(int, c1.split())
cpu_s, wait_s = (r1 - r0) / 1e9, (w1 - w0) / 1e9
wall_s = (int(t1) - int(t0)) / 1e9
print(f"{rnd},{p},{test.upper()},{server},{rps:.2f},{p99:.3f},{cpu_s * 1e6 / int(n):.3f},{cpu_s / wall_s:.3f},{wait_s / wall_s:.3f}")
EOF
    tail -1 "$RAW" >&2
}

for round in $(seq "$ROUNDS"); do
    for p in $PIPELINES; do
        for test in $TESTS; do
            # Alternate which server goes first: odd rounds Meridian, even rounds Redis.
            if ((round % 2)); then
                run_one "$round" "$p" "$test" meridian "$M_PORT" "$M_PID"
                run_one "$round" "$p" "$test" redis "$R_PORT" "$R_PID"
            else
                run_one "$round" "$p" "$test" redis "$R_PORT" "$R_PID"
                run_one "$round" "$p" "$test" meridian "$M_PORT" "$M_PID"
            fi
        done
    done
done
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

# ----- report -----
mkdir -p "$OUT_DIR"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
REPORT="$OUT_DIR/compare-$STAMP.md"
cp "$RAW" "$OUT_DIR/compare-$STAMP.csv"
M_VERSION="$("$MERIDIAN_BIN" --version 2>/dev/null || echo meridian)"
R_VERSION="$("$REDIS_SERVER" --version | awk '{print $3}')"
CPU_MODEL="$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"

render_tables "$RAW" >"$WORK/table.md"

{
    echo "# Meridian vs Redis — $STAMP"
    echo
    echo "- Meridian: \`$M_VERSION\` (\`--io-threads 1\`), Redis: $R_VERSION (\`--save \"\" --appendonly no\`)"
    echo "- CPU: $CPU_MODEL, $(nproc) cores; servers pinned to core $SERVER_CPU (one under load at a time), redis-benchmark pinned to core $CLIENT_CPU"
    echo "- redis-benchmark: \`-c $CLIENTS -d $DATA_SIZE -r $KEYSPACE\`, \`-n $N\` at P1, \`-n $N_PIPELINED\` at P>1; $ROUNDS interleaved rounds, medians shown"
    echo "- load average before / after: $LOAD_BEFORE / $LOAD_AFTER"
    echo "- rps ratio > 1: Meridian faster. p99 and CPU ratios < 1: Meridian better. CPU µs/req is the server's on-CPU time per request (all threads, /proc/<pid>/task/*/schedstat). On-CPU is that time over the run's wall time: well below 100% means the server was not the bottleneck (the client was, or a neighbour held the core). Runq wait is the share of wall time the server was runnable but kept off its core by other processes: above a few % the box was contended and rps/p99 understate both servers."
    echo
    cat "$WORK/table.md"
    echo
    echo "Raw per-run numbers: \`$(basename "$OUT_DIR")/compare-$STAMP.csv\`"
} >"$REPORT"

echo
cat "$WORK/table.md"
echo
echo "report: $REPORT"

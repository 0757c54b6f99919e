#!/usr/bin/env bash
# Paired measurement of a writer node's CPU per request: two `meridian demo --regions R --nodes 1`
# run at the same time, each loaded by its own redis-benchmark, and the on-CPU time of each
# demo's region-1 node (schedstat, all threads) is divided by its requests.
#
# Why paired: this VM's speed drifts by 20% within minutes (docs/benchmarks.md), so two
# builds (or 1 region against 3) measured one after the other differ by more than what is being
# measured. Run at the same time on the same cores, both sides see the same drift, and their
# ratio is steady to about 1% (an A/A run: 0.977–1.004). Both writers share WRITER_CPU, which
# makes each one's absolute cost higher than alone: read the ratio, not the nanoseconds. One
# region against 3 is less steady (±5%): the 1-region side finishes first and the other then
# runs alone for a while.
#
# Layout: both writer nodes on WRITER_CPU (default core 0); the peer-region nodes of a
# multi-region side and both redis-benchmark clients on OTHER_CPU (core 1), as peer regions run
# on other machines in a deployment. MERIDIAN_IO_THREADS=1.
#
# Usage:  A_BIN=old/meridian B_BIN=target/release/meridian benches/writer_pair.sh
#         A_REGIONS=1 B_REGIONS=3 benches/writer_pair.sh    (the ratio by writer CPU of issue 4)
# Env:
#   A_BIN, B_BIN        default: target/release/meridian (built if missing)
#   A_REGIONS=3 B_REGIONS=3
#   ROUNDS=4  TESTS="set incr"  REQUESTS=2000000  PIPELINE=16  CLIENTS=50  DATA_SIZE=32
#   KEYSPACE=100000  WRITER_CPU=0  OTHER_CPU=1
# Prints one line per round and test, then per test the median of B's CPU per request ÷ A's.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
A_REGIONS="${A_REGIONS:-3}" B_REGIONS="${B_REGIONS:-3}"
ROUNDS="${ROUNDS:-4}" TESTS="${TESTS:-set incr}" REQUESTS="${REQUESTS:-2000000}"
PIPELINE="${PIPELINE:-16}" CLIENTS="${CLIENTS:-50}" DATA_SIZE="${DATA_SIZE:-32}"
KEYSPACE="${KEYSPACE:-100000}" WRITER_CPU="${WRITER_CPU:-0}" OTHER_CPU="${OTHER_CPU:-1}"
if [[ -z "${A_BIN:-}" || -z "${B_BIN:-}" ]]; then
    DEFAULT_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/meridian"
    [[ -x "$DEFAULT_BIN" ]] || (cd "$ROOT" && cargo build --release --bin meridian)
    A_BIN="${A_BIN:-$DEFAULT_BIN}" B_BIN="${B_BIN:-$DEFAULT_BIN}"
fi
for tool in redis-benchmark taskset python3; do
    command -v "$tool" >/dev/null || { echo "writer_pair: $tool is needed" >&2; exit 2; }
done
WORK="$(mktemp -d)"
DEMOS=()
cleanup() {
    local pid
    for pid in ${DEMOS[@]+"${DEMOS[@]}"}; do
        pkill -KILL -P "$pid" 2>/dev/null || true
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    DEMOS=()
}
trap 'cleanup; rm -rf "$WORK"' EXIT

# start BIN REGIONS: starts a demo; prints "<writer pid> <writer port>".
start() {
    local bin=$1 regions=$2 out base pids=() port="" pid resp
    out="$WORK/demo-${#DEMOS[@]}.out"
    base=$((20000 + RANDOM % 20000))
    MERIDIAN_IO_THREADS=1 taskset -c "$WRITER_CPU" "$bin" demo --regions "$regions" --nodes 1 \
        --base-port "$base" >"$out" 2>"$out.err" &
    DEMOS+=($!)
    disown $!
    for _ in $(seq 600); do grep -qsx ready "$out" && break; sleep 0.1; done
    grep -qsx ready "$out" || { tail -5 "$out.err" >&2; echo "writer_pair: demo not ready" >&2; exit 1; }
    while read -r _ _ _ pid resp _; do
        pids+=("$pid")
        [[ -n "$port" ]] || port="${resp##*:}"
    done < <(grep '^node ' "$out")
    for pid in "${pids[@]:1}"; do taskset -a -p -c "$OTHER_CPU" "$pid" >/dev/null; done
    START="${pids[0]} $port"
}
cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{ r += $1 } END { printf "%.0f\n", r }'; }
load() {
    taskset -c "$OTHER_CPU" redis-benchmark -p "$1" -t "$2" -n "$REQUESTS" -c "$CLIENTS" \
        -d "$DATA_SIZE" -r "$KEYSPACE" -P "$PIPELINE" -q >/dev/null
}

echo "A: $A_BIN, $A_REGIONS region(s); B: $B_BIN, $B_REGIONS region(s); P$PIPELINE, $REQUESTS requests"
for round in $(seq "$ROUNDS"); do
    start "$A_BIN" "$A_REGIONS"
    read -r a_pid a_port <<<"$START"
    start "$B_BIN" "$B_REGIONS"
    read -r b_pid b_port <<<"$START"
    for test in $TESTS; do
        a0="$(cpu_ns "$a_pid")" b0="$(cpu_ns "$b_pid")"
        load "$a_port" "$test" &
        a_job=$!
        load "$b_port" "$test" &
        b_job=$!
        wait "$a_job"
        a1="$(cpu_ns "$a_pid")"
        wait "$b_job"
        b1="$(cpu_ns "$b_pid")"
        echo "round $round $test A_ns=$(((a1 - a0) / REQUESTS)) B_ns=$(((b1 - b0) / REQUESTS))" \
            "ratio=$(python3 -c "print(round(($b1 - $b0) / ($a1 - $a0), 3))")" | tee -a "$WORK/rounds"
    done
    cleanup
    sleep 1
done
python3 - "$WORK/rounds" <<'PY'
import re, statistics, sys
by = {}
for line in open(sys.argv[1]):
    m = re.match(r"round \d+ (\S+) .*ratio=([\d.]+)", line)
    by.setdefault(m.group(1), []).append(float(m.group(2)))
for test, r in by.items():
    print(f"{test}: B/A CPU per request, median {statistics.median(r):.3f} (rounds: {', '.join(f'{x:.3f}' for x in sorted(r))})")
PY

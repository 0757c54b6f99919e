#!/usr/bin/env bash
# Hit ratio of every maxmemory policy on a generated zipfian trace, against Meridian and
# redis-server (allkeys-lru, allkeys-lfu) at the same maxmemory.
#
# The trace (examples/hit_ratio.rs) is cache-aside: GET key:<rank>, SET a VALUE-byte value on
# a miss; ranks follow zipf(SKEW) over KEYS keys; REQUESTS requests, the first WARMUP not
# counted; seeded, so every server sees the same trace. Each server starts empty with
# MAXMEMORY and the policy, replays the trace, reports hits / (hits + misses) and the keys it
# held at the end (servers count different baselines and per-key overheads against maxmemory,
# so keys_held says how much of the key space each one fitted).
#
# Usage:  benches/hit_ratio.sh
# Env:    KEYS=100000 REQUESTS=400000 SKEW=0.99 VALUE=200 WARMUP=100000 MAXMEMORY=16mb
#         POLICIES="allkeys-lru ... allkeys-tinylfu" REDIS_POLICIES="allkeys-lru allkeys-lfu"
#         MERIDIAN_BIN=path (skips the build) HIT_RATIO_BIN=path REDIS_SERVER=redis-server
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KEYS="${KEYS:-100000}"
REQUESTS="${REQUESTS:-400000}"
SKEW="${SKEW:-0.99}"
VALUE="${VALUE:-200}"
WARMUP="${WARMUP:-100000}"
MAXMEMORY="${MAXMEMORY:-16mb}"
REDIS_SERVER="${REDIS_SERVER:-redis-server}"
REDIS_CLI="${REDIS_CLI:-redis-cli}"

die() { echo "hit_ratio: $*" >&2; exit 1; }
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"

build_meridian
if [[ -z "${HIT_RATIO_BIN:-}" ]]; then
    (cd "$ROOT" && cargo build --release --quiet --example hit_ratio)
    HIT_RATIO_BIN="$(dirname "$MERIDIAN_BIN")/examples/hit_ratio"
fi
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT

# run NAME POLICY COMMAND...: starts the server (its command line ends with the port), replays.
run() {
    local name=$1 policy=$2 port pid
    shift 2
    port="$(free_port)"
    "$@" "$port" >"$LOG" 2>&1 &
    pid=$!
    wait_ready "$port" "$pid" "$name" "$LOG"
    printf '%-10s %-16s ' "$name" "$policy"
    "$HIT_RATIO_BIN" "127.0.0.1:$port" "$KEYS" "$REQUESTS" "$SKEW" "$VALUE" "$WARMUP"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

echo "keys=$KEYS requests=$REQUESTS skew=$SKEW value=${VALUE}B warmup=$WARMUP maxmemory=$MAXMEMORY"
for policy in ${POLICIES-allkeys-lru allkeys-lfu allkeys-random allkeys-sieve allkeys-tinylfu}; do
    run meridian "$policy" "$MERIDIAN_BIN" --maxmemory "$MAXMEMORY" --maxmemory-policy "$policy" --port
done
for policy in ${REDIS_POLICIES-allkeys-lru allkeys-lfu}; do
    run redis "$policy" "$REDIS_SERVER" --save '' --appendonly no --maxmemory "$MAXMEMORY" \
        --maxmemory-policy "$policy" --port
done

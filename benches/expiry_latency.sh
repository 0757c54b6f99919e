#!/usr/bin/env bash
# Client latency while 1M volatile keys expire at once (active expiry under load).
#
# Starts Meridian pinned to SERVER_CPU, measures GET latency (baseline), loads KEYS keys with a
# TTL of TTL_MS, waits until the wave begins, measures GET latency again while the active
# expiry cycle reclaims them, and prints both next to each other plus DBSIZE before and after.
#
# Usage: benches/expiry_latency.sh     Env: MERIDIAN_BIN, KEYS=1000000, TTL_MS=10000,
#        SERVER_CPU=0, CLIENT_CPU=1, N=300000 (GET requests per measurement)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KEYS="${KEYS:-1000000}"; TTL_MS="${TTL_MS:-10000}"; N="${N:-300000}"
SERVER_CPU="${SERVER_CPU:-0}"; CLIENT_CPU="${CLIENT_CPU:-1}"
REDIS_CLI="${REDIS_CLI:-redis-cli}"
die() { echo "expiry_latency: $*" >&2; exit 1; }
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
build_meridian
PORT="$(free_port)"
LOG="$(mktemp)"
taskset -c "$SERVER_CPU" "$MERIDIAN_BIN" --port "$PORT" --io-threads 1 >"$LOG" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -f "$LOG"' EXIT
wait_ready "$PORT" "$PID" meridian "$LOG"

get_latency() { # prints "rps p50 p99"
  taskset -c "$CLIENT_CPU" timeout 300 redis-benchmark -p "$PORT" -t get -c 50 -n "$N" -r 1000000 -d 32 -q --csv \
    | awk -F'"' '/"GET"/ {print $4, $10, $14}'
}
read -r b_rps b_p50 b_p99 < <(get_latency)
start=$(date +%s%3N)
taskset -c "$CLIENT_CPU" timeout 300 redis-benchmark -p "$PORT" -c 50 -n "$KEYS" -r 1000000000 -P 32 -q \
  SET key:__rand_int__ vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv PX "$TTL_MS" >/dev/null
loaded=$(redis-cli -p "$PORT" dbsize)
# Start measuring just before the first keys expire.
now=$(date +%s%3N); wait_ms=$(( TTL_MS - (now - start) - 500 ))
[ "$wait_ms" -gt 0 ] && sleep "$(awk -v m="$wait_ms" 'BEGIN {print m/1000}')"
read -r w_rps w_p50 w_p99 < <(get_latency)
for _ in $(seq 1 100); do [ "$(redis-cli -p "$PORT" dbsize)" = 0 ] && break; sleep 0.2; done
left=$(redis-cli -p "$PORT" dbsize)
printf '| | GET rps | p50 ms | p99 ms |\n|---|---:|---:|---:|\n'
printf '| baseline (no volatile keys) | %s | %s | %s |\n' "$b_rps" "$b_p50" "$b_p99"
printf '| during the expiry wave | %s | %s | %s |\n' "$w_rps" "$w_p50" "$w_p99"
printf '\nvolatile keys loaded: %s, left after the wave: %s\n' "$loaded" "$left"

#!/usr/bin/env bash
# Memory per key: Meridian vs redis-server, exactly KEYS distinct keys (default 1,000,000) with
# 16-byte names (key:000000000001) and 32-byte values, loaded with `redis-cli --pipe`.
#
# Each server runs alone (started, loaded, measured, stopped), pinned to SERVER_CPU; redis-cli
# is pinned to CLIENT_CPU. Before and after the load the script reads VmRSS from
# /proc/<pid>/status and used_memory from INFO memory, and prints bytes/key for both servers,
# the Meridian/Redis ratio, and Meridian's used_memory growth against its RSS growth (the
# accounting check: used_memory must be within 10% of RSS growth).
#
# Usage:  benches/memory.sh
# Env:    KEYS=1000000 SERVER_CPU=0 CLIENT_CPU=1 MERIDIAN_BIN=path (skips the build)
#         REDIS_SERVER=redis-server REDIS_CLI=redis-cli OUT_DIR=bench-results LOAD_TIMEOUT=600
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KEYS="${KEYS:-1000000}"
SERVER_CPU="${SERVER_CPU:-0}"
CLIENT_CPU="${CLIENT_CPU:-1}"
REDIS_SERVER="${REDIS_SERVER:-redis-server}"
REDIS_CLI="${REDIS_CLI:-redis-cli}"
OUT_DIR="${OUT_DIR:-$ROOT/bench-results}"
LOAD_TIMEOUT="${LOAD_TIMEOUT:-600}"

die() { echo "memory: $*" >&2; exit 1; }
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"

for tool in "$REDIS_SERVER" "$REDIS_CLI" taskset python3 timeout; do
    command -v "$tool" >/dev/null 2>&1 || die "missing tool: $tool"
done
[[ "$KEYS" =~ ^[1-9][0-9]*$ && "$KEYS" -lt 1000000000000 ]] || die "KEYS must be a positive integer below 10^12"

build_meridian

WORK="$(mktemp -d "${TMPDIR:-/tmp}/meridian-memory.XXXXXX")"
PID=""
stop_server() {
    [[ -n "$PID" ]] || return 0
    kill "$PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=""
}
cleanup() {
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM



rss_bytes() {
    awk '/^VmRSS:/ { printf "%.0f\n", $2 * 1024 }' "/proc/$1/status"
}

used_memory() {
    timeout 10 "$REDIS_CLI" -h 127.0.0.1 -p "$1" info memory | tr -d '\r' | awk -F: '$1 == "used_memory" { print $2 }'
}

# The load: SET key:<12 digits> <32 bytes>, exact and distinct, as a RESP stream.
echo "generating $KEYS SET commands..." >&2
python3 - "$KEYS" "$WORK/load.resp" <<'EOF'
import sys
n, path = int(sys.argv[1]), sys.argv[2]
with open(path, "wb", buffering=1 << 20) as f:
    chunk = []
    for i in range(1, n + 1):
        key = b"key:%012d" % i            # 16 bytes
        val = b"v%031d" % i               # 32 bytes, not an integer
        chunk.append(b"*3\r\n$3\r\nSET\r\n$16\r\n" + key + b"\r\n$32\r\n" + val + b"\r\n")
        if len(chunk) == 10000:
            f.write(b"".join(chunk)); chunk.clear()
    f.write(b"".join(chunk))
EOF

# measure NAME -> sets <NAME>_RSS0 _RSS1 _USED0 _USED1
measure() {
    local name=$1 port log out
    port="$(free_port)"
    log="$WORK/$name.log"
    case "$name" in
        meridian)
            # Meridian reads MERIDIAN_<PARAM> env vars as configuration; keep MERIDIAN_BIN out.
            taskset -c "$SERVER_CPU" "$MERIDIAN_BIN" --port "$port" --bind 127.0.0.1 \
                --io-threads 1 --save "" --appendonly no >"$log" 2>&1 &
            ;;
        redis)
            taskset -c "$SERVER_CPU" "$REDIS_SERVER" --port "$port" --bind 127.0.0.1 --save "" \
                --appendonly no --daemonize no --logfile "" >"$log" 2>&1 &
            ;;
    esac
    PID=$!
    wait_ready "$port" "$PID" "$name" "$log"
    sleep 0.5
    local rss0 used0 rss1 used1 dbsize
    rss0="$(rss_bytes "$PID")"
    used0="$(used_memory "$port")"
    echo "$name: loading $KEYS keys..." >&2
    if ! out="$(timeout "$LOAD_TIMEOUT" taskset -c "$CLIENT_CPU" "$REDIS_CLI" -h 127.0.0.1 -p "$port" --pipe <"$WORK/load.resp" 2>&1)"; then
        printf '%s\n' "$out" >&2
        die "$name: redis-cli --pipe failed or timed out"
    fi
    printf '%s\n' "$out" | grep -q "errors: 0, replies: $KEYS" || { printf '%s\n' "$out" >&2; die "$name: load reported errors"; }
    dbsize="$(timeout 10 "$REDIS_CLI" -h 127.0.0.1 -p "$port" dbsize | tr -d '\r')"
    [[ "$dbsize" == "$KEYS" ]] || die "$name: DBSIZE is $dbsize, expected $KEYS"
    sleep 1 # let background work (expiry cycle, allocator purge) settle
    rss1="$(rss_bytes "$PID")"
    used1="$(used_memory "$port")"
    stop_server
    printf -v "${name}_RSS0" '%s' "$rss0"
    printf -v "${name}_RSS1" '%s' "$rss1"
    printf -v "${name}_USED0" '%s' "$used0"
    printf -v "${name}_USED1" '%s' "$used1"
    echo "$name: RSS $rss0 -> $rss1, used_memory $used0 -> $used1" >&2
}

measure meridian
measure redis

mkdir -p "$OUT_DIR"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
REPORT="$OUT_DIR/memory-$STAMP.md"
python3 - "$KEYS" "$meridian_RSS0" "$meridian_RSS1" "$meridian_USED0" "$meridian_USED1" \
    "$redis_RSS0" "$redis_RSS1" "$redis_USED0" "$redis_USED1" >"$WORK/table.md" <<'EOF'
import sys
k, mr0, mr1, mu0, mu1, rr0, rr1, ru0, ru1 = map(int, sys.argv[1:])
m_rss, r_rss = (mr1 - mr0) / k, (rr1 - rr0) / k
m_used, r_used = (mu1 - mu0) / k, (ru1 - ru0) / k
print(f"{k:,} keys, 16-byte names, 32-byte values.\n")
print("| | Meridian | Redis | ratio M/R |")
print("|---|---:|---:|---:|")
print(f"| RSS before → after (MiB) | {mr0/2**20:.1f} → {mr1/2**20:.1f} | {rr0/2**20:.1f} → {rr1/2**20:.1f} | |")
print(f"| used_memory before → after (MiB) | {mu0/2**20:.1f} → {mu1/2**20:.1f} | {ru0/2**20:.1f} → {ru1/2**20:.1f} | |")
print(f"| **bytes/key (RSS growth)** | **{m_rss:.1f}** | **{r_rss:.1f}** | **{m_rss / r_rss:.2f}** |")
print(f"| bytes/key (used_memory growth) | {m_used:.1f} | {r_used:.1f} | {m_used / r_used:.2f} |")
d_rss, d_used = mr1 - mr0, mu1 - mu0
err = (d_used - d_rss) / d_rss
verdict = "PASS" if abs(err) <= 0.10 else "FAIL"
print()
print(f"Meridian accounting: used_memory growth {d_used/2**20:.1f} MiB vs RSS growth {d_rss/2**20:.1f} MiB "
      f"→ {err:+.1%} ({verdict}: must be within ±10%). "
      f"Absolute: used_memory {mu1/2**20:.1f} MiB vs RSS {mr1/2**20:.1f} MiB ({(mu1 - mr1) / mr1:+.1%}).")
EOF
{
    echo "# Memory per key — $STAMP"
    echo
    echo "- Meridian \`$("$MERIDIAN_BIN" --version 2>/dev/null || echo meridian)\` (\`--io-threads 1\`), $("$REDIS_SERVER" --version | awk '{print "Redis", $3}') (\`--save \"\" --appendonly no\`), each alone, pinned to core $SERVER_CPU"
    echo
    cat "$WORK/table.md"
} >"$REPORT"
echo
cat "$WORK/table.md"
echo
echo "report: $REPORT"

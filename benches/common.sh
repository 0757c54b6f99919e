# Helpers shared by the benchmark scripts (sourced, not run). The caller defines `die`,
# `ROOT` (the repository) and `REDIS_CLI`.

# Sets MERIDIAN_BIN: the given binary, or a fresh release build.
build_meridian() {
    if [[ -z "${MERIDIAN_BIN:-}" ]]; then
        echo "building meridian (release)..." >&2
        (cd "$ROOT" && cargo build --release --quiet --bin meridian)
        local target_dir
        target_dir="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
        MERIDIAN_BIN="$target_dir/release/meridian"
    fi
    [[ -x "$MERIDIAN_BIN" ]] || die "meridian binary not found or not executable: $MERIDIAN_BIN"
}

# A TCP port the OS reports free on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_ready PORT PID NAME LOG: up to 10 s for PING to answer.
wait_ready() {
    local port=$1 pid=$2 name=$3 log=$4
    for _ in $(seq 100); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -20 "$log" >&2 || true
            die "$name exited during start-up"
        fi
        if [[ "$(timeout 1 "$REDIS_CLI" -h 127.0.0.1 -p "$port" ping 2>/dev/null)" == PONG ]]; then
            return 0
        fi
        sleep 0.1
    done
    tail -20 "$log" >&2 || true
    die "$name did not answer PING on port $port within 10 s"
}

# free_ports N: N distinct TCP ports the OS reports free on 127.0.0.1, space-separated (all bound
# at once, so no two are the same).
free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PY
}

# free_port_block N [OFFSET...]: a base port B such that B..B+N-1, and the same block shifted by
# each OFFSET, are all free on 127.0.0.1 for both TCP and UDP (for programs that take a base port
# and count up from it, e.g. RESP ports from B and mesh ports from B+10000). Random bases.
free_port_block() {
    python3 - "$@" <<'PY'
import random, socket, sys
n, offsets = int(sys.argv[1]), [0] + [int(o) for o in sys.argv[2:]]
top = 65535 - max(offsets) - n
for _ in range(200):
    base = random.randrange(20000, top)
    socks = []
    try:
        for off in offsets:
            for p in range(base + off, base + off + n):
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    s = socket.socket(socket.AF_INET, kind)
                    socks.append(s)
                    s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        for s in socks:
            s.close()
    print(base)
    sys.exit(0)
sys.exit("no free block of %d ports (offsets %s) found" % (n, offsets))
PY
}

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

#!/usr/bin/env bash
# A 3-node Meridian region vs a 3-node Redis Cluster, same box, same client.
#
# Throughput: each system runs as three server processes, all pinned to SERVER_CPU (default
# core 0); redis-benchmark --cluster is pinned to CLIENT_CPU (default core 1). The two systems
# are never up at the same time: every round starts one system fresh, runs every test at every
# pipeline depth against it, stops it, then does the same for the other (odd rounds Meridian
# first, even rounds Redis first). The table shows the median over rounds.
#
# High availability (each round, each system, on a fresh 6-node cluster: 3 primaries with one
# replica each, all on SERVER_CPU; the Python client on CLIENT_CPU):
#   replica lag   SET a unique value on a primary, then poll one of its replicas (after READONLY)
#                 with GET until it returns that value; the time from the primary's reply to the
#                 first read that sees the value, LAG_SAMPLES samples. Resolution: one GET round
#                 trip (a value visible on the first poll counts as that round trip).
#   failover      a writer SETs a key in the slots of one primary every WRITE_INTERVAL_MS; after
#                 a warm-up the primary is SIGKILLed; reported: ms from the kill to the first SET
#                 acknowledged by another node. The writer follows MOVED redirects and re-reads
#                 CLUSTER NODES from a surviving node after every failed write.
#   Both systems get the same failure-detection budget: cluster-node-timeout NODE_TIMEOUT ms
#   (default 1500, Meridian's default; Redis's own default is 15000). Redis: --cluster-node-timeout
#   (a silent primary is PFAIL after it, FAIL once a majority agrees, then its replica waits
#   500-1000 ms before the election). Meridian: MERIDIAN_CLUSTER_NODE_TIMEOUT in the nodes'
#   environment (SWIM probe/suspicion periods scaled so a silent node is down after about that).
#
# Meridian side: `meridian demo --regions 1 --nodes N --replicas R --base-port P` starts N
# processes (N counts every node: N / (R + 1) primaries, R replicas each; RESP ports from P,
# mesh ports from P + 10000) and prints, per node, `node <region> <node-id> <pid> <resp host:port>
# <mesh host:port> <primary|replica>`, then `ready`; SIGINT to the demo stops them all. The
# script reads the seed (first primary's RESP address) and the node pids from those lines. The
# nodes run single-threaded: MERIDIAN_IO_THREADS=1 in the environment (every node reads it),
# plus `-- --io-threads 1` (flags after `--` go to every node) when `meridian demo --help` shows
# node args, or `--io-threads 1` when it lists that flag itself.
#
# Usage:  benches/cluster_compare.sh
# Env:
#   ROUNDS=3                 rounds (median reported); HA_ROUNDS=ROUNDS for lag + failover
#   REQUESTS=100000          requests per redis-benchmark run at -P 1
#   REQUESTS_PIPELINED=10*REQUESTS   requests per run at -P > 1 (pipelined runs are ~10x faster)
#   TESTS="set get incr"  PIPELINES="1 16"  CLIENTS=50 DATA_SIZE=32 KEYSPACE=100000
#   SERVER_CPU=0 CLIENT_CPU=1
#   MERIDIAN_BIN=path        default target/release/meridian (cargo build --release if missing)
#   SKIP_REDIS=1 / SKIP_MERIDIAN=1   measure one system only
#   PARTS="throughput ha"    which parts to run
#   NODE_TIMEOUT=1500        cluster-node-timeout (ms) of both HA clusters
#   LAG_SAMPLES=1000  WRITE_INTERVAL_MS=10  FAILOVER_TIMEOUT=60 (s, per failover)
#   START_TIMEOUT=60         seconds for a cluster (or the demo's `ready`) to come up
#   RUN_TIMEOUT=300          seconds one redis-benchmark run may take before the script fails
#   REDIS_SERVER=redis-server REDIS_BENCHMARK=redis-benchmark REDIS_CLI=redis-cli
#   OUT_DIR=bench-results    the report goes to OUT_DIR/cluster-<timestamp>.txt (and stdout),
#                            raw numbers beside it (.csv, .ha.jsonl)
#
# Exit status: non-zero if a part could not be measured (the report still says what was).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROUNDS="${ROUNDS:-3}"
HA_ROUNDS="${HA_ROUNDS:-$ROUNDS}"
REQUESTS="${REQUESTS:-100000}"
REQUESTS_PIPELINED="${REQUESTS_PIPELINED:-$((REQUESTS * 10))}"
TESTS="${TESTS:-set get incr}"
PIPELINES="${PIPELINES:-1 16}"
CLIENTS="${CLIENTS:-50}"
DATA_SIZE="${DATA_SIZE:-32}"
KEYSPACE="${KEYSPACE:-100000}"
SERVER_CPU="${SERVER_CPU:-0}"
CLIENT_CPU="${CLIENT_CPU:-1}"
SKIP_REDIS="${SKIP_REDIS:-0}"
SKIP_MERIDIAN="${SKIP_MERIDIAN:-0}"
PARTS="${PARTS:-throughput ha}"
NODE_TIMEOUT="${NODE_TIMEOUT:-1500}"
LAG_SAMPLES="${LAG_SAMPLES:-1000}"
WRITE_INTERVAL_MS="${WRITE_INTERVAL_MS:-10}"
FAILOVER_TIMEOUT="${FAILOVER_TIMEOUT:-60}"
START_TIMEOUT="${START_TIMEOUT:-60}"
RUN_TIMEOUT="${RUN_TIMEOUT:-300}"
REDIS_SERVER="${REDIS_SERVER:-redis-server}"
REDIS_BENCHMARK="${REDIS_BENCHMARK:-redis-benchmark}"
REDIS_CLI="${REDIS_CLI:-redis-cli}"
OUT_DIR="${OUT_DIR:-$ROOT/bench-results}"
PRIMARIES=3

die() { echo "cluster_compare: $*" >&2; exit 1; }
log() { echo "cluster_compare: $*" >&2; }
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"

for tool in "$REDIS_BENCHMARK" "$REDIS_CLI" taskset python3 timeout; do
    command -v "$tool" >/dev/null 2>&1 || die "missing tool: $tool"
done
if [[ "$SKIP_REDIS" != 1 ]]; then
    command -v "$REDIS_SERVER" >/dev/null 2>&1 || die "missing tool: $REDIS_SERVER (or set SKIP_REDIS=1)"
fi
for v in ROUNDS HA_ROUNDS REQUESTS REQUESTS_PIPELINED LAG_SAMPLES WRITE_INTERVAL_MS FAILOVER_TIMEOUT \
    START_TIMEOUT RUN_TIMEOUT NODE_TIMEOUT CLIENTS; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
[[ "$SKIP_REDIS" == 1 && "$SKIP_MERIDIAN" == 1 ]] && die "SKIP_REDIS=1 and SKIP_MERIDIAN=1: nothing to measure"
for part in $PARTS; do
    [[ "$part" == throughput || "$part" == ha ]] || die "unknown part '$part' in PARTS (throughput, ha)"
done
bench_help="$("$REDIS_BENCHMARK" --help 2>&1 || true)"
if ! grep -q -- '--cluster' <<<"$bench_help"; then
    die "$REDIS_BENCHMARK has no --cluster mode (needs redis-benchmark >= 6)"
fi
SYSTEMS=()
[[ "$SKIP_MERIDIAN" == 1 ]] || SYSTEMS+=(meridian)
[[ "$SKIP_REDIS" == 1 ]] || SYSTEMS+=(redis)

# ----- the meridian binary -----
DEMO_FLAGS=()
if [[ "$SKIP_MERIDIAN" != 1 ]]; then
    if [[ -z "${MERIDIAN_BIN:-}" ]]; then
        MERIDIAN_BIN="$ROOT/target/release/meridian"
        if [[ ! -x "$MERIDIAN_BIN" ]]; then
            log "no $MERIDIAN_BIN: building meridian (release)..."
            (cd "$ROOT" && cargo build --release --quiet --bin meridian)
            [[ -x "$MERIDIAN_BIN" ]] ||
                MERIDIAN_BIN="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
                    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/meridian"
        fi
    fi
    [[ -x "$MERIDIAN_BIN" ]] || die "meridian binary not found or not executable: $MERIDIAN_BIN"
    command -v pgrep >/dev/null 2>&1 || die "missing tool: pgrep"
    if ! demo_help="$(timeout 10 "$MERIDIAN_BIN" demo --help 2>&1)"; then
        printf '%s\n' "$demo_help" | head -5 >&2
        die "$MERIDIAN_BIN does not support 'meridian demo' (needed: meridian demo --regions 1 --nodes N --replicas R --base-port P); rebuild it, or run with SKIP_MERIDIAN=1"
    fi
    for flag in --regions --nodes --replicas --base-port; do
        grep -q -- "$flag" <<<"$demo_help" ||
            die "'$MERIDIAN_BIN demo --help' does not list $flag; this script expects: demo --regions 1 --nodes N --replicas R --base-port P"
    done
    # Node flags: either the demo lists --io-threads itself, or it passes flags after `--` on to
    # every node ("[-- <node-args>...]"). MERIDIAN_IO_THREADS=1 is set in any case.
    if grep -q -- '--io-threads' <<<"$demo_help"; then
        DEMO_FLAGS+=(--io-threads 1)
    elif grep -qi -- 'node-args\|node_args\|after --' <<<"$demo_help"; then
        DEMO_FLAGS+=(-- --io-threads 1)
    fi
fi

# ----- processes and cleanup -----
WORK="$(mktemp -d "${TMPDIR:-/tmp}/meridian-cluster.XXXXXX")"
REDIS_PIDS=()      # redis-server processes of the cluster that is up, if any
DEMO_PID=""        # the meridian demo process, if one is up
DEMO_NODE_PIDS=()  # its node processes (from its `node` lines)

# stop_pids SIGNAL PID...: sends SIGNAL to each, waits up to ~10 s, SIGKILLs what is left.
stop_pids() {
    local sig=$1 pid
    shift
    for pid in "$@"; do kill "-$sig" "$pid" 2>/dev/null || true; done
    for pid in "$@"; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

stop_redis_cluster() {
    if ((${#REDIS_PIDS[@]})); then stop_pids TERM "${REDIS_PIDS[@]}"; fi
    REDIS_PIDS=()
}

# SIGINT to the demo (it stops its nodes); after up to ~10 s, SIGKILL to whatever is left of the
# demo, its child processes (even if it never reported them) and the nodes it reported.
stop_meridian_demo() {
    local pid children=()
    if [[ -n "$DEMO_PID" ]]; then
        read -r -a children <<<"$(pgrep -P "$DEMO_PID" | tr '\n' ' ' || true)"
        kill -INT "$DEMO_PID" 2>/dev/null || true
        for pid in "$DEMO_PID" ${children[@]+"${children[@]}"} ${DEMO_NODE_PIDS[@]+"${DEMO_NODE_PIDS[@]}"}; do
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        done
        stop_pids KILL "$DEMO_PID" ${children[@]+"${children[@]}"}
    fi
    if ((${#DEMO_NODE_PIDS[@]})); then stop_pids KILL "${DEMO_NODE_PIDS[@]}"; fi
    DEMO_PID=""
    DEMO_NODE_PIDS=()
}

cleanup() {
    stop_meridian_demo
    stop_redis_cluster
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ----- the Python helpers: a tiny RESP client, cluster topology, replica lag, failover -----
PY="$WORK/cluster_helpers.py"
cat >"$PY" <<'PYEOF'
"""Helpers for cluster_compare.sh. Subcommands print one JSON object (or a table) on stdout.

No dependency beyond the standard library: a minimal RESP2 client, so the timings are not
blurred by a client library's own retry and back-off policy."""
import argparse, csv, json, math, os, signal, socket, statistics, sys, time


class RespError(Exception):
    pass


class Conn:
    def __init__(self, addr, timeout=1.0):
        host, port = addr.rsplit(":", 1)
        self.addr = addr
        try:
            self.s = socket.create_connection((host, int(port)), timeout=timeout)
        except OSError as e:
            raise type(e)(e.errno, "%s: %s" % (addr, e.strerror or e)) if e.errno else type(e)("%s: %s" % (addr, e))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.s.makefile("rb")

    def close(self):
        try:
            self.f.close()
            self.s.close()
        except OSError:
            pass

    def cmd(self, *args):
        """Sends one command; returns the reply, or a RespError instance for an error reply."""
        parts = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.s.sendall(b"".join(parts))
        return self._read()

    def _read(self):
        line = self.f.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("connection closed by " + self.addr)
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            return RespError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            if len(data) != n + 2:
                raise ConnectionError("connection closed by " + self.addr)
            return data[:-2]
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise ConnectionError("unexpected reply from %s: %r" % (self.addr, line))


def crc16(data):
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def keyslot(key):
    key = key.encode() if isinstance(key, str) else key
    s = key.find(b"{")
    if s != -1:
        e = key.find(b"}", s + 1)
        if e > s + 1:
            key = key[s + 1:e]
    return crc16(key) % 16384


def cluster_nodes(addr):
    """CLUSTER NODES of the node at addr, parsed: [{id, addr, flags, master, slots}]."""
    c = Conn(addr)
    try:
        txt = c.cmd("CLUSTER", "NODES")
    finally:
        c.close()
    if isinstance(txt, RespError):
        raise RuntimeError("CLUSTER NODES on %s: %s" % (addr, txt))
    host = addr.rsplit(":", 1)[0]
    nodes = []
    for line in txt.decode().splitlines():
        f = line.split()
        if len(f) < 8:
            continue
        a = f[1].split("@")[0].split(",")[0]
        if a.startswith(":"):
            a = host + a
        slots = []
        for s in f[8:]:
            if s.startswith("["):
                continue
            lo, _, hi = s.partition("-")
            slots.append((int(lo), int(hi or lo)))
        nodes.append({"id": f[0], "addr": a, "flags": set(f[2].split(",")), "master": f[3], "slots": slots})
    return nodes


def is_primary(n):
    return "master" in n["flags"] or "primary" in n["flags"]


def owner_of(nodes, slot):
    for n in nodes:
        if is_primary(n) and any(lo <= slot <= hi for lo, hi in n["slots"]):
            return n
    return None


def replicas_of(nodes, primary):
    return [n for n in nodes if n["master"] == primary["id"] and not is_primary(n)]


def tag_for(primary, prefix):
    """A hash tag whose slot the primary owns."""
    for i in range(1_000_000):
        tag = "%s%d" % (prefix, i)
        if any(lo <= keyslot(tag) <= hi for lo, hi in primary["slots"]):
            return tag
    raise RuntimeError("no hash tag found for " + primary["addr"])


def pick_pair(seed, avoid_seed):
    """(primary, replica, all nodes): the first primary (by address) that has a replica."""
    nodes = cluster_nodes(seed)
    prims = sorted((n for n in nodes if is_primary(n) and n["slots"]), key=lambda n: n["addr"])
    if avoid_seed:
        prims.sort(key=lambda n: n["addr"] == seed)
    for p in prims:
        reps = sorted(replicas_of(nodes, p), key=lambda n: n["addr"])
        if reps:
            return p, reps[0], nodes
    raise RuntimeError("CLUSTER NODES on %s lists no primary with a replica" % seed)


def pct(sorted_values, q):
    """Nearest-rank percentile."""
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def info_field(conn, section, name):
    r = conn.cmd("INFO", section)
    if isinstance(r, (RespError, type(None))):
        return None
    for line in r.decode().splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    return None


def cmd_wait_cluster(a):
    """Until every node reports cluster_state:ok and the same roster (primaries own all slots,
    each has its replicas) and every replica's link to its primary is up."""
    deadline = time.monotonic() + a.timeout
    expect_nodes = a.primaries * (1 + a.replicas)
    why = "not checked yet"
    while time.monotonic() < deadline:
        try:
            ok = True
            for addr in a.addrs.split(","):
                c = Conn(addr)
                try:
                    st = c.cmd("CLUSTER", "INFO")
                    if isinstance(st, RespError) or b"cluster_state:ok" not in st:
                        ok, why = False, "%s: cluster_state not ok" % addr
                        break
                    nodes = cluster_nodes(addr)
                    prims = [n for n in nodes if is_primary(n) and n["slots"]]
                    covered = sum(hi - lo + 1 for n in prims for lo, hi in n["slots"])
                    bad = [n["addr"] for n in nodes if n["flags"] & {"fail", "fail?", "handshake", "noaddr"}]
                    if len(nodes) != expect_nodes or len(prims) != a.primaries or covered != 16384 or bad:
                        ok, why = False, "%s sees %d nodes, %d primaries, %d slots, flagged %s" % (
                            addr, len(nodes), len(prims), covered, bad)
                        break
                    if any(len(replicas_of(nodes, p)) != a.replicas for p in prims):
                        ok, why = False, "%s: replicas not attached yet" % addr
                        break
                    me = next(n for n in nodes if "myself" in n["flags"])
                    if not is_primary(me) and info_field(c, "replication", "master_link_status") != "up":
                        ok, why = False, "%s: replica link not up" % addr
                        break
                    if is_primary(me):
                        states = [info_field(c, "replication", "slave%d" % i) or "" for i in range(a.replicas)]
                        if not all("state=online" in st for st in states):
                            ok, why = False, "%s: replicas not online yet: %s" % (addr, states)
                            break
                finally:
                    c.close()
            if ok:
                print(json.dumps({"ok": True}))
                return 0
        except (OSError, RuntimeError) as e:
            why = str(e)
        time.sleep(0.1)
    print(json.dumps({"error": "cluster not ready after %ss: %s" % (a.timeout, why)}))
    return 3


def cmd_lag(a):
    primary, replica, _ = pick_pair(a.seed, avoid_seed=False)
    tag = tag_for(primary, "lag")
    p, r = Conn(primary["addr"]), Conn(replica["addr"])
    ro = r.cmd("READONLY")
    if isinstance(ro, RespError):
        raise RuntimeError("READONLY on replica %s: %s" % (replica["addr"], ro))
    run = "%d-%d" % (os.getpid(), time.time_ns())
    # Warm-up: a fresh replica may still be finishing its initial sync; measure the steady state.
    t_warm = time.perf_counter()
    key, val = "lag:{%s}:warmup" % tag, ("%s-warmup" % run).encode()
    if p.cmd("SET", key, val) != "OK":
        raise RuntimeError("SET on primary %s failed" % primary["addr"])
    while r.cmd("GET", key) != val:
        if time.perf_counter() - t_warm > a.warmup_timeout:
            raise RuntimeError("replica %s did not show a write within %ss of warm-up" % (replica["addr"], a.warmup_timeout))
        time.sleep(0.001)
    warmup_ms = (time.perf_counter() - t_warm) * 1000
    lags, first_poll, polls = [], 0, 0
    for i in range(a.samples):
        key = "lag:{%s}:%d" % (tag, i % 64)
        val = ("%s-%d" % (run, i)).encode()
        ok = p.cmd("SET", key, val)
        t_ack = time.perf_counter()
        if ok != "OK":
            raise RuntimeError("SET on primary %s answered %r" % (primary["addr"], ok))
        n = 0
        while True:
            got = r.cmd("GET", key)
            n += 1
            if got == val:
                lags.append((time.perf_counter() - t_ack) * 1000)
                break
            if isinstance(got, RespError):
                raise RuntimeError("GET on replica %s (after READONLY): %s" % (replica["addr"], got))
            if time.perf_counter() - t_ack > a.sample_timeout:
                raise RuntimeError("replica %s did not show a write within %ss (sample %d)" % (
                    replica["addr"], a.sample_timeout, i))
        polls += n
        first_poll += n == 1
    # One GET round trip on the replica with nothing to wait for: the resolution of the probe.
    rtts = []
    for _ in range(200):
        t = time.perf_counter()
        r.cmd("GET", "lag:{%s}:0" % tag)
        rtts.append((time.perf_counter() - t) * 1000)
    rtt = statistics.median(rtts)
    p.close()
    r.close()
    lags.sort()
    print(json.dumps({
        "primary": primary["addr"], "replica": replica["addr"], "samples": len(lags),
        "p50_ms": pct(lags, 50), "p99_ms": pct(lags, 99), "max_ms": lags[-1],
        "first_poll_share": first_poll / len(lags), "mean_polls": polls / len(lags), "get_rtt_ms": rtt,
        "warmup_ms": warmup_ms,
        "lags_ms": [round(x, 4) for x in lags],
    }))
    return 0


def cmd_failover(a):
    pids = dict(kv.split("=", 1) for kv in a.pids.split(","))
    victim, _, nodes = pick_pair(a.seed, avoid_seed=True)
    former_replicas = {n["addr"] for n in replicas_of(nodes, victim)}
    if victim["addr"] not in pids:
        raise RuntimeError("no pid known for primary %s (known: %s)" % (victim["addr"], ",".join(pids)))
    victim_pid = int(pids[victim["addr"]])
    survivors = [n["addr"] for n in nodes if n["addr"] != victim["addr"]]
    key = "failover:{%s}" % tag_for(victim, "fo")
    interval = a.interval_ms / 1000
    conns = {}

    def conn(addr):
        if addr not in conns:
            conns[addr] = Conn(addr, timeout=0.5)
        return conns[addr]

    def drop(addr):
        c = conns.pop(addr, None)
        if c:
            c.close()

    def refresh():
        """The slot's owner according to the first survivor that answers CLUSTER NODES."""
        for s in survivors:
            try:
                n = owner_of(cluster_nodes(s), keyslot(key))
                if n:
                    return n["addr"]
            except (OSError, RuntimeError):
                continue
        return victim["addr"]

    def write(owner, seq):
        """One SET, following up to 3 MOVED/ASK redirects: (acknowledging addr or None, owner, error kind)."""
        for _ in range(4):
            try:
                r = conn(owner).cmd("SET", key, seq)
            except OSError as e:
                drop(owner)
                return None, owner, type(e).__name__
            if r == "OK":
                return owner, owner, None
            if isinstance(r, RespError):
                msg = str(r).split()
                if msg and msg[0] in ("MOVED", "ASK") and len(msg) >= 3:
                    owner = msg[2]
                    continue
                return None, owner, msg[0] if msg else "error"
            return None, owner, "reply %r" % (r,)
        return None, owner, "redirect loop"

    owner = victim["addr"]
    seq = 0
    t_end = time.perf_counter() + a.warmup
    while time.perf_counter() < t_end:
        seq += 1
        acked, owner, err = write(owner, seq)
        if acked != victim["addr"]:
            raise RuntimeError("warm-up write to %s failed: %s (acked by %s)" % (victim["addr"], err, acked))
        time.sleep(interval)

    t_kill = time.perf_counter()
    os.kill(victim_pid, signal.SIGKILL)
    attempts, failed, errors = 0, 0, {}
    result = None
    next_tick = t_kill
    while time.perf_counter() - t_kill < a.timeout:
        seq += 1
        attempts += 1
        acked, owner, err = write(owner, seq)
        now = time.perf_counter()
        if acked and acked != victim["addr"]:
            result = {"failover_ms": (now - t_kill) * 1000, "new_primary": acked,
                      "new_primary_was_replica": acked in former_replicas}
            break
        if not acked or acked == victim["addr"]:
            # acked by the victim: a write that beat the signal; not a failover.
            failed += not acked
            if err:
                errors[err] = errors.get(err, 0) + 1
            owner = refresh()
        next_tick += interval
        time.sleep(max(0.0, next_tick - time.perf_counter()))
    for c in list(conns):
        drop(c)
    out = {"victim": victim["addr"], "victim_pid": victim_pid, "former_replicas": sorted(former_replicas),
           "key": key, "interval_ms": a.interval_ms, "attempts": attempts, "failed_attempts": failed,
           "errors": errors}
    if result is None:
        out["error"] = "no write acknowledged by another node within %ss of the kill" % a.timeout
        print(json.dumps(out))
        return 3
    out.update(result)
    print(json.dumps(out))
    return 0


def cmd_parse_bench(a):
    """redis-benchmark --csv output on stdin -> one raw CSV row (the test's row; latency columns by header)."""
    header, row = None, None
    for rec in csv.reader(sys.stdin):
        if not rec:
            continue
        if rec[0] == "test":
            header = rec
        elif rec[0].upper().startswith(a.test.upper()) and row is None:
            row = rec
    if row is None:
        return 3
    col = dict(zip(header or ["test", "rps"], row))
    def num(k):
        try:
            return "%.3f" % float(col[k])
        except (KeyError, ValueError):
            return ""
    (r0, w0), (r1, w1) = (map(int, x.split()) for x in (a.cpu0, a.cpu1))
    cpu_s = (r1 - r0) / 1e9
    wall_s = (a.t1 - a.t0) / 1e9
    print(",".join([a.round, a.pipeline, a.test.upper(), a.system, "%.2f" % float(col["rps"]),
                    num("avg_latency_ms"), num("p50_latency_ms"), num("p99_latency_ms"),
                    "%.3f" % (cpu_s * 1e6 / a.requests), "%.3f" % (cpu_s / wall_s)]))
    return 0


def cmd_report(a):
    rows = list(csv.DictReader(open(a.raw))) if os.path.exists(a.raw) else []
    ha = [json.loads(l) for l in open(a.ha)] if os.path.exists(a.ha) else []
    order = {"SET": 0, "GET": 1, "INCR": 2}
    med = lambda rs, k: statistics.median(float(r[k]) for r in rs if r[k] != "") if any(r[k] != "" for r in rs) else None
    f = lambda v, fmt: "–" if v is None else fmt.format(v)
    ratio = lambda m, r: "–" if m is None or r is None or r == 0 else "%.2f" % (m / r)
    if rows:
        print("## Throughput (redis-benchmark --cluster; median over rounds)\n")
        print("| test | P | Meridian rps | Redis rps | rps ratio M/R | Meridian p50 ms | Redis p50 ms "
              "| Meridian p99 ms | Redis p99 ms | p99 ratio M/R | Meridian CPU µs/req | Redis CPU µs/req "
              "| server core busy M / R | runs M / R |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        cells = {}
        for r in rows:
            cells.setdefault((int(r["pipeline"]), r["test"]), {}).setdefault(r["system"], []).append(r)
        for (p, t) in sorted(cells, key=lambda k: (k[0], order.get(k[1], 9), k[1])):
            m, r = cells[(p, t)].get("meridian", []), cells[(p, t)].get("redis", [])
            mm = {k: med(m, k) if m else None for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "cpu_util")}
            rr = {k: med(r, k) if r else None for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "cpu_util")}
            print("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s | %d / %d |" % (
                t, p, f(mm["rps"], "{:,.0f}"), f(rr["rps"], "{:,.0f}"), ratio(mm["rps"], rr["rps"]),
                f(mm["p50_ms"], "{:.3f}"), f(rr["p50_ms"], "{:.3f}"),
                f(mm["p99_ms"], "{:.3f}"), f(rr["p99_ms"], "{:.3f}"), ratio(mm["p99_ms"], rr["p99_ms"]),
                f(mm["cpu_us_per_req"], "{:.2f}"), f(rr["cpu_us_per_req"], "{:.2f}"),
                f(mm["cpu_util"], "{:.0%}"), f(rr["cpu_util"], "{:.0%}"), len(m), len(r)))
        print()
    if ha:
        print("## Replica lag (primary's reply to first replica read that sees the value)\n")
        print("| system | rounds | samples | p50 ms | p99 ms | max ms | seen on first poll | GET RTT ms (resolution) | first write visible after, ms |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
        fails = []
        for system in ("meridian", "redis"):
            runs = [h for h in ha if h["system"] == system and h["what"] == "lag"]
            good = [h for h in runs if "error" not in h]
            fails += ["%s lag, round %s: %s" % (system, h["round"], h["error"]) for h in runs if "error" in h]
            if not runs:
                continue
            if not good:
                print("| %s | 0 | 0 | failed | | | | | |" % system)
                continue
            lags = sorted(x for h in good for x in h["lags_ms"])
            print("| %s | %d | %d | %.3f | %.3f | %.3f | %.0f%% | %.3f | %s |" % (
                system, len(good), len(lags), pct(lags, 50), pct(lags, 99), lags[-1],
                100 * statistics.mean(h["first_poll_share"] for h in good),
                statistics.median(h["get_rtt_ms"] for h in good),
                " ".join("%.1f" % h["warmup_ms"] for h in good)))
        print("\n## Failover (SIGKILL of a primary to the first write acknowledged by another node)\n")
        print("| system | detection budget | rounds ok | median ms | min ms | max ms | each round ms | new primary was the replica |")
        print("|---|---|---:|---:|---:|---:|---|---|")
        for system in ("meridian", "redis"):
            runs = [h for h in ha if h["system"] == system and h["what"] == "failover"]
            good = [h for h in runs if "error" not in h]
            fails += ["%s failover, round %s: %s" % (system, h["round"], h["error"]) for h in runs if "error" in h]
            if not runs:
                continue
            budget = runs[0].get("budget", "")
            if not good:
                print("| %s | %s | 0 / %d | failed | | | | |" % (system, budget, len(runs)))
                continue
            ms = [h["failover_ms"] for h in good]
            print("| %s | %s | %d / %d | %.0f | %.0f | %.0f | %s | %s |" % (
                system, budget, len(good), len(runs), statistics.median(ms), min(ms), max(ms),
                " ".join("%.0f" % x for x in ms),
                " ".join("yes" if h["new_primary_was_replica"] else "no" for h in good)))
        if fails:
            print("\nFailed measurements:\n")
            for x in fails:
                print("- " + x)
        print()
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("wait-cluster")
    w.add_argument("--addrs", required=True)
    w.add_argument("--primaries", type=int, required=True)
    w.add_argument("--replicas", type=int, required=True)
    w.add_argument("--timeout", type=float, required=True)
    l = sub.add_parser("lag")
    l.add_argument("--seed", required=True)
    l.add_argument("--samples", type=int, default=1000)
    l.add_argument("--sample-timeout", type=float, default=5.0)
    l.add_argument("--warmup-timeout", type=float, default=30.0)
    fo = sub.add_parser("failover")
    fo.add_argument("--seed", required=True)
    fo.add_argument("--pids", required=True, help="addr=pid,addr=pid,...")
    fo.add_argument("--interval-ms", type=float, default=10)
    fo.add_argument("--warmup", type=float, default=1.0)
    fo.add_argument("--timeout", type=float, default=60)
    pb = sub.add_parser("parse-bench")
    for k in ("round", "pipeline", "test", "system", "cpu0", "cpu1"):
        pb.add_argument("--" + k, required=True)
    for k in ("requests", "t0", "t1"):
        pb.add_argument("--" + k, type=int, required=True)
    rp = sub.add_parser("report")
    rp.add_argument("--raw", required=True)
    rp.add_argument("--ha", required=True)
    a = ap.parse_args()
    fn = {"wait-cluster": cmd_wait_cluster, "lag": cmd_lag, "failover": cmd_failover,
          "parse-bench": cmd_parse_bench, "report": cmd_report}[a.cmd]
    try:
        return fn(a)
    except (OSError, RuntimeError) as e:
        if a.cmd in ("lag", "failover", "wait-cluster"):
            print(json.dumps({"error": "%s: %s" % (type(e).__name__, e)}))
            return 3
        raise


if __name__ == "__main__":
    sys.exit(main())
PYEOF

# "<on-cpu ns> <runnable-but-waiting ns>" summed over the threads of the given processes.
sched_ns() {
    local pid
    for pid in "$@"; do cat /proc/"$pid"/task/*/schedstat 2>/dev/null || true; done |
        awk '{ r += $1; w += $2 } END { printf "%.0f %.0f\n", r, w }'
}

# ----- Redis Cluster -----
# start_redis_cluster PRIMARIES REPLICAS NODE_TIMEOUT_MS: sets REDIS_PIDS, REDIS_ADDRS, REDIS_SEED.
start_redis_cluster() {
    local primaries=$1 replicas=$2 node_timeout=$3 total ports i port bus dir out
    total=$((primaries * (1 + replicas)))
    read -r -a ports <<<"$(free_ports $((2 * total)))"
    REDIS_ADDRS=()
    for ((i = 0; i < total; i++)); do
        port=${ports[$i]}
        bus=${ports[$((total + i))]}
        dir="$WORK/redis-$port"
        mkdir -p "$dir"
        taskset -c "$SERVER_CPU" "$REDIS_SERVER" --port "$port" --cluster-port "$bus" --bind 127.0.0.1 \
            --cluster-enabled yes --cluster-config-file "$dir/nodes.conf" --cluster-node-timeout "$node_timeout" \
            --dir "$dir" --save "" --appendonly no --daemonize no --logfile "" >"$dir/log" 2>&1 &
        REDIS_PIDS+=($!)
        disown $! # bash still reaps it; no "Killed" job notice when the failover test kills it
        REDIS_ADDRS+=("127.0.0.1:$port")
    done
    for ((i = 0; i < total; i++)); do
        wait_ready "${ports[$i]}" "${REDIS_PIDS[$i]}" "redis-server ${REDIS_ADDRS[$i]}" "$WORK/redis-${ports[$i]}/log"
    done
    if ! timeout "$START_TIMEOUT" "$REDIS_CLI" --cluster create "${REDIS_ADDRS[@]}" --cluster-replicas "$replicas" \
        --cluster-yes >"$WORK/cluster-create.log" 2>&1; then
        tail -n 20 "$WORK/cluster-create.log" >&2 || true
        die "redis-cli --cluster create failed or timed out"
    fi
    out="$(timeout $((START_TIMEOUT + 10)) python3 "$PY" wait-cluster --addrs "$(IFS=,; echo "${REDIS_ADDRS[*]}")" \
        --primaries "$primaries" --replicas "$replicas" --timeout "$START_TIMEOUT" || true)"
    [[ "$out" == *'"ok": true'* ]] || die "redis cluster did not settle: $out"
    REDIS_SEED="${REDIS_ADDRS[0]}"
    # addr=pid for the failover helper
    REDIS_PIDMAP=""
    for ((i = 0; i < total; i++)); do REDIS_PIDMAP+="${REDIS_PIDMAP:+,}${REDIS_ADDRS[$i]}=${REDIS_PIDS[$i]}"; done
}

# ----- the Meridian demo -----
# demo_owns PID: the process is a child of the demo.
demo_owns() {
    local stat rest ppid
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    rest="${stat##*) }" # after "pid (comm) ": state ppid ...
    read -r _ ppid _ <<<"$rest"
    [[ "$ppid" == "$DEMO_PID" ]]
}

# start_meridian_demo PRIMARIES REPLICAS [NODE_TIMEOUT_MS]: sets DEMO_PID, DEMO_NODE_PIDS, MERIDIAN_SEED,
# MERIDIAN_PIDMAP. `--nodes` counts every node of the region (primaries = nodes / (replicas + 1));
# RESP ports are consecutive from --base-port, mesh ports are RESP + 10000.
# Expected output (contract): per node `node <region> <node-id> <pid> <resp host:port>
# <mesh host:port> <primary|replica>`, then `ready`.
start_meridian_demo() {
    local primaries=$1 replicas=$2 node_timeout=${3:-} nodes base out="$WORK/demo-$RANDOM.out" deadline line region id pid resp mesh role
    nodes=$((primaries * (1 + replicas)))
    base="$(free_port_block "$nodes" 10000)" || die "no free block of ports for the meridian demo"
    # A background job of a non-interactive shell starts with SIGINT ignored, and the demo's
    # children would inherit that: reset it so SIGINT reaches the demo (and, through it, them).
    : >"$out"
    (
        trap - INT QUIT
        exec env MERIDIAN_IO_THREADS=1 ${node_timeout:+MERIDIAN_CLUSTER_NODE_TIMEOUT=$node_timeout} taskset -c "$SERVER_CPU" "$MERIDIAN_BIN" demo --regions 1 \
            --nodes "$nodes" --replicas "$replicas" --base-port "$base" ${DEMO_FLAGS[@]+"${DEMO_FLAGS[@]}"}
    ) >"$out" 2>"$out.err" &
    DEMO_PID=$!
    disown "$DEMO_PID"
    deadline=$((SECONDS + START_TIMEOUT))
    until grep -qsx 'ready' "$out"; do
        if ! kill -0 "$DEMO_PID" 2>/dev/null; then
            tail -n 20 "$out" "$out.err" >&2 || true
            die "meridian demo exited before printing 'ready'"
        fi
        ((SECONDS < deadline)) || { tail -n 20 "$out" "$out.err" >&2 || true; die "meridian demo did not print 'ready' within ${START_TIMEOUT}s"; }
        sleep 0.1
    done
    MERIDIAN_SEED=""
    MERIDIAN_PIDMAP=""
    DEMO_NODE_PIDS=()
    local seen_primaries=0
    while read -r line; do
        # shellcheck disable=SC2034
        read -r _ region id pid resp mesh role <<<"$line"
        [[ "$pid" =~ ^[0-9]+$ && "$resp" =~ ^[^[:space:]]+:[0-9]+$ && "$role" =~ ^(primary|replica)$ ]] ||
            die "meridian demo printed a node line this script does not understand: '$line' (expected: node <region> <node-id> <pid> <resp host:port> <mesh host:port> <primary|replica>)"
        # The script SIGKILLs these pids (failover test, clean-up): make sure they are the demo's.
        demo_owns "$pid" || die "the meridian demo reported pid $pid for $resp, which is not a process it started"
        DEMO_NODE_PIDS+=("$pid")
        MERIDIAN_PIDMAP+="${MERIDIAN_PIDMAP:+,}$resp=$pid"
        if [[ "$role" == primary ]]; then
            seen_primaries=$((seen_primaries + 1))
            [[ -n "$MERIDIAN_SEED" ]] || MERIDIAN_SEED="$resp"
        fi
    done < <(grep '^node ' "$out")
    [[ -n "$MERIDIAN_SEED" ]] || { cat "$out" >&2; die "meridian demo printed no 'primary' node line"; }
    if ((${#DEMO_NODE_PIDS[@]} != nodes || seen_primaries != primaries)); then
        log "warning: demo --nodes $nodes --replicas $replicas printed ${#DEMO_NODE_PIDS[@]} nodes, $seen_primaries primaries (expected $nodes, $primaries)"
    fi
    local addr
    for addr in $(tr ',' '\n' <<<"$MERIDIAN_PIDMAP" | cut -d= -f1); do
        timeout 5 "$REDIS_CLI" -h "${addr%:*}" -p "${addr##*:}" ping 2>/dev/null | grep -q PONG ||
            die "meridian node $addr (from the demo's node lines) does not answer PING after 'ready'"
    done
}

# start_system SYSTEM PRIMARIES REPLICAS: sets SEED, PIDMAP and SERVER_PIDS for the system.
start_system() {
    case $1 in
    redis)
        # The HA cluster gets the short node timeout; the throughput one keeps Redis's default,
        # so three busy nodes sharing a core are never flagged as failing mid-run.
        if (($3 > 0)); then start_redis_cluster "$2" "$3" "$NODE_TIMEOUT"; else start_redis_cluster "$2" "$3" 15000; fi
        SEED="$REDIS_SEED"
        PIDMAP="$REDIS_PIDMAP"
        SERVER_PIDS=("${REDIS_PIDS[@]}")
        ;;
    meridian)
        if (($3 > 0)); then start_meridian_demo "$2" "$3" "$NODE_TIMEOUT"; else start_meridian_demo "$2" "$3"; fi
        SEED="$MERIDIAN_SEED"
        PIDMAP="$MERIDIAN_PIDMAP"
        SERVER_PIDS=("${DEMO_NODE_PIDS[@]}")
        ;;
    esac
}
stop_system() {
    case $1 in
    redis) stop_redis_cluster ;;
    meridian) stop_meridian_demo ;;
    esac
}

# ----- runs -----
RAW="$WORK/raw.csv"
HA="$WORK/ha.jsonl"
echo "round,pipeline,test,system,rps,avg_ms,p50_ms,p99_ms,cpu_us_per_req,cpu_util" >"$RAW"
: >"$HA"
FAILED=0

# bench_one ROUND PIPELINE TEST SYSTEM: one redis-benchmark --cluster run against SEED.
bench_one() {
    local round=$1 p=$2 test=$3 system=$4 n=$REQUESTS out t0 t1 c0 c1 pid
    if ((p > 1)); then n=$REQUESTS_PIPELINED; fi
    for pid in "${SERVER_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null || die "$system node (pid $pid) is gone"; done
    c0="$(sched_ns "${SERVER_PIDS[@]}")"
    t0="$(date +%s%N)"
    if ! out="$(timeout "$RUN_TIMEOUT" taskset -c "$CLIENT_CPU" "$REDIS_BENCHMARK" --cluster -h "${SEED%:*}" -p "${SEED##*:}" \
        -t "$test" -n "$n" -c "$CLIENTS" -d "$DATA_SIZE" -r "$KEYSPACE" -P "$p" -q --csv 2>"$WORK/bench.err")"; then
        printf '%s\n' "$out" | tail -5 >&2
        cat "$WORK/bench.err" >&2
        die "redis-benchmark --cluster failed or timed out ($system, $test, -P $p)"
    fi
    t1="$(date +%s%N)"
    c1="$(sched_ns "${SERVER_PIDS[@]}")"
    # Cluster mode prints "Cluster has N master nodes:" and the node list before the CSV.
    grep '^"' <<<"$out" | python3 "$PY" parse-bench --round "$round" --pipeline "$p" --test "$test" \
        --system "$system" --cpu0 "$c0" --cpu1 "$c1" --requests "$n" --t0 "$t0" --t1 "$t1" >>"$RAW" ||
        { printf '%s\n' "$out" >&2; die "no csv row for $test in redis-benchmark's output ($system)"; }
    log "$(tail -1 "$RAW")"
}

# ha_one ROUND SYSTEM: on a fresh 3+3 cluster, replica lag then failover.
ha_one() {
    local round=$1 system=$2 out budget
    log "round $round: $system, 3 primaries + 3 replicas: replica lag, then failover"
    start_system "$system" "$PRIMARIES" 1
    budget="cluster-node-timeout ${NODE_TIMEOUT} ms"
    out="$(timeout $((LAG_SAMPLES * 5 + 60)) taskset -c "$CLIENT_CPU" python3 "$PY" lag --seed "$SEED" \
        --samples "$LAG_SAMPLES" || true)"
    [[ "$out" == \{* ]] || out='{"error": "lag helper produced no result (timed out?)"}'
    [[ "$out" != *'"error"'* ]] || { FAILED=1; log "$system lag failed: $out"; }
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d.update(system=sys.argv[2], round=int(sys.argv[3]), what="lag"); print(json.dumps(d))' \
        "$out" "$system" "$round" >>"$HA"
    out="$(timeout $((FAILOVER_TIMEOUT + 30)) taskset -c "$CLIENT_CPU" python3 "$PY" failover --seed "$SEED" \
        --pids "$PIDMAP" --interval-ms "$WRITE_INTERVAL_MS" --timeout "$FAILOVER_TIMEOUT" || true)"
    [[ "$out" == \{* ]] || out='{"error": "failover helper produced no result (timed out?)"}'
    [[ "$out" != *'"error"'* ]] || { FAILED=1; log "$system failover failed: $out"; }
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d.update(system=sys.argv[2], round=int(sys.argv[3]), what="failover", budget=sys.argv[4]); print(json.dumps(d))' \
        "$out" "$system" "$round" "$budget" >>"$HA"
    log "$(tail -1 "$HA" | cut -c1-300)"
    if [[ "$system" == meridian && -n "$DEMO_PID" ]] && ! kill -0 "$DEMO_PID" 2>/dev/null; then
        log "note: the meridian demo exited after one of its nodes was killed"
    fi
    stop_system "$system"
}

# Odd rounds: systems in the listed order (Meridian first); even rounds reversed.
round_order() {
    if (($1 % 2)) || ((${#SYSTEMS[@]} < 2)); then echo "${SYSTEMS[@]}"; else echo "${SYSTEMS[1]} ${SYSTEMS[0]}"; fi
}

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
log "systems: ${SYSTEMS[*]}; servers on cpu $SERVER_CPU, client on cpu $CLIENT_CPU; load average $LOAD_BEFORE"

if [[ " $PARTS " == *" throughput "* ]]; then
    for round in $(seq "$ROUNDS"); do
        for system in $(round_order "$round"); do
            log "round $round: $system, $PRIMARIES primaries"
            start_system "$system" "$PRIMARIES" 0
            for p in $PIPELINES; do
                for test in $TESTS; do
                    bench_one "$round" "$p" "$test" "$system"
                done
            done
            stop_system "$system"
        done
    done
fi
if [[ " $PARTS " == *" ha "* ]]; then
    for round in $(seq "$HA_ROUNDS"); do
        for system in $(round_order "$round"); do
            ha_one "$round" "$system"
        done
    done
fi
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

# ----- report -----
mkdir -p "$OUT_DIR"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
REPORT="$OUT_DIR/cluster-$STAMP.txt"
cp "$RAW" "$OUT_DIR/cluster-$STAMP.csv"
cp "$HA" "$OUT_DIR/cluster-$STAMP.ha.jsonl"
R_VERSION="$("$REDIS_SERVER" --version 2>/dev/null | awk '{print $3}' || true)"
M_VERSION="–"
if [[ "$SKIP_MERIDIAN" != 1 ]]; then M_VERSION="$("$MERIDIAN_BIN" --version 2>/dev/null || echo meridian)"; fi
CPU_MODEL="$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
{
    echo "# Meridian region vs Redis Cluster — $STAMP"
    echo
    echo "- Meridian: \`$M_VERSION\`, \`meridian demo --regions 1 --nodes $PRIMARIES --replicas 0\` (HA: \`--nodes $((2 * PRIMARIES)) --replicas 1\`, MERIDIAN_CLUSTER_NODE_TIMEOUT=$NODE_TIMEOUT), MERIDIAN_IO_THREADS=1 ${DEMO_FLAGS[*]+(${DEMO_FLAGS[*]})}"
    echo "- Redis: ${R_VERSION:-–}, cluster mode, \`--save \"\" --appendonly no\`, \`redis-cli --cluster create --cluster-replicas {0,1}\`; cluster-node-timeout 15000 ms (throughput), ${NODE_TIMEOUT} ms (HA)"
    echo "- CPU: $CPU_MODEL, $(nproc) cores; every server process of the system under test pinned to core $SERVER_CPU, the client to core $CLIENT_CPU; one system up at a time"
    echo "- redis-benchmark --cluster: \`-t ${TESTS// /,} -c $CLIENTS -d $DATA_SIZE -r $KEYSPACE -P {${PIPELINES// /,}}\`, \`-n $REQUESTS\` at P1, \`-n $REQUESTS_PIPELINED\` at P>1; $ROUNDS rounds, alternating which system goes first"
    echo "- HA: $HA_ROUNDS rounds on fresh 3+3 clusters; lag: $LAG_SAMPLES samples per round; failover: a SET every ${WRITE_INTERVAL_MS} ms, SIGKILL of the primary"
    echo "- load average before / after: $LOAD_BEFORE / $LOAD_AFTER"
    echo "- rps ratio > 1: Meridian faster; p99 ratio < 1: Meridian better. CPU µs/req: on-CPU time of the 3 nodes per request; core busy: that time over the run's wall time (all nodes share one core)."
    echo
    python3 "$PY" report --raw "$RAW" --ha "$HA"
    echo "Raw numbers: \`$(basename "$OUT_DIR")/cluster-$STAMP.csv\`, \`cluster-$STAMP.ha.jsonl\`"
} >"$REPORT"

echo
cat "$REPORT"
echo
echo "report: $REPORT"
exit "$FAILED"

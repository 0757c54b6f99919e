#!/usr/bin/env bash
# Cross-region replication: visibility lag, mesh throughput and WAN bytes, convergence after a
# partition, and the write throughput a region keeps while replicating to two others.
#
# Every part starts a fresh `meridian demo --regions R --nodes 1` (one node per region owns all
# 16384 slots, so plain clients work). Every node process is pinned to SERVER_CPU (default core 0,
# inherited from the demo) with MERIDIAN_IO_THREADS=1; every client (examples/region_lag.rs,
# redis-benchmark) is pinned to CLIENT_CPU (core 1). Region r's RESP port is base + 100·r, its
# mesh (QUIC/UDP) port RESP + 10000; the demo prints `node <region> <node-id> <pid> <resp>
# <mesh> <role>` per node, then `ready`, and the script reads the addresses and pids from that.
#
# Parts (PARTS, in this order):
#   lag       region_lag `lag` at each rate of LAG_RATES (writes/s into region 1, 0 = as fast as
#             LAG_CONNS pipelined connections go): a probe `SET probe <seq>` every ms into region
#             1, a reader polling `GET probe` on region 2; lag = first read that sees seq − send
#             time (one process, one monotonic clock). p50/p99/max, achieved writes/s, and
#             region 1's bytes_sent per write (INFO regions) at that rate.
#   rtt       the same at each rate of RTT_RATES with RTT_MS of round trip added between the two
#             regions' mesh ports only (nothing else on lo is delayed). DELAY_METHOD=nfqueue
#             (default): iptables NFQUEUE rules (INPUT on lo, --queue-bypass) on UDP between the
#             two mesh ports, both ways, and benches/nfq_delay.py holding each packet RTT_MS/2
#             (this VM's kernel has no sch_netem nor sch_prio). DELAY_METHOD=netem: a prio root
#             qdisc on lo whose 4th band is `netem delay RTT_MS/2`, u32 filters on the ports
#             (refuses if lo already has a root qdisc). The EXIT trap removes rules, qdisc and
#             the delay process.
#   zipf      region_lag `zipf`: ZIPF_WRITES SETs of 32-byte values (random hex) on key:<rank>,
#             rank ~ zipf(s) over ZIPF_KEYS keys, for each s in ZIPF_SKEWS, unpaced
#             (ZIPF_CONNS × pipeline 64) into region 1, and paced at each non-zero rate of
#             ZIPF_RATES for ZIPF_SECONDS, then MERIDIAN.WAITREGIONS 1. Reports
#             writes/s until acknowledged by region 2, payload (key+value) MB/s, WAN bytes per
#             write (Δ Σ bytes_sent over peer regions in region 1's INFO regions / writes), the
#             on-CPU time of each node per write (schedstat), and the bytes on the wire both ways
#             (iptables counting rules on the mesh ports: IP+UDP+QUIC headers, acks, membership).
#   converge  iptables DROP (INPUT on lo) of UDP between the two regions' mesh ports; while
#             partitioned, CONV_KEYS keys written on each side over CONV_SECONDS (a fraction
#             CONV_OVERLAP of them the same keys on both sides, different values); then the rules
#             are deleted (heal) and region_lag `converge` measures from the heal until
#             MERIDIAN.WAITREGIONS 1 returns 1 on both sides, DBSIZE is equal on both sides (and
#             equals the expected key count), and CONV_SAMPLE random keys read the same.
#             INFO crdt merge counters of both nodes are recorded (merges_dropped_stale counts
#             deltas a node refused as older than its collected_below watermark).
#   throughput  redis-benchmark -t set,incr -P {1,16} -c 50 -d 32 -r 100000 against region 1's
#             node of `demo --regions 3` (replicating to 2 peer regions) vs `demo --regions 1`
#             (unreplicated), TP_ROUNDS rounds alternating which goes first; all nodes of a demo
#             on SERVER_CPU, so the two peer regions' merges share the core with the writer
#             region. After each 3-region run the script waits for MERIDIAN.WAITREGIONS 2 (drain
#             time reported) so runs do not overlap with the previous run's replication tail.
#             Also reports the ratio by writer CPU (the writer's CPU per request, 1 region ÷ 3),
#             which does not depend on which core bounds the rps.
#
# Usage:  benches/regions.sh
# Env:
#   PARTS="lag rtt zipf converge throughput"
#   LAG_RATES="10000 50000 0"  LAG_SECONDS=10  LAG_WARMUP=1  LAG_CONNS=2 (4 at rate 0)  LAG_ROUNDS=1
#   RTT_MS=50  RTT_RATES="10000 50000"  DELAY_METHOD=nfqueue|netem  NFQ_NUM=4242 (queue number)
#   ZIPF_WRITES=1000000  ZIPF_KEYS=100000  ZIPF_SKEWS="0.99 0"  ZIPF_CONNS=4
#   ZIPF_RATES="0 10000 50000"  (0 = ZIPF_WRITES unpaced; otherwise rate × ZIPF_SECONDS=10 writes, paced)
#   CONV_KEYS=100000  CONV_SECONDS=10  CONV_OVERLAP=0.1  CONV_SAMPLE=1000  CONV_TIMEOUT=180
#   CONV_ROUNDS=1  CONV_GRACES="default 3600000": per round, one converge run per value of the
#                            nodes' tombstone-grace (ms, MERIDIAN_TOMBSTONE_GRACE; "default" =
#                            the built-in 5000). A grace longer than the partition sidesteps the
#                            stale-drop bug described in docs/benchmarks.md.
#   CONV_TIMEOUT_DEFAULT_GRACE=60  bounds the default-grace runs, which often never converge
#                            (the bug); a run that does not converge makes the exit status 1
#   TP_ROUNDS=3  TP_REQUESTS=100000 (P1)  TP_REQUESTS_PIPELINED=10*TP_REQUESTS  TP_TESTS="set incr"
#   TP_PIPELINES="1 16"  CLIENTS=50  DATA_SIZE=32  KEYSPACE=100000
#   SERVER_CPU=0 CLIENT_CPU=1  START_TIMEOUT=60  RUN_TIMEOUT=300
#   PEER_CPU=          throughput only: when set, the 3-region demo's two peer nodes are moved to
#                      this core after start (taskset -a -p), as peer regions run on other
#                      machines in a deployment; the writer keeps SERVER_CPU to itself. Unset: every
#                      node on SERVER_CPU (the peers' merges share the writer's core).
#   MERIDIAN_BIN=path  REGION_LAG_BIN=path   (default: cargo build --release, honouring CARGO_TARGET_DIR)
#   OUT_DIR=bench-results   report: OUT_DIR/regions-<timestamp>.md, raw: .jsonl beside it
# Needs root for the rtt, zipf and converge parts (iptables; tc with DELAY_METHOD=netem).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PARTS="${PARTS:-lag rtt zipf converge throughput}"
LAG_RATES="${LAG_RATES:-10000 50000 0}"
LAG_SECONDS="${LAG_SECONDS:-10}"
LAG_WARMUP="${LAG_WARMUP:-1}"
LAG_CONNS="${LAG_CONNS:-2}"
LAG_ROUNDS="${LAG_ROUNDS:-1}"
RTT_MS="${RTT_MS:-50}"
RTT_RATES="${RTT_RATES:-10000 50000}"
DELAY_METHOD="${DELAY_METHOD:-nfqueue}"
ZIPF_WRITES="${ZIPF_WRITES:-1000000}"
ZIPF_KEYS="${ZIPF_KEYS:-100000}"
ZIPF_SKEWS="${ZIPF_SKEWS:-0.99 0}"
ZIPF_CONNS="${ZIPF_CONNS:-4}"
ZIPF_RATES="${ZIPF_RATES:-0 10000 50000}"
ZIPF_SECONDS="${ZIPF_SECONDS:-10}"
CONV_KEYS="${CONV_KEYS:-100000}"
CONV_SECONDS="${CONV_SECONDS:-10}"
CONV_OVERLAP="${CONV_OVERLAP:-0.1}"
CONV_SAMPLE="${CONV_SAMPLE:-1000}"
CONV_TIMEOUT="${CONV_TIMEOUT:-180}"
CONV_GRACES="${CONV_GRACES:-default 3600000}"
CONV_ROUNDS="${CONV_ROUNDS:-1}"
CONV_TIMEOUT_DEFAULT_GRACE="${CONV_TIMEOUT_DEFAULT_GRACE:-60}"
TP_ROUNDS="${TP_ROUNDS:-3}"
TP_REQUESTS="${TP_REQUESTS:-100000}"
TP_REQUESTS_PIPELINED="${TP_REQUESTS_PIPELINED:-$((TP_REQUESTS * 10))}"
TP_TESTS="${TP_TESTS:-set incr}"
TP_PIPELINES="${TP_PIPELINES:-1 16}"
CLIENTS="${CLIENTS:-50}"
DATA_SIZE="${DATA_SIZE:-32}"
KEYSPACE="${KEYSPACE:-100000}"
SERVER_CPU="${SERVER_CPU:-0}"
CLIENT_CPU="${CLIENT_CPU:-1}"
PEER_CPU="${PEER_CPU:-}"
START_TIMEOUT="${START_TIMEOUT:-60}"
RUN_TIMEOUT="${RUN_TIMEOUT:-300}"
REDIS_BENCHMARK="${REDIS_BENCHMARK:-redis-benchmark}"
REDIS_CLI="${REDIS_CLI:-redis-cli}"
OUT_DIR="${OUT_DIR:-$ROOT/bench-results}"

die() { echo "regions: $*" >&2; exit 1; }
log() { echo "regions: $(date +%H:%M:%S) $*" >&2; }
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"

for tool in "$REDIS_BENCHMARK" "$REDIS_CLI" taskset python3 timeout pgrep; do
    command -v "$tool" >/dev/null 2>&1 || die "missing tool: $tool"
done
for part in $PARTS; do
    case $part in lag | rtt | zipf | converge | throughput) ;; *) die "unknown part '$part' in PARTS" ;; esac
done
if [[ " $PARTS " == *" rtt "* ]]; then command -v tc >/dev/null || die "missing tool: tc (part rtt)"; fi
if [[ " $PARTS " =~ " "(zipf|converge)" " ]]; then command -v iptables >/dev/null || die "missing tool: iptables"; fi
for v in LAG_SECONDS LAG_ROUNDS RTT_MS ZIPF_WRITES ZIPF_KEYS ZIPF_CONNS CONV_KEYS CONV_SECONDS CONV_TIMEOUT \
    TP_ROUNDS TP_REQUESTS TP_REQUESTS_PIPELINED CLIENTS START_TIMEOUT RUN_TIMEOUT; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done

# ----- binaries -----
build_meridian
if [[ -z "${REGION_LAG_BIN:-}" ]]; then
    (cd "$ROOT" && cargo build --release --quiet --example region_lag)
    REGION_LAG_BIN="$(dirname "$MERIDIAN_BIN")/examples/region_lag"
fi
[[ -x "$REGION_LAG_BIN" ]] || die "region_lag not found or not executable: $REGION_LAG_BIN"

# ----- processes and clean-up -----
WORK="$(mktemp -d "${TMPDIR:-/tmp}/meridian-regions.XXXXXX")"
TAG="meridian-regions-$$"   # comment on every iptables rule this script adds
DEMO_PID=""
DEMO_ENV=()   # extra VAR=value for the demo's nodes
NODE_PIDS=()  NODE_RESP=()  NODE_MESH=()  NODE_REGION=()
QDISC_ADDED=0
DELAY_PID=""  # benches/nfq_delay.py, while it runs
NFQ_NUM="${NFQ_NUM:-4242}"
IPT_RULES=()  # "TABLE CHAIN spec..." of every iptables rule currently added

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

stop_demo() {
    local children=()
    if [[ -n "$DEMO_PID" ]]; then
        read -r -a children <<<"$(pgrep -P "$DEMO_PID" | tr '\n' ' ' || true)"
        kill -INT "$DEMO_PID" 2>/dev/null || true
        local pid
        for pid in "$DEMO_PID" ${children[@]+"${children[@]}"} ${NODE_PIDS[@]+"${NODE_PIDS[@]}"}; do
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        done
        stop_pids KILL "$DEMO_PID" ${children[@]+"${children[@]}"}
    fi
    if ((${#NODE_PIDS[@]})); then stop_pids KILL "${NODE_PIDS[@]}"; fi
    DEMO_PID=""
    NODE_PIDS=() NODE_RESP=() NODE_MESH=() NODE_REGION=()
}

# ipt_add TABLE CHAIN NAME SPEC...: inserts a rule commented "$TAG-NAME" and remembers it for
# removal (a rule without -j only counts packets and bytes).
ipt_add() {
    local table=$1 chain=$2 name=$3
    shift 3
    iptables -t "$table" -I "$chain" "$@" -m comment --comment "$TAG-$name" 2>"$WORK/ipt.err" ||
        { cat "$WORK/ipt.err" >&2; die "iptables -t $table -I $chain $* failed"; }
    IPT_RULES+=("$table $chain $* -m comment --comment $TAG-$name")
}
# ipt_del_all: deletes every rule ipt_add added.
ipt_del_all() {
    local r table chain spec
    for r in ${IPT_RULES[@]+"${IPT_RULES[@]}"}; do
        read -r table chain spec <<<"$r"
        # shellcheck disable=SC2086
        iptables -t "$table" -D "$chain" $spec 2>/dev/null || log "warning: could not delete iptables rule: $r"
    done
    IPT_RULES=()
}

netem_off() {
    if ((QDISC_ADDED)); then
        tc qdisc del dev lo root 2>/dev/null || log "warning: could not delete the root qdisc of lo"
        QDISC_ADDED=0
DELAY_PID=""  # benches/nfq_delay.py, while it runs
NFQ_NUM="${NFQ_NUM:-4242}"
    fi
}

cleanup() {
    set +e
    stop_demo
    netem_off
    ipt_del_all
    if [[ -n "$DELAY_PID" ]]; then kill "$DELAY_PID" 2>/dev/null; wait "$DELAY_PID" 2>/dev/null; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

sched_ns() {
    local pid
    for pid in "$@"; do cat /proc/"$pid"/task/*/schedstat 2>/dev/null || true; done |
        awk '{ r += $1; w += $2 } END { printf "%.0f %.0f\n", r, w }'
}

# start_demo REGIONS: a fresh `meridian demo --regions REGIONS --nodes 1`, all nodes on SERVER_CPU.
# Sets DEMO_PID and, per node in the demo's order, NODE_REGION/NODE_PIDS/NODE_RESP/NODE_MESH.
start_demo() {
    local regions=$1 base out="$WORK/demo-$RANDOM.out" deadline line region id pid resp mesh role
    base="$(free_port_block $((100 * (regions - 1) + 1)) 10000)" || die "no free block of ports for the demo"
    : >"$out"
    (
        trap - INT QUIT
        exec env MERIDIAN_IO_THREADS=1 ${DEMO_ENV[@]+"${DEMO_ENV[@]}"} taskset -c "$SERVER_CPU" "$MERIDIAN_BIN" demo --regions "$regions" \
            --nodes 1 --base-port "$base"
    ) >"$out" 2>"$out.err" &
    DEMO_PID=$!
    disown "$DEMO_PID"
    deadline=$((SECONDS + START_TIMEOUT))
    until grep -qsx 'ready' "$out"; do
        if ! kill -0 "$DEMO_PID" 2>/dev/null; then
            tail -n 20 "$out" "$out.err" >&2 || true
            die "meridian demo exited before printing 'ready'"
        fi
        ((SECONDS < deadline)) || { tail -n 20 "$out" "$out.err" >&2 || true; die "demo not ready within ${START_TIMEOUT}s"; }
        sleep 0.1
    done
    while read -r line; do
        read -r _ region id pid resp mesh role <<<"$line"
        [[ "$pid" =~ ^[0-9]+$ && "$resp" =~ :[0-9]+$ && "$mesh" =~ :[0-9]+$ ]] || die "unexpected demo line: '$line'"
        NODE_REGION+=("$region") NODE_PIDS+=("$pid") NODE_RESP+=("$resp") NODE_MESH+=("$mesh")
    done < <(grep '^node ' "$out")
    ((${#NODE_PIDS[@]} == regions)) || die "demo --regions $regions --nodes 1 printed ${#NODE_PIDS[@]} nodes"
    log "demo up: ${NODE_REGION[*]} resp ${NODE_RESP[*]} mesh ${NODE_MESH[*]}"
}

# cli I CMD...: redis-cli against node I.
cli() {
    local i=$1
    shift
    local a=${NODE_RESP[$i]}
    timeout 10 "$REDIS_CLI" -h "${a%:*}" -p "${a##*:}" "$@"
}
port_of() { echo "${1##*:}"; }
# regions_sum I FIELD: Σ FIELD over the peer regions in node I's INFO regions.
regions_sum() {
    cli "$1" info regions | tr -d '\r' | awk -F"[:,]$2=" '/^peer_region_/ { split($2, a, ","); s += a[1] } END { printf "%d\n", s }'
}
bytes_sent() { regions_sum "$1" bytes_sent; }

RAW="$WORK/raw.jsonl"
: >"$RAW"
FAILED=0
# record PART JSON [key=value...]: appends the JSON object with the extra fields to RAW.
record() {
    python3 - "$@" >>"$RAW" <<'PY'
import json, sys
part, body = sys.argv[1], sys.argv[2]
try:
    d = json.loads(body)
except Exception:
    d = {"error": "unparsable output", "output": body[-500:]}
d["part"] = part
for kv in sys.argv[3:]:
    k, v = kv.split("=", 1)
    try:
        d[k] = json.loads(v)
    except Exception:
        d[k] = v
print(json.dumps(d))
PY
    log "$1: $(tail -1 "$RAW" | cut -c1-400)"
}

# run_region_lag TIMEOUT ARGS...: the example on CLIENT_CPU; its stdout (one JSON line), or nothing.
run_region_lag() {
    local to=$1
    shift
    timeout "$to" taskset -c "$CLIENT_CPU" "$REGION_LAG_BIN" "$@" 2>>"$WORK/region_lag.err" || true
}

# ----- part: lag (and rtt) -----
# lag_runs LABEL RATES: one run per rate on the current demo (regions 1 → 2).
lag_runs() {
    local label=$1 rates=$2 rate conns out c0a c0b c1a c1b t0 t1 s0 s1 b0 b1
    for rate in $rates; do
        conns=$LAG_CONNS
        if ((rate == 0)); then conns=$((LAG_CONNS * 2)); fi
        s0="$(bytes_sent 0)" b0="$(regions_sum 0 batches_sent)"
        c0a="$(sched_ns "${NODE_PIDS[0]}")" c0b="$(sched_ns "${NODE_PIDS[1]}")" t0="$(date +%s%N)"
        out="$(run_region_lag $((LAG_SECONDS + 60)) lag a="${NODE_RESP[0]}" b="${NODE_RESP[1]}" rate="$rate" \
            seconds="$LAG_SECONDS" warmup="$LAG_WARMUP" conns="$conns" keys="$KEYSPACE" value="$DATA_SIZE")"
        c1a="$(sched_ns "${NODE_PIDS[0]}")" c1b="$(sched_ns "${NODE_PIDS[1]}")" t1="$(date +%s%N)"
        s1="$(bytes_sent 0)" b1="$(regions_sum 0 batches_sent)"
        [[ "$out" == \{* ]] || { FAILED=1; out='{"error":"region_lag lag produced no result"}'; tail -5 "$WORK/region_lag.err" >&2; }
        record "$label" "$out" rtt_ms="$([[ $label == rtt ]] && echo "$RTT_MS" || echo 0)" \
            wan_bytes="$((s1 - s0))" batches="$((b1 - b0))" \
            cpu_a="$(awk -v a="$c0a" -v b="$c1a" -v t="$((t1 - t0))" 'BEGIN{split(a,x," ");split(b,y," ");printf "%.3f",(y[1]-x[1])/t}')" \
            cpu_b="$(awk -v a="$c0b" -v b="$c1b" -v t="$((t1 - t0))" 'BEGIN{split(a,x," ");split(b,y," ");printf "%.3f",(y[1]-x[1])/t}')" \
            runq_a="$(awk -v a="$c0a" -v b="$c1a" -v t="$((t1 - t0))" 'BEGIN{split(a,x," ");split(b,y," ");printf "%.3f",(y[2]-x[2])/t}')" \
            runq_b="$(awk -v a="$c0b" -v b="$c1b" -v t="$((t1 - t0))" 'BEGIN{split(a,x," ");split(b,y," ");printf "%.3f",(y[2]-x[2])/t}')" \
            load="\"$(cut -d' ' -f1 /proc/loadavg)\""
    done
}

part_lag() {
    local round
    for round in $(seq "$LAG_ROUNDS"); do
        log "lag round $round: demo --regions 2 --nodes 1, rates $LAG_RATES"
        start_demo 2
        lag_runs lag "$LAG_RATES"
        stop_demo
    done
}

# delay_on RTT_MS: delays UDP between the mesh ports of node 0 and node 1 by RTT_MS/2 each way.
# DELAY_METHOD=nfqueue (default): iptables NFQUEUE rules (INPUT on lo, --queue-bypass) feeding
# benches/nfq_delay.py, which holds each packet RTT_MS/2 and accepts it (no netem needed).
# DELAY_METHOD=netem: a prio root qdisc on lo whose 4th band is netem, u32 filters on the ports
# (needs sch_prio and sch_netem; refuses if lo already has a root qdisc).
delay_on() {
    local half p0 p1
    half="$(python3 -c "print($1 / 2)")"
    p0="$(port_of "${NODE_MESH[0]}")" p1="$(port_of "${NODE_MESH[1]}")"
    case $DELAY_METHOD in
    nfqueue)
        taskset -c "$CLIENT_CPU" python3 "$ROOT/benches/nfq_delay.py" "$NFQ_NUM" "$half" 2>>"$WORK/nfq_delay.err" &
        DELAY_PID=$!
        sleep 0.5
        kill -0 "$DELAY_PID" 2>/dev/null || { cat "$WORK/nfq_delay.err" >&2; die "nfq_delay.py did not start"; }
        ipt_add filter INPUT delay01 -i lo -p udp --sport "$p0" --dport "$p1" -j NFQUEUE --queue-num "$NFQ_NUM" --queue-bypass
        ipt_add filter INPUT delay10 -i lo -p udp --sport "$p1" --dport "$p0" -j NFQUEUE --queue-num "$NFQ_NUM" --queue-bypass
        ;;
    netem)
        if ! tc qdisc show dev lo | head -1 | grep -qE '^qdisc noqueue 0: root'; then
            die "lo already has a root qdisc ($(tc qdisc show dev lo | head -1)); not touching it"
        fi
        tc qdisc add dev lo root handle 1: prio bands 4 priomap 1 2 2 2 1 2 0 0 1 1 1 1 1 1 1 1 ||
            die "tc qdisc add (prio) failed (no sch_prio? use DELAY_METHOD=nfqueue)"
        QDISC_ADDED=1
        tc qdisc add dev lo parent 1:4 handle 40: netem delay "${half}ms" limit 1000000 ||
            die "tc qdisc add (netem) failed (no sch_netem? use DELAY_METHOD=nfqueue)"
        local a b
        for a in "$p0 $p1" "$p1 $p0"; do
            read -r a b <<<"$a"
            tc filter add dev lo parent 1: protocol ip prio 1 u32 match ip protocol 17 0xff \
                match ip sport "$a" 0xffff match ip dport "$b" 0xffff flowid 1:4 || die "tc filter add failed"
        done
        ;;
    *) die "DELAY_METHOD must be nfqueue or netem" ;;
    esac
    log "delay ($DELAY_METHOD): ${half} ms each way between mesh ports $p0 and $p1"
}

delay_off() {
    ipt_del_all
    if [[ -n "$DELAY_PID" ]]; then
        kill "$DELAY_PID" 2>/dev/null || true
        wait "$DELAY_PID" 2>/dev/null || true
        DELAY_PID=""
        log "$(tail -1 "$WORK/nfq_delay.err")"
    fi
    netem_off
}

part_rtt() {
    local round
    for round in $(seq "$LAG_ROUNDS"); do
        log "rtt round $round: demo --regions 2 --nodes 1, ${RTT_MS} ms RTT on the mesh, rates $RTT_RATES"
        start_demo 2
        delay_on "$RTT_MS"
        # Let QUIC's RTT estimate and the links settle on the new path.
        sleep 3
        lag_runs rtt "$RTT_RATES"
        delay_off
        stop_demo
    done
}

# ----- part: zipf (mesh throughput, WAN bytes per write) -----
# wire_counters: "bytes_0to1 bytes_1to0" from the counting rules.
wire_counters() {
    iptables -t filter -nvxL INPUT 2>/dev/null | awk -v tag="$TAG" 'index($0, tag "-count01") {a=$2} index($0, tag "-count10") {b=$2} END {printf "%d %d\n", a, b}'
}

part_zipf() {
    local skew rate
    for skew in $ZIPF_SKEWS; do
        for rate in $ZIPF_RATES; do
            zipf_one "$skew" "$rate"
        done
    done
}

zipf_one() {
    local skew=$1 rate=$2 out c0a c0b c1a c1b w0 w1 p0 p1
    {
        log "zipf s=$skew rate=$rate: demo --regions 2 --nodes 1, over $ZIPF_KEYS keys"
        start_demo 2
        p0="$(port_of "${NODE_MESH[0]}")" p1="$(port_of "${NODE_MESH[1]}")"
        # Counting rules (no target): every UDP byte between the two mesh ports, both ways.
        ipt_add filter INPUT count01 -i lo -p udp --sport "$p0" --dport "$p1"
        ipt_add filter INPUT count10 -i lo -p udp --sport "$p1" --dport "$p0"
        w0="$(wire_counters)"
        c0a="$(sched_ns "${NODE_PIDS[0]}")" c0b="$(sched_ns "${NODE_PIDS[1]}")"
        out="$(run_region_lag "$RUN_TIMEOUT" zipf a="${NODE_RESP[0]}" writes="$ZIPF_WRITES" keys="$ZIPF_KEYS" \
            skew="$skew" value="$DATA_SIZE" conns="$ZIPF_CONNS" rate="$rate" seconds="$ZIPF_SECONDS" \
            wait=$((RUN_TIMEOUT - 10)))"
        c1a="$(sched_ns "${NODE_PIDS[0]}")" c1b="$(sched_ns "${NODE_PIDS[1]}")"
        w1="$(wire_counters)"
        [[ "$out" == \{* ]] || { FAILED=1; out='{"error":"region_lag zipf produced no result"}'; tail -5 "$WORK/region_lag.err" >&2; }
        local da db
        da="$(cli 0 dbsize)" db="$(cli 1 dbsize)"
        record zipf "$out" \
            cpu_s_a="$(awk -v a="$c0a" -v b="$c1a" 'BEGIN{split(a,x," ");split(b,y," ");printf "%.3f",(y[1]-x[1])/1e9}')" \
            cpu_s_b="$(awk -v a="$c0b" -v b="$c1b" 'BEGIN{split(a,x," ");split(b,y," ");printf "%.3f",(y[1]-x[1])/1e9}')" \
            wire_ab="$(($(cut -d' ' -f1 <<<"$w1") - $(cut -d' ' -f1 <<<"$w0")))" \
            wire_ba="$(($(cut -d' ' -f2 <<<"$w1") - $(cut -d' ' -f2 <<<"$w0")))" \
            dbsize_a="$da" dbsize_b="$db"
        ipt_del_all
        stop_demo
    }
}

# ----- part: converge -----
part_converge() {
    local grace round
    for round in $(seq "$CONV_ROUNDS"); do
        for grace in $CONV_GRACES; do
            DEMO_ENV=()
            if [[ "$grace" != default ]]; then DEMO_ENV=("MERIDIAN_TOMBSTONE_GRACE=$grace"); fi
            converge_one "$grace"
            DEMO_ENV=()
        done
    done
}

# crdt_stats I: "applied noop dropped_stale tombstones_collected" from node I's INFO crdt.
crdt_stats() {
    cli "$1" info crdt | tr -d '\r' | awk -F: '/^crdt_merges_applied:/ {a=$2} /^crdt_merges_noop:/ {n=$2}
        /^crdt_merges_dropped_stale:/ {d=$2} /^crdt_tombstones_collected:/ {c=$2} END {printf "[%d,%d,%d,%d]\n", a, n, d, c}'
}

converge_one() {
    local grace=$1 p0 p1 out heal t_part expect shared timeout=$CONV_TIMEOUT
    if [[ "$grace" == default ]]; then timeout=$CONV_TIMEOUT_DEFAULT_GRACE; fi
    log "converge (tombstone-grace $grace): demo --regions 2 --nodes 1; partition ${CONV_SECONDS}s with $CONV_KEYS keys per side"
    start_demo 2
    log "tombstone-grace on region-1: $(cli 0 config get tombstone-grace | tail -1)"
    p0="$(port_of "${NODE_MESH[0]}")" p1="$(port_of "${NODE_MESH[1]}")"
    t_part=$SECONDS
    ipt_add filter INPUT drop01 -i lo -p udp --sport "$p0" --dport "$p1" -j DROP
    ipt_add filter INPUT drop10 -i lo -p udp --sport "$p1" --dport "$p0" -j DROP
    log "partitioned (UDP $p0 <-> $p1 dropped)"
    out="$(run_region_lag $((CONV_SECONDS + RUN_TIMEOUT)) fill a="${NODE_RESP[0]}" b="${NODE_RESP[1]}" \
        keys="$CONV_KEYS" seconds="$CONV_SECONDS" overlap="$CONV_OVERLAP" value="$DATA_SIZE")"
    [[ "$out" == \{* ]] || { FAILED=1; out='{"error":"region_lag fill produced no result"}'; tail -5 "$WORK/region_lag.err" >&2; }
    record converge-fill "$out" partition_s="$((SECONDS - t_part))" grace="\"$grace\""
    while ((SECONDS - t_part < CONV_SECONDS)); do sleep 0.2; done
    local before_a before_b
    before_a="$(cli 0 info regions | tr -d '\r' | grep '^peer_region_' | paste -sd' ')"
    before_b="$(cli 1 info regions | tr -d '\r' | grep '^peer_region_' | paste -sd' ')"
    log "before heal (partitioned $((SECONDS - t_part)) s): A: $before_a | B: $before_b"
    shared="$(python3 -c "print(int($CONV_KEYS * $CONV_OVERLAP))")"
    expect=$((2 * CONV_KEYS - shared))
    ipt_del_all
    heal="$(date +%s%N)"
    log "healed"
    out="$(run_region_lag $((timeout + 30)) converge a="${NODE_RESP[0]}" b="${NODE_RESP[1]}" since_ns="$heal" \
        timeout="$timeout" expect="$expect" keys="$CONV_KEYS" overlap="$CONV_OVERLAP" sample="$CONV_SAMPLE")"
    [[ "$out" == \{* ]] || { FAILED=1; out='{"error":"region_lag converge produced no result"}'; tail -5 "$WORK/region_lag.err" >&2; }
    [[ "$out" == *'"converged":true'* ]] || { FAILED=1; log "NOT CONVERGED (tombstone-grace $grace): $(cut -c1-300 <<<"$out")"; }
    local after_a after_b
    after_a="$(cli 0 info regions | tr -d '\r' | grep '^peer_region_' | paste -sd' ')"
    after_b="$(cli 1 info regions | tr -d '\r' | grep '^peer_region_' | paste -sd' ')"
    record converge "$out" keys_per_side="$CONV_KEYS" partition_s="$CONV_SECONDS" grace="\"$grace\"" \
        crdt_a="$(crdt_stats 0)" crdt_b="$(crdt_stats 1)" \
        info_before_a="\"$before_a\"" info_before_b="\"$before_b\"" info_after_a="\"$after_a\"" info_after_b="\"$after_b\""
    # Logs of the nodes around the heal, for the record.
    local d
    d="$(ls -d /tmp/meridian-demo-"$DEMO_PID" 2>/dev/null || true)"
    if [[ -n "$d" ]]; then
        mkdir -p "$WORK/logs" && cp "$d"/*.log "$WORK/logs/" 2>/dev/null || true
    fi
    stop_demo
}

# ----- part: throughput (3 regions vs 1) -----
tp_one() {
    local round=$1 regions=$2 p=$3 test=$4 n=$TP_REQUESTS out c0 c1 t0 t1 call0 call1 s0 s1 drain a
    if ((p > 1)); then n=$TP_REQUESTS_PIPELINED; fi
    a=${NODE_RESP[0]}
    s0="$(bytes_sent 0)"
    c0="$(sched_ns "${NODE_PIDS[0]}")" call0="$(sched_ns "${NODE_PIDS[@]}")" t0="$(date +%s%N)"
    if ! out="$(timeout "$RUN_TIMEOUT" taskset -c "$CLIENT_CPU" "$REDIS_BENCHMARK" -h "${a%:*}" -p "${a##*:}" \
        -t "$test" -n "$n" -c "$CLIENTS" -d "$DATA_SIZE" -r "$KEYSPACE" -P "$p" -q --csv 2>"$WORK/bench.err")"; then
        cat "$WORK/bench.err" >&2
        FAILED=1
        return
    fi
    t1="$(date +%s%N)"
    c1="$(sched_ns "${NODE_PIDS[0]}")" call1="$(sched_ns "${NODE_PIDS[@]}")"
    drain=0
    if ((regions > 1)); then
        local d0 got
        d0="$(date +%s%N)"
        got="$(cli 0 meridian.waitregions $((regions - 1)) 60000)"
        drain="$(( ($(date +%s%N) - d0) / 1000000 ))"
        [[ "$got" == "$((regions - 1))" ]] || { log "warning: WAITREGIONS returned '$got' after 60 s"; drain=-1; }
    fi
    s1="$(bytes_sent 0)"
    python3 - "$out" "$round" "$regions" "$p" "$test" "$n" "$c0" "$c1" "$call0" "$call1" "$t0" "$t1" "$drain" "${s0:-0}" "${s1:-0}" >>"$RAW" <<'PY'
import csv, io, json, sys
out, rnd, regions, p, test, n, c0, c1, a0, a1, t0, t1, drain, s0, s1 = sys.argv[1:]
rows = [r for r in csv.reader(io.StringIO(out)) if r and r[0] != "test"]
r = rows[-1]
wall = (int(t1) - int(t0)) / 1e9
cpu = lambda x, y: (int(y.split()[0]) - int(x.split()[0])) / 1e9
wait = lambda x, y: (int(y.split()[1]) - int(x.split()[1])) / 1e9
print(json.dumps({
    "part": "throughput", "round": int(rnd), "regions": int(regions), "pipeline": int(p),
    "test": test.upper(), "requests": int(n), "rps": float(r[1]), "p50_ms": float(r[4]),
    "p99_ms": float(r[6]), "cpu_us_per_req_node": cpu(c0, c1) * 1e6 / int(n),
    "cpu_us_per_req_all": cpu(a0, a1) * 1e6 / int(n), "node_on_cpu": cpu(c0, c1) / wall,
    "core_busy_all": cpu(a0, a1) / wall, "runq_node": wait(c0, c1) / wall, "drain_ms": int(drain),
    "wan_bytes_per_req": (int(s1) - int(s0)) / int(n),
}))
PY
    log "throughput: $(tail -1 "$RAW")"
}

part_throughput() {
    local round regions order p test
    for round in $(seq "$TP_ROUNDS"); do
        if ((round % 2)); then order="3 1"; else order="1 3"; fi
        for regions in $order; do
            log "throughput round $round: demo --regions $regions --nodes 1"
            start_demo "$regions"
            if [[ -n "$PEER_CPU" ]] && ((regions > 1)); then
                local pid
                for pid in "${NODE_PIDS[@]:1}"; do taskset -a -p -c "$PEER_CPU" "$pid" >/dev/null; done
                log "peer nodes ${NODE_PIDS[*]:1} moved to cpu $PEER_CPU"
            fi
            for p in $TP_PIPELINES; do
                for test in $TP_TESTS; do
                    tp_one "$round" "$regions" "$p" "$test"
                done
            done
            stop_demo
        done
    done
}

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
log "parts: $PARTS; servers on cpu $SERVER_CPU, clients on cpu $CLIENT_CPU; load $LOAD_BEFORE"
for part in $PARTS; do
    "part_$part"
done
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

# ----- report -----
mkdir -p "$OUT_DIR"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
REPORT="$OUT_DIR/regions-$STAMP.md"
cp "$RAW" "$OUT_DIR/regions-$STAMP.jsonl"
if [[ -d "$WORK/logs" ]]; then cp -r "$WORK/logs" "$OUT_DIR/regions-$STAMP-logs"; fi
{
    echo "# Cross-region replication — $STAMP"
    echo
    echo "- \`$("$MERIDIAN_BIN" --version 2>/dev/null || echo meridian)\` at \`$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')\`; \`meridian demo --regions R --nodes 1\`, MERIDIAN_IO_THREADS=1, every node on core $SERVER_CPU${PEER_CPU:+ (throughput: peer nodes on core $PEER_CPU)}, clients on core $CLIENT_CPU"
    echo "- CPU: $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(nproc) cores; load average before / after: $LOAD_BEFORE / $LOAD_AFTER"
    echo "- knobs: PARTS=\"$PARTS\" LAG_RATES=\"$LAG_RATES\" LAG_SECONDS=$LAG_SECONDS RTT_MS=$RTT_MS RTT_RATES=\"$RTT_RATES\" ZIPF_WRITES=$ZIPF_WRITES ZIPF_KEYS=$ZIPF_KEYS ZIPF_SKEWS=\"$ZIPF_SKEWS\" CONV_KEYS=$CONV_KEYS CONV_SECONDS=$CONV_SECONDS CONV_OVERLAP=$CONV_OVERLAP TP_ROUNDS=$TP_ROUNDS TP_REQUESTS=$TP_REQUESTS TP_REQUESTS_PIPELINED=$TP_REQUESTS_PIPELINED"
    echo
    python3 - "$RAW" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def fmt(x, nd=1):
    if x is None: return "–"
    if isinstance(x, (int, float)):
        return f"{x:,.{nd}f}" if isinstance(x, float) else f"{x:,}"
    return str(x)
lag = [r for r in rows if r["part"] in ("lag", "rtt")]
if lag:
    print("## Visibility lag (write in region 1 → first read in region 2 that sees it)\n")
    print("| RTT ms | target writes/s | achieved writes/s | lag p50 ms | p90 | p99 | p99.9 | max | probes counted | writes per batch | region-1 bytes_sent per write | node on-CPU A / B | runq A / B |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in lag:
        if "error" in r: print(f"| {r.get('rtt_ms')} | | error: {r['error']} |"); continue
        l = r["lag_ms"]
        tr = "max" if r["target_rate"] == 0 else f"{int(r['target_rate']):,}"
        wpw = r["wan_bytes"] / r["writes"] if r.get("writes") else None
        print(f"| {r['rtt_ms']} | {tr} | {r['writes_per_s']:,.0f} | {fmt(l['p50'],2)} | {fmt(l['p90'],2)} | {fmt(l['p99'],2)} | {fmt(l['p999'],2)} | {fmt(l['max'],2)} | {r['probes_counted']} | {fmt(r['writes'] / r['batches'] if r.get('batches') else None, 1)} | {fmt(wpw,1)} | {r['cpu_a']:.0%} / {r['cpu_b']:.0%} | {r['runq_a']:.0%} / {r['runq_b']:.0%} |")
    print()
z = [r for r in rows if r["part"] == "zipf"]
if z:
    print("## Mesh throughput and WAN bytes (writes into region 1, unpaced (max) or paced, until region 2 acknowledged)\n")
    print("| skew | target writes/s | writes | distinct keys | client writes/s | replicated writes/s | payload B/write | payload MB/s | bytes_sent/write | bytes_sent / payload | wire bytes/write (both ways, IP+UDP+QUIC) | CPU µs/write A / B | writes per core-second (A+B) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in z:
        if "error" in r: print(f"| | error: {r['error']} |"); continue
        w = r["writes"]
        print(f"| {r['skew']} | {'max' if not r.get('rate') else format(int(r['rate']), ',')} | {w:,} | {r['distinct_keys_written']:,} | {r['writes_per_s_client']:,.0f} | {r['writes_per_s_replicated']:,.0f} | {r['payload_per_write']:.1f} | {r['payload_mb_per_s']:.2f} | {r['wan_per_write']:.1f} | {r['wan_over_payload']:.2f}× | {(r['wire_ab'] + r['wire_ba']) / w:.1f} ({r['wire_ab'] / w:.1f} + {r['wire_ba'] / w:.1f}) | {r['cpu_s_a'] * 1e6 / w:.2f} / {r['cpu_s_b'] * 1e6 / w:.2f} | {w / (r['cpu_s_a'] + r['cpu_s_b']):,.0f} |")
    print()
c = [r for r in rows if r["part"] in ("converge", "converge-fill")]
if c:
    print("## Convergence after a partition heals\n")
    for r in c:
        if r["part"] == "converge-fill":
            print(f"\n### tombstone-grace {r.get('grace')} ms\n")
            print(f"- fill: {r.get('keys_per_side')} keys per side ({r.get('shared_keys')} shared) written in {r.get('seconds_a')} / {r.get('seconds_b')} s while partitioned; DBSIZE then {r.get('dbsize_a')} / {r.get('dbsize_b')}")
        else:
            print(f"- heal → converged: **{r.get('converged_s')} s** (converged={r.get('converged')}); WAITREGIONS 1 on A {r.get('waitregions_a_s')} s, on B {r.get('waitregions_b_s')} s; DBSIZE equal {r.get('dbsize_equal_s')} s; sample equal {r.get('sample_equal_s')} s; final DBSIZE {r.get('dbsize_a')} / {r.get('dbsize_b')} (expected {r.get('expect')}), sample mismatches {r.get('sample_mismatched')}")
            print(f"- merges on A / B after [applied, noop, dropped_stale, tombstones_collected]: {r.get('crdt_a')} / {r.get('crdt_b')}")
            tr = r.get('dbsize_trace') or []
            if len(tr) > 12: tr = tr[:6] + ["..."] + tr[-3:]
            print(f"- DBSIZE trace [s since heal, A, B]: {tr}")
            print(f"- INFO regions before heal: A `{r.get('info_before_a')}`, B `{r.get('info_before_b')}`")
            print(f"- INFO regions after: A `{r.get('info_after_a')}`, B `{r.get('info_after_b')}`")
    print()
t = [r for r in rows if r["part"] == "throughput"]
if t:
    print("## Write throughput: region replicating to 2 peer regions vs unreplicated (medians over rounds)\n")
    print("| test | P | 1 region rps | 3 regions rps | ratio 3/1 | ratio by writer CPU | p99 ms 1 / 3 | node CPU µs/req 1 / 3 | all nodes CPU µs/req 1 / 3 | core busy 1 / 3 | drain after run (ms, 3 regions) | bytes_sent per req (3 regions) | runs |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    keys = sorted({(r["test"], r["pipeline"]) for r in t}, key=lambda k: (k[1], k[0]))
    med = lambda xs: statistics.median(xs) if xs else None
    for test, p in keys:
        one = [r for r in t if r["test"] == test and r["pipeline"] == p and r["regions"] == 1]
        three = [r for r in t if r["test"] == test and r["pipeline"] == p and r["regions"] == 3]
        g = lambda rs, k: med([r[k] for r in rs])
        r1, r3 = g(one, "rps"), g(three, "rps")
        ratio = r3 / r1 if r1 and r3 else None
        c1, c3 = g(one, "cpu_us_per_req_node"), g(three, "cpu_us_per_req_node")
        by_cpu = c1 / c3 if c1 and c3 else None
        print(f"| {test} | {p} | {fmt(r1,0)} | {fmt(r3,0)} | **{fmt(ratio,2)}** | {fmt(by_cpu,2)} | {fmt(g(one,'p99_ms'),2)} / {fmt(g(three,'p99_ms'),2)} | {fmt(g(one,'cpu_us_per_req_node'),2)} / {fmt(g(three,'cpu_us_per_req_node'),2)} | {fmt(g(one,'cpu_us_per_req_all'),2)} / {fmt(g(three,'cpu_us_per_req_all'),2)} | {fmt(g(one,'core_busy_all'),2)} / {fmt(g(three,'core_busy_all'),2)} | {fmt(g(three,'drain_ms'),0)} | {fmt(g(three,'wan_bytes_per_req'),1)} | {len(one)} / {len(three)} |")
    print()
    print("Ratio by writer CPU: the writer node's CPU per request unreplicated ÷ replicating, i.e. the writes per core a region keeps while it replicates, whatever bounds the rps here (on 2 cores, the client shares a core with the peers).")
    print()
    print("Per run (rps): " + "; ".join(f"r{r['round']} {r['regions']}reg {r['test']} P{r['pipeline']} {r['rps']:,.0f} (runq {r['runq_node']:.0%})" for r in t))
    print()
PY
    echo "Raw: \`$(basename "$OUT_DIR")/regions-$STAMP.jsonl\`"
} >"$REPORT"
echo
cat "$REPORT"
echo
echo "report: $REPORT"
exit "$FAILED"

#!/usr/bin/env bash
# The multi-region walkthrough, with assertions (exit status 1 at the first failed one).
#
#   regions/build.sh && docker-compose -f regions/docker-compose.yml up -d && regions/demo.sh
#
# 1. waits until every region is a healthy cluster that sees the two others;
# 2. concurrent counters and conflicting SETs in the three regions: counters add up, one SET
#    wins everywhere, and MERIDIAN EXPLAIN shows the winner's stamp and origin node;
# 3. partitions ap-south (its gateway and nodes leave the `wan` network), keeps writing on both
#    sides, checks that nothing crosses;
# 4. heals, checks convergence (the later write wins; no increment lost; DEL vs INCR keeps the
#    increment) and prints EXPLAIN from every region, which agree byte for byte;
# 5. kills eu-west's primary: a replica takes over, the links of the other regions follow it,
#    and the old primary returns as a replica;
# 6. shows INFO regions, and the admin endpoints when the build has `admin-port`.
#
# Needs on the host: docker, docker-compose (or the compose plugin), redis-cli. Talks to the
# nodes at their region addresses (10.81.r.x, reachable from a Linux host) and checks that the
# published ports (127.0.0.1:7101...) answer. Every wait is bounded (WAIT_S, default 90 s).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
WAIT_S=${WAIT_S:-90}

if docker compose version >/dev/null 2>&1; then
  dc() { docker compose -f "$here/docker-compose.yml" "$@"; }
else
  dc() { docker-compose -f "$here/docker-compose.yml" "$@"; }
fi

REGIONS=(us-east eu-west ap-south)
declare -A NUM=([us-east]=1 [eu-west]=2 [ap-south]=3)

demo_start=$(date +%s)
step() { printf '\n\033[1m== %s\033[0m (at %d s)\n' "$*" $(( $(date +%s) - demo_start )); }
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

# ip REGION I: the region-network address of node I (1-3) of REGION.
ip() { echo "10.81.${NUM[$1]}.${NUM[$1]}$2"; }
# cli REGION ARGS...: a cluster-aware redis-cli to the region (its first node that answers;
# follows MOVED). The probe is bounded: redis-cli has no connect timeout, and connecting to a
# stopped container's address waits for ARP and TCP SYN retries (seen to take up to 75 s).
cli() {
  local r=$1 i; shift
  for i in 1 2 3; do
    if timeout 1 redis-cli -h "$(ip "$r" "$i")" -p 6379 ping >/dev/null 2>&1; then
      redis-cli -c -h "$(ip "$r" "$i")" -p 6379 "$@"
      return
    fi
  done
  redis-cli -c -h "$(ip "$r" 1)" -p 6379 "$@"
}
# w REGION ARGS...: a write that must succeed. Retried (bounded) while the region answers
# CLUSTERDOWN/TRYAGAIN or cannot be reached, as a client would: both mean nothing was applied.
# Any other error reply fails the demo.
w() {
  local r=$1; shift
  local deadline=$(( $(date +%s) + WAIT_S )) out
  while :; do
    out=$(cli "$r" "$@" 2>&1 | tr -d '\r') || true
    case "$out" in
      CLUSTERDOWN*|TRYAGAIN*|"Could not connect"*|"Error:"*) ;;
      ERR*|WRONGTYPE*|MOVED*|ASK*|CROSSSLOT*|NOSCRIPT*|READONLY*) fail "$r: $* answered: $out" ;;
      *) return 0 ;;
    esac
    [ "$(date +%s)" -lt "$deadline" ] || fail "$r: $* kept answering: $out"
    echo "retrying in $r ($*): $out" >&2
    sleep 0.3
  done
}
# cli_at REGION I ARGS...: one node, no redirects.
cli_at() { local r=$1 i=$2; shift 2; redis-cli -h "$(ip "$r" "$i")" -p 6379 "$@"; }

# wait_for DESCRIPTION COMMAND...: retries COMMAND every 0.5 s until it succeeds or WAIT_S.
wait_for() {
  local what=$1; shift
  local start; start=$(date +%s)
  local deadline=$(( start + WAIT_S ))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      fail "$what (not within ${WAIT_S}s)"
    fi
    sleep 0.5
  done
  ok "$what ($(( $(date +%s) - start )) s)"
}

# expect DESCRIPTION GOT WANT
expect() {
  if [ "$2" != "$3" ]; then fail "$1: got '$2', want '$3'"; fi
  ok "$1 = $3"
}

# peer_state REGION I PEER: `up`, `down`, ... as node I of REGION's INFO regions says.
peer_state() {
  cli_at "$1" "$2" info regions | tr -d '\r' | sed -n "s/^peer_region_$3:state=\([a-z]*\).*/\1/p"
}
cluster_ok() { cli_at "$1" "$2" cluster info | tr -d '\r' | grep -qx 'cluster_state:ok'; }
sees_all() {
  local r=$1 i=$2 p
  cluster_ok "$r" "$i" || return 1
  for p in "${REGIONS[@]}"; do
    [ "$p" = "$r" ] && continue
    [ "$(peer_state "$r" "$i" "$p")" = up ] || return 1
  done
}
sees_state() { [ "$(peer_state "$1" "$2" "$3")" = "$4" ]; }
# value_is REGION KEY WANT: GET through the region's cluster client.
value_is() { [ "$(cli "$1" get "$2" | tr -d '\r')" = "$3" ]; }
all_regions_have() {
  local r
  for r in "${REGIONS[@]}"; do value_is "$r" "$1" "$2" || return 1; done
}
# MERIDIAN EXPLAIN, raw (compared across regions) and formatted (shown).
explain() { cli "$1" meridian explain "$2" | tr -d '\r'; }
show_explain() { cli "$1" --no-raw meridian explain "$2" | tr -d '\r' | sed 's/^/    /'; }
same_explain() {
  local k=$1 r want
  want=$(explain us-east "$k")
  for r in eu-west ap-south; do
    [ "$(explain "$r" "$k")" = "$want" ] || fail "MERIDIAN EXPLAIN $k differs between us-east and $r"
  done
  ok "MERIDIAN EXPLAIN $k is identical in the three regions"
}
# The register's stamp node in EXPLAIN is the HLC actor of the node that wrote it; INFO crdt
# gives each node's (crdt_node_id), so the origin can be named.
origin_of() {
  local hex=$1 r i
  for r in "${REGIONS[@]}"; do
    for i in 1 2 3; do
      if cli_at "$r" "$i" info crdt | tr -d '\r' | grep -qx "crdt_node_id:$hex"; then
        echo "$r-$i"; return
      fi
    done
  done
  echo "unknown node $hex"
}
# why KEY: one line: value, stamp time and origin of the register that won.
why() {
  local raw node ms
  raw=$(explain us-east "$1")
  node=$(echo "$raw" | awk '$0=="register"{r=1} r&&$0=="node"{getline; print; exit}')
  ms=$(echo "$raw" | awk '$0=="register"{r=1} r&&$0=="unix_ms"{getline; print; exit}')
  echo "$1 = '$(cli us-east get "$1" | tr -d '\r')': register written by $(origin_of "$node") at $(date -u -d "@$((ms / 1000)).$((ms % 1000))" +%H:%M:%S.%3N) UTC (HLC $ms ms); larger stamp wins"
}

container() { dc ps -q "$1"; }
wan_network() {
  docker network ls -q --filter label=com.docker.compose.network=wan \
    --filter "label=com.docker.compose.project=$(docker inspect -f '{{index .Config.Labels "com.docker.compose.project"}}' "$(container gw-us-east)")"
}

step "1. every region is up and sees the other two"
for r in "${REGIONS[@]}"; do
  [ -n "$(container "$r-1")" ] || fail "service $r-1 is not running: start the demo first (see the header)"
done
for r in "${REGIONS[@]}"; do
  for i in 1 2 3; do wait_for "$r-$i: cluster_state ok, both other regions up" sees_all "$r" "$i"; done
done
expect "published port 127.0.0.1:7101 answers" "$(redis-cli -p 7101 ping | tr -d '\r')" PONG
cli_at us-east 1 cluster nodes | tr -d '\r' | cut -d' ' -f2,3

step "1b. the WAN is slow: a write acknowledged by both other regions"
# A key us-east-1 owns (slots 0-5460), so one connection does SET then MERIDIAN.WAITREGIONS.
k=$(for i in $(seq 0 99); do
  s=$(cli_at us-east 1 cluster keyslot "wan:$i" | tr -d '\r'); [ "$s" -le 5460 ] && { echo "wan:$i"; break; }
done)
delay=${WAN_DELAY_MS:-40}
best= n=0
for _ in $(seq 10); do # 3 measurements; a transient CLUSTERDOWN only costs an attempt
  t=$(date +%s%N)
  got=$(printf 'SET %s x\nMERIDIAN.WAITREGIONS 2 5000\n' "$k" | cli_at us-east 1 | tr -d '\r' | tail -1)
  ms=$(( ($(date +%s%N) - t) / 1000000 ))
  if [ "$got" != 2 ]; then echo "retrying: MERIDIAN.WAITREGIONS 2 answered '$got'" >&2; sleep 1; continue; fi
  if [ -z "$best" ] || [ "$ms" -lt "$best" ]; then best=$ms; fi
  n=$(( n + 1 )); [ "$n" -lt 3 ] || break
done
[ "$n" -ge 3 ] || fail "MERIDIAN.WAITREGIONS 2 did not succeed 3 times in 10 attempts"
echo "SET + MERIDIAN.WAITREGIONS 2: best of 3 = $best ms (one round trip through the gateways = 2 x ${delay} ms)"
[ "$best" -ge $(( 2 * delay )) ] || fail "acknowledged in $best ms, faster than the WAN round trip (2 x $delay ms): the gateways are bypassed"
ok "cross-region acknowledgement takes at least the WAN round trip"

step "2. concurrent writes in the three regions"
# Fresh keys on every run, so the demo can run again on the same deployment.
run="demo$(date +%s)"
for n in visits color session owner session_hits failover; do
  printf -v "K_$n" '%s:%s' "$run" "${n/_/-}"
done
echo "keys of this run: $run:*"
pids=()
w us-east incrby "$K_visits" 5 & pids+=($!)
w eu-west incrby "$K_visits" 7 & pids+=($!)
w ap-south incrby "$K_visits" 11 & pids+=($!)
w us-east set "$K_color" red & pids+=($!)
w eu-west set "$K_color" green & pids+=($!)
w ap-south set "$K_color" blue & pids+=($!)
for p in "${pids[@]}"; do wait "$p" || fail "a concurrent write failed"; done
wait_for "visits = 5 + 7 + 11 = 23 in every region" all_regions_have "$K_visits" 23
winner=$(cli us-east get "$K_color" | tr -d '\r')
case "$winner" in red|green|blue) ;; *) fail "color is '$winner'";; esac
wait_for "every region agrees color = $winner" all_regions_have "$K_color" "$winner"
same_explain "$K_color"
why "$K_color"

step "3. partition: ap-south leaves the WAN"
net=$(wan_network)
[ -n "$net" ] || fail "no wan network found"
for s in gw-ap-south ap-south-1 ap-south-2 ap-south-3; do
  docker network disconnect "$net" "$(container "$s")"
done
wait_for "us-east sees ap-south down" sees_state us-east 1 ap-south down
wait_for "ap-south sees us-east down" sees_state ap-south 1 us-east down
wait_for "ap-south is still a healthy cluster inside" cluster_ok ap-south 1
w us-east set "$K_session" open
wait_for "session reached eu-west" value_is eu-west "$K_session" open
w us-east set "$K_owner" us
w us-east incrby "$K_visits" 100
w ap-south incrby "$K_visits" 1000
sleep 1.1 # a later write, on a clock shared by all containers: its stamp is larger
w ap-south set "$K_owner" ap
w ap-south incr "$K_session_hits"
w us-east del "$K_session"
w ap-south incrby "$K_session" 5 # ap-south never saw `session`: DEL ∥ INCRBY
sleep 2
expect "us-east during the partition: owner" "$(cli us-east get "$K_owner" | tr -d '\r')" us
expect "ap-south during the partition: owner" "$(cli ap-south get "$K_owner" | tr -d '\r')" ap
expect "us-east during the partition: visits" "$(cli us-east get "$K_visits" | tr -d '\r')" 123
expect "ap-south during the partition: visits" "$(cli ap-south get "$K_visits" | tr -d '\r')" 1023

step "4. heal, converge, explain"
for s in gw-ap-south ap-south-1 ap-south-2 ap-south-3; do
  case $s in gw-*) a=10.81.0.30 ;; *) a=10.81.0.3${s##*-} ;; esac
  docker network connect --ip "$a" "$net" "$(container "$s")"
done
healed=$(date +%s)
wait_for "owner = ap in every region (the later stamp wins)" all_regions_have "$K_owner" ap
wait_for "visits = 23 + 100 + 1000 = 1123 in every region (no increment lost)" all_regions_have "$K_visits" 1123
wait_for "session = 5 in every region (DEL ∥ INCRBY keeps the unseen increment)" all_regions_have "$K_session" 5
wait_for "session-hits = 1 in every region" all_regions_have "$K_session_hits" 1
echo "converged $(( $(date +%s) - healed )) s after the heal"
for k in "$K_owner" "$K_visits" "$K_session" "$K_session_hits"; do same_explain "$k"; done
why "$K_owner"
echo "MERIDIAN EXPLAIN owner (the same in every region):"
show_explain us-east "$K_owner"
echo "MERIDIAN EXPLAIN visits: one contribution per writing node, summed (no increment lost):"
show_explain us-east "$K_visits"
echo "MERIDIAN EXPLAIN session: the DEL's tombstone, plus the increment it had not observed:"
show_explain us-east "$K_session"
for r in "${REGIONS[@]}"; do wait_for "$r-1 sees both other regions up again" sees_all "$r" 1; done

step "5. node loss: eu-west's primary is killed, a replica takes over"
# role_of REGION I: master/slave as the node says of itself in CLUSTER NODES.
role_of() { cli_at "$1" "$2" cluster nodes | tr -d '\r' | awk '$3 ~ /myself/ {sub(/myself,/, "", $3); print $3}'; }
# The current primary (eu-west-1 on a fresh start; another one if the demo ran before).
p=
for i in 1 2 3; do [ "$(role_of eu-west "$i")" = master ] && { p=$i; break; }; done
[ -n "$p" ] || fail "eu-west has no primary"
others=$(for i in 1 2 3; do [ "$i" = "$p" ] || echo "$i"; done)
promoted() { local i; for i in $others; do [ "$(role_of eu-west "$i")" = master ] && return 0; done; return 1; }
echo "killing eu-west-$p (SIGKILL: the primary; $(echo $others | sed 's/^/eu-west-/; s/ / and eu-west-/') are its replicas)"
stopped=$(date +%s)
dc kill -s KILL "eu-west-$p" >/dev/null 2>&1
wait_for "a replica of eu-west-$p was promoted" promoted
wait_for "eu-west is a healthy cluster again" cluster_ok eu-west "$(echo $others | cut -d' ' -f1)"
echo "promoted $(( $(date +%s) - stopped )) s after the kill (cluster-node-timeout 3 s)"
w us-east incrby "$K_visits" 1
wait_for "a us-east write reaches the promoted eu-west primary (the link moved)" value_is eu-west "$K_visits" 1124
w eu-west set "$K_failover" done
wait_for "a write to the promoted primary reaches us-east and ap-south" all_regions_have "$K_failover" done
dc start "eu-west-$p" >/dev/null 2>&1
wait_for "eu-west-$p came back as a replica" eval '[ "$(role_of eu-west "$p")" = slave ]'
wait_for "eu-west-$p sees both other regions up" sees_all eu-west "$p"

step "6. monitoring"
cli_at us-east 1 info regions | tr -d '\r'
if docker run --rm meridian:demo --help 2>/dev/null | grep -q -- '--admin-port'; then
  wait_for "admin /health on 127.0.0.1:8101" curl -fsS -m 2 http://127.0.0.1:8101/health
  for port in 8101 8201 8301; do
    n=$(curl -fsS -m 2 "http://127.0.0.1:$port/metrics" | grep -c '^meridian_' || true)
    [ "${n:-0}" -gt 0 ] || fail "no meridian_ samples on 127.0.0.1:$port/metrics"
    ok "127.0.0.1:$port/metrics serves $n meridian_ samples"
  done
  curl -fsS -m 2 -o /dev/null http://127.0.0.1:8101/ || fail "no dashboard page on 127.0.0.1:8101/"
  echo "dashboards: http://127.0.0.1:8101/ (us-east), :8201 (eu-west), :8301 (ap-south)"
else
  echo "this build has no admin-port yet: dashboards and /metrics skipped"
fi

printf '\n\033[1mdemo passed in %d s\033[0m\n' $(( $(date +%s) - demo_start ))

//! `/api/state` (what the dashboard draws) and `/health`, as JSON.
//!
//! Like `/metrics`, everything is read when asked, from the sources INFO and CLUSTER use: the
//! slot map (`cluster::Topology`), the other regions' records learned by gossip
//! (`cluster::regions`), the replication links (`cmd::peer_regions`, which also count the skew
//! alarms raised by each peer's entries) and the keyspace's counters.
//!
//! Health: `200` while the node serves its slots (a standalone node always; a cluster node
//! while its region's slot map is `ok`), `503` when its region is down (`cluster_state:fail`,
//! where Redis Cluster answers `CLUSTERDOWN`). Another region being unreachable does not make
//! a node unhealthy: active-active regions keep serving alone; the body says how many are down.

use crate::cluster::{node_name, Health, NodeInfo, Role};
use crate::cmd::Node;
use serde_json::{json, Value};
use std::sync::atomic::Ordering::Relaxed;

/// A peer whose stamps raised a skew alarm within this window is shown as skewed.
pub const SKEW_RECENT: std::time::Duration = std::time::Duration::from_secs(60);

fn recent(t: Option<std::time::Instant>) -> bool {
    t.is_some_and(|t| t.elapsed() < SKEW_RECENT)
}

/// Skew alarms raised by entries from peers of our own region (replication links), and when
/// the latest was.
fn local_skew(node: &Node) -> (u64, Option<std::time::Instant>) {
    let Some(c) = node.cluster.as_deref().filter(|c| c.has_repl()) else {
        return (0, None);
    };
    let repl = c.repl();
    repl.status()
        .iter()
        .filter(|l| l.kind != crate::repl::LinkKind::Region)
        .filter_map(|l| repl.inbound_from(l.peer))
        .fold((0, None), |(n, t), i| {
            (n + i.skew_alarms, t.max(i.last_skew))
        })
}

fn role(info: &NodeInfo) -> (&'static str, Option<String>) {
    match info.role {
        Role::Primary => ("primary", None),
        Role::Replica { of } => ("replica", Some(node_name(of))),
    }
}

fn node_json(info: &NodeInfo, health: Option<Health>, myself: bool) -> Value {
    let (role, of) = role(info);
    let slots: Vec<[u16; 2]> = info
        .slots
        .ranges()
        .into_iter()
        .map(|(a, b)| [a, b])
        .collect();
    json!({
        "id": node_name(info.id),
        "region": info.region,
        "resp": info.resp.to_string(),
        "role": role,
        "replica_of": of,
        "health": match health {
            Some(Health::Online) => "online",
            Some(Health::Fail) => "fail",
            None => "remote",
        },
        "myself": myself,
        "slots": slots,
    })
}

/// `/health`: (healthy, body).
pub fn health(node: &Node) -> (bool, Value) {
    let s = node.config.settings();
    let cluster_state = node.cluster.as_deref().map(|c| {
        if c.topology().state_ok() {
            "ok"
        } else {
            "fail"
        }
    });
    let ok = cluster_state != Some("fail");
    let peers = crate::cmd::peer_regions(node);
    let down = peers.values().filter(|p| !p.up).count();
    let body = json!({
        "status": if ok { "ok" } else { "cluster_down" },
        "region": s.region,
        "cluster_state": cluster_state.unwrap_or("standalone"),
        "peer_regions": peers.len(),
        "peer_regions_down": down,
        "uptime_s": node.started.elapsed().as_secs(),
    });
    (ok, body)
}

/// `/api/state`: everything the dashboard shows.
pub fn state(node: &Node) -> Value {
    let s = node.config.settings();
    let ks = &node.keyspace;
    let clock = ks.clock();
    let (local_alarms, local_last) = local_skew(node);
    // One walk over the slots for keys and tombstones (what `tombstones_pending` does).
    let (live, volatile, held) = ks.counts();
    let (hits, misses) = (ks.stats.hits.load(Relaxed), ks.stats.misses.load(Relaxed));
    let mut nodes = Vec::new();
    let mut slot_map = Vec::new();
    let mut my_state = "standalone";
    let mut me = json!({ "id": format!("{:x}", clock.node()), "role": "standalone" });
    if let Some(c) = node.cluster.as_deref() {
        let topo = c.topology();
        my_state = if topo.state_ok() { "ok" } else { "fail" };
        me = node_json(topo.me(), Some(Health::Online), true);
        let mut local: Vec<_> = topo.nodes.values().collect();
        local.sort_by_key(|v| v.info.resp);
        for v in local {
            nodes.push(node_json(&v.info, Some(v.health), v.info.id == topo.myself));
        }
        for (a, b, owner) in topo.ranges() {
            slot_map.push(json!({ "start": a, "end": b, "owner": node_name(owner) }));
        }
        let mut remote = c.regions.records();
        remote.sort_by(|a, b| (&a.region, a.resp).cmp(&(&b.region, b.resp)));
        nodes.extend(remote.iter().map(|r| node_json(r, None, false)));
    }
    let mut regions = vec![json!({
        "name": s.region,
        "local": true,
        "state": my_state,
        "skewed": recent(local_last),
        "skew_alarms": local_alarms,
    })];
    for (name, p) in crate::cmd::peer_regions(node) {
        regions.push(json!({
            "name": name,
            "local": false,
            "state": if p.up { "up" } else { "down" },
            "nodes": p.nodes,
            "links": p.links,
            "lag_ms": p.lag_ms,
            "keys_pending": p.pending_keys,
            "batches_sent": p.batches_sent,
            "batches_shared": p.batches_shared,
            "bytes_sent": p.bytes_sent,
            "batches_received": p.batches_received,
            "bytes_received": p.bytes_received,
            "resync_rounds": p.repair.rounds,
            "repair_slots": p.repair.slots,
            "repair_bytes": p.repair.bytes,
            "antientropy_checks": p.repair.checks,
            "skewed": recent(p.last_skew),
            "skew_alarms": p.skew_alarms,
        }));
    }
    json!({
        "node": me,
        "region": s.region,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": node.started.elapsed().as_secs(),
        "regions": regions,
        "nodes": nodes,
        "slot_map": slot_map,
        "conflicts": {
            "register": ks.stats.conflicts_register.load(Relaxed),
            "counter": ks.stats.conflicts_counter.load(Relaxed),
            "expiry": ks.stats.conflicts_expiry.load(Relaxed),
        },
        "skew": {
            "alarms": clock.skew_alarms(),
            "max_seen_ms": clock.max_skew_seen_ms(),
            "max_drift_ms": clock.max_drift_ms(),
        },
        "tombstones_pending": held.saturating_sub(live),
        "memory": {
            "used_bytes": crate::store::used_memory(),
            "rss_bytes": crate::cmd::rss_bytes(),
            "max_bytes": ks.evict.maxmemory(),
        },
        "keyspace": {
            "keys": live,
            "volatile": volatile,
            "hits": hits,
            "misses": misses,
            "hit_ratio": if hits + misses > 0 { Some(hits as f64 / (hits + misses) as f64) } else { None },
        },
        "commands_processed": node.stats.commands_processed.load(Relaxed),
        "clients": node.clients.len(),
        "hot_keys": hot_keys(node),
    })
}

/// The hot keys the dashboard lists, hottest first, as `{"key", "rate"}` objects (`rate`:
/// estimated operations per second from the node's top-k sketch; the key as text, invalid
/// UTF-8 replaced).
fn hot_keys(node: &Node) -> Vec<Value> {
    node.hot
        .top(10)
        .into_iter()
        .map(|h| json!({"key": String::from_utf8_lossy(&h.key), "rate": h.rate}))
        .collect()
}

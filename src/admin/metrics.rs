//! `/metrics`: the node's figures in the Prometheus text exposition format.
//!
//! Every value is read at scrape time from the same place INFO reads it (the keyspace's and
//! server's counters, the clock, the replicator's links, the persistence state), so the two
//! can never disagree and the hot path pays nothing for metrics. The text is produced by
//! `metrics-exporter-prometheus` (escaping, `# HELP` / `# TYPE` lines, label sets): each scrape
//! records the current values into a fresh, local recorder (`metrics::with_local_recorder`, so
//! several nodes in one process never share series) and renders it. A series whose source is
//! gone (a region that left) therefore disappears at the next scrape instead of going stale.
//!
//! Names follow `meridian_<area>_<what>_<unit>`; counters end in `_total`; durations are in
//! seconds and sizes in bytes (Prometheus base units). Every series carries `region`; per peer
//! region series add `peer_region`; conflicts add `kind`. The list with meanings is in
//! docs/observability.md.

use crate::cmd::Node;
use metrics::Label;
use metrics_exporter_prometheus::PrometheusBuilder;
use std::sync::atomic::Ordering::Relaxed;

/// Renders every metric of `node`.
pub fn render(node: &Node) -> String {
    let region = node.config.settings().region.clone();
    let recorder = PrometheusBuilder::new()
        .add_global_label("region", region)
        .build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || record(node));
    handle.render()
}

fn labels(pairs: &[(&'static str, &str)]) -> Vec<Label> {
    pairs
        .iter()
        .map(|&(k, v)| Label::new(k, v.to_string()))
        .collect()
}

fn gauge(name: &'static str, help: &'static str, l: &[(&'static str, &str)], v: f64) {
    metrics::describe_gauge!(name, help);
    metrics::gauge!(name, labels(l)).set(v);
}

fn counter(name: &'static str, help: &'static str, l: &[(&'static str, &str)], v: u64) {
    metrics::describe_counter!(name, help);
    metrics::counter!(name, labels(l)).absolute(v);
}

#[rustfmt::skip]
fn record(node: &Node) {
    let ks = &node.keyspace;
    let st = &node.stats;
    let k = &ks.stats;
    let none: &[(&str, &str)] = &[];
    gauge("meridian_build_info", "Always 1; the version is a label", &[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    gauge("meridian_uptime_seconds", "Seconds since the node started", none, node.started.elapsed().as_secs_f64());

    // Clients and commands.
    gauge("meridian_clients_connected", "Connected RESP clients", none, node.clients.len() as f64);
    counter("meridian_connections_received_total", "RESP connections accepted", none, st.connections_received.load(Relaxed));
    counter("meridian_connections_rejected_total", "RESP connections refused at maxclients", none, st.rejected_connections.load(Relaxed));
    counter("meridian_commands_processed_total", "Commands executed", none, st.commands_processed.load(Relaxed));
    counter("meridian_net_input_bytes_total", "Bytes read from RESP clients", none, st.net_input_bytes.load(Relaxed));
    counter("meridian_net_output_bytes_total", "Bytes written to RESP clients", none, st.net_output_bytes.load(Relaxed));

    // Keyspace.
    // One walk over the slots for keys and tombstones (what `tombstones_pending` does).
    let (live, volatile, held) = ks.counts();
    gauge("meridian_keyspace_keys", "Live keys (DBSIZE)", none, live as f64);
    gauge("meridian_keyspace_volatile_keys", "Live keys with a TTL", none, volatile as f64);
    counter("meridian_keyspace_hits_total", "Reads that found a live key", none, k.hits.load(Relaxed));
    counter("meridian_keyspace_misses_total", "Reads that found no live key", none, k.misses.load(Relaxed));
    counter("meridian_keyspace_expired_total", "Keys expired (lazily or actively)", none, k.expired_keys.load(Relaxed));
    counter("meridian_keyspace_evicted_total", "Keys evicted at maxmemory (local, never replicated)", none, ks.evict.evicted.load(Relaxed));

    // Memory.
    gauge("meridian_memory_used_bytes", "Bytes allocated (jemalloc stats.allocated, INFO used_memory)", none, crate::store::used_memory() as f64);
    gauge("meridian_memory_rss_bytes", "Resident set size of the process", none, crate::cmd::rss_bytes() as f64);
    gauge("meridian_memory_max_bytes", "maxmemory (0 = no limit)", none, ks.evict.maxmemory() as f64);

    // CRDT merges, conflicts, tombstones, clock.
    gauge("meridian_crdt_tombstones_pending", "Deleted or expired keys kept until every peer acknowledged them", none, held.saturating_sub(live) as f64);
    counter("meridian_crdt_tombstones_collected_total", "Tombstones removed after acknowledgement and grace", none, k.tombstones_collected.load(Relaxed));
    for (result, v) in [
        ("applied", &k.merges_applied),
        ("noop", &k.merges_noop),
        ("dropped_stale", &k.merges_dropped_stale),
    ] {
        counter("meridian_crdt_merges_total", "Received deltas by outcome", &[("result", result)], v.load(Relaxed));
    }
    for (kind, v) in [
        ("register", &k.conflicts_register),
        ("counter", &k.conflicts_counter),
        ("expiry", &k.conflicts_expiry),
    ] {
        counter("meridian_crdt_conflicts_resolved_total", "Concurrent writes resolved by a merge, by kind", &[("kind", kind)], v.load(Relaxed));
    }
    let clock = ks.clock();
    counter("meridian_clock_skew_alarms_total", "Received stamps further ahead than max-clock-drift", none, clock.skew_alarms());
    gauge("meridian_clock_max_skew_seconds", "Largest drift seen in a stamp that raised an alarm", none, clock.max_skew_seen_ms() as f64 / 1000.0);
    gauge("meridian_clock_max_drift_seconds", "max-clock-drift: drift that raises an alarm", none, clock.max_drift_ms() as f64 / 1000.0);

    cluster(node);
    persistence(node);
    hotkeys(node);
}

/// The region's cluster state and the replication to the other regions.
#[rustfmt::skip]
fn cluster(node: &Node) {
    let none: &[(&str, &str)] = &[];
    let Some(c) = node.cluster.as_deref() else {
        gauge("meridian_cluster_enabled", "1 on a cluster node", none, 0.0);
        return;
    };
    gauge("meridian_cluster_enabled", "1 on a cluster node", none, 1.0);
    let topo = c.topology();
    let (assigned, ok) = topo.coverage();
    gauge("meridian_cluster_state_ok", "1 when every slot has a live owner (CLUSTER INFO cluster_state:ok)", none, topo.state_ok() as u8 as f64);
    gauge("meridian_cluster_slots_assigned", "Slots with an owner", none, assigned as f64);
    gauge("meridian_cluster_slots_ok", "Slots whose owner is not failed", none, ok as f64);
    gauge("meridian_cluster_known_nodes", "Nodes of this region this node knows", none, topo.nodes.len() as f64);
    let primary = matches!(topo.me().role, crate::cluster::Role::Primary);
    gauge("meridian_cluster_primary", "1 when this node is a primary, 0 for a replica", none, primary as u8 as f64);
    gauge("meridian_cluster_stale_keys", "Entries held in slots this node's shard no longer owns (removed after a grace)", none, c.stale_keys.load(Relaxed) as f64);
    counter("meridian_cluster_stale_keys_purged_total", "Entries removed from slots this node's shard no longer owns (local, never replicated)", none, c.stale_keys_purged.load(Relaxed));
    if !c.has_repl() {
        return;
    }
    gauge("meridian_repl_offset", "Changes this node published to replication", none, c.repl().offset() as f64);
    for l in c.repl().status().iter().filter(|l| l.kind != crate::repl::LinkKind::Region) {
        let peer = crate::cluster::node_name(l.peer);
        let kind = format!("{:?}", l.kind).to_ascii_lowercase();
        let lab = [("peer", peer.as_str()), ("link", kind.as_str())];
        gauge("meridian_repl_link_lag_seconds", "Age of the oldest change a same-region peer has not acknowledged", &lab, l.lag_ms as f64 / 1000.0);
        gauge("meridian_repl_link_keys_pending", "Keys not yet acknowledged by a same-region peer", &lab, l.pending_keys as f64);
    }
    for (name, p) in crate::cmd::peer_regions(node) {
        let lab = [("peer_region", name.as_str())];
        gauge("meridian_region_connected", "1 when every link to the region is connected and heard from", &lab, p.up as u8 as f64);
        gauge("meridian_region_nodes", "Nodes known in the region", &lab, p.nodes as f64);
        gauge("meridian_region_links", "Replication links to owners of our slots in the region", &lab, p.links as f64);
        gauge("meridian_region_lag_seconds", "Age of the oldest change the region has not acknowledged", &lab, p.lag_ms as f64 / 1000.0);
        gauge("meridian_region_keys_pending", "Changed keys the region has not acknowledged", &lab, p.pending_keys as f64);
        counter("meridian_region_sent_batches_total", "Delta batches sent to the region", &lab, p.batches_sent);
        counter("meridian_region_sent_shared_batches_total", "Delta batches sent to the region that were built once for several regions (fan-out group)", &lab, p.batches_shared);
        counter("meridian_region_sent_bytes_total", "Bytes of delta batches sent to the region", &lab, p.bytes_sent);
        counter("meridian_region_received_batches_total", "Delta batches received from the region", &lab, p.batches_received);
        counter("meridian_region_received_bytes_total", "Bytes of delta batches received from the region", &lab, p.bytes_received);
        counter("meridian_region_resync_rounds_total", "Repair rounds (digest comparison or full sync) started on links to the region", &lab, p.repair.rounds);
        counter("meridian_region_repair_slots_total", "Slots found different by digest comparison and sent in full to the region", &lab, p.repair.slots);
        counter("meridian_region_repair_bytes_total", "Bytes of repair traffic (digest questions and full-slot batches) to the region", &lab, p.repair.bytes);
        counter("meridian_region_antientropy_checks_total", "Anti-entropy digest checks started on idle links to the region (repl-antientropy)", &lab, p.repair.checks);
        counter("meridian_region_skew_alarms_total", "Received entries from the region whose stamps raised a skew alarm", &lab, p.skew_alarms);
    }
}

/// Persistence, read from the figures of INFO's `# Persistence` section.
#[rustfmt::skip]
fn persistence(node: &Node) {
    let none: &[(&str, &str)] = &[];
    let Some(p) = node.persist.as_deref() else {
        return;
    };
    let mut text = String::new();
    p.info(&mut text);
    let field = |name: &str| -> Option<&str> {
        text.split("\r\n")
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
    };
    let num = |name: &str| field(name).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let ok = |name: &str| (field(name) == Some("ok")) as u8 as f64;
    gauge("meridian_persist_changes_since_save", "Changes since the last snapshot", none, num("rdb_changes_since_last_save"));
    gauge("meridian_persist_last_save_timestamp_seconds", "Unix time of the last snapshot", none, num("rdb_last_save_time"));
    gauge("meridian_persist_last_save_ok", "1 when the last snapshot succeeded", none, ok("rdb_last_bgsave_status"));
    gauge("meridian_persist_save_in_progress", "1 while a snapshot is being written", none, num("rdb_bgsave_in_progress"));
    counter("meridian_persist_saves_total", "Snapshots written", none, num("rdb_saves") as u64);
    gauge("meridian_persist_aof_enabled", "1 when the append-only log is on", none, num("aof_enabled"));
    gauge("meridian_persist_aof_last_write_ok", "1 when the last log write succeeded", none, ok("aof_last_write_status"));
    gauge("meridian_persist_aof_size_bytes", "Log bytes written since the last snapshot", none, num("aof_current_size"));
    gauge("meridian_persist_aof_fsync_pending_bytes", "Log bytes written but not yet fsynced", none, num("aof_fsync_pending_bytes"));
}

/// The hot-key sketch (`INFO hotkeys`): its size, its samples, the top 10 keys' rates, and the
/// invalidations `repl-scope hot` exchanged.
#[rustfmt::skip]
fn hotkeys(node: &Node) {
    let hk = &node.hot;
    let none: &[(&str, &str)] = &[];
    gauge("meridian_hotkeys_tracked", "Keys the hot-key sketch lists (at most hotkeys-k)", none, hk.tracked().min(hk.k()) as f64);
    gauge("meridian_hotkeys_hot", "Keys at or above hotkeys-threshold (the hot set)", none, hk.hot_count() as f64);
    for (result, v) in [("recorded", &hk.recorded), ("dropped", &hk.dropped)] {
        counter("meridian_hotkeys_samples_total", "Sampled key accesses, by outcome (dropped: shard busy)", &[("result", result)], v.load(Relaxed));
    }
    for h in hk.top(10) {
        let key = String::from_utf8_lossy(&h.key);
        gauge("meridian_hotkeys_rate_ops", "Estimated operations per second of the hottest keys", &[("key", &key)], h.rate);
    }
    if let Some(c) = node.cluster.as_deref().filter(|c| c.has_repl()) {
        let r = c.repl();
        for (what, v) in [
            ("sent", r.invalidations_sent()),
            ("received", r.invalidations_received.load(Relaxed)),
            ("applied", r.invalidations_applied.load(Relaxed)),
        ] {
            counter("meridian_repl_invalidations_total", "repl-scope hot invalidations, by what happened", &[("what", what)], v);
        }
    }
}

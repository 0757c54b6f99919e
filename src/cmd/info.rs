//! INFO: server, clients, memory, persistence, stats, replication, the `crdt`, `cluster` and
//! `regions` sections, keyspace.

use super::connection::REDIS_VERSION;
use super::{CmdResult, Ctx, Node};
use crate::resp::Args;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

const DEFAULT: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "crdt",
    "cluster",
    "regions",
    "hotkeys",
    "keyspace",
];

pub fn info(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let mut wanted: Vec<String> = args
        .skip(1)
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    if wanted.is_empty()
        || wanted
            .iter()
            .any(|w| w == "all" || w == "everything" || w == "default")
    {
        wanted = DEFAULT.iter().map(|s| s.to_string()).collect();
    }
    let mut text = String::new();
    for section in DEFAULT {
        if wanted.iter().any(|w| w == section) {
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            render(ctx.node, section, &mut text);
        }
    }
    ctx.out.verbatim(&text);
    Ok(())
}

/// Resident set size from /proc (0 where unavailable).
pub fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<usize>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

fn human(n: usize) -> String {
    let n = n as f64;
    if n >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2}G", n / 1024.0 / 1024.0 / 1024.0)
    } else if n >= 1024.0 * 1024.0 {
        format!("{:.2}M", n / 1024.0 / 1024.0)
    } else if n >= 1024.0 {
        format!("{:.2}K", n / 1024.0)
    } else {
        format!("{}B", n)
    }
}

/// Redis's replication section, from the slot map and the replicator's links.
fn replication(node: &Node, t: &mut String) {
    use crate::cluster::{node_name, Role};
    use crate::repl::LinkKind;
    let Some(c) = node.cluster.as_deref().filter(|c| c.has_repl()) else {
        t.push_str(
            "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_repl_offset:0\r\n",
        );
        return;
    };
    let topo = c.topology();
    let links = c.repl().status();
    let offset = c.repl().offset();
    match topo.me().role {
        Role::Primary => {
            let replicas: Vec<_> = links
                .iter()
                .filter(|l| l.kind == LinkKind::Replica)
                .collect();
            let _ = write!(
                t,
                "# Replication\r\nrole:master\r\nconnected_slaves:{}\r\n",
                replicas.len()
            );
            for (i, l) in replicas.iter().enumerate() {
                let addr = topo.node(l.peer).map(|v| v.info.resp);
                let _ = write!(
                    t,
                    "slave{i}:id={},ip={},port={},state={},offset={},lag_keys={}\r\n",
                    node_name(l.peer),
                    addr.map_or(String::new(), |a| a.ip().to_string()),
                    addr.map_or(0, |a| a.port()),
                    if l.connected { "online" } else { "wait_bgsave" },
                    l.acked,
                    l.pending_keys
                );
            }
            let _ = write!(t, "master_repl_offset:{offset}\r\n");
        }
        Role::Replica { of } => {
            let primary = topo.node(of);
            let up = primary.is_some_and(|p| p.health == crate::cluster::Health::Online);
            let addr = primary.map(|p| p.info.resp);
            let _ = write!(
                t,
                "# Replication\r\nrole:slave\r\nmaster_host:{}\r\nmaster_port:{}\r\nmaster_link_status:{}\r\nslave_repl_offset:{}\r\nslave_read_only:1\r\nconnected_slaves:0\r\nmaster_repl_offset:{}\r\n",
                addr.map_or(String::new(), |a| a.ip().to_string()),
                addr.map_or(0, |a| a.port()),
                if up { "up" } else { "down" },
                c.repl().applied_from(of),
                c.repl().applied_from(of),
            );
        }
    }
}

fn render(node: &Node, section: &str, t: &mut String) {
    let s = node.config.settings();
    let ks = &node.keyspace;
    match section {
        "server" => {
            let up = node.started.elapsed().as_secs();
            let _ = write!(
                t,
                "# Server\r\nredis_version:{REDIS_VERSION}\r\nmeridian_version:{}\r\nredis_mode:{}\r\nos:{} {}\r\narch_bits:64\r\nmultiplexing_api:epoll\r\nprocess_id:{}\r\nrun_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{up}\r\nuptime_in_days:{}\r\nhz:{}\r\nio_threads_active:{}\r\nnode_id:{:x}\r\nregion:{}\r\nadmin_port:{}\r\n",
                env!("CARGO_PKG_VERSION"),
                if node.cluster.is_some() { "cluster" } else { "standalone" },
                std::env::consts::OS,
                std::env::consts::ARCH,
                std::process::id(),
                node.run_id,
                node.port.load(Relaxed),
                up / 86400,
                s.hz,
                s.io_threads,
                ks.clock().node(),
                s.region,
                node.admin_port.load(Relaxed),
            );
        }
        "clients" => {
            let _ = write!(
                t,
                "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:0\r\ntracking_clients:{}\r\n",
                node.clients.len(),
                s.maxclients,
                node.tracking.stats().clients,
            );
        }
        "memory" => {
            let used = crate::store::used_memory();
            let rss = rss_bytes();
            let max = ks.evict.maxmemory() as usize;
            let _ = write!(
                t,
                "# Memory\r\nused_memory:{used}\r\nused_memory_human:{}\r\nused_memory_rss:{rss}\r\nused_memory_rss_human:{}\r\nmaxmemory:{max}\r\nmaxmemory_human:{}\r\nmaxmemory_policy:{}\r\nmem_allocator:jemalloc\r\nmem_fragmentation_ratio:{:.2}\r\n",
                human(used),
                human(rss),
                human(max),
                ks.evict.policy().name(),
                if used > 0 { rss as f64 / used as f64 } else { 0.0 },
            );
        }
        "stats" => {
            let st = &node.stats;
            let k = &ks.stats;
            let _ = write!(
                t,
                "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\nrejected_connections:{}\r\ntotal_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\nexpired_keys:{}\r\nevicted_keys:{}\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\n",
                st.connections_received.load(Relaxed),
                st.commands_processed.load(Relaxed),
                st.rejected_connections.load(Relaxed),
                st.net_input_bytes.load(Relaxed),
                st.net_output_bytes.load(Relaxed),
                k.expired_keys.load(Relaxed),
                ks.evict.evicted.load(Relaxed),
                k.hits.load(Relaxed),
                k.misses.load(Relaxed),
            );
            let tr = node.tracking.stats();
            let _ = write!(
                t,
                "tracking_total_keys:{}\r\ntracking_total_items:{}\r\ntracking_total_prefixes:{}\r\n",
                tr.keys, tr.items, tr.prefixes
            );
        }
        "persistence" => match &node.persist {
            Some(p) => p.info(t),
            None => t.push_str("# Persistence\r\nloading:0\r\naof_enabled:0\r\n"),
        },
        "replication" => replication(node, t),
        "crdt" => {
            let c = ks.clock();
            let _ = write!(
                t,
                "# CRDT\r\ncrdt_node_id:{:x}\r\ncrdt_clock:{}\r\ncrdt_max_clock_drift_ms:{}\r\ncrdt_skew_alarms:{}\r\ncrdt_max_skew_seen_ms:{}\r\ncrdt_tombstones_pending:{}\r\ncrdt_tombstones_collected:{}\r\ncrdt_tombstone_grace_ms:{}\r\ncrdt_merges_applied:{}\r\ncrdt_merges_noop:{}\r\ncrdt_merges_dropped_stale:{}\r\ncrdt_peers:{}\r\n",
                c.node(),
                c.now(),
                c.max_drift_ms(),
                c.skew_alarms(),
                c.max_skew_seen_ms(),
                ks.tombstones_pending(),
                ks.stats.tombstones_collected.load(Relaxed),
                ks.tombstone_grace_ms(),
                ks.stats.merges_applied.load(Relaxed),
                ks.stats.merges_noop.load(Relaxed),
                ks.stats.merges_dropped_stale.load(Relaxed),
                node.cluster
                    .as_deref()
                    .filter(|c| c.has_repl())
                    .map_or(0, |c| c.repl().status().len()),
            );
        }
        "cluster" => {
            let enabled = node.cluster.is_some() as u8;
            let _ = write!(t, "# Cluster\r\ncluster_enabled:{enabled}\r\n");
            // Entries of slots this node's shard lost: held, and removed so far
            // (`cluster::runtime::purge`).
            if let Some(c) = node.cluster.as_deref() {
                let _ = write!(
                    t,
                    "cluster_stale_keys:{}\r\ncluster_stale_keys_purged:{}\r\n",
                    c.stale_keys.load(Relaxed),
                    c.stale_keys_purged.load(Relaxed),
                );
            }
        }
        "regions" => super::regions::info(node, t),
        "hotkeys" => super::hotkeys::info(node, t),
        "keyspace" => {
            let (live, volatile, _) = ks.counts();
            t.push_str("# Keyspace\r\n");
            if live > 0 {
                let _ = write!(t, "db0:keys={live},expires={volatile},avg_ttl=0\r\n");
            }
        }
        _ => {}
    }
}

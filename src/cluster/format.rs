//! The replies of CLUSTER INFO, NODES, SLOTS, SHARDS and LINKS, written from a slot-map
//! snapshot in Redis 7's exact shapes (checked against redis-server 7.0 and
//! reference/cluster-stampede-hotkeys.md §A): clients such as redis-py, the `redis` crate's
//! cluster client and `redis-cli --cluster` parse them field by field.

use super::topology::{node_name, Health, NodeView, Role, Topology};
use super::LinkInfo;
use crate::resp::Out;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Cluster-bus message counters for CLUSTER INFO (Meridian's bus is the QUIC mesh).
#[derive(Debug, Clone, Copy, Default)]
pub struct BusStats {
    pub messages_sent: u64,
    pub messages_received: u64,
    pub links_buffer_limit_exceeded: u64,
}

/// Whether `v` is failed as far as clients are concerned.
fn failed(v: &NodeView) -> bool {
    v.health == Health::Fail
}

/// The config epoch shown for a node: a replica shows its primary's, as Redis does.
fn shown_epoch(t: &Topology, v: &NodeView) -> u64 {
    match v.info.role {
        Role::Replica { of } => t
            .node(of)
            .map_or(v.info.config_epoch, |p| p.info.config_epoch),
        Role::Primary => v.info.config_epoch,
    }
}

/// CLUSTER INFO text: `k:v\r\n` lines, the fixed fields in Redis's order.
pub fn info_text(t: &Topology, bus: &BusStats) -> String {
    let (assigned, ok) = t.coverage();
    let state = if t.state_ok() { "ok" } else { "fail" };
    let me = &t.nodes[&t.myself];
    let mut s = String::with_capacity(512);
    let _ = write!(
        s,
        "cluster_state:{state}\r\ncluster_slots_assigned:{assigned}\r\ncluster_slots_ok:{ok}\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:{}\r\ncluster_known_nodes:{}\r\ncluster_size:{}\r\ncluster_current_epoch:{}\r\ncluster_my_epoch:{}\r\ncluster_stats_messages_sent:{}\r\ncluster_stats_messages_received:{}\r\ntotal_cluster_links_buffer_limit_exceeded:{}\r\n",
        assigned - ok,
        t.nodes.len(),
        t.size(),
        t.current_epoch,
        shown_epoch(t, me),
        bus.messages_sent,
        bus.messages_received,
        bus.links_buffer_limit_exceeded,
    );
    s
}

/// CLUSTER NODES text: one `\n`-terminated line per node,
/// `<id> <ip:port@cport> <flags> <primary|-> <ping-sent> <pong-recv> <epoch> <link> <slots...>`;
/// the `myself` line also lists open migrations as `[slot->-dst]` and `[slot-<-src]`.
pub fn nodes_text(t: &Topology) -> String {
    let ranges = t.ranges();
    let mut s = String::with_capacity(t.nodes.len() * 128);
    for v in t.nodes.values() {
        let i = &v.info;
        let myself = i.id == t.myself;
        let mut flags = String::new();
        if myself {
            flags.push_str("myself,");
        }
        flags.push_str(match i.role {
            Role::Primary => "master",
            Role::Replica { .. } => "slave",
        });
        if failed(v) {
            flags.push_str(",fail");
        }
        let primary = match i.role {
            Role::Replica { of } => node_name(of),
            Role::Primary => "-".into(),
        };
        let _ = write!(
            s,
            "{} {}:{}@{} {flags} {primary} 0 {} {} {}",
            node_name(i.id),
            i.resp.ip(),
            i.resp.port(),
            i.mesh.port(),
            if myself { 0 } else { v.seen_ms },
            shown_epoch(t, v),
            if myself || !failed(v) {
                "connected"
            } else {
                "disconnected"
            },
        );
        for &(a, b, _) in ranges.iter().filter(|r| r.2 == i.id) {
            let _ = match a == b {
                true => write!(s, " {a}"),
                false => write!(s, " {a}-{b}"),
            };
        }
        if myself {
            // Redis lists them by slot; a slot both migrating and importing shows as migrating.
            let mut open: BTreeMap<u16, String> = BTreeMap::new();
            for (&slot, &src) in &t.importing {
                open.insert(slot, format!(" [{slot}-<-{}]", node_name(src)));
            }
            for (&slot, &dst) in &t.migrating {
                open.insert(slot, format!(" [{slot}->-{}]", node_name(dst)));
            }
            open.values().for_each(|o| s.push_str(o));
        }
        s.push('\n');
    }
    s
}

/// One node as CLUSTER SLOTS shows it: `[ip, port, name, {}]`.
fn slots_node(out: &mut Out, v: &NodeView) {
    out.array(4);
    out.bulk(v.info.resp.ip().to_string().as_bytes());
    out.int(v.info.resp.port() as i64);
    out.bulk(node_name(v.info.id).as_bytes());
    out.map(0);
}

/// CLUSTER SLOTS: per contiguous range `[start, end, primary, replicas that are not failed...]`.
pub fn slots(out: &mut Out, t: &Topology) {
    let ranges = t.ranges();
    out.array(ranges.len());
    for (a, b, owner) in ranges {
        let primary = &t.nodes[&owner];
        let replicas: Vec<&NodeView> = t
            .replicas_of(owner)
            .into_iter()
            .filter(|r| !failed(r))
            .collect();
        out.array(3 + replicas.len());
        out.int(a as i64);
        out.int(b as i64);
        slots_node(out, primary);
        for r in replicas {
            slots_node(out, r);
        }
    }
}

/// CLUSTER SHARDS: per shard (a primary and its replicas) `{slots: [s1, e1, ...], nodes: [..]}`,
/// each node `{id, port, ip, endpoint, role, replication-offset, health}`.
pub fn shards(out: &mut Out, t: &Topology) {
    let mut groups: BTreeMap<u64, Vec<&NodeView>> = BTreeMap::new();
    for v in t.nodes.values() {
        groups
            .entry(t.shard_primary(v.info.id))
            .or_default()
            .push(v);
    }
    let ranges = t.ranges();
    out.array(groups.len());
    for (primary, mut members) in groups {
        // The primary first, then its replicas by ID.
        members.sort_by_key(|v| (v.info.id != primary, v.info.id));
        let owned: Vec<(u16, u16)> = ranges
            .iter()
            .filter(|r| r.2 == primary)
            .map(|r| (r.0, r.1))
            .collect();
        out.map(2);
        out.bulk(b"slots");
        out.array(owned.len() * 2);
        for (a, b) in owned {
            out.int(a as i64);
            out.int(b as i64);
        }
        out.bulk(b"nodes");
        out.array(members.len());
        for v in members {
            let i = &v.info;
            let ip = i.resp.ip().to_string();
            out.map(7);
            out.bulk(b"id");
            out.bulk(node_name(i.id).as_bytes());
            out.bulk(b"port");
            out.int(i.resp.port() as i64);
            out.bulk(b"ip");
            out.bulk(ip.as_bytes());
            out.bulk(b"endpoint");
            out.bulk(ip.as_bytes());
            out.bulk(b"role");
            out.bulk(match i.role {
                Role::Primary => b"master",
                Role::Replica { .. } => b"replica",
            });
            out.bulk(b"replication-offset");
            out.int(i.repl_offset as i64);
            out.bulk(b"health");
            out.bulk(if failed(v) { b"fail" } else { b"online" });
        }
    }
}

/// CLUSTER LINKS: one map per mesh link.
pub fn links(out: &mut Out, links: &[LinkInfo]) {
    out.array(links.len());
    for l in links {
        out.map(6);
        out.bulk(b"direction");
        out.bulk(if l.outbound { b"to" } else { b"from" });
        out.bulk(b"node");
        out.bulk(node_name(l.node).as_bytes());
        out.bulk(b"create-time");
        out.int(l.create_time_ms as i64);
        out.bulk(b"events");
        out.bulk(l.events.as_bytes());
        out.bulk(b"send-buffer-allocated");
        out.int(l.send_buffer_allocated as i64);
        out.bulk(b"send-buffer-used");
        out.int(l.send_buffer_used as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::topology::{NodeInfo, SlotSet};
    use crate::resp::Protocol;

    fn info(id: u64, role: Role, epoch: u64, slots: &[(u16, u16)]) -> NodeInfo {
        NodeInfo {
            id,
            version: 1,
            region: "r".into(),
            resp: format!("127.0.0.1:{}", 7000 + id).parse().unwrap(),
            mesh: format!("127.0.0.1:{}", 17000 + id).parse().unwrap(),
            role,
            config_epoch: epoch,
            slots: SlotSet::from_ranges(slots),
            repl_offset: 5,
            wan: None,
        }
    }

    /// Node 1 owns 0-99 and 200, node 2 owns 100-199 (failed), node 3 replicates 1.
    fn region() -> Topology {
        let mut t = Topology::new(info(1, Role::Primary, 1, &[(0, 99), (200, 200)]), 0);
        t.upsert(info(2, Role::Primary, 2, &[(100, 199)]), 50);
        t.upsert(info(3, Role::Replica { of: 1 }, 0, &[]), 60);
        t.set_health(2, Health::Fail);
        t.migrating.insert(7, 2);
        t.importing.insert(150, 2);
        t
    }

    #[test]
    fn nodes_lines() {
        let (n1, n2, n3) = (node_name(1), node_name(2), node_name(3));
        assert_eq!(
            nodes_text(&region()),
            format!(
                "{n1} 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-99 200 [7->-{n2}] [150-<-{n2}]\n\
                 {n2} 127.0.0.1:7002@17002 master,fail - 0 50 2 disconnected 100-199\n\
                 {n3} 127.0.0.1:7003@17003 slave {n1} 0 60 1 connected\n"
            )
        );
    }

    #[test]
    fn info_fields() {
        let text = info_text(
            &region(),
            &BusStats {
                messages_sent: 3,
                ..Default::default()
            },
        );
        assert!(text.starts_with(
            "cluster_state:fail\r\ncluster_slots_assigned:201\r\ncluster_slots_ok:101\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:100\r\ncluster_known_nodes:3\r\ncluster_size:2\r\ncluster_current_epoch:2\r\ncluster_my_epoch:1\r\ncluster_stats_messages_sent:3\r\n"
        ));
        assert!(text.ends_with("total_cluster_links_buffer_limit_exceeded:0\r\n"));
    }

    #[test]
    fn slots_reply() {
        let mut t = region();
        t.set_health(2, Health::Online);
        t.set_health(3, Health::Fail);
        let mut out = Out::new(Protocol::Resp2);
        slots(&mut out, &t);
        let node = |id: u64| {
            format!(
                "*4\r\n$9\r\n127.0.0.1\r\n:{}\r\n$40\r\n{}\r\n*0\r\n",
                7000 + id,
                node_name(id)
            )
        };
        let want = format!(
            "*3\r\n*3\r\n:0\r\n:99\r\n{}*3\r\n:100\r\n:199\r\n{}*3\r\n:200\r\n:200\r\n{}",
            node(1),
            node(2),
            node(1)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.buf),
            want,
            "failed replica 3 left out"
        );
    }

    #[test]
    fn shards_reply() {
        let mut out = Out::new(Protocol::Resp3);
        shards(&mut out, &region());
        let text = String::from_utf8_lossy(&out.buf).into_owned();
        let first = format!(
            "*2\r\n%2\r\n$5\r\nslots\r\n*4\r\n:0\r\n:99\r\n:200\r\n:200\r\n$5\r\nnodes\r\n*2\r\n%7\r\n$2\r\nid\r\n$40\r\n{}\r\n$4\r\nport\r\n:7001\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:5\r\n$6\r\nhealth\r\n$6\r\nonline\r\n",
            node_name(1)
        );
        assert!(text.starts_with(&first), "{text}");
        assert!(text.contains("$4\r\nrole\r\n$7\r\nreplica\r\n"));
        assert!(text.ends_with("$6\r\nhealth\r\n$4\r\nfail\r\n"));
    }
}

//! Cluster mode end to end, against in-process nodes that share a static slot map: the redirect
//! and error bytes (MOVED, ASK, CROSSSLOT, TRYAGAIN, CLUSTERDOWN) in the same sequences a real
//! redis-server 7.0 cluster was observed to answer, the CLUSTER reply formats, and real cluster
//! clients (the `redis` crate's async cluster client, `redis-cli -c`, `redis-cli --cluster
//! check`) working against it.
//!
//! Key slots used throughout: `a` 15495, `b` 3300, `foo` 12182. With three primaries split
//! evenly, node 1 owns 0-5460, node 2 5461-10922, node 3 10923-16383.

mod common;

use common::*;
use meridian::cluster::topology::even_split;
use meridian::cluster::{node_name, Cluster, Health, NodeInfo, Role, SlotSet, Topology};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Nodes 1..=n of one region, each with its own `Cluster` holding the same map.
struct Region {
    servers: Vec<Server>,
}

impl Region {
    fn node(&self, id: u64) -> &Server {
        &self.servers[id as usize - 1]
    }
    fn port(&self, id: u64) -> u16 {
        self.node(id).addr().port()
    }
    fn cluster(&self, id: u64) -> &Cluster {
        self.node(id).node.cluster.as_deref().expect("cluster node")
    }
    async fn raw(&self, id: u64) -> Raw {
        Raw::connect(self.node(id).addr()).await
    }
}

fn record(id: u64, resp: SocketAddr, role: Role, slots: &[(u16, u16)], version: u64) -> NodeInfo {
    NodeInfo {
        id,
        version,
        region: "test".into(),
        resp,
        mesh: SocketAddr::from(([127, 0, 0, 1], 20000 + id as u16)),
        role,
        config_epoch: if role == Role::Primary { id } else { 0 },
        slots: SlotSet::from_ranges(slots),
        repl_offset: 0,
        wan: None,
    }
}

/// Starts `primaries` nodes splitting the slots evenly, plus `replicas` replicas of node 1;
/// once every port is known, every node learns the full map.
async fn region(primaries: usize, replicas: usize) -> Region {
    let split = even_split(primaries);
    type Plan = (u64, Role, Vec<(u16, u16)>);
    let plan: Vec<Plan> = (1..=(primaries + replicas) as u64)
        .map(|id| match split.get(id as usize - 1) {
            Some(&r) => (id, Role::Primary, vec![r]),
            None => (id, Role::Replica { of: 1 }, vec![]),
        })
        .collect();
    let mut servers = Vec::new();
    for (id, role, slots) in &plan {
        let me = record(*id, "127.0.0.1:0".parse().unwrap(), *role, slots, 1);
        let cluster = Arc::new(Cluster::new(Topology::new(me, 0)));
        servers.push(start_with_cluster(&[], Some(cluster)).await);
    }
    let records: Vec<NodeInfo> = plan
        .iter()
        .zip(&servers)
        .map(|((id, role, slots), s)| record(*id, s.addr(), *role, slots, 2))
        .collect();
    for s in &servers {
        s.node.cluster.as_ref().unwrap().update(|t| {
            for r in &records {
                t.upsert(r.clone(), 1_700_000_000_000);
            }
        });
    }
    Region { servers }
}

fn moved(slot: u16, port: u16) -> String {
    format!("-MOVED {slot} 127.0.0.1:{port}\r\n")
}

const CROSSSLOT: &str = "-CROSSSLOT Keys in request don't hash to the same slot\r\n";
const TRYAGAIN: &str = "-TRYAGAIN Multiple keys request during rehashing of slot\r\n";

#[tokio::test]
async fn owner_serves_others_redirect_and_keys_must_share_a_slot() {
    let r = region(3, 0).await;
    let mut c = r.raw(1).await;
    expect_all(
        &mut c,
        &[
            (&["GET", "b"], "$-1\r\n"),
            (&["GET", "a"], &moved(15495, r.port(3))),
            (&["set", "foo", "1"], &moved(12182, r.port(3))),
            (&["MSET", "a", "1", "b", "2"], CROSSSLOT),
            (&["MSET", "{b}x", "1", "{b}y", "2"], "+OK\r\n"),
            (&["MGET", "{b}x", "{b}y"], "*2\r\n$1\r\n1\r\n$1\r\n2\r\n"),
            (&["MGET", "{a}x", "{a}y"], &moved(15495, r.port(3))),
            (&["PING"], "+PONG\r\n"),
            (&["DBSIZE"], ":2\r\n"),
            (&["CLUSTER", "KEYSLOT", "somekey"], ":11058\r\n"),
            (&["CLUSTER", "KEYSLOT", "foo{hash_tag}"], ":2515\r\n"),
        ],
    )
    .await;
    let mut c3 = r.raw(3).await;
    expect_all(&mut c3, &[(&["GET", "{b}x"], &moved(3300, r.port(1)))]).await;
}

#[tokio::test]
async fn a_transaction_is_routed_like_redis() {
    let r = region(3, 0).await;
    let mut c = r.raw(3).await;
    expect_all(
        &mut c,
        &[
            // Two slots of this node: each command queues, EXEC refuses the whole.
            (&["MULTI"], "+OK\r\n"),
            (&["SET", "a", "1"], "+QUEUED\r\n"),
            (&["SET", "foo", "1"], "+QUEUED\r\n"),
            (&["EXEC"], CROSSSLOT),
            (&["EXEC"], "-ERR EXEC without MULTI\r\n"),
            // A key of another node dooms the transaction.
            (&["MULTI"], "+OK\r\n"),
            (&["SET", "b", "1"], &moved(3300, r.port(1))),
            (&["SET", "a", "1"], "+QUEUED\r\n"),
            (
                &["EXEC"],
                "-EXECABORT Transaction discarded because of previous errors.\r\n",
            ),
            (&["GET", "a"], "$-1\r\n"),
            // One slot: runs.
            (&["WATCH", "{a}w"], "+OK\r\n"),
            (&["MULTI"], "+OK\r\n"),
            (&["SET", "{a}1", "x"], "+QUEUED\r\n"),
            (&["GET", "{a}1"], "+QUEUED\r\n"),
            (&["EXEC"], "*2\r\n+OK\r\n$1\r\nx\r\n"),
            (&["WATCH", "b"], &moved(3300, r.port(1))),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_migrating_slot_asks_and_an_importing_slot_needs_asking() {
    let r = region(3, 0).await;
    let (p1, p3) = (r.port(1), r.port(3));
    let mut src = r.raw(3).await;
    expect_all(&mut src, &[(&["SET", "{a}x", "1"], "+OK\r\n")]).await;
    r.cluster(1).update(|t| t.importing.insert(15495, 3));
    r.cluster(3).update(|t| t.migrating.insert(15495, 1));
    let ask = format!("-ASK 15495 127.0.0.1:{p1}\r\n");
    expect_all(
        &mut src,
        &[
            (&["GET", "{a}x"], "$1\r\n1\r\n"),
            (&["GET", "{a}y"], &ask),
            (&["SET", "{a}y", "1"], &ask),
            (&["MGET", "{a}y", "{a}z"], &ask),
            (&["MGET", "{a}x", "{a}y"], TRYAGAIN),
            (&["GET", "foo"], "$-1\r\n"),
        ],
    )
    .await;
    let mut dst = r.raw(1).await;
    expect_all(
        &mut dst,
        &[
            (&["GET", "{a}y"], &moved(15495, p3)),
            (&["ASKING"], "+OK\r\n"),
            (&["GET", "{a}y"], "$-1\r\n"),
            (&["GET", "{a}y"], &moved(15495, p3)),
            (&["ASKING"], "+OK\r\n"),
            (&["MGET", "{a}y", "{a}z"], TRYAGAIN),
            // ASKING lasts through a transaction, and ends with it.
            (&["ASKING"], "+OK\r\n"),
            (&["MULTI"], "+OK\r\n"),
            (&["GET", "{a}y"], "+QUEUED\r\n"),
            (&["SET", "{a}y", "2"], "+QUEUED\r\n"),
            (&["EXEC"], "*2\r\n$-1\r\n+OK\r\n"),
            (&["GET", "{a}y"], &moved(15495, p3)),
            (&["ASKING"], "+OK\r\n"),
            (&["ASKING"], "+OK\r\n"),
            (&["GET", "{a}y"], "$1\r\n2\r\n"),
            // Even an unknown command spends it.
            (&["ASKING"], "+OK\r\n"),
            (
                &["FOO"],
                "-ERR unknown command 'FOO', with args beginning with: \r\n",
            ),
            (&["GET", "{a}y"], &moved(15495, p3)),
        ],
    )
    .await;
    let nodes = call(&mut src, &["CLUSTER", "NODES"]).await;
    assert!(
        nodes.contains(&format!(" 10923-16383 [15495->-{}]\n", node_name(1))),
        "{nodes}"
    );
    let nodes = call(&mut dst, &["CLUSTER", "NODES"]).await;
    assert!(
        nodes.contains(&format!(" 0-5460 [15495-<-{}]\n", node_name(3))),
        "{nodes}"
    );
}

#[tokio::test]
async fn a_readonly_replica_serves_reads_of_its_primarys_slots() {
    let r = region(3, 1).await;
    let p1 = r.port(1);
    let mut c = r.raw(4).await;
    expect_all(
        &mut c,
        &[
            (&["GET", "b"], &moved(3300, p1)),
            (&["READONLY"], "+OK\r\n"),
            (&["GET", "b"], "$-1\r\n"),
            (&["SET", "b", "1"], &moved(3300, p1)),
            (&["GET", "foo"], &moved(12182, r.port(3))),
            (&["MULTI"], "+OK\r\n"),
            (&["GET", "b"], "+QUEUED\r\n"),
            (&["EXEC"], "*1\r\n$-1\r\n"),
            (&["MULTI"], "+OK\r\n"),
            (&["GET", "b"], "+QUEUED\r\n"),
            (&["SET", "b", "1"], &moved(3300, p1)),
            (
                &["EXEC"],
                "-EXECABORT Transaction discarded because of previous errors.\r\n",
            ),
            (&["READWRITE"], "+OK\r\n"),
            (&["GET", "b"], &moved(3300, p1)),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_cluster_without_full_coverage_is_down() {
    let r = region(3, 0).await;
    let mut c = r.raw(1).await;
    r.cluster(1).update(|t| t.set_health(3, Health::Fail));
    expect_all(
        &mut c,
        &[
            (&["GET", "b"], "-CLUSTERDOWN The cluster is down\r\n"),
            (&["MSET", "a", "1", "b", "2"], CROSSSLOT),
            (&["PING"], "+PONG\r\n"),
        ],
    )
    .await;
    let info = call(&mut c, &["CLUSTER", "INFO"]).await;
    assert!(info.contains("cluster_state:fail\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:10923\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:5461\r\n"), "{info}");
    r.cluster(1).update(|t| {
        t.set_health(3, Health::Online);
        let mut gone = t.node(3).unwrap().info.clone();
        gone.slots = SlotSet::default();
        gone.version += 1;
        t.upsert(gone, 1_700_000_000_001);
    });
    expect_all(
        &mut c,
        &[
            (&["GET", "a"], "-CLUSTERDOWN Hash slot not served\r\n"),
            (&["MGET", "a", "b"], "-CLUSTERDOWN Hash slot not served\r\n"),
            (&["GET", "b"], "-CLUSTERDOWN The cluster is down\r\n"),
        ],
    )
    .await;
}

/// A CLUSTER SLOTS node: `[ip, port, name, {}]` (RESP2).
fn slots_node(port: u16, id: u64) -> String {
    format!(
        "*4\r\n$9\r\n127.0.0.1\r\n:{port}\r\n$40\r\n{}\r\n*0\r\n",
        node_name(id)
    )
}

/// A CLUSTER SHARDS node map (RESP3).
fn shards_node(port: u16, id: u64, role: &str) -> String {
    format!(
        "%7\r\n$2\r\nid\r\n$40\r\n{}\r\n$4\r\nport\r\n:{port}\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n${}\r\n{role}\r\n$18\r\nreplication-offset\r\n:0\r\n$6\r\nhealth\r\n$6\r\nonline\r\n",
        node_name(id),
        role.len()
    )
}

#[tokio::test]
async fn cluster_info_nodes_slots_and_shards_have_redis_formats() {
    let r = region(3, 1).await;
    let p = |id| r.port(id);
    let mut c = r.raw(1).await;
    let info = call(&mut c, &["CLUSTER", "INFO"]).await;
    let body = "cluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:16384\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:4\r\ncluster_size:3\r\ncluster_current_epoch:3\r\ncluster_my_epoch:1\r\ncluster_stats_messages_sent:0\r\ncluster_stats_messages_received:0\r\ntotal_cluster_links_buffer_limit_exceeded:0\r\n";
    assert_eq!(info, format!("${}\r\n{body}\r\n", body.len()));

    let nodes = call(&mut c, &["CLUSTER", "NODES"]).await;
    let text = nodes
        .split_once("\r\n")
        .unwrap()
        .1
        .strip_suffix("\r\n")
        .unwrap();
    let lines: Vec<Vec<&str>> = text
        .split_terminator('\n')
        .map(|l| l.split(' ').collect())
        .collect();
    let want = [
        format!(
            "{} 127.0.0.1:{}@20001 myself,master - 0 0 1 connected 0-5460",
            node_name(1),
            p(1)
        ),
        format!(
            "{} 127.0.0.1:{}@20002 master - 0 * 2 connected 5461-10922",
            node_name(2),
            p(2)
        ),
        format!(
            "{} 127.0.0.1:{}@20003 master - 0 * 3 connected 10923-16383",
            node_name(3),
            p(3)
        ),
        format!(
            "{} 127.0.0.1:{}@20004 slave {} 0 * 1 connected",
            node_name(4),
            p(4),
            node_name(1)
        ),
    ];
    assert!(text.ends_with('\n'));
    assert_eq!(lines.len(), 4, "{text}");
    for (got, want) in lines.iter().zip(&want) {
        let want: Vec<&str> = want.split(' ').collect();
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (g, w) in got.iter().zip(&want) {
            assert!(
                *w == "*" && g.parse::<u64>().is_ok() || g == w,
                "{got:?} vs {want:?}"
            );
        }
    }

    let slots = call(&mut c, &["CLUSTER", "SLOTS"]).await;
    let want = format!(
        "*3\r\n*4\r\n:0\r\n:5460\r\n{}{}*3\r\n:5461\r\n:10922\r\n{}*3\r\n:10923\r\n:16383\r\n{}",
        slots_node(p(1), 1),
        slots_node(p(4), 4),
        slots_node(p(2), 2),
        slots_node(p(3), 3)
    );
    assert_eq!(slots, want);

    let mut c4 = r.raw(4).await;
    expect_all(
        &mut c4,
        &[
            (
                &["CLUSTER", "MYID"],
                &format!("$40\r\n{}\r\n", node_name(4)),
            ),
            (
                &["CLUSTER", "MYSHARDID"],
                &format!("$40\r\n{}\r\n", node_name(1)),
            ),
        ],
    )
    .await;
    assert!(call(&mut c4, &["CLUSTER", "INFO"])
        .await
        .contains("cluster_my_epoch:1\r\n"));
    call(&mut c4, &["HELLO", "3"]).await;
    let shards = call(&mut c4, &["CLUSTER", "SHARDS"]).await;
    let shard = |slots: &str, nodes: &[String]| {
        format!(
            "%2\r\n$5\r\nslots\r\n*2\r\n{slots}$5\r\nnodes\r\n*{}\r\n{}",
            nodes.len(),
            nodes.concat()
        )
    };
    let want = format!(
        "*3\r\n{}{}{}",
        shard(
            ":0\r\n:5460\r\n",
            &[
                shards_node(p(1), 1, "master"),
                shards_node(p(4), 4, "replica")
            ]
        ),
        shard(":5461\r\n:10922\r\n", &[shards_node(p(2), 2, "master")]),
        shard(":10923\r\n:16383\r\n", &[shards_node(p(3), 3, "master")]),
    );
    assert_eq!(shards, want);
    let info3 = call(&mut c4, &["CLUSTER", "INFO"]).await;
    assert!(info3.starts_with(&format!("={}\r\ntxt:cluster_state:ok\r\n", body.len() + 4)));
    let nodes3 = call(&mut c4, &["CLUSTER", "NODES"]).await;
    assert!(
        nodes3.starts_with('=') && nodes3.contains("\r\ntxt:"),
        "{nodes3}"
    );
    expect_all(&mut c4, &[(&["CLUSTER", "LINKS"], "*0\r\n")]).await;
}

#[tokio::test]
async fn keys_in_a_slot_and_admin_argument_errors() {
    let r = region(3, 1).await;
    let mut c = r.raw(1).await;
    expect_all(
        &mut c,
        &[
            (&["SET", "{b}1", "x"], "+OK\r\n"),
            (&["SET", "{b}2", "x"], "+OK\r\n"),
            (&["SET", "{b}3", "x", "PX", "1"], "+OK\r\n"),
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (n1, n2, n4) = (node_name(1), node_name(2), node_name(4));
    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec!["CLUSTER", "COUNTKEYSINSLOT", "3300"], ":2\r\n".into()),
        (vec!["CLUSTER", "COUNTKEYSINSLOT", "16384"], "-ERR Invalid slot\r\n".into()),
        (vec!["CLUSTER", "COUNTKEYSINSLOT", "x"], "-ERR value is not an integer or out of range\r\n".into()),
        (vec!["CLUSTER", "GETKEYSINSLOT", "3300", "1"], "*1\r\n$4\r\n{b}".into()),
        (vec!["CLUSTER", "GETKEYSINSLOT", "3300", "-1"], "-ERR Invalid slot or number of keys\r\n".into()),
        (vec!["CLUSTER", "GETKEYSINSLOT", "1", "x"], "-ERR value is not an integer or out of range\r\n".into()),
        (vec!["CLUSTER", "GETKEYSINSLOT", "3300"], "-ERR wrong number of arguments for 'cluster|getkeysinslot' command\r\n".into()),
        (vec!["CLUSTER", "SETSLOT", "x", "MIGRATING", &n2], "-ERR Invalid or out of range slot\r\n".into()),
        (vec!["CLUSTER", "SETSLOT", "16384", "STABLE"], "-ERR Invalid or out of range slot\r\n".into()),
        (vec!["CLUSTER", "SETSLOT", "6000", "MIGRATING", &n2], "-ERR I'm not the owner of hash slot 6000\r\n".into()),
        (vec!["CLUSTER", "SETSLOT", "1", "MIGRATING", "abc"], "-ERR I don't know about node abc\r\n".into()),
        (vec!["CLUSTER", "SETSLOT", "1", "IMPORTING", "abc"], "-ERR I'm already the owner of hash slot 1\r\n".into()),
        (vec!["CLUSTER", "SETSLOT", "6000", "IMPORTING", "abc"], "-ERR I don't know about node abc\r\n".into()),
        (vec!["CLUSTER", "SETSLOT", "1", "NODE", "abc"], "-ERR Unknown node abc\r\n".into()),
        (vec!["CLUSTER", "SETSLOT", "1", "FOO"], "-ERR Invalid CLUSTER SETSLOT action or number of arguments. Try CLUSTER HELP\r\n".into()),
        (vec!["CLUSTER", "SETSLOT", "1", "STABLE", "x"], "-ERR Invalid CLUSTER SETSLOT action or number of arguments. Try CLUSTER HELP\r\n".into()),
        (vec!["CLUSTER", "FAILOVER", "foo"], "-ERR syntax error\r\n".into()),
        (vec!["CLUSTER", "FAILOVER", "force", "x"], "-ERR unknown subcommand or wrong number of arguments for 'FAILOVER'. Try CLUSTER HELP.\r\n".into()),
        (vec!["CLUSTER", "ADDSLOTS", "1"], "-ERR Slot 1 is already busy\r\n".into()),
        (vec!["CLUSTER", "ADDSLOTS", "1", "99999"], "-ERR Invalid or out of range slot\r\n".into()),
        (vec!["CLUSTER", "ADDSLOTSRANGE", "1"], "-ERR wrong number of arguments for 'cluster|addslotsrange' command\r\n".into()),
        (vec!["CLUSTER", "ADDSLOTSRANGE", "1", "2", "3"], "-ERR wrong number of arguments for 'cluster|addslotsrange' command\r\n".into()),
        (vec!["CLUSTER", "ADDSLOTSRANGE", "5", "2"], "-ERR start slot number 5 is greater than end slot number 2\r\n".into()),
        (vec!["CLUSTER", "ADDSLOTSRANGE", "x", "2"], "-ERR Invalid or out of range slot\r\n".into()),
        (vec!["CLUSTER", "FOO"], "-ERR unknown subcommand 'FOO'. Try CLUSTER HELP.\r\n".into()),
        (vec!["CLUSTER", "MYID", "x"], "-ERR wrong number of arguments for 'cluster|myid' command\r\n".into()),
        (vec!["CLUSTER", "MEET", "127.0.0.1", "x"], "-ERR Invalid TCP base port specified: x\r\n".into()),
        (vec!["CLUSTER", "MEET", "127.0.0.1", "7402", "x"], "-ERR Invalid TCP bus port specified: x\r\n".into()),
        (vec!["CLUSTER", "MEET", "foo", "7402"], "-ERR Invalid node address specified: foo:7402\r\n".into()),
        (vec!["CLUSTER", "MEET", "127.0.0.1", "70000"], "-ERR Invalid node address specified: 127.0.0.1:70000\r\n".into()),
        (vec!["CLUSTER", "MEET", "127.0.0.1", "7402", "0"], "-ERR Invalid node address specified: 127.0.0.1:7402\r\n".into()),
        (vec!["CLUSTER", "MEET", "127.0.0.1"], "-ERR wrong number of arguments for 'cluster|meet' command\r\n".into()),
        (vec!["CLUSTER", "REPLICATE", "abc"], "-ERR Unknown node abc\r\n".into()),
        (vec!["CLUSTER", "REPLICATE", &n1], "-ERR Can't replicate myself\r\n".into()),
        (vec!["CLUSTER", "REPLICATE", &n4], "-ERR I can only replicate a master, not a replica.\r\n".into()),
        (vec!["CLUSTER", "REPLICATE", &n2], "-ERR To set a master the node must be empty and without assigned slots.\r\n".into()),
    ];
    for (args, want) in &cases {
        let got = call(&mut c, args).await;
        assert!(
            got.starts_with(want.as_str()),
            "{args:?}: {got:?}, want {want:?}"
        );
    }
    let mut replica = r.raw(4).await;
    let got = call(&mut replica, &["CLUSTER", "SETSLOT", "x", "STABLE"]).await;
    assert_eq!(got, "-ERR Please use SETSLOT only with masters.\r\n");
    let help = call(&mut c, &["CLUSTER", "HELP"]).await;
    assert!(help.contains("+CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:\r\n"));
}

#[tokio::test]
async fn without_cluster_support_cluster_commands_refuse() {
    let s = start().await;
    let mut c = Raw::connect(s.addr()).await;
    let off = "-ERR This instance has cluster support disabled\r\n";
    expect_all(
        &mut c,
        &[
            (&["CLUSTER", "INFO"], off),
            (&["CLUSTER", "KEYSLOT", "a"], off),
            (&["CLUSTER", "HELP"], off),
            (&["CLUSTER", "SLOTS"], off),
            (&["READONLY"], off),
            (&["READWRITE"], off),
            (&["ASKING"], off),
            (
                &["CLUSTER", "FOO"],
                "-ERR unknown subcommand 'FOO'. Try CLUSTER HELP.\r\n",
            ),
            (
                &["CLUSTER", "KEYSLOT"],
                "-ERR wrong number of arguments for 'cluster|keyslot' command\r\n",
            ),
            (&["SET", "a", "1"], "+OK\r\n"),
        ],
    )
    .await;
    let info = call(&mut c, &["INFO"]).await;
    assert_eq!(info_field(&info, "cluster_enabled").as_deref(), Some("0"));
    assert_eq!(
        info_field(&info, "redis_mode").as_deref(),
        Some("standalone")
    );
    let r = region(1, 0).await;
    let mut c = r.raw(1).await;
    let info = call(&mut c, &["INFO"]).await;
    assert_eq!(info_field(&info, "cluster_enabled").as_deref(), Some("1"));
    assert_eq!(info_field(&info, "redis_mode").as_deref(), Some("cluster"));
}

#[tokio::test]
async fn command_reports_cluster_commands_without_keys() {
    let s = start().await;
    let mut con = client(s.addr()).await;
    let v: redis::Value = q!(con, "COMMAND", "INFO", "asking", "readonly", "cluster").unwrap();
    let redis::Value::Array(cmds) = v else {
        panic!("{v:?}")
    };
    let head = |c: &redis::Value| match c {
        redis::Value::Array(f) => (
            f[0].clone(),
            f[1].clone(),
            f[3].clone(),
            f[4].clone(),
            f[5].clone(),
        ),
        other => panic!("{other:?}"),
    };
    use redis::Value::{BulkString as B, Int as I};
    assert_eq!(
        head(&cmds[0]),
        (B(b"asking".to_vec()), I(1), I(0), I(0), I(0))
    );
    assert_eq!(
        head(&cmds[1]),
        (B(b"readonly".to_vec()), I(1), I(0), I(0), I(0))
    );
    assert_eq!(
        head(&cmds[2]),
        (B(b"cluster".to_vec()), I(-2), I(0), I(0), I(0))
    );
    let redis::Value::Array(f) = &cmds[2] else {
        unreachable!()
    };
    let redis::Value::Array(subs) = &f[9] else {
        panic!("{:?}", f[9])
    };
    assert_eq!(subs.len(), 17);
}

/// One key per slot, found by trying names in order.
fn key_per_slot() -> Vec<String> {
    let mut keys = vec![String::new(); 16384];
    let mut left = 16384;
    for i in 0.. {
        let k = format!("key:{i}");
        let slot = meridian::store::key_slot(k.as_bytes()) as usize;
        if keys[slot].is_empty() {
            keys[slot] = k;
            left -= 1;
            if left == 0 {
                break;
            }
        }
    }
    keys
}

#[tokio::test]
async fn the_redis_cluster_client_reaches_every_slot() {
    let r = region(3, 0).await;
    let urls: Vec<String> = (1..=3)
        .map(|id| format!("redis://{}", r.node(id).addr()))
        .collect();
    let cc = redis::cluster::ClusterClient::new(urls).expect("cluster client");
    let mut con = tokio::time::timeout(IO_TIMEOUT, cc.get_async_connection())
        .await
        .expect("connect timed out")
        .expect("cluster connection");
    let keys = key_per_slot();
    for k in &keys {
        let () = q!(con, "SET", k, k).unwrap();
    }
    for k in keys.iter().step_by(61) {
        let v: String = q!(con, "GET", k).unwrap();
        assert_eq!(&v, k);
    }
    // Every key landed on its slot's owner.
    for (id, owned) in [(1, 5461), (2, 5462), (3, 5461)] {
        let mut c = client(r.node(id).addr()).await;
        let n: i64 = q!(c, "DBSIZE").unwrap();
        assert_eq!(n, owned, "node {id}");
    }
}

fn redis_cli(args: Vec<String>) -> Option<String> {
    let out = std::process::Command::new("redis-cli")
        .args(&args)
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[tokio::test]
async fn redis_cli_follows_moved_and_checks_the_cluster() {
    let r = region(3, 0).await;
    let (p1, p3) = (r.port(1).to_string(), r.port(3).to_string());
    let run = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::time::timeout(
            Duration::from_secs(20),
            tokio::task::spawn_blocking(move || redis_cli(args)),
        )
    };
    let Some(set) = run(&["-c", "-p", &p1, "SET", "a", "v"])
        .await
        .unwrap()
        .unwrap()
    else {
        eprintln!("redis-cli not installed: skipped");
        return;
    };
    assert_eq!(set.trim(), "OK");
    let got = run(&["-p", &p3, "GET", "a"])
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got.trim(), "v");
    let check = run(&["--cluster", "check", &format!("127.0.0.1:{p1}")])
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        check.contains("[OK] All nodes agree about slots configuration."),
        "{check}"
    );
    assert!(check.contains("[OK] All 16384 slots covered."), "{check}");
}

#[tokio::test]
async fn redis_cli_reshards_slots_with_their_keys() {
    let r = region(3, 0).await;
    let keys = key_per_slot();
    let mut c1 = client(r.node(1).addr()).await;
    for k in &keys[..10] {
        let () = q!(c1, "SET", k, "v").unwrap();
    }
    let p1 = r.port(1).to_string();
    #[rustfmt::skip]
    let args: Vec<String> = [
        "--cluster", "reshard", &format!("127.0.0.1:{p1}"),
        "--cluster-from", &node_name(1), "--cluster-to", &node_name(2),
        "--cluster-slots", "10", "--cluster-yes",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let run = tokio::task::spawn_blocking(move || redis_cli(args));
    let Some(out) = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap()
        .unwrap()
    else {
        eprintln!("redis-cli not installed: skipped");
        return;
    };
    assert!(out.contains("Moving slot 9 from"), "{out}");
    let mut c2 = client(r.node(2).addr()).await;
    for k in &keys[..10] {
        let v: String = q!(c2, "GET", k).unwrap();
        assert_eq!(v, "v", "{k} moved with its slot");
    }
    let n: i64 = q!(c1, "DBSIZE").unwrap();
    assert_eq!(n, 0);
    // The source and the destination know at once; node 3 learns from the cluster runtime's
    // gossip, which this static region does not run, so it still points at the old owner.
    let mut raw1 = r.raw(1).await;
    assert_eq!(
        call(&mut raw1, &["GET", &keys[0]]).await,
        moved(0, r.port(2))
    );
    let mut raw2 = r.raw(2).await;
    assert_eq!(call(&mut raw2, &["GET", &keys[0]]).await, "$1\r\nv\r\n");
    assert_eq!(
        call(&mut raw2, &["CLUSTER", "COUNTKEYSINSLOT", "9"]).await,
        ":1\r\n"
    );
}

//! A region as its users see it: several in-process nodes with `cluster-enabled yes`, meshed
//! over real QUIC with mutual TLS on 127.0.0.1, driven with the `redis` crate's plain and
//! cluster clients and raw RESP.
//!
//! - replication inside a shard (WAIT, MOVED for replicas, READONLY reads, counters, DEL and
//!   EXPIRE reaching the replica);
//! - routing across three primaries (the cluster client, hash tags, CROSSSLOT, CLUSTER SLOTS /
//!   SHARDS / NODES agreement, COUNTKEYSINSLOT / GETKEYSINSLOT);
//! - resharding with the Redis protocol (SETSLOT IMPORTING / MIGRATING, ASK, ASKING, MIGRATE,
//!   SETSLOT NODE), idle, under a counter load, and into a shard with a replica;
//! - failover when a primary shuts down;
//! - a node whose certificate comes from another CA cannot join.

mod common;

use common::cluster::{
    cluster_nodes, err_of, key_slot, make_pki, parse_nodes, scratch_dir, ClusterNode, NodeSpec,
    Region,
};
use common::{expect_all, info_field};
use redis::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Con = redis::aio::MultiplexedConnection;

// ---------------------------------------------------------------------------------------------
// small helpers

/// Runs `cmds` through the cluster client, up to 32 at a time (each bounded by 10 s), and
/// returns the replies in order.
async fn concurrently(
    cc: &redis::cluster_async::ClusterConnection,
    cmds: impl IntoIterator<Item = redis::Cmd>,
) -> Vec<redis::RedisResult<Value>> {
    let cmds: Vec<redis::Cmd> = cmds.into_iter().collect();
    let mut out: Vec<Option<redis::RedisResult<Value>>> = (0..cmds.len()).map(|_| None).collect();
    let mut set = tokio::task::JoinSet::new();
    let mut next = 0;
    loop {
        while set.len() < 32 && next < cmds.len() {
            let (i, cmd, mut con) = (next, cmds[next].clone(), cc.clone());
            set.spawn(async move {
                let r = tokio::time::timeout(Duration::from_secs(10), cmd.query_async(&mut con))
                    .await
                    .unwrap_or_else(|_| panic!("command {i} timed out"));
                (i, r)
            });
            next += 1;
        }
        match set.join_next().await {
            Some(r) => {
                let (i, r) = r.expect("command task");
                out[i] = Some(r);
            }
            None => break,
        }
    }
    out.into_iter()
        .map(|r| r.expect("every command answered"))
        .collect()
}

/// The first key `<prefix><n>` whose slot satisfies `pred`.
fn key_where(prefix: &str, pred: impl Fn(u16) -> bool) -> String {
    (0..1_000_000)
        .map(|n| format!("{prefix}{n}"))
        .find(|k| pred(key_slot(k.as_bytes())))
        .expect("a key for the slot predicate")
}

/// A hash tag whose slot satisfies `pred`.
fn tag_where(pred: impl Fn(u16) -> bool) -> String {
    (0..1_000_000)
        .map(|n| format!("t{n}"))
        .find(|t| pred(key_slot(t.as_bytes())))
        .expect("a tag for the slot predicate")
}

async fn setslot(con: &mut Con, slot: u16, action: &str, node: &str) {
    let r: String = q!(*con, "CLUSTER", "SETSLOT", slot, action, node)
        .unwrap_or_else(|e| panic!("CLUSTER SETSLOT {slot} {action} {node}: {e}"));
    assert_eq!(r, "OK");
}

async fn count_in_slot(con: &mut Con, slot: u16) -> i64 {
    q!(*con, "CLUSTER", "COUNTKEYSINSLOT", slot).expect("COUNTKEYSINSLOT")
}

async fn keys_in_slot(con: &mut Con, slot: u16, max: usize) -> Vec<String> {
    q!(*con, "CLUSTER", "GETKEYSINSLOT", slot, max).expect("GETKEYSINSLOT")
}

/// `MIGRATE host port "" 0 5000 KEYS ...` from `src` to `dst`; retried on TRYAGAIN.
async fn migrate_keys(src: &mut Con, dst: &ClusterNode, keys: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = redis::cmd("MIGRATE");
        c.arg(dst.addr.ip().to_string())
            .arg(dst.addr.port())
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS")
            .arg(keys);
        let r: redis::RedisResult<String> =
            tokio::time::timeout(Duration::from_secs(10), c.query_async(src))
                .await
                .expect("MIGRATE timed out");
        match r {
            Ok(s) => {
                assert!(s == "OK" || s == "NOKEY", "MIGRATE answered {s}");
                return;
            }
            Err(e) if e.code() == Some("TRYAGAIN") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("MIGRATE {keys:?}: {}", common::error_text(&e)),
        }
    }
}

/// Moves `slot` from `a` to `b` with the Redis flow (what `redis-cli --cluster reshard` does),
/// `batch` keys per MIGRATE, pausing `pause` between steps so that clients meet every
/// intermediate state. Returns how many keys moved.
async fn move_slot(
    slot: u16,
    a: &ClusterNode,
    ac: &mut Con,
    b: &ClusterNode,
    bc: &mut Con,
    batch: usize,
    pause: Duration,
) -> usize {
    setslot(bc, slot, "IMPORTING", &a.name).await;
    setslot(ac, slot, "MIGRATING", &b.name).await;
    tokio::time::sleep(pause).await;
    let mut moved = 0;
    loop {
        let keys = keys_in_slot(ac, slot, batch).await;
        if keys.is_empty() {
            break;
        }
        moved += keys.len();
        migrate_keys(ac, b, &keys).await;
        tokio::time::sleep(pause).await;
    }
    setslot(bc, slot, "NODE", &b.name).await;
    tokio::time::sleep(pause).await;
    setslot(ac, slot, "NODE", &b.name).await;
    moved
}

/// CLUSTER SLOTS as `(start, end, primary ip:port, primary name, replica ip:ports)`.
fn parse_slots(v: &Value) -> Vec<(i64, i64, String, String, Vec<String>)> {
    let Value::Array(ranges) = v else {
        panic!("CLUSTER SLOTS is not an array: {v:?}")
    };
    let node = |n: &Value| -> (String, String) {
        let Value::Array(f) = n else {
            panic!("slot node {n:?}")
        };
        let s = |x: &Value| match x {
            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            Value::Int(i) => i.to_string(),
            other => panic!("slot node field {other:?}"),
        };
        (format!("{}:{}", s(&f[0]), s(&f[1])), s(&f[2]))
    };
    ranges
        .iter()
        .map(|r| {
            let Value::Array(f) = r else {
                panic!("slot range {r:?}")
            };
            let (Value::Int(a), Value::Int(b)) = (&f[0], &f[1]) else {
                panic!("slot range bounds {f:?}")
            };
            let (addr, name) = node(&f[2]);
            let replicas = f[3..].iter().map(|n| node(n).0).collect();
            (*a, *b, addr, name, replicas)
        })
        .collect()
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        other => panic!("not text: {other:?}"),
    }
}

/// A RESP2 map (flat array of key, value) or RESP3 map, as pairs.
fn pairs(v: &Value) -> Vec<(String, Value)> {
    match v {
        Value::Array(f) => f.chunks(2).map(|c| (text(&c[0]), c[1].clone())).collect(),
        Value::Map(m) => m.iter().map(|(k, v)| (text(k), v.clone())).collect(),
        other => panic!("not a map: {other:?}"),
    }
}

/// CLUSTER SHARDS as `(slot ranges, [(name, ip:port, role, health)])`, sorted.
type Shard = (Vec<(i64, i64)>, Vec<(String, String, String, String)>);
fn parse_shards(v: &Value) -> Vec<Shard> {
    let Value::Array(shards) = v else {
        panic!("CLUSTER SHARDS {v:?}")
    };
    let mut out: Vec<Shard> = shards
        .iter()
        .map(|s| {
            let p: HashMap<String, Value> = pairs(s).into_iter().collect();
            let Value::Array(sl) = &p["slots"] else {
                panic!("shard slots {p:?}")
            };
            let slots = sl
                .chunks(2)
                .map(|c| match (&c[0], &c[1]) {
                    (Value::Int(a), Value::Int(b)) => (*a, *b),
                    other => panic!("shard slot pair {other:?}"),
                })
                .collect();
            let Value::Array(ns) = &p["nodes"] else {
                panic!("shard nodes {p:?}")
            };
            let nodes = ns
                .iter()
                .map(|n| {
                    let f: HashMap<String, Value> = pairs(n).into_iter().collect();
                    (
                        text(&f["id"]),
                        format!("{}:{}", text(&f["ip"]), text(&f["port"])),
                        text(&f["role"]),
                        text(&f["health"]),
                    )
                })
                .collect();
            (slots, nodes)
        })
        .collect();
    out.sort();
    out
}

/// Slot owners as one node's CLUSTER NODES prints them: name → sorted slot ranges.
fn owners_from_nodes(text: &str) -> BTreeMap<String, Vec<String>> {
    parse_nodes(text)
        .into_iter()
        .map(|l| {
            let slots = l
                .slots
                .into_iter()
                .filter(|s| !s.starts_with('['))
                .collect();
            (l.name, slots)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. replication inside a shard

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_serves_readonly_reads_and_redirects_everything_else() {
    let region = Region::start(2, 1).await;
    let (p, r) = (region.node(0), region.node(1));
    let mut pc = p.con().await;
    let mut rc = r.con().await;

    // The layout: node 1 replicates node 0, which owns every slot.
    let lines = cluster_nodes(&mut rc).await;
    let me = lines.iter().find(|l| l.has_flag("myself")).unwrap();
    assert!(me.has_flag("slave"), "node 1 is a replica: {lines:?}");
    assert_eq!(me.primary, p.name, "node 1 follows node 0");

    let key = "user:1000";
    let slot = key_slot(key.as_bytes());
    let _: () = q!(pc, "SET", key, "alice").unwrap();
    let acked: i64 = q!(pc, "WAIT", 1, 1000).unwrap();
    assert_eq!(acked, 1, "WAIT 1 1000 on the primary counts the replica");

    // Without READONLY the replica redirects, like Redis.
    assert_eq!(
        err_of(&mut rc, &["GET", key]).await,
        format!("MOVED {slot} {}", p.hostport())
    );
    // With READONLY it serves its primary's slots.
    let ok: String = q!(rc, "READONLY").unwrap();
    assert_eq!(ok, "OK");
    let v: Option<String> = q!(rc, "GET", key).unwrap();
    assert_eq!(
        v.as_deref(),
        Some("alice"),
        "the replica reads the replicated value"
    );
    // Writes still go to the primary, READONLY or not.
    assert_eq!(
        err_of(&mut rc, &["SET", key, "mallory"]).await,
        format!("MOVED {slot} {}", p.hostport())
    );
    assert_eq!(
        err_of(&mut rc, &["INCR", "hits"]).await,
        format!("MOVED {} {}", key_slot(b"hits"), p.hostport())
    );
    // WAIT is an error on a replica, as in Redis.
    let e = err_of(&mut rc, &["WAIT", "1", "100"]).await;
    assert!(
        e.starts_with("ERR WAIT cannot be used with replica instances"),
        "{e}"
    );

    // Counters: 100 increments on the primary, the replica reads the exact sum.
    let mut sum = 0i64;
    for i in 1..=100i64 {
        let n: i64 = q!(pc, "INCRBY", "hits", i).unwrap();
        sum += i;
        assert_eq!(n, sum);
    }
    let acked: i64 = q!(pc, "WAIT", 1, 1000).unwrap();
    assert_eq!(acked, 1);
    let v: Option<String> = q!(rc, "GET", "hits").unwrap();
    assert_eq!(v, Some(sum.to_string()), "the replica's counter after WAIT");

    // DEL reaches the replica.
    let n: i64 = q!(pc, "DEL", key).unwrap();
    assert_eq!(n, 1);
    let acked: i64 = q!(pc, "WAIT", 1, 1000).unwrap();
    assert_eq!(acked, 1);
    let v: Option<String> = q!(rc, "GET", key).unwrap();
    assert_eq!(
        v, None,
        "a key deleted on the primary is gone on the replica"
    );

    // EXPIRE reaches the replica: it sees the TTL, and the key vanishes there after it.
    let _: () = q!(pc, "SET", "session", "s1").unwrap();
    let set: i64 = q!(pc, "PEXPIRE", "session", 1500).unwrap();
    assert_eq!(set, 1);
    let started = Instant::now();
    let acked: i64 = q!(pc, "WAIT", 1, 1000).unwrap();
    assert_eq!(acked, 1);
    let ttl: i64 = q!(rc, "PTTL", "session").unwrap();
    assert!(
        ttl > 0 && ttl <= 1500,
        "the replica sees the primary's deadline, PTTL {ttl}"
    );
    if started.elapsed() < Duration::from_millis(1200) {
        let v: Option<String> = q!(rc, "GET", "session").unwrap();
        assert_eq!(v.as_deref(), Some("s1"), "still there before the deadline");
    }
    let mut rc2 = rc.clone();
    let gone = common::eventually(Duration::from_secs(5), || {
        let mut c = rc2.clone();
        async move {
            let v: Option<String> = q!(c, "GET", "session").unwrap();
            v.is_none()
        }
    })
    .await;
    assert!(gone, "the expired key is still readable on the replica");
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "the key vanished on the replica before its deadline ({:?})",
        started.elapsed()
    );
    let exists: i64 = q!(rc2, "EXISTS", "session").unwrap();
    assert_eq!(exists, 0);
    region.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 2. routing across three primaries

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_client_routes_across_three_primaries() {
    let region = Region::start(3, 0).await;
    let mut cc = region.cluster_client().await;

    // 3000 keys over the whole slot space: SET then GET through the cluster client.
    let keys: Vec<String> = (0..3000).map(|i| format!("key:{i}")).collect();
    let sets = keys.iter().enumerate().map(|(i, k)| {
        let mut c = redis::cmd("SET");
        c.arg(k).arg(format!("v{i}"));
        c
    });
    for (i, r) in concurrently(&cc, sets).await.into_iter().enumerate() {
        assert_eq!(
            r.map_err(|e| common::error_text(&e)),
            Ok(Value::Okay),
            "SET key:{i}"
        );
    }
    let gets = keys.iter().map(|k| {
        let mut c = redis::cmd("GET");
        c.arg(k);
        c
    });
    for (i, r) in concurrently(&cc, gets).await.into_iter().enumerate() {
        let v = r.map_err(|e| common::error_text(&e));
        assert_eq!(
            v,
            Ok(Value::BulkString(format!("v{i}").into_bytes())),
            "GET key:{i}"
        );
    }
    let slots_used: BTreeSet<u16> = keys.iter().map(|k| key_slot(k.as_bytes())).collect();
    assert!(slots_used.len() > 2500, "keys spread over many slots");

    // Multi-key commands in one slot (a hash tag) work through the cluster client.
    let _: () = q!(cc, "MSET", "{user42}:name", "ann", "{user42}:mail", "ann@x").unwrap();
    let got: Vec<Option<String>> = q!(cc, "MGET", "{user42}:name", "{user42}:mail").unwrap();
    assert_eq!(got, vec![Some("ann".into()), Some("ann@x".into())]);

    // Across slots, every node refuses with Redis's exact text.
    let (a, b) = ("key:0", key_where("other:", |s| s != key_slot(b"key:0")));
    for (_, n) in region.running() {
        let mut c = n.con().await;
        assert_eq!(
            err_of(&mut c, &["MSET", a, "1", &b, "2"]).await,
            "CROSSSLOT Keys in request don't hash to the same slot"
        );
    }

    // CLUSTER SLOTS: three ranges covering 0..=16383, one per primary, the same on every node.
    let names: BTreeSet<String> = region.running().map(|(_, n)| n.name.clone()).collect();
    let addr_of: HashMap<String, String> = region
        .running()
        .map(|(_, n)| (n.name.clone(), n.hostport()))
        .collect();
    let mut first_slots = None;
    let mut first_shards = None;
    let mut first_owners = None;
    for (i, n) in region.running() {
        let mut c = n.con().await;
        let v: Value = q!(c, "CLUSTER", "SLOTS").unwrap();
        let slots = parse_slots(&v);
        assert_eq!(slots.len(), 3, "node {i}: three ranges: {slots:?}");
        let mut next = 0;
        for (a, b, addr, name, replicas) in &slots {
            assert_eq!(*a, next, "node {i}: ranges are contiguous from 0");
            assert!(b >= a);
            next = b + 1;
            assert_eq!(
                addr_of.get(name),
                Some(addr),
                "node {i}: {name} is at {addr}"
            );
            assert!(replicas.is_empty());
        }
        assert_eq!(next, 16384, "node {i}: ranges end at 16383");
        let primaries: BTreeSet<String> = slots.iter().map(|s| s.3.clone()).collect();
        assert_eq!(primaries, names, "node {i}: one range per primary");
        match &first_slots {
            None => first_slots = Some(slots.clone()),
            Some(f) => assert_eq!(&slots, f, "node {i} disagrees on CLUSTER SLOTS"),
        }

        // CLUSTER SHARDS agrees with SLOTS.
        let v: Value = q!(c, "CLUSTER", "SHARDS").unwrap();
        let shards = parse_shards(&v);
        assert_eq!(shards.len(), 3, "node {i}: {shards:?}");
        for (ranges, members) in &shards {
            assert_eq!(members.len(), 1);
            let (name, addr, role, health) = &members[0];
            assert_eq!((role.as_str(), health.as_str()), ("master", "online"));
            assert_eq!(addr_of.get(name), Some(addr));
            let from_slots: Vec<(i64, i64)> = slots
                .iter()
                .filter(|s| &s.3 == name)
                .map(|s| (s.0, s.1))
                .collect();
            assert_eq!(ranges, &from_slots, "node {i}: SHARDS vs SLOTS for {name}");
        }
        match &first_shards {
            None => first_shards = Some(shards.clone()),
            Some(f) => assert_eq!(&shards, f, "node {i} disagrees on CLUSTER SHARDS"),
        }

        // CLUSTER NODES: every node, one `myself` (this node), the same slot owners.
        let text: String = q!(c, "CLUSTER", "NODES").unwrap();
        let lines = parse_nodes(&text);
        assert_eq!(lines.len(), 3, "node {i}: {text}");
        let me: Vec<_> = lines.iter().filter(|l| l.has_flag("myself")).collect();
        assert_eq!(me.len(), 1, "node {i}: {text}");
        assert_eq!(me[0].name, n.name);
        for l in &lines {
            assert!(
                l.has_flag("master") && !l.has_flag("fail"),
                "node {i}: {text}"
            );
            assert_eq!(l.link, "connected");
            assert!(l.addr.starts_with(&addr_of[&l.name]), "node {i}: {text}");
        }
        let owners = owners_from_nodes(&text);
        for (name, ranges) in &owners {
            let from_slots: Vec<String> = slots
                .iter()
                .filter(|s| &s.3 == name)
                .map(|s| match s.0 == s.1 {
                    true => s.0.to_string(),
                    false => format!("{}-{}", s.0, s.1),
                })
                .collect();
            assert_eq!(ranges, &from_slots, "node {i}: NODES vs SLOTS for {name}");
        }
        match &first_owners {
            None => first_owners = Some(owners.clone()),
            Some(f) => assert_eq!(&owners, f, "node {i} disagrees on CLUSTER NODES"),
        }
    }

    // COUNTKEYSINSLOT / GETKEYSINSLOT on the owner agree with what was written; the other
    // nodes hold nothing in those slots.
    let slots = first_slots.unwrap();
    let owner_of = |slot: u16| -> String {
        slots
            .iter()
            .find(|s| s.0 <= slot as i64 && slot as i64 <= s.1)
            .map(|s| s.3.clone())
            .unwrap()
    };
    let mut want: BTreeMap<u16, BTreeSet<String>> = BTreeMap::new();
    for k in keys
        .iter()
        .map(String::as_str)
        .chain(["{user42}:name", "{user42}:mail"])
    {
        want.entry(key_slot(k.as_bytes()))
            .or_default()
            .insert(k.to_string());
    }
    let mut total = 0i64;
    for (i, n) in region.running() {
        let mut c = n.con().await;
        let mine: Vec<u16> = want
            .keys()
            .copied()
            .filter(|&s| owner_of(s) == n.name)
            .collect();
        let others: Vec<u16> = want
            .keys()
            .copied()
            .filter(|&s| owner_of(s) != n.name)
            .take(200)
            .collect();
        let mut pipe = redis::pipe();
        for s in &mine {
            pipe.cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(*s);
            pipe.cmd("CLUSTER").arg("GETKEYSINSLOT").arg(*s).arg(1000);
        }
        let got: Vec<Value> =
            tokio::time::timeout(Duration::from_secs(30), pipe.query_async(&mut c))
                .await
                .expect("slot queries timed out")
                .unwrap();
        for (j, s) in mine.iter().enumerate() {
            let count = match &got[2 * j] {
                Value::Int(n) => *n,
                other => panic!("COUNTKEYSINSLOT {s}: {other:?}"),
            };
            let Value::Array(ks) = &got[2 * j + 1] else {
                panic!("GETKEYSINSLOT {s}")
            };
            let ks: BTreeSet<String> = ks.iter().map(text).collect();
            assert_eq!(
                count as usize,
                want[s].len(),
                "node {i}: COUNTKEYSINSLOT {s}"
            );
            assert_eq!(&ks, &want[s], "node {i}: GETKEYSINSLOT {s}");
            total += count;
        }
        for s in others {
            assert_eq!(
                count_in_slot(&mut c, s).await,
                0,
                "node {i} holds keys of slot {s}"
            );
        }
        let dbsize: i64 = q!(c, "DBSIZE").unwrap();
        let expect: usize = mine.iter().map(|s| want[s].len()).sum();
        assert_eq!(dbsize as usize, expect, "node {i}: DBSIZE");
    }
    assert_eq!(total, 3002);
    region.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 3. manual slot migration with the Redis protocol

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_slot_migration_with_ask_asking_and_migrate() {
    let region = Region::start(2, 0).await;
    let (a, b) = (region.node(0), region.node(1));
    let mut ac = a.con().await;
    let mut bc = b.con().await;
    let mut cc = region.cluster_client().await;

    // A owns 0..=8191 in the initial layout: pick a tag in A's half.
    let nodes_text: String = q!(ac, "CLUSTER", "NODES").unwrap();
    let mine: Vec<String> = parse_nodes(&nodes_text)
        .into_iter()
        .find(|l| l.name == a.name)
        .unwrap()
        .slots;
    assert_eq!(mine, vec!["0-8191".to_string()], "A's slots");
    let tag = tag_where(|s| s < 8192);
    let slot = key_slot(tag.as_bytes());
    let keys: Vec<String> = (0..10).map(|i| format!("{{{tag}}}:k{i}")).collect();
    let ctr = format!("{{{tag}}}:ctr");
    for (i, k) in keys.iter().enumerate() {
        let _: () = q!(cc, "SET", k, format!("v{i}")).unwrap();
    }
    for _ in 0..10 {
        let _: i64 = q!(cc, "INCRBY", &ctr, 7).unwrap();
    }
    assert_eq!(count_in_slot(&mut ac, slot).await, 11);
    assert_eq!(count_in_slot(&mut bc, slot).await, 0);

    // Open the migration: importing on B, migrating on A.
    setslot(&mut bc, slot, "IMPORTING", &a.name).await;
    setslot(&mut ac, slot, "MIGRATING", &b.name).await;
    let a_me = cluster_nodes(&mut ac)
        .await
        .into_iter()
        .find(|l| l.has_flag("myself"))
        .unwrap();
    assert!(
        a_me.slots.contains(&format!("[{slot}->-{}]", b.name)),
        "A lists the open migration: {a_me:?}"
    );
    let b_me = cluster_nodes(&mut bc)
        .await
        .into_iter()
        .find(|l| l.has_flag("myself"))
        .unwrap();
    assert!(
        b_me.slots.contains(&format!("[{slot}-<-{}]", a.name)),
        "B lists the open import: {b_me:?}"
    );

    // Move one key: A now sends clients to B with ASK for it, and still serves the others.
    migrate_keys(&mut ac, b, &keys[..1]).await;
    assert_eq!(
        err_of(&mut ac, &["GET", &keys[0]]).await,
        format!("ASK {slot} {}", b.hostport())
    );
    let v: Option<String> = q!(ac, "GET", &keys[1]).unwrap();
    assert_eq!(
        v.as_deref(),
        Some("v1"),
        "a key not moved yet is served by A"
    );
    // B serves the moved key only after ASKING (one shot), else it redirects to the owner.
    assert_eq!(
        err_of(&mut bc, &["GET", &keys[0]]).await,
        format!("MOVED {slot} {}", a.hostport())
    );
    let mut raw = b.raw().await;
    expect_all(
        &mut raw,
        &[
            (&["ASKING"], "+OK\r\n"),
            (&["GET", &keys[0]], "$2\r\nv0\r\n"),
            (
                &["GET", &keys[0]],
                &format!("-MOVED {slot} {}\r\n", a.hostport()),
            ),
        ],
    )
    .await;

    // Counters across the move: +5 on A, migrate, +3 on B (asked) → exact.
    let n: i64 = q!(ac, "INCRBY", &ctr, 5).unwrap();
    assert_eq!(n, 75);
    migrate_keys(&mut ac, b, std::slice::from_ref(&ctr)).await;
    assert_eq!(
        err_of(&mut ac, &["INCRBY", &ctr, "1"]).await,
        format!("ASK {slot} {}", b.hostport())
    );
    expect_all(
        &mut raw,
        &[
            (&["ASKING"], "+OK\r\n"),
            (&["INCRBY", &ctr, "3"], ":78\r\n"),
        ],
    )
    .await;

    // The rest of the slot: GETKEYSINSLOT + MIGRATE until A has nothing left in it.
    loop {
        let left = keys_in_slot(&mut ac, slot, 3).await;
        if left.is_empty() {
            break;
        }
        migrate_keys(&mut ac, b, &left).await;
    }
    assert_eq!(
        count_in_slot(&mut ac, slot).await,
        0,
        "A gave every key away"
    );
    assert_eq!(count_in_slot(&mut bc, slot).await, 11, "B holds every key");

    // Close: B takes the slot, then A is told.
    setslot(&mut bc, slot, "NODE", &b.name).await;
    setslot(&mut ac, slot, "NODE", &b.name).await;
    assert_eq!(
        err_of(&mut ac, &["GET", &keys[1]]).await,
        format!("MOVED {slot} {}", b.hostport())
    );
    let v: Option<String> = q!(bc, "GET", &keys[1]).unwrap();
    assert_eq!(v.as_deref(), Some("v1"), "B serves the slot without ASKING");

    // Both nodes converge on the new owner and stay up.
    let converged = common::eventually(Duration::from_secs(5), || {
        let (mut ac, mut bc) = (ac.clone(), bc.clone());
        let (an, bn) = (a.name.clone(), b.name.clone());
        async move {
            for c in [&mut ac, &mut bc] {
                let v: Value = q!(*c, "CLUSTER", "SLOTS").unwrap();
                let s = parse_slots(&v);
                let owner = s.iter().find(|r| r.0 <= slot as i64 && slot as i64 <= r.1);
                if owner.map(|r| &r.3) != Some(&bn) {
                    return false;
                }
                let covered: i64 = s.iter().map(|r| r.1 - r.0 + 1).sum();
                if covered != 16384 || !s.iter().any(|r| r.3 == an) {
                    return false;
                }
            }
            true
        }
    })
    .await;
    assert!(
        converged,
        "slot {slot} not owned by B everywhere:\n{}",
        region.dump().await
    );
    assert!(
        region.wait_state_ok(Duration::from_secs(5)).await,
        "{}",
        region.dump().await
    );

    // The cluster client (its map now stale) follows MOVED and reads every key exactly.
    for (i, k) in keys.iter().enumerate() {
        let v: Option<String> = q!(cc, "GET", k).unwrap();
        assert_eq!(v, Some(format!("v{i}")), "{k} after the move");
    }
    let v: Option<String> = q!(cc, "GET", &ctr).unwrap();
    assert_eq!(v.as_deref(), Some("78"), "10×7 on A, +5 on A, +3 on B");
    let n: i64 = q!(cc, "INCRBY", &ctr, 2).unwrap();
    assert_eq!(n, 80);
    assert_eq!(count_in_slot(&mut ac, slot).await, 0);
    region.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 4. migration under load

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resharding_fifty_slots_under_counter_load_loses_no_increment() {
    const COUNTERS: usize = 1000;
    const WRITERS: usize = 4;
    const SLOTS_TO_MOVE: usize = 50;
    let region = Region::start(2, 0).await;
    let (a, b) = (region.node(0), region.node(1));
    let mut ac = a.con().await;
    let mut bc = b.con().await;
    let cc = region.cluster_client().await;

    // 1000 counters, four per hash tag: 250 slots, about half of them A's.
    let names: Vec<String> = (0..COUNTERS)
        .map(|i| format!("ctr:{{g{}}}:{i}", i / 4))
        .collect();
    // Every counter exists before the load (acknowledged increments of 1, counted).
    let incrs = names.iter().map(|k| {
        let mut c = redis::cmd("INCRBY");
        c.arg(k).arg(1);
        c
    });
    for (k, r) in names.iter().zip(concurrently(&cc, incrs).await) {
        assert_eq!(
            r.map_err(|e| common::error_text(&e)),
            Ok(Value::Int(1)),
            "{k}"
        );
    }
    let mut by_slot: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
    for (i, k) in names.iter().enumerate() {
        by_slot.entry(key_slot(k.as_bytes())).or_default().push(i);
    }
    let moving: Vec<u16> = by_slot
        .keys()
        .copied()
        .filter(|&s| s < 8192)
        .take(SLOTS_TO_MOVE)
        .collect();
    assert_eq!(moving.len(), SLOTS_TO_MOVE, "A holds enough counter slots");

    // Four writers increment counters and record what was acknowledged: half of their
    // increments go to the slot being moved at that moment, the rest anywhere.
    let stop = Arc::new(AtomicBool::new(false));
    let hot = Arc::new(AtomicU32::new(u32::MAX));
    let names = Arc::new(names);
    let by_slot = Arc::new(by_slot);
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        // One cluster connection per writer: redis-rs sends ASKING and the redirected command
        // as two requests, so on a connection shared by concurrent writers another writer's
        // command can slip in between and spend the ASKING (a client-side race that Redis
        // Cluster shows the same way).
        let mut con = region.cluster_client().await;
        let (stop, hot) = (stop.clone(), hot.clone());
        let (names, by_slot) = (names.clone(), by_slot.clone());
        writers.push(tokio::spawn(async move {
            let mut acked = vec![0i64; names.len()];
            let mut errors: Vec<String> = Vec::new();
            let mut ops = 0u64;
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ (w as u64 + 1);
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let h = hot.load(Ordering::Relaxed);
                let i = match by_slot.get(&(h as u16)) {
                    Some(hot) if h != u32::MAX && x & 1 == 0 => hot[(x >> 8) as usize % hot.len()],
                    _ => (x >> 8) as usize % names.len(),
                };
                let by = (x >> 32) as i64 % 5 + 1;
                let r: redis::RedisResult<i64> = tokio::time::timeout(
                    Duration::from_secs(10),
                    redis::cmd("INCRBY")
                        .arg(&names[i])
                        .arg(by)
                        .query_async(&mut con),
                )
                .await
                .unwrap_or_else(|_| panic!("writer {w}: INCRBY timed out"));
                match r {
                    Ok(_) => acked[i] += by,
                    Err(e) => errors.push(format!("{}: {}", names[i], common::error_text(&e))),
                }
                ops += 1;
            }
            (acked, errors, ops)
        }));
    }

    // Meanwhile: move the 50 slots from A to B.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let mut moved_keys = 0;
    for &s in &moving {
        hot.store(s as u32, Ordering::Relaxed);
        moved_keys += move_slot(s, a, &mut ac, b, &mut bc, 2, Duration::from_millis(20)).await;
    }
    hot.store(u32::MAX, Ordering::Relaxed);
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = vec![1i64; COUNTERS];
    let mut errors = Vec::new();
    let mut ops = 0;
    for h in writers {
        let (a, e, n) = tokio::time::timeout(Duration::from_secs(30), h)
            .await
            .expect("writer did not stop")
            .expect("writer panicked");
        for (t, x) in acked.iter_mut().zip(a) {
            *t += x;
        }
        errors.extend(e);
        ops += n;
    }
    assert!(
        ops > 1000,
        "the writers made progress during the move ({ops} ops)"
    );
    let expect_moved: usize = moving.iter().map(|s| by_slot[s].len()).sum();
    assert_eq!(
        moved_keys, expect_moved,
        "every counter of the moved slots moved once"
    );
    eprintln!("moved {SLOTS_TO_MOVE} slots ({moved_keys} keys) in {took:?} under {ops} INCRBYs");

    // Every counter equals its acknowledged increments, exactly.
    let mut cc = cc;
    let mut wrong = Vec::new();
    for (i, k) in names.iter().enumerate() {
        let v: Option<String> = q!(cc, "GET", k).unwrap();
        let v: i64 = v.as_deref().unwrap_or("0").parse().unwrap();
        if v != acked[i] {
            wrong.push(format!(
                "{k} (slot {}): {v} != acked {}",
                key_slot(k.as_bytes()),
                acked[i]
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} counters differ from their acknowledged increments (first: {:?}); {} writer errors (first: {:?})",
        wrong.len(),
        &wrong[..wrong.len().min(10)],
        errors.len(),
        &errors[..errors.len().min(10)]
    );
    assert!(
        errors.is_empty(),
        "{} INCRBYs failed through the cluster client during the move (first: {:?})",
        errors.len(),
        &errors[..errors.len().min(10)]
    );

    // The moved slots are B's everywhere, and A holds nothing in them.
    for &s in &moving {
        assert_eq!(
            count_in_slot(&mut ac, s).await,
            0,
            "A still holds keys of slot {s}"
        );
    }
    let converged = common::eventually(Duration::from_secs(5), || {
        let (mut ac, mut bc) = (ac.clone(), bc.clone());
        let moving = moving.clone();
        let bn = b.name.clone();
        async move {
            for c in [&mut ac, &mut bc] {
                let v: Value = q!(*c, "CLUSTER", "SLOTS").unwrap();
                let s = parse_slots(&v);
                for &slot in &moving {
                    let owner = s.iter().find(|r| r.0 <= slot as i64 && slot as i64 <= r.1);
                    if owner.map(|r| &r.3) != Some(&bn) {
                        return false;
                    }
                }
            }
            true
        }
    })
    .await;
    assert!(
        converged,
        "moved slots not B's everywhere:\n{}",
        region.dump().await
    );
    assert!(
        region.wait_state_ok(Duration::from_secs(5)).await,
        "{}",
        region.dump().await
    );
    region.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 5. failover

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_takes_over_when_its_primary_shuts_down() {
    let mut region = Region::start(4, 1).await;
    // Layout: 0 and 1 are primaries, 2 replicates 0, 3 replicates 1.
    let mut c2 = region.node(2).con().await;
    let me = cluster_nodes(&mut c2)
        .await
        .into_iter()
        .find(|l| l.has_flag("myself"))
        .unwrap();
    assert!(
        me.has_flag("slave") && me.primary == region.name_of(0),
        "{me:?}"
    );

    let mut cc = region.cluster_client().await;
    let keys: Vec<String> = (0..500).map(|i| format!("fo:{i}")).collect();
    let sets = keys.iter().enumerate().map(|(i, k)| {
        let mut c = redis::cmd("SET");
        c.arg(k).arg(format!("v{i}"));
        c
    });
    for (k, r) in keys.iter().zip(concurrently(&cc, sets).await) {
        assert_eq!(
            r.map_err(|e| common::error_text(&e)),
            Ok(Value::Okay),
            "SET {k}"
        );
    }
    for p in 0..2 {
        let mut c = region.node(p).con().await;
        let n: i64 = q!(c, "WAIT", 1, 2000).unwrap();
        assert_eq!(n, 1, "primary {p}: WAIT 1");
    }

    let down_name = region.name_of(0).to_string();
    let t0 = Instant::now();
    region.stop(0).await;
    let stopped_in = t0.elapsed();

    // The replica promotes itself within 5 s.
    let promoted = common::eventually(Duration::from_secs(5).saturating_sub(t0.elapsed()), || {
        let mut c = c2.clone();
        async move {
            let lines = cluster_nodes(&mut c).await;
            lines
                .iter()
                .any(|l| l.has_flag("myself") && l.has_flag("master"))
        }
    })
    .await;
    let promoted_in = t0.elapsed();
    assert!(
        promoted,
        "node 2 not `myself,master` 5 s after its primary went away (shutdown took {stopped_in:?}):\n{}",
        region.dump().await
    );
    eprintln!("shutdown took {stopped_in:?}; promoted after {promoted_in:?}");
    assert!(
        region.wait_state_ok(Duration::from_secs(5)).await,
        "cluster_state not ok everywhere after the failover:\n{}",
        region.dump().await
    );
    // Everyone agrees: node 2 owns the old primary's slots; the old primary is failed.
    for (i, n) in region.running() {
        let mut c = n.con().await;
        let v: Value = q!(c, "CLUSTER", "SLOTS").unwrap();
        let s = parse_slots(&v);
        assert!(
            s.iter().all(|r| r.3 != down_name),
            "node {i} still routes to the stopped node: {s:?}"
        );
        assert!(
            s.iter().any(|r| r.3 == region.name_of(2)),
            "node {i}: {s:?}"
        );
    }

    // Every key is readable through the cluster client made before the failover.
    let gets = keys.iter().map(|k| {
        let mut c = redis::cmd("GET");
        c.arg(k);
        c
    });
    let mut wrong = Vec::new();
    for (i, r) in concurrently(&cc, gets).await.into_iter().enumerate() {
        let want = Value::BulkString(format!("v{i}").into_bytes());
        match r {
            Ok(v) if v == want => {}
            Ok(v) => wrong.push(format!("{}: {v:?}", keys[i])),
            Err(e) => wrong.push(format!("{}: {}", keys[i], common::error_text(&e))),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of 500 keys not readable after the failover (first: {:?})",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    // And writable: the new primary takes writes.
    let _: () = q!(cc, "SET", &keys[0], "after").unwrap();
    let v: Option<String> = q!(cc, "GET", &keys[0]).unwrap();
    assert_eq!(v.as_deref(), Some("after"));
    region.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 6. a node with a certificate from another CA

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_with_a_foreign_ca_cannot_join() {
    let region = Region::start(2, 0).await;
    let foreign = scratch_dir("foreign-pki");
    make_pki(&foreign);
    let ports = common::cluster::free_ports(1);
    let spec = NodeSpec {
        resp_port: ports[0].0,
        mesh_port: ports[0].1,
        region: region.name.clone(),
        cluster_nodes: region.cluster_nodes.clone(),
        replicas: 0,
        tls_dir: foreign.clone(),
        extra: Vec::new(),
    };
    let rogue = ClusterNode::start(&spec).await;
    let rogue_port = format!(":{}@", rogue.addr.port());
    // Not in the layout, it starts alone; ask it to join as `redis-cli --cluster add-node`
    // would, so it really tries (and the handshake is what must refuse it).
    let first = region.cluster_nodes.split_whitespace().next().unwrap();
    let (host_port, mesh) = first.rsplit_once('@').unwrap();
    let (host, port) = host_port.rsplit_once(':').unwrap();
    let mut rc = rogue.con().await;
    let met: String = q!(rc, "CLUSTER", "MEET", host, port, mesh).unwrap();
    assert_eq!(met, "OK");

    // Give it several failure-detector periods to try.
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        for (i, n) in region.running() {
            let mut c = n.con().await;
            let text: String = q!(c, "CLUSTER", "NODES").unwrap();
            assert!(
                !text.contains(&rogue.name) && !text.contains(&rogue_port),
                "node {i} lists the node with a foreign certificate:\n{text}"
            );
            let info: String = q!(c, "CLUSTER", "INFO").unwrap();
            assert_eq!(
                info_field(&info, "cluster_known_nodes").as_deref(),
                Some("2")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Nothing crashed: the region is still ok and serves; the rogue still answers.
    assert!(
        region.wait_state_ok(Duration::from_secs(2)).await,
        "{}",
        region.dump().await
    );
    let mut cc = region.cluster_client().await;
    let _: () = q!(cc, "SET", "still", "here").unwrap();
    let v: Option<String> = q!(cc, "GET", "still").unwrap();
    assert_eq!(v.as_deref(), Some("here"));
    let mut rc = rogue.con().await;
    let pong: String = q!(rc, "PING").unwrap();
    assert_eq!(pong, "PONG");
    // The rogue never received a record from the region's nodes either.
    for l in cluster_nodes(&mut rc)
        .await
        .iter()
        .filter(|l| !l.has_flag("myself"))
    {
        assert_eq!(l.pong, 0, "the rogue received {}'s record: {l:?}", l.name);
    }
    rogue.shutdown().await;
    region.shutdown().await;
    let _ = std::fs::remove_dir_all(foreign);
}

// ---------------------------------------------------------------------------------------------
// 7. resharding between shards that have replicas

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moved_keys_reach_the_new_shards_replica() {
    // 0 and 1 are primaries; 2 replicates 0, 3 replicates 1.
    let region = Region::start(4, 1).await;
    let (a, b) = (region.node(0), region.node(1));
    let (mut ac, mut bc) = (a.con().await, b.con().await);
    let mut a_rep = region.node(2).con().await;
    let mut b_rep = region.node(3).con().await;
    for c in [&mut a_rep, &mut b_rep] {
        let ok: String = q!(*c, "READONLY").unwrap();
        assert_eq!(ok, "OK");
    }
    let tag = tag_where(|s| s < 8192);
    let slot = key_slot(tag.as_bytes());
    let keys: Vec<String> = (0..20).map(|i| format!("{{{tag}}}:{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        let _: () = q!(ac, "SET", k, format!("v{i}")).unwrap();
    }
    let n: i64 = q!(ac, "WAIT", 1, 2000).unwrap();
    assert_eq!(n, 1);
    let v: Option<String> = q!(a_rep, "GET", &keys[0]).unwrap();
    assert_eq!(
        v.as_deref(),
        Some("v0"),
        "A's replica has the keys before the move"
    );

    let moved = move_slot(slot, a, &mut ac, b, &mut bc, 7, Duration::ZERO).await;
    assert_eq!(moved, keys.len());
    let n: i64 = q!(bc, "WAIT", 1, 2000).unwrap();
    assert_eq!(n, 1, "B's replica acknowledges what B holds after the move");

    // B's replica serves the moved keys to READONLY clients.
    let mut wrong = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let mut c = b_rep.clone();
        let want = format!("v{i}");
        let ok = common::eventually(Duration::from_secs(5), || {
            let mut c = c.clone();
            let (k, want) = (k.clone(), want.clone());
            async move {
                let r: redis::RedisResult<Option<String>> =
                    redis::cmd("GET").arg(&k).query_async(&mut c).await;
                matches!(r, Ok(Some(v)) if v == want)
            }
        })
        .await;
        if !ok {
            let r: redis::RedisResult<Option<String>> =
                redis::cmd("GET").arg(k).query_async(&mut c).await;
            wrong.push(format!("{k}: {:?}", r.map_err(|e| common::error_text(&e))));
        }
    }
    assert!(
        wrong.is_empty(),
        "B's replica does not serve {} of the moved keys (first: {:?})\n{}",
        wrong.len(),
        &wrong[..wrong.len().min(5)],
        region.dump().await
    );
    // A's replica no longer serves the slot: it redirects to the new owner.
    let redirected = common::eventually(Duration::from_secs(5), || {
        let mut c = a_rep.clone();
        let k = keys[0].clone();
        async move {
            let r: redis::RedisResult<Option<String>> =
                redis::cmd("GET").arg(&k).query_async(&mut c).await;
            matches!(r, Err(e) if e.code() == Some("MOVED"))
        }
    })
    .await;
    let last: redis::RedisResult<Option<String>> = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut a_rep)
        .await;
    assert!(redirected, "A's replica after the move: {last:?}");
    assert_eq!(
        common::error_text(&last.unwrap_err()),
        format!("MOVED {slot} {}", b.hostport())
    );
    region.shutdown().await;
}

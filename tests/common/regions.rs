//! A multi-region world for the cross-region tests: R regions, each with its own node count and
//! replicas, every node behind its own UDP [`Relay`] so that partitions are made in the network
//! ([`Net`]), never by calling into a node. Nodes announce their relay port
//! (`cluster-announce-bus-port`), list their region's nodes by relay port (`cluster-nodes`) and
//! find the other regions through `region-peers` (the relay address of the first node of every
//! other region).
//!
//! The world holds the serial lock of `cluster.rs` for its whole life, runs its relays on a
//! runtime of their own, and offers: per-region cluster clients, per-node connections,
//! `wait_formed`, `converged` (bounded; panics with `MERIDIAN EXPLAIN` of every region),
//! stop/restart of a node with the same ports and data directory, and partition/heal.
#![allow(dead_code)]

use crate::common::cluster::{
    free_ports, key_slot, parse_nodes, scratch_dir, serial, shared_pki, views, ClusterNode,
    NodeSpec,
};
use crate::common::{client, eventually, info_field};
use crate::relay::{Net, Relay};
use redis::cluster_async::ClusterConnection;
use redis::Value;
use std::sync::Arc;
use std::time::Duration;

type Con = redis::aio::MultiplexedConnection;

/// How long a world may take to form (every node sees every other region, every primary's
/// writes acknowledged by every other region).
pub const WORLD_FORM_TIMEOUT: Duration = Duration::from_secs(30);
/// How long regions may take to agree on a set of keys after the network healed.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);

/// How to start one region.
#[derive(Clone, Debug)]
pub struct RegionSpec {
    pub nodes: usize,
    pub replicas: usize,
    /// Overrides for every node of the region (name, value).
    pub extra: Vec<(String, String)>,
}

impl RegionSpec {
    /// One node that owns every slot.
    pub fn single() -> RegionSpec {
        Self::nodes(1, 0)
    }

    pub fn nodes(nodes: usize, replicas: usize) -> RegionSpec {
        RegionSpec {
            nodes,
            replicas,
            extra: Vec::new(),
        }
    }

    pub fn opt(mut self, name: &str, value: &str) -> RegionSpec {
        self.extra.push((name.to_string(), value.to_string()));
        self
    }
}

/// One node slot of the world: the spec it (re)starts with (`spec.mesh_port` is the real mesh
/// port its packets come from), its relay, and the node if running.
pub struct WorldNode {
    pub spec: NodeSpec,
    pub relay: Relay,
    pub node: Option<ClusterNode>,
}

pub struct WorldRegion {
    pub name: String,
    pub nodes: Vec<WorldNode>,
}

pub struct World {
    pub net: Arc<Net>,
    pub regions: Vec<WorldRegion>,
    clients: tokio::sync::Mutex<Vec<Option<ClusterConnection>>>,
    relay_rt: Option<tokio::runtime::Runtime>,
    _serial: tokio::sync::OwnedMutexGuard<()>,
}

const NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

impl World {
    /// Starts the regions (named a, b, c, ...) with `common` overrides on every node, and waits
    /// until the world has formed.
    pub async fn start(specs: &[RegionSpec], common: &[(&str, &str)]) -> World {
        let serial = serial().lock_owned().await;
        let relay_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("relays")
            .enable_all()
            .build()
            .expect("relay runtime");
        let net = Net::new();
        let tls_dir = shared_pki();
        // Ports and relays first: every node's spec names the others' relay ports.
        let mut layout = Vec::new();
        for (r, spec) in specs.iter().enumerate() {
            let mut nodes = Vec::new();
            for (resp, real) in free_ports(spec.nodes) {
                let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("relay port");
                let target = format!("127.0.0.1:{real}").parse().unwrap();
                let relay = Relay::start_on(relay_rt.handle(), net.clone(), sock, target);
                net.register(real, NAMES[r]);
                nodes.push((resp, real, relay));
            }
            layout.push(nodes);
        }
        let seeds: Vec<u16> = layout.iter().map(|nodes| nodes[0].2.port()).collect();
        let mut regions = Vec::new();
        for (r, spec) in specs.iter().enumerate() {
            let cluster_nodes = layout[r]
                .iter()
                .map(|(resp, _, relay)| format!("127.0.0.1:{resp}@{}", relay.port()))
                .collect::<Vec<_>>()
                .join(" ");
            let peers = (0..specs.len())
                .filter(|&o| o != r)
                .map(|o| format!("127.0.0.1:{}", seeds[o]))
                .collect::<Vec<_>>()
                .join(" ");
            let mut nodes = Vec::new();
            for (resp, real, relay) in std::mem::take(&mut layout[r]) {
                let mut extra: Vec<(String, String)> = vec![
                    ("cluster-announce-bus-port".into(), relay.port().to_string()),
                    ("region-peers".into(), peers.clone()),
                    ("dir".into(), scratch_dir("world").to_string_lossy().into()),
                ];
                extra.extend(common.iter().map(|(k, v)| (k.to_string(), v.to_string())));
                extra.extend(spec.extra.iter().cloned());
                let spec = NodeSpec {
                    resp_port: resp,
                    mesh_port: real,
                    region: NAMES[r].to_string(),
                    cluster_nodes: cluster_nodes.clone(),
                    replicas: spec.replicas,
                    tls_dir: tls_dir.clone(),
                    extra,
                };
                nodes.push(WorldNode {
                    node: Some(ClusterNode::start(&spec).await),
                    spec,
                    relay,
                });
            }
            regions.push(WorldRegion {
                name: NAMES[r].to_string(),
                nodes,
            });
        }
        let world = World {
            net,
            clients: tokio::sync::Mutex::new(vec![None; regions.len()]),
            regions,
            relay_rt: Some(relay_rt),
            _serial: serial,
        };
        world.wait_formed().await;
        world
    }

    pub fn name(&self, r: usize) -> &str {
        &self.regions[r].name
    }

    /// A plain connection to node `i` of region `r` (panics if it is stopped).
    pub async fn con(&self, r: usize, i: usize) -> Con {
        let n = self.regions[r].nodes[i].node.as_ref();
        client(n.expect("node is stopped").addr).await
    }

    /// A cluster client for region `r` (cached; routes by slot, follows MOVED and failovers).
    pub async fn client(&self, r: usize) -> ClusterConnection {
        let mut cache = self.clients.lock().await;
        if let Some(c) = &cache[r] {
            return c.clone();
        }
        let seeds: Vec<String> = self.regions[r]
            .nodes
            .iter()
            .filter_map(|n| n.node.as_ref())
            .map(|n| format!("redis://{}", n.addr))
            .collect();
        let c = redis::cluster::ClusterClientBuilder::new(seeds)
            .retries(20)
            .min_retry_wait(20)
            .max_retry_wait(500)
            .connection_timeout(Duration::from_secs(2))
            .response_timeout(Duration::from_secs(5))
            .build()
            .expect("cluster client");
        let con = tokio::time::timeout(Duration::from_secs(10), c.get_async_connection())
            .await
            .expect("cluster connect timed out")
            .expect("cluster connect");
        cache[r] = Some(con.clone());
        con
    }

    /// Runs one command in region `r` through its cluster client (bounded).
    pub async fn run(&self, r: usize, args: &[&str]) -> redis::RedisResult<Value> {
        let mut c = redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        let mut con = self.client(r).await;
        tokio::time::timeout(Duration::from_secs(10), c.query_async(&mut con))
            .await
            .unwrap_or_else(|_| panic!("{args:?} in region {} timed out", self.name(r)))
    }

    /// The nodes of the world that are running, as (region, index).
    pub fn running(&self) -> Vec<(usize, usize)> {
        let mut v = Vec::new();
        for (r, reg) in self.regions.iter().enumerate() {
            for (i, n) in reg.nodes.iter().enumerate() {
                if n.node.is_some() {
                    v.push((r, i));
                }
            }
        }
        v
    }

    /// The running nodes of region `r` that currently serve slots as primaries, each with a
    /// key that hashes to one of its slots.
    pub async fn primaries(&self, r: usize) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for (i, n) in self.regions[r].nodes.iter().enumerate() {
            let Some(node) = &n.node else { continue };
            let Some((_, text)) = views(node.addr).await else {
                continue;
            };
            let lines = parse_nodes(&text);
            let Some(me) = lines.iter().find(|l| l.has_flag("myself")) else {
                continue;
            };
            if !me.has_flag("master") {
                continue;
            }
            let Some(range) = me.slots.iter().find(|s| !s.starts_with('[')) else {
                continue;
            };
            let (lo, hi) = range.split_once('-').unwrap_or((range, range));
            let (lo, hi): (u16, u16) = (lo.parse().unwrap(), hi.parse().unwrap());
            let key = (0..1_000_000)
                .map(|n| format!("probe:{n}"))
                .find(|k| (lo..=hi).contains(&key_slot(k.as_bytes())))
                .expect("a key for the node's slots");
            out.push((i, key));
        }
        out
    }

    /// `MERIDIAN.WAITREGIONS n timeout_ms` on node `i` of region `r`.
    pub async fn wait_regions(&self, r: usize, i: usize, n: usize, ms: u64) -> i64 {
        let mut con = self.con(r, i).await;
        let c = redis::cmd("MERIDIAN.WAITREGIONS").arg(n).arg(ms).clone();
        let limit = Duration::from_millis(ms + 5000);
        match tokio::time::timeout(limit, c.query_async::<i64>(&mut con)).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => panic!("MERIDIAN.WAITREGIONS on {}/{i}: {e}", self.name(r)),
            Err(_) => panic!("MERIDIAN.WAITREGIONS {n} {ms} on {}/{i} hung", self.name(r)),
        }
    }

    /// Every primary of region `r`: a probe write, then true when every other region
    /// acknowledged it within `ms`.
    pub async fn synced(&self, r: usize, ms: u64) -> bool {
        let others = self.regions.len() - 1;
        let prims = self.primaries(r).await;
        if prims.is_empty() {
            return false;
        }
        for (i, key) in prims {
            let mut con = self.con(r, i).await;
            let set: redis::RedisResult<()> = crate::q!(con, "SET", &key, "x");
            if set.is_err() || self.wait_regions(r, i, others, ms).await != others as i64 {
                return false;
            }
        }
        true
    }

    /// Waits (bounded) until every running node sees every other region up and every
    /// primary's writes are acknowledged by every other region; panics with every node's
    /// `INFO regions` otherwise.
    pub async fn wait_formed(&self) {
        let ok = eventually(WORLD_FORM_TIMEOUT, || async move {
            for (r, i) in self.running() {
                let info = self.info(r, i, "regions").await;
                let peers = info_field(&info, "peer_regions");
                if peers != Some((self.regions.len() - 1).to_string()) {
                    return false;
                }
                for o in (0..self.regions.len()).filter(|&o| o != r) {
                    let f = info_field(&info, &format!("peer_region_{}", self.name(o)));
                    if !f.is_some_and(|f| f.contains("state=up")) {
                        return false;
                    }
                }
            }
            for r in 0..self.regions.len() {
                if !self.synced(r, 500).await {
                    return false;
                }
            }
            true
        })
        .await;
        if !ok {
            panic!(
                "the world did not form within {WORLD_FORM_TIMEOUT:?}:\n{}",
                self.dump().await
            );
        }
    }

    /// `INFO <section>` of node `i` of region `r` (empty when it does not answer).
    pub async fn info(&self, r: usize, i: usize, section: &str) -> String {
        let Some(n) = &self.regions[r].nodes[i].node else {
            return String::new();
        };
        let fut = async {
            let c = redis::Client::open(format!("redis://{}", n.addr)).ok()?;
            let mut con = c.get_multiplexed_async_connection().await.ok()?;
            let cmd = redis::cmd("INFO").arg(section).clone();
            cmd.query_async::<String>(&mut con).await.ok()
        };
        let info = tokio::time::timeout(Duration::from_secs(3), fut).await;
        info.ok().flatten().unwrap_or_default()
    }

    /// Every running node's `INFO regions`, for failure messages.
    pub async fn dump(&self) -> String {
        let mut s = String::new();
        for (r, i) in self.running() {
            let info = self.info(r, i, "regions").await;
            s.push_str(&format!("--- {}/{i} ---\n{info}\n", self.name(r)));
        }
        s
    }

    /// DUMP and GET of `key` in region `r` (None where a command failed).
    pub async fn state(&self, r: usize, key: &str) -> Option<(Option<Vec<u8>>, Option<Vec<u8>>)> {
        let dump = self.run(r, &["DUMP", key]).await.ok()?;
        let get = self.run(r, &["GET", key]).await.ok()?;
        let bytes = |v: Value| match v {
            Value::Nil => Some(None),
            Value::BulkString(b) => Some(Some(b)),
            _ => None,
        };
        Some((bytes(dump)?, bytes(get)?))
    }

    /// Waits (bounded) until every region shows byte-identical DUMP and GET for every key, and
    /// returns the agreed GET values. Panics with `MERIDIAN EXPLAIN` from every region
    /// otherwise.
    pub async fn converged(&self, keys: &[String]) -> Vec<Option<Vec<u8>>> {
        match self.try_converged(keys).await {
            Ok(v) => v,
            Err(msg) => panic!("{msg}"),
        }
    }

    /// [`World::converged`] that returns the failure text (every diverging key's
    /// `MERIDIAN EXPLAIN` and every node's `INFO regions`) instead of panicking.
    pub async fn try_converged(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, String> {
        let deadline = tokio::time::Instant::now() + CONVERGE_TIMEOUT;
        loop {
            let mut diverging = Vec::new();
            let mut agreed = Vec::new();
            for k in keys {
                let mut seen = Vec::new();
                for r in 0..self.regions.len() {
                    seen.push(self.state(r, k).await);
                }
                if seen[0].is_some() && seen.iter().all(|s| *s == seen[0]) {
                    agreed.push(seen[0].clone().and_then(|s| s.1));
                } else {
                    diverging.push(k.clone());
                }
            }
            if diverging.is_empty() {
                return Ok(agreed);
            }
            if tokio::time::Instant::now() >= deadline {
                let mut msg = format!(
                    "regions did not converge within {CONVERGE_TIMEOUT:?} on {} of {} keys:\n",
                    diverging.len(),
                    keys.len()
                );
                for k in diverging.iter().take(8) {
                    msg.push_str(&self.explain(k).await);
                }
                msg.push_str(&self.dump().await);
                return Err(msg);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `MERIDIAN EXPLAIN key` from every running node, GET and PTTL per region, as text.
    pub async fn explain(&self, key: &str) -> String {
        let mut s = format!("=== {key} ===\n");
        for (r, i) in self.running() {
            let mut con = self.con(r, i).await;
            let e: redis::RedisResult<Value> = crate::q!(con, "MERIDIAN", "EXPLAIN", key);
            s.push_str(&format!("{}/{i} EXPLAIN: {e:?}\n", self.name(r)));
        }
        for r in 0..self.regions.len() {
            let get = self.run(r, &["GET", key]).await;
            let pttl = self.run(r, &["PTTL", key]).await;
            s.push_str(&format!("{} GET {get:?} PTTL {pttl:?}\n", self.name(r)));
        }
        s
    }

    fn names(&self, rs: &[usize]) -> Vec<&str> {
        rs.iter().map(|&r| self.name(r)).collect()
    }

    /// Cuts the regions `a` from the regions `b` (both directions).
    pub fn partition(&self, a: &[usize], b: &[usize]) {
        self.net.partition(&self.names(a), &self.names(b));
    }

    /// Cuts every region from every other.
    pub fn split_all(&self) {
        for r in 0..self.regions.len() {
            self.partition(&[r], &(r + 1..self.regions.len()).collect::<Vec<_>>());
        }
    }

    /// Drops only the packets from regions `from` to regions `to`.
    pub fn block_one_way(&self, from: &[usize], to: &[usize]) {
        self.net.block_one_way(&self.names(from), &self.names(to));
    }

    /// Cuts node `i` of region `r` from everyone.
    pub fn isolate(&self, r: usize, i: usize) {
        self.net.isolate(self.regions[r].nodes[i].spec.mesh_port);
    }

    pub fn heal(&self) {
        self.net.heal();
    }

    /// Gracefully stops node `i` of region `r` (its relay stays).
    pub async fn stop(&mut self, r: usize, i: usize) {
        let n = self.regions[r].nodes[i]
            .node
            .take()
            .expect("node already stopped");
        n.shutdown().await;
        self.clients.lock().await[r] = None;
    }

    /// Restarts node `i` of region `r` with the same ports and data directory.
    pub async fn restart(&mut self, r: usize, i: usize) {
        assert!(self.regions[r].nodes[i].node.is_none(), "node is running");
        let n = ClusterNode::start(&self.regions[r].nodes[i].spec).await;
        self.regions[r].nodes[i].node = Some(n);
        self.clients.lock().await[r] = None;
    }

    /// Forgets region `r`'s cached cluster client (after a failover).
    pub async fn reconnect(&self, r: usize) {
        self.clients.lock().await[r] = None;
    }

    /// Stops every node gracefully (bounded), so the next test starts on idle cores.
    pub async fn shutdown(mut self) {
        for r in 0..self.regions.len() {
            for i in 0..self.regions[r].nodes.len() {
                if let Some(n) = self.regions[r].nodes[i].node.take() {
                    n.shutdown().await;
                }
            }
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Nodes get their stop signal (not joined), relays are cancelled, then their runtime
        // goes without blocking the test's runtime.
        for r in &mut self.regions {
            for n in &mut r.nodes {
                n.node.take();
            }
        }
        self.regions.clear();
        if let Some(rt) = self.relay_rt.take() {
            rt.shutdown_background();
        }
    }
}

//! An in-process region: N Meridian nodes with `cluster-enabled yes`, talking over real QUIC
//! (mutual TLS with a dev PKI) on 127.0.0.1. Each node runs on its own thread and multi-thread
//! tokio runtime, so one node can be shut down (gracefully) while the others keep running, and a
//! wedged node cannot stall the test's runtime. Every wait is bounded.
//!
//! Regions of one test binary run one at a time (see [`Region::start`]): the failure detector
//! works with timeouts of about a second, and several regions sharing two cores would turn
//! scheduling delays into false failovers.
#![allow(dead_code)]

use super::IO_TIMEOUT;
use meridian::config::Config;
use meridian::server::{spawn, Running};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// `cluster-node-timeout` of the test regions (ms).
pub const NODE_TIMEOUT_MS: u64 = 1000;

/// How long a region may take to form (every node `cluster_state:ok` and every peer's record
/// received).
pub const FORM_TIMEOUT: Duration = Duration::from_secs(20);

/// The lock that runs the regions of one test binary one at a time (held for a region's or a
/// multi-region world's whole life).
pub fn serial() -> Arc<tokio::sync::Mutex<()>> {
    static M: OnceLock<Arc<tokio::sync::Mutex<()>>> = OnceLock::new();
    M.get_or_init(|| Arc::new(tokio::sync::Mutex::new(())))
        .clone()
}

fn scratch_root() -> PathBuf {
    std::env::temp_dir().join(format!("meridian-itest-{}", std::process::id()))
}

/// A fresh scratch directory for this process (removed by the caller when done).
pub fn scratch_dir(what: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = scratch_root().join(format!("{what}-{}", N.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// Generates a dev PKI (a CA and a node certificate for 127.0.0.1 / localhost) into `dir`.
pub fn make_pki(dir: &Path) {
    meridian::admin::certs(dir, &["127.0.0.1".into(), "localhost".into()]).expect("dev PKI");
}

/// The region PKI, generated once per test process.
pub fn shared_pki() -> PathBuf {
    static PKI: OnceLock<PathBuf> = OnceLock::new();
    PKI.get_or_init(|| {
        let d = scratch_dir("pki");
        make_pki(&d);
        d
    })
    .clone()
}

/// `n` pairs of (RESP, mesh) ports, claimed so that nothing else takes them before the node
/// binds them (see [`super::ports`]).
pub fn free_ports(n: usize) -> Vec<(u16, u16)> {
    (0..n)
        .map(|_| (super::ports::claim(), super::ports::claim()))
        .collect()
}

/// How to start one node.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub resp_port: u16,
    pub mesh_port: u16,
    pub region: String,
    /// The `cluster-nodes` list given to the node.
    pub cluster_nodes: String,
    pub replicas: usize,
    pub tls_dir: PathBuf,
    /// Extra overrides (name, value).
    pub extra: Vec<(String, String)>,
}

impl NodeSpec {
    fn overrides(&self) -> Vec<(String, String)> {
        let mut o: Vec<(String, String)> = [
            ("port", self.resp_port.to_string()),
            ("bind", "127.0.0.1".to_string()),
            ("region", self.region.clone()),
            ("cluster-enabled", "yes".to_string()),
            ("cluster-port", self.mesh_port.to_string()),
            ("cluster-nodes", self.cluster_nodes.clone()),
            ("cluster-replicas", self.replicas.to_string()),
            (
                "cluster-tls-dir",
                self.tls_dir.to_string_lossy().into_owned(),
            ),
            ("cluster-node-timeout", NODE_TIMEOUT_MS.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        o.extend(self.extra.iter().cloned());
        o
    }
}

/// One running node of a region.
pub struct ClusterNode {
    pub addr: SocketAddr,
    pub mesh_port: u16,
    /// CLUSTER MYID.
    pub name: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ClusterNode {
    /// Starts a node on its own thread and runtime; panics if it does not come up.
    pub async fn start(spec: &NodeSpec) -> ClusterNode {
        let config = Config::layered(None, false, &spec.overrides()).expect("valid node config");
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<SocketAddr, String>>();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let port = spec.resp_port;
        let thread = std::thread::Builder::new()
            .name(format!("node-{port}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("node runtime");
                rt.block_on(async move {
                    let running: Running = match spawn(config).await {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(running.addr()));
                    let _ = stop_rx.await;
                    running.shutdown().await;
                });
                // Whatever the node left behind (detached tasks) goes with its runtime.
                rt.shutdown_timeout(Duration::from_secs(2));
            })
            .expect("node thread");
        let addr = tokio::time::timeout(IO_TIMEOUT, ready_rx)
            .await
            .expect("node start timed out")
            .expect("node thread died while starting")
            .unwrap_or_else(|e| panic!("node on port {port} failed to start: {e}"));
        let mut con = super::client(addr).await;
        let name: String = crate::q!(con, "CLUSTER", "MYID").expect("CLUSTER MYID");
        ClusterNode {
            addr,
            mesh_port: spec.mesh_port,
            name,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `host:port` of the RESP listener, as redirects print it.
    pub fn hostport(&self) -> String {
        format!("{}:{}", self.addr.ip(), self.addr.port())
    }

    /// A plain (non-cluster) connection to this node.
    pub async fn con(&self) -> redis::aio::MultiplexedConnection {
        super::client(self.addr).await
    }

    /// Waits until the node says `cluster_state:ok`, bounded by `limit`; returns whether it
    /// did: a test that writes to a node of a multi-node region right after starting it waits
    /// for this first, as a Redis Cluster test waits for its cluster to form.
    pub async fn wait_serving(&self, limit: Duration) -> bool {
        let addr = self.addr;
        super::eventually(limit, || async move {
            views(addr).await.is_some_and(|(info, _)| {
                super::info_field(&info, "cluster_state").as_deref() == Some("ok")
            })
        })
        .await
    }

    /// A raw RESP connection to this node.
    pub async fn raw(&self) -> super::Raw {
        super::Raw::connect(self.addr).await
    }

    /// Graceful shutdown (`Running::shutdown`: leaves membership, closes the mesh); waits
    /// (bounded) for the node's thread to finish.
    pub async fn shutdown(mut self) {
        self.stop_and_join().await;
    }

    async fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let joined = tokio::time::timeout(
                Duration::from_secs(15),
                tokio::task::spawn_blocking(move || t.join()),
            )
            .await;
            assert!(joined.is_ok(), "node did not shut down within 15 s");
        }
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        // Dropping `stop` tells the node to shut down; it is not joined here.
        self.stop.take();
    }
}

/// A running region.
pub struct Region {
    pub name: String,
    /// Nodes in `cluster-nodes` order: the primaries first, then the replicas. A node that was
    /// stopped leaves `None` in its place.
    pub nodes: Vec<Option<ClusterNode>>,
    pub specs: Vec<NodeSpec>,
    /// The `cluster-nodes` value every node got.
    pub cluster_nodes: String,
    _serial: tokio::sync::OwnedMutexGuard<()>,
}

impl Region {
    /// Starts `n` nodes with `replicas` replicas per primary and waits until the region has
    /// formed ([`Region::wait_formed`]).
    pub async fn start(n: usize, replicas: usize) -> Region {
        let r = Self::start_unformed(n, replicas).await;
        r.wait_formed().await;
        r
    }

    /// Starts the nodes without waiting for the mesh to form.
    pub async fn start_unformed(n: usize, replicas: usize) -> Region {
        let serial = serial().lock_owned().await;
        let tls_dir = shared_pki();
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!("itest-{}", N.fetch_add(1, Ordering::Relaxed));
        let ports = free_ports(n);
        let cluster_nodes = ports
            .iter()
            .map(|(p, m)| format!("127.0.0.1:{p}@{m}"))
            .collect::<Vec<_>>()
            .join(" ");
        let specs: Vec<NodeSpec> = ports
            .iter()
            .map(|&(resp_port, mesh_port)| NodeSpec {
                resp_port,
                mesh_port,
                region: name.clone(),
                cluster_nodes: cluster_nodes.clone(),
                replicas,
                tls_dir: tls_dir.clone(),
                extra: Vec::new(),
            })
            .collect();
        let mut nodes = Vec::new();
        for s in &specs {
            nodes.push(Some(ClusterNode::start(s).await));
        }
        Region {
            name,
            nodes,
            specs,
            cluster_nodes,
            _serial: serial,
        }
    }

    /// Node `i` (panics if it was stopped).
    pub fn node(&self, i: usize) -> &ClusterNode {
        self.nodes[i].as_ref().expect("node was stopped")
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        self.node(i).addr
    }

    pub fn name_of(&self, i: usize) -> &str {
        &self.node(i).name
    }

    /// The running nodes with their index.
    pub fn running(&self) -> impl Iterator<Item = (usize, &ClusterNode)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (i, n)))
    }

    /// Gracefully stops node `i`.
    pub async fn stop(&mut self, i: usize) {
        let n = self.nodes[i].take().expect("node already stopped");
        n.shutdown().await;
    }

    /// Waits until every running node says `cluster_state:ok`, knows every running node, and
    /// has received every running peer's own record (a non-zero pong-recv in CLUSTER NODES,
    /// not flagged `fail`). Panics with every node's view if that takes longer than
    /// [`FORM_TIMEOUT`].
    pub async fn wait_formed(&self) {
        let names: Vec<String> = self.running().map(|(_, n)| n.name.clone()).collect();
        let addrs: Vec<SocketAddr> = self.running().map(|(_, n)| n.addr).collect();
        let ok = super::eventually(FORM_TIMEOUT, || {
            let names = names.clone();
            let addrs = addrs.clone();
            async move {
                for a in &addrs {
                    let Some((info, nodes)) = views(*a).await else {
                        return false;
                    };
                    if super::info_field(&info, "cluster_state").as_deref() != Some("ok") {
                        return false;
                    }
                    for peer in &names {
                        let Some(line) = nodes.lines().find(|l| l.starts_with(peer.as_str()))
                        else {
                            return false;
                        };
                        let f: Vec<&str> = line.split_whitespace().collect();
                        if f.len() < 8 || f[2].contains("fail") || f[7] != "connected" {
                            return false;
                        }
                        if !f[2].contains("myself") && f[5] == "0" {
                            return false;
                        }
                    }
                }
                true
            }
        })
        .await;
        if !ok {
            panic!(
                "region did not form within {FORM_TIMEOUT:?}:\n{}",
                self.dump().await
            );
        }
    }

    /// Waits until every running node says `cluster_state:ok` (bounded by `limit`).
    pub async fn wait_state_ok(&self, limit: Duration) -> bool {
        let addrs: Vec<SocketAddr> = self.running().map(|(_, n)| n.addr).collect();
        super::eventually(limit, || {
            let addrs = addrs.clone();
            async move {
                for a in &addrs {
                    match views(*a).await {
                        Some((info, _))
                            if super::info_field(&info, "cluster_state").as_deref()
                                == Some("ok") => {}
                        _ => return false,
                    }
                }
                true
            }
        })
        .await
    }

    /// Every running node's CLUSTER INFO and CLUSTER NODES, for failure messages.
    pub async fn dump(&self) -> String {
        let mut s = String::new();
        for (i, n) in self.running() {
            let (info, nodes) = views(n.addr)
                .await
                .unwrap_or_else(|| ("<no answer>".into(), String::new()));
            s.push_str(&format!(
                "--- node {i} {} ({}) ---\n{}\n{}\n",
                n.addr,
                n.name,
                info.lines().take(7).collect::<Vec<_>>().join(" | "),
                nodes
            ));
        }
        s
    }

    /// A cluster client seeded with every running node. It refreshes its slot map on MOVED
    /// and retries quickly (20 ms–500 ms) instead of the crate's 1.3 s minimum wait.
    pub async fn cluster_client(&self) -> redis::cluster_async::ClusterConnection {
        let seeds: Vec<String> = self
            .running()
            .map(|(_, n)| format!("redis://{}", n.addr))
            .collect();
        let client = redis::cluster::ClusterClientBuilder::new(seeds)
            .retries(20)
            .min_retry_wait(20)
            .max_retry_wait(500)
            .connection_timeout(Duration::from_secs(2))
            .response_timeout(Duration::from_secs(5))
            .build()
            .expect("cluster client");
        tokio::time::timeout(Duration::from_secs(10), client.get_async_connection())
            .await
            .expect("cluster connect timed out")
            .expect("cluster connect")
    }

    /// Indices of the nodes that are primaries in the initial layout (the first ones).
    pub fn primaries(&self) -> usize {
        self.specs.len() / (self.specs[0].replicas + 1)
    }
}

/// CLUSTER INFO and CLUSTER NODES of the node at `addr` (`None` if it does not answer).
pub async fn views(addr: SocketAddr) -> Option<(String, String)> {
    let c = redis::Client::open(format!("redis://{addr}")).ok()?;
    let mut con =
        tokio::time::timeout(Duration::from_secs(2), c.get_multiplexed_async_connection())
            .await
            .ok()?
            .ok()?;
    let info: String = tokio::time::timeout(
        Duration::from_secs(2),
        redis::cmd("CLUSTER").arg("INFO").query_async(&mut con),
    )
    .await
    .ok()?
    .ok()?;
    let nodes: String = tokio::time::timeout(
        Duration::from_secs(2),
        redis::cmd("CLUSTER").arg("NODES").query_async(&mut con),
    )
    .await
    .ok()?
    .ok()?;
    Some((info, nodes))
}

/// One line of CLUSTER NODES, split.
#[derive(Debug, Clone)]
pub struct NodeLine {
    pub name: String,
    /// `ip:port@cport`
    pub addr: String,
    pub flags: Vec<String>,
    pub primary: String,
    /// pong-recv: unix ms of the last record received from the node (0 = never).
    pub pong: u64,
    pub epoch: u64,
    pub link: String,
    /// Slot fields (ranges, single slots, open migrations), as printed.
    pub slots: Vec<String>,
}

impl NodeLine {
    pub fn has_flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }
}

/// Parses CLUSTER NODES text.
pub fn parse_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert!(f.len() >= 8, "short CLUSTER NODES line: {l:?}");
            NodeLine {
                name: f[0].to_string(),
                addr: f[1].to_string(),
                flags: f[2].split(',').map(str::to_string).collect(),
                primary: f[3].to_string(),
                pong: f[5]
                    .parse()
                    .unwrap_or_else(|_| panic!("pong-recv in {l:?}")),
                epoch: f[6].parse().unwrap_or_else(|_| panic!("epoch in {l:?}")),
                link: f[7].to_string(),
                slots: f[8..].iter().map(|s| s.to_string()).collect(),
            }
        })
        .collect()
}

/// A node's CLUSTER NODES, parsed.
pub async fn cluster_nodes(con: &mut redis::aio::MultiplexedConnection) -> Vec<NodeLine> {
    let text: String = crate::q!(*con, "CLUSTER", "NODES").expect("CLUSTER NODES");
    parse_nodes(&text)
}

/// CRC16 (XMODEM) hash slot of a key, honouring `{hash tags}` like Redis.
pub fn key_slot(key: &[u8]) -> u16 {
    let k = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    let mut crc: u16 = 0;
    for &b in k {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// The error line of a redirect or other server error, e.g. `MOVED 3300 127.0.0.1:7001`.
pub async fn err_of(con: &mut redis::aio::MultiplexedConnection, args: &[&str]) -> String {
    super::err(con, args).await
}

impl Region {
    /// Stops every running node gracefully (bounded), so the next test starts on idle cores.
    pub async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            if let Some(n) = self.nodes[i].take() {
                n.shutdown().await;
            }
        }
    }
}

//! The cluster runtime of one node: keeps the slot map current and acts on it.
//!
//! Wiring (one task each, all stopped by [`Runtime::shutdown`]):
//! - `cluster-inbound`: mesh traffic by class — datagrams to membership, gossip frames into the
//!   slot map, replication frames to the replicator;
//! - `cluster-control` (`Control`): every [`TICK`] or when the map changed — apply
//!   membership events (liveness) and run the failover rules (both in `failover`), publish this
//!   node's record and derive the replication links from the roles (both in `publish`), and
//!   remove, a bounded batch at a time, the entries of slots this node's shard lost (`purge`).
//!
//! [`start_node`] builds all of it from the node's settings.

mod failover;
mod publish;
mod purge;

use super::membership::{Member, MemberEvent, Membership, MembershipConfig};
use super::topology::{NodeInfo, Role};
use super::Cluster;
use crate::clock::unix_ms;
use crate::mesh::{Inbound, Mesh};
use crate::persist::Persist;
use crate::repl::{self, LinkKind, Replicator};
use crate::store::Keyspace;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// Mesh frame class byte of slot-map gossip.
pub const CLASS_GOSSIP: u8 = 1;
/// How often the control loop runs when nothing wakes it earlier.
const TICK: Duration = Duration::from_millis(100);
/// A node re-sends its record at least this often, changed or not: a node that missed a frame
/// (or joined late) catches up within one period, and the record carries the latest
/// replication offset that failover ranks replicas by.
const GOSSIP_EVERY: Duration = Duration::from_millis(500);

/// What nodes gossip: records only ever replace older versions of themselves (`topology`,
/// invariant 1), so a frame may arrive late, twice or out of order.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum GossipFrame {
    /// A node's own record.
    V1(NodeInfo),
    /// Every record of the sender's region, for the nodes of other regions (so one seed per
    /// region teaches them the whole region).
    Region(Vec<NodeInfo>),
}

impl GossipFrame {
    /// The mesh frame: class byte, then msgpack (`None`, logged, if encoding fails).
    fn encode(&self) -> Option<Bytes> {
        let mut frame = vec![CLASS_GOSSIP];
        match rmp_serde::encode::write(&mut frame, self) {
            Ok(()) => Some(frame.into()),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode gossip");
                None
            }
        }
    }
}

/// Frames for the replicator, over the mesh.
struct MeshFrames(Mesh);

impl repl::Transport for MeshFrames {
    fn send(
        &self,
        to: SocketAddr,
        frame: Bytes,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>> {
        let mesh = self.0.clone();
        Box::pin(async move { mesh.send_frame(to, frame).await.map_err(|e| e.to_string()) })
    }
}

/// Membership datagrams, over the mesh.
struct MeshDatagrams(Mesh);

impl super::membership::Transport for MeshDatagrams {
    fn send(&self, to: SocketAddr, payload: Bytes) {
        let _ = self.0.send_datagram(to, payload);
    }
}

pub struct Runtime {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    mesh: Mesh,
    membership: Membership,
    repl: Arc<Replicator>,
}

impl Runtime {
    /// Starts the runtime of `cluster` on an already bound `mesh`. `keyspace` and `persist`
    /// are the node's: the runtime removes the entries of slots its shard lost (`purge`).
    pub fn start(
        cluster: Arc<Cluster>,
        mesh: Mesh,
        inbound: mpsc::Receiver<Inbound>,
        node_timeout: Duration,
        seeds: Vec<SocketAddr>,
        keyspace: Arc<Keyspace>,
        persist: Option<Arc<Persist>>,
    ) -> Runtime {
        let repl = cluster.repl().clone();
        // Peers reach us at the announced address (it differs from the bound one behind NAT
        // or a relay).
        let me = Member::new(cluster.my_id(), cluster.topology().me().mesh);
        let (dgram_tx, dgram_rx) = mpsc::channel(1024);
        let (membership, events) = Membership::spawn(
            me,
            MembershipConfig::for_timeout(node_timeout),
            Arc::new(MeshDatagrams(mesh.clone())),
            dgram_rx,
            seeds,
        );
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(inbound_loop(
            cluster.clone(),
            repl.clone(),
            inbound,
            dgram_tx,
            stop_rx.clone(),
        ));
        let control = Control {
            cluster,
            repl: repl.clone(),
            mesh: mesh.clone(),
            membership: membership.clone(),
            node_timeout,
            started: Instant::now(),
            failing_since: None,
            catch_up_to: None,
            // Due at once: the first pass publishes this node's record.
            last_gossip: Instant::now() - GOSSIP_EVERY,
            members: HashMap::new(),
            pending_down: HashMap::new(),
            keyspace,
            persist,
            purge: purge::Purge::default(),
        };
        tasks.spawn(control.run(events, stop_rx));
        Runtime {
            stop,
            tasks,
            mesh,
            membership,
            repl,
        }
    }

    /// Stops every task of the cluster layer: control, membership (leaving gracefully),
    /// replication links, then the mesh endpoint.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        self.membership.shutdown().await;
        self.repl.shutdown().await;
        self.mesh.shutdown().await;
    }
}

/// Routes mesh traffic by class.
async fn inbound_loop(
    cluster: Arc<Cluster>,
    repl: Arc<Replicator>,
    mut inbound: mpsc::Receiver<Inbound>,
    datagrams: mpsc::Sender<(SocketAddr, Bytes)>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let msg = tokio::select! {
            m = inbound.recv() => match m { Some(m) => m, None => break },
            _ = stop.changed() => break,
        };
        match msg {
            Inbound::Datagram { from, bytes } => {
                let _ = datagrams.try_send((from, bytes));
            }
            Inbound::Frame { from, bytes } => match bytes.first() {
                Some(&CLASS_GOSSIP) => match rmp_serde::from_slice::<GossipFrame>(&bytes[1..]) {
                    Ok(GossipFrame::V1(info)) => {
                        cluster
                            .messages_received
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let changed = if info.region != cluster.regions.mine() {
                            cluster.regions.upsert(info)
                        } else {
                            info.id != cluster.my_id()
                                && cluster.update(|t| t.upsert(info, unix_ms()))
                        };
                        if changed {
                            cluster.changed.notify_one();
                        }
                    }
                    Ok(GossipFrame::Region(infos)) => {
                        let mut changed = false;
                        for info in infos {
                            changed |= cluster.regions.upsert(info);
                        }
                        if changed {
                            cluster.changed.notify_one();
                        }
                    }
                    Err(e) => tracing::warn!(%from, error = %e, "dropping a bad gossip frame"),
                },
                Some(
                    &repl::wire::CLASS_REPL
                    | &repl::wire::CLASS_REPL_LZ4
                    | &repl::wire::CLASS_REPL_DEFLATE
                    | &repl::wire::CLASS_REPL_SHARED,
                ) => repl.on_frame(&bytes).await,
                other => tracing::warn!(%from, class = ?other, "dropping a frame of unknown class"),
            },
            Inbound::Request { from, .. } => {
                tracing::debug!(%from, "no request handlers: dropping");
            }
        }
    }
    tracing::debug!(task = "cluster-inbound", "stopping");
}

/// What identifies a wanted link: the replicator is told again only when these change.
type LinkKey = (u64, LinkKind, SocketAddr, Vec<(u16, u16)>);

/// The state of the control loop; only its own task touches it.
struct Control {
    cluster: Arc<Cluster>,
    repl: Arc<Replicator>,
    mesh: Mesh,
    membership: Membership,
    node_timeout: Duration,
    /// When the runtime started: nodes that never showed up are judged only after a while.
    started: Instant,
    /// When this replica first saw its primary down.
    failing_since: Option<Instant>,
    /// CLUSTER FAILOVER: the primary's offset this replica catches up to before promoting,
    /// from the first record the primary made after the request.
    catch_up_to: Option<u64>,
    /// When this node's record last went out (see `GOSSIP_EVERY`).
    last_gossip: Instant,
    /// Members known to membership: id → mesh address.
    members: HashMap<u64, SocketAddr>,
    /// Members reported down, and since when. SWIM reports a member that renewed its identity
    /// (after a false suspicion) as down then up again; only a member still down after
    /// `DOWN_CONFIRM` (see `failover`) is marked failed, so such a flap never triggers a
    /// failover.
    pending_down: HashMap<u64, Instant>,
    /// The node's keyspace and persistence, for the purge of lost slots.
    keyspace: Arc<Keyspace>,
    persist: Option<Arc<Persist>>,
    purge: purge::Purge,
}

impl Control {
    /// The loop, until `stop` changes. Each pass re-evaluates everything from the current
    /// state, so waking it early (map changed, member event) only makes it react sooner.
    async fn run(
        mut self,
        mut events: mpsc::Receiver<MemberEvent>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut last_links: Option<Vec<LinkKey>> = None;
        let mut gossiped_version = 0;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = self.cluster.changed.notified() => {}
                Some(ev) = events.recv() => self.on_member(ev),
                _ = stop.changed() => break,
            }
            while let Ok(ev) = events.try_recv() {
                self.on_member(ev);
            }
            for addr in self.cluster.take_meets() {
                self.membership.announce(addr);
            }
            self.confirm_downs();
            self.health_of_silent_nodes();
            self.failover();
            self.follow();
            self.open_when_heard();
            self.purge_stale();
            // Our own record changed (here, or by an admin command): tell everyone now.
            let version = self.cluster.topology().me().version;
            if version != gossiped_version || self.last_gossip.elapsed() >= GOSSIP_EVERY {
                gossiped_version = self.gossip();
            }
            self.repl.publish_watermark();
            let links = self.wanted_links();
            let key: Vec<_> = links
                .iter()
                .map(|l| (l.peer, l.kind, l.addr, l.slots.ranges()))
                .collect();
            if last_links.as_ref() != Some(&key) {
                self.repl.set_links(links);
                last_links = Some(key);
            }
        }
        tracing::debug!(task = "cluster-control", "stopping");
    }
}

/// Why a cluster node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Layout(#[from] super::layout::LayoutError),
    #[error("cluster-enabled needs cluster-tls-dir (create one with `meridian certs`)")]
    NoTls,
    #[error(transparent)]
    Mesh(#[from] crate::mesh::MeshError),
}

/// Builds a node's cluster layer (DESIGN.md §3): its identity and initial slot map from the
/// layout, the mesh endpoint, the replicator as the keyspace's delta sink, and the runtime.
pub async fn start_node(
    s: &crate::config::Settings,
    keyspace: &Arc<Keyspace>,
    persist: Option<Arc<Persist>>,
    resp_port: u16,
) -> Result<(Arc<Cluster>, Runtime), StartError> {
    use super::layout;
    use super::topology::{SlotSet, Topology};
    let c = &s.cluster;
    // 1. Who am I, and what does the configured layout say about every node?
    let (resp, mesh_addr) = layout::my_addrs(s, resp_port)?;
    let id = layout::node_id(&s.region, resp);
    let seats = layout::seats(&s.region, &c.nodes, c.replicas, &c.slots)?;
    // Only this node's own record carries it: the others publish theirs.
    let my_wan = match c.region_announce_addr.as_str() {
        "" => None,
        a => Some(
            layout::resolve(a).ok_or_else(|| layout::LayoutError::BadWanAnnounce(a.to_string()))?,
        ),
    };
    let record = |seat_id, resp, mesh, role, slots, version, wan| NodeInfo {
        id: seat_id,
        version,
        region: s.region.clone(),
        resp,
        mesh,
        role,
        config_epoch: 0,
        slots,
        repl_offset: 0,
        wan,
    };
    let mine = seats.iter().find(|seat| seat.id == id);
    let me = match mine {
        Some(seat) => record(
            id,
            resp,
            mesh_addr,
            seat.role,
            seat.slots.clone(),
            unix_ms(),
            my_wan,
        ),
        None => record(
            id,
            resp,
            mesh_addr,
            Role::Primary,
            SlotSet::default(),
            unix_ms(),
            my_wan,
        ),
    };
    // A node the layout does not list starts alone and empty, as a fresh Redis Cluster node:
    // it knows nobody until `CLUSTER MEET` (what `redis-cli --cluster add-node` checks).
    let others: Vec<&layout::Seat> = match mine {
        Some(_) => seats.iter().filter(|seat| seat.id != id).collect(),
        None => Vec::new(),
    };
    let mut topology = Topology::new(me, unix_ms());
    if !others.is_empty() {
        // Serves once it heard the others (`runtime::failover`, rule 0).
        topology.close();
    }
    for seat in &others {
        // Version 0: any record the node itself publishes replaces this one.
        topology.upsert(
            record(
                seat.id,
                seat.resp,
                seat.mesh,
                seat.role,
                seat.slots.clone(),
                0,
                None,
            ),
            0,
        );
    }
    // 2. The mesh endpoint, with the deployment's mutual TLS.
    if c.tls_dir.is_empty() {
        return Err(StartError::NoTls);
    }
    let tls = crate::mesh::TlsMaterial::load(std::path::Path::new(&c.tls_dir))?;
    let bind_ip = s
        .bind
        .first()
        .and_then(|h| format!("{h}:0").parse::<SocketAddr>().ok())
        .map_or(mesh_addr.ip(), |a| a.ip());
    let bind_port = match c.port {
        0 => layout::default_mesh(resp).port(),
        p => p,
    };
    let (mesh, inbound) = Mesh::bind(crate::mesh::MeshConfig::new(
        SocketAddr::new(bind_ip, bind_port),
        tls,
    ))
    .await?;
    // 3. Replication: the keyspace's deltas go to the links the runtime keeps.
    let repl = Replicator::new(id, Arc::new(MeshFrames(mesh.clone())));
    repl.attach(keyspace.clone());
    let cluster = Arc::new(Cluster::new(topology).with_repl(repl));
    // 3b. The other regions: seeds to introduce ourselves to (the rest comes by gossip).
    let region_seeds = c
        .region_peers
        .iter()
        .map(|p| layout::resolve(p).ok_or_else(|| layout::LayoutError::BadNode(p.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    cluster.regions.set_seeds(region_seeds);
    // 4. The runtime: membership seeded with the other nodes of the layout.
    let seeds: Vec<SocketAddr> = others.iter().map(|seat| seat.mesh).collect();
    let seed_count = seeds.len();
    let runtime = Runtime::start(
        cluster.clone(),
        mesh,
        inbound,
        Duration::from_millis(c.node_timeout_ms),
        seeds,
        keyspace.clone(),
        persist,
    );
    tracing::info!(node = %super::node_name(id), %resp, mesh = %mesh_addr, seeds = seed_count, "cluster node started");
    Ok((cluster, runtime))
}

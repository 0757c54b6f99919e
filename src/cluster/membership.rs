//! Cluster membership and failure detection: who is in the cluster and who is alive.
//!
//! This module owns the node's view of its peers. It runs SWIM through the `foca` crate
//! (probe, indirect probe, suspicion, gossip dissemination) over an abstract, lossy
//! datagram [`Transport`], so the same code runs over the QUIC mesh's datagrams in
//! production and over plain UDP sockets in tests. It hands the rest of the node two
//! things: a snapshot of the live peers ([`Membership::members`], [`Membership::is_alive`])
//! and a stream of deduplicated [`MemberEvent`]s.
//!
//! Identities. A [`Member`] is `(id, addr, incarnation)`. foca keys members by `addr` (the
//! mesh address); when two identities share an address, the one with the larger
//! `(incarnation, id)` wins. `incarnation` is the wall clock (µs since the epoch) at start,
//! bumped on every renewal, so:
//!
//! 1. a node restarted with the same id and address carries a larger incarnation than its
//!    previous life, replaces it everywhere (foca `Rename`) and is reported Up again;
//! 2. a live node wrongly declared down renews itself (foca `Identity::renew`: incarnation
//!    + 1 or the current clock, whichever is larger) and rejoins without operator help.
//!
//! Joining by address only. A seed is known by its address, not its identity, so we
//! announce to a placeholder `Member { id: 0, addr: seed, incarnation: 0 }`. foca accepts an
//! `Announce` whose destination has the receiver's *address* (not only its exact identity),
//! and the placeholder loses every address conflict, so it never enters anyone's member
//! list. Id 0 is therefore reserved.
//!
//! The event loop itself (timers, datagrams, event dedupe) lives in `membership/driver.rs`.

mod driver;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

/// One cluster member as the membership layer sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    /// Node id, unique in the cluster and non-zero (0 marks a seed placeholder).
    pub id: u64,
    /// Mesh address: where membership datagrams for this node are sent.
    pub addr: SocketAddr,
    /// Identity generation: µs since the Unix epoch at start, bumped on every renewal.
    /// Larger wins when two identities claim the same address.
    pub incarnation: u64,
}

impl Member {
    /// A fresh identity for node `id` at `addr`, stamped with the current wall clock.
    pub fn new(id: u64, addr: SocketAddr) -> Self {
        Self {
            id,
            addr,
            incarnation: now_micros(),
        }
    }

    /// The placeholder used to announce to a seed known only by its address.
    pub fn seed(addr: SocketAddr) -> Self {
        Self {
            id: 0,
            addr,
            incarnation: 0,
        }
    }

    /// True for a seed placeholder (id 0): never a real cluster member.
    pub fn is_placeholder(&self) -> bool {
        self.id == 0
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(1)
}

impl foca::Identity for Member {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        // Must win against `self`: strictly larger incarnation, same id and address.
        let incarnation = now_micros().max(self.incarnation.saturating_add(1));
        Some(Self {
            incarnation,
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.incarnation, self.id) > (adversary.incarnation, adversary.id)
    }
}

/// Datagram transport for membership traffic. Fire-and-forget: it may drop, reorder or
/// duplicate; SWIM tolerates all three.
pub trait Transport: Send + Sync + 'static {
    /// Sends one datagram to `to` without waiting.
    fn send(&self, to: SocketAddr, payload: Bytes);
}

/// A membership change reported once per arrival and once per departure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberEvent {
    /// A member joined (or came back with a new incarnation).
    Up(Member),
    /// A member was declared down, left gracefully, or was replaced by a newer incarnation.
    Down(Member),
}

/// Errors from building a membership instance.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MembershipError {
    /// Node id 0 is reserved for seed placeholders.
    #[error("membership: node id 0 is reserved")]
    ReservedId,
    /// A configuration value is out of range.
    #[error("membership: invalid config: {0}")]
    InvalidConfig(&'static str),
}

/// SWIM tuning. Start from [`MembershipConfig::lan_fast`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipConfig {
    /// How often one random member is probed.
    pub probe_period: Duration,
    /// How long to wait for a direct ack before asking others to probe (< `probe_period`).
    pub probe_rtt: Duration,
    /// How long a suspect may refute the suspicion before it is declared down.
    pub suspect_to_down: Duration,
    /// Largest datagram produced and accepted (fits a QUIC datagram).
    pub max_packet: usize,
    /// Members asked to probe indirectly when a direct probe gets no ack.
    pub indirect_probes: usize,
    /// How many times each cluster update piggybacks on outgoing messages.
    pub max_transmissions: u8,
    /// Period of the extra gossip rounds that spread updates fast.
    pub gossip_period: Duration,
    /// Members each extra gossip round goes to.
    pub gossip_fanout: usize,
    /// Period of the announce to one random member that completes the roster.
    pub announce_period: Duration,
    /// Period of the announce to down members (heals partitions, finds restarted nodes).
    pub announce_down_period: Duration,
    /// Period of the announce to the seeds while no member is known.
    pub seed_retry: Duration,
    /// How long a down address is remembered (a restarted node renews, so this can be long).
    pub remove_down_after: Duration,
    /// Events kept for a slow consumer before the oldest is dropped (with a warning).
    pub event_buffer: usize,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self::lan_fast()
    }
}

impl MembershipConfig {
    /// Loopback / LAN defaults for ≤ 20 nodes: a killed node is reported down in about
    /// `probe_period * 2 + suspect_to_down + gossip` ≈ 1.5–2 s in the worst case.
    /// `lan_fast`, scaled so a node silent for about `node_timeout` is reported down.
    pub fn for_timeout(node_timeout: Duration) -> Self {
        let base = Self::lan_fast();
        // lan_fast detects in about 1.5 s: probe period + suspicion dominate.
        let scale = (node_timeout.as_secs_f64() / 1.5).max(0.1);
        Self {
            probe_period: base.probe_period.mul_f64(scale),
            probe_rtt: base.probe_rtt.mul_f64(scale),
            suspect_to_down: base.suspect_to_down.mul_f64(scale),
            ..base
        }
    }

    pub fn lan_fast() -> Self {
        Self {
            probe_period: Duration::from_millis(400),
            probe_rtt: Duration::from_millis(150),
            suspect_to_down: Duration::from_millis(700),
            max_packet: 1200,
            indirect_probes: 3,
            max_transmissions: 8,
            gossip_period: Duration::from_millis(100),
            gossip_fanout: 3,
            announce_period: Duration::from_secs(5),
            announce_down_period: Duration::from_secs(2),
            seed_retry: Duration::from_millis(500),
            remove_down_after: Duration::from_secs(3600),
            event_buffer: 1024,
        }
    }

    /// Checks the ranges foca relies on and builds its config.
    pub fn to_foca(&self) -> Result<foca::Config, MembershipError> {
        let nz = |n: usize, what| NonZeroUsize::new(n).ok_or(MembershipError::InvalidConfig(what));
        if self.probe_rtt.is_zero() || self.probe_rtt >= self.probe_period {
            return Err(MembershipError::InvalidConfig(
                "need 0 < probe_rtt < probe_period",
            ));
        }
        let periods = [
            self.suspect_to_down,
            self.gossip_period,
            self.announce_period,
            self.announce_down_period,
            self.seed_retry,
            self.remove_down_after,
        ];
        if periods.iter().any(Duration::is_zero) {
            return Err(MembershipError::InvalidConfig("durations must be non-zero"));
        }
        if self.max_packet < 256 || self.event_buffer == 0 {
            return Err(MembershipError::InvalidConfig(
                "max_packet >= 256, event_buffer >= 1",
            ));
        }
        let periodic = |frequency, num_members| foca::PeriodicParams {
            frequency,
            num_members,
        };
        let one = NonZeroUsize::MIN;
        Ok(foca::Config {
            probe_period: self.probe_period,
            probe_rtt: self.probe_rtt,
            num_indirect_probes: nz(self.indirect_probes, "indirect_probes >= 1")?,
            max_transmissions: NonZeroU8::new(self.max_transmissions)
                .ok_or(MembershipError::InvalidConfig("max_transmissions >= 1"))?,
            suspect_to_down_after: self.suspect_to_down,
            remove_down_after: Some(self.remove_down_after),
            max_packet_size: nz(self.max_packet, "max_packet")?,
            notify_down_members: true,
            periodic_announce: Some(periodic(self.announce_period, one)),
            periodic_announce_to_down_members: Some(periodic(
                self.announce_down_period,
                NonZeroUsize::new(2).unwrap_or(one),
            )),
            periodic_gossip: Some(periodic(
                self.gossip_period,
                nz(self.gossip_fanout, "gossip_fanout >= 1")?,
            )),
        })
    }
}

/// State the loop publishes for readers: our identity and the live peers.
struct View {
    me: RwLock<Member>,
    alive: RwLock<HashMap<u64, Member>>,
    /// Addresses to announce to at the next seed tick (CLUSTER MEET).
    meet: Mutex<Vec<SocketAddr>>,
}

struct Handle {
    stop: watch::Sender<bool>,
    done: watch::Receiver<()>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// Handle on a running membership loop. Cheap to clone; the loop leaves the cluster and
/// stops when [`Membership::shutdown`] is called or the last handle is dropped.
#[derive(Clone)]
pub struct Membership {
    view: Arc<View>,
    handle: Arc<Handle>,
}

impl Membership {
    /// Starts the foca loop as a tokio task (in a `membership` tracing span).
    /// `inbound` carries datagrams addressed to membership.
    ///
    /// # Panics
    /// When `me.id` is 0 or `cfg` is invalid; see [`Membership::try_spawn`].
    pub fn spawn(
        me: Member,
        cfg: MembershipConfig,
        transport: Arc<dyn Transport>,
        inbound: mpsc::Receiver<(SocketAddr, Bytes)>,
        seeds: Vec<SocketAddr>,
    ) -> (Membership, mpsc::Receiver<MemberEvent>) {
        match Self::try_spawn(me, cfg, transport, inbound, seeds) {
            Ok(started) => started,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`Membership::spawn`] that reports a reserved id or a bad config instead of panicking.
    pub fn try_spawn(
        me: Member,
        cfg: MembershipConfig,
        transport: Arc<dyn Transport>,
        inbound: mpsc::Receiver<(SocketAddr, Bytes)>,
        seeds: Vec<SocketAddr>,
    ) -> Result<(Membership, mpsc::Receiver<MemberEvent>), MembershipError> {
        if me.is_placeholder() {
            return Err(MembershipError::ReservedId);
        }
        let foca_cfg = cfg.to_foca()?;
        let (events_tx, events_rx) = mpsc::channel(cfg.event_buffer.min(256));
        let (stop_tx, stop_rx) = watch::channel(false);
        let (done_tx, done_rx) = watch::channel(());
        let view = Arc::new(View {
            me: RwLock::new(me.clone()),
            alive: RwLock::default(),
            meet: Mutex::default(),
        });
        let span = tracing::info_span!("membership", node = me.id, addr = %me.addr);
        let driver = driver::Driver::new(driver::Parts {
            me,
            cfg,
            foca_cfg,
            transport,
            inbound,
            seeds,
            stop: stop_rx,
            events: events_tx,
            view: view.clone(),
        });
        let task = tokio::spawn(
            async move {
                driver.run().await;
                drop(done_tx);
            }
            .instrument(span),
        );
        let handle = Handle {
            stop: stop_tx,
            done: done_rx,
            task: Mutex::new(Some(task)),
        };
        Ok((
            Membership {
                view,
                handle: Arc::new(handle),
            },
            events_rx,
        ))
    }

    /// Our current identity (its incarnation changes when foca renews it).
    pub fn me(&self) -> Member {
        self.view.me.read().clone()
    }

    /// Members currently alive (alive or suspect), excluding ourselves, ordered by id.
    pub fn members(&self) -> Vec<Member> {
        let mut out: Vec<Member> = self.view.alive.read().values().cloned().collect();
        out.sort_by_key(|m| m.id);
        out
    }

    /// True when node `id` is currently alive (alive or suspect).
    pub fn is_alive(&self, id: u64) -> bool {
        self.view.alive.read().contains_key(&id)
    }

    /// Joins whatever cluster the node at `addr` belongs to (announced at the next seed tick).
    pub fn announce(&self, addr: SocketAddr) {
        self.view.meet.lock().push(addr);
    }

    /// True until the loop has stopped.
    pub fn is_running(&self) -> bool {
        self.handle.done.has_changed().is_ok()
    }

    /// Leaves the cluster gracefully (foca `leave_cluster`), stops the loop and waits for it.
    pub async fn shutdown(&self) {
        self.handle.stop.send_replace(true);
        self.wait_stopped().await;
    }

    /// Stops the loop at once without telling anyone: peers find out by failure detection.
    /// For crash simulation and for a transport that died under us.
    pub async fn abort(&self) {
        if let Some(task) = self.handle.task.lock().take() {
            task.abort();
        }
        self.wait_stopped().await;
    }

    async fn wait_stopped(&self) {
        let mut done = self.handle.done.clone();
        // The loop never sends on `done`; it drops the sender when it ends.
        while done.changed().await.is_ok() {}
    }
}

//! Replication: every change of the keyspace travels to the peers that hold its slot, and what
//! peers send is merged back. A generic engine: it knows slots, keys and CRDT entries, not
//! commands, roles or the slot map (the cluster runtime tells it which links to keep).
//!
//! Protocol of one link from S to R:
//! 1. A change published by S's keyspace marks the key dirty in the outbox of every link whose
//!    slots include the key's slot, except the link to the change's origin (no echo).
//! 2. S's link task sends batches of the keys' deltas (see [`link`] for coalescing, the window
//!    and re-sends, [`changes`] for the deltas), tagged with a session and the offset they
//!    complete.
//! 3. R merges each entry with origin S and acknowledges the batch ([`inbound`]).
//! 4. Changes that came from another region are not passed on to a third one: every region's
//!    owner sends its own changes to every other region directly (a full mesh), so forwarding
//!    would only double the WAN bytes. They do go to our replicas.
//! 5. A new link starts a session with a repair of its slots: per-slot digests are compared and
//!    the slots that differ are sent in full ([`repair`]). R answers a batch of a session it
//!    never saw begin with `need_resync` (R restarted and lost what the session had sent), and
//!    S starts a new session. Both ends of a primary/replica pair run a link, so a node that was
//!    away gets what it missed and gives back what only it had: a CRDT merge, nothing discarded.
//! 6. Region links that carry the same slots form a fan-out group ([`link::Fanout`]): one
//!    queue and one encoded, compressed batch for all of them, framed per link.
//! 7. While both nodes are quiet, S checks R's digests every `repl-antientropy`; two checks in
//!    a row that differ start a new session, so step 5 ([`repair`]).

#[cfg(test)]
mod antientropy_tests;
pub mod changes;
#[cfg(test)]
mod fanout_tests;
mod inbound;
pub mod link;
pub mod pacing;
mod parked;
pub mod repair;
pub mod scope;
#[cfg(test)]
mod test_wire;
pub mod wire;

use changes::Change;
pub use link::{Fanout, Link, LinkKind};

use crate::cluster::SlotSet;
use crate::store::{Delta, DeltaSink, Keyspace, Origin};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use wire::ReplMsg;

/// How frames reach a peer (the mesh, in a running node).
pub trait Transport: Send + Sync + 'static {
    fn send(
        &self,
        to: SocketAddr,
        frame: bytes::Bytes,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
}

/// A link the cluster runtime wants: peer, kind, address, slots.
#[derive(Debug, Clone)]
pub struct LinkSpec {
    pub peer: u64,
    pub kind: LinkKind,
    /// The peer's region for [`LinkKind::Region`] links (empty for links inside the region).
    pub group: String,
    pub addr: SocketAddr,
    pub slots: SlotSet,
}

/// Per-link figures for INFO and CLUSTER LINKS.
#[derive(Debug, Clone)]
pub struct LinkStatus {
    pub peer: u64,
    pub kind: LinkKind,
    pub group: String,
    pub connected: bool,
    /// Age of the oldest change the peer has not acknowledged.
    pub lag_ms: u64,
    pub acked: u64,
    pub pending_keys: usize,
    pub batches_sent: u64,
    /// Of those, batches built once for the link's fan-out group ([`Fanout`]).
    pub batches_shared: u64,
    pub bytes_sent: u64,
    pub age_ms: u64,
    /// What repair by digests did on this link (`repl::repair`).
    pub repair: repair::RepairCounts,
}

/// What one peer sent us.
#[derive(Debug, Clone, Copy)]
pub struct Inbound {
    /// Last batch or ack.
    pub last: std::time::Instant,
    pub batches: u64,
    pub bytes: u64,
    /// Entries from this peer whose stamps raised a skew alarm, and when the latest did: how
    /// the dashboard and metrics tell *which* peer's clock is ahead.
    pub skew_alarms: u64,
    pub last_skew: Option<std::time::Instant>,
}

pub struct Replicator {
    me: u64,
    /// Replication offset: changes published by this keyspace so far. Advanced under
    /// `publishing`, together with the outboxes, so a batch that claims to complete offset N
    /// really holds every change up to N.
    offset: AtomicU64,
    publishing: Mutex<()>,
    links: RwLock<HashMap<u64, Arc<Link>>>,
    /// Fan-out groups of region links with the same slots, made by `set_links` under the
    /// links' write lock (lock order: links, then groups).
    groups: RwLock<Vec<Arc<Fanout>>>,
    keyspace: OnceLock<Arc<Keyspace>>,
    transport: Arc<dyn Transport>,
    /// Per sender: the session we saw begin, and the offset we applied up to.
    inbound: Mutex<HashMap<u64, (u64, u64)>>,
    /// Per sender: the delivery promise of the newest batch of its current session,
    /// as (session, batch, promise). See [`Replicator::watermark`].
    promises: Mutex<HashMap<u64, (u64, u64, u64)>>,
    /// What each peer sent us.
    heard: Mutex<HashMap<u64, Inbound>>,
    tasks: Mutex<tokio::task::JoinSet<()>>,
    /// Links no longer wanted whose tasks may still be draining (`Link::retire`): shutdown
    /// stops them too.
    retired: Mutex<Vec<std::sync::Weak<Link>>>,
    /// Acks being sent (see `on_frame`); aborted at shutdown: a lost ack only makes the peer
    /// send the batch again.
    acks: Mutex<tokio::task::JoinSet<()>>,
    /// Replies to peers we have no link to yet, sent when the link is made (`repl::parked`).
    parked: parked::Parked,
    /// Period of anti-entropy checks in ms, 0 = none; shared with every link (`repl::repair`).
    antientropy_ms: Arc<AtomicU64>,
    pub batches_received: AtomicU64,
    pub entries_received: AtomicU64,
    /// The hot set and `repl-scope` rules every region link consults (`repl::scope`).
    scope: Arc<arc_swap::ArcSwapOption<scope::ScopeState>>,
    /// Invalidations received recently, keeping older full state of their keys out.
    guard: scope::Guard,
    /// Invalidations received, and those that dropped a local copy.
    pub invalidations_received: AtomicU64,
    pub invalidations_applied: AtomicU64,
}

impl Replicator {
    pub fn new(me: u64, transport: Arc<dyn Transport>) -> Arc<Self> {
        Arc::new(Replicator {
            me,
            offset: AtomicU64::new(0),
            publishing: Mutex::new(()),
            links: RwLock::new(HashMap::new()),
            groups: RwLock::new(Vec::new()),
            keyspace: OnceLock::new(),
            transport,
            inbound: Mutex::new(HashMap::new()),
            promises: Mutex::new(HashMap::new()),
            heard: Mutex::new(HashMap::new()),
            tasks: Mutex::new(tokio::task::JoinSet::new()),
            retired: Mutex::new(Vec::new()),
            acks: Mutex::new(tokio::task::JoinSet::new()),
            parked: parked::Parked::default(),
            antientropy_ms: Default::default(),
            batches_received: AtomicU64::new(0),
            entries_received: AtomicU64::new(0),
            scope: Default::default(),
            guard: Default::default(),
            invalidations_received: AtomicU64::new(0),
            invalidations_applied: AtomicU64::new(0),
        })
    }

    /// Connects the replicator to the keyspace it replicates (and installs it as the sink).
    pub fn attach(self: &Arc<Self>, ks: Arc<Keyspace>) {
        ks.add_sink(self.clone());
        let _ = self.keyspace.set(ks);
    }

    fn ks(&self) -> &Arc<Keyspace> {
        self.keyspace
            .get()
            .expect("replicator attached to a keyspace")
    }

    pub fn offset(&self) -> u64 {
        self.offset.load(Relaxed)
    }

    /// The offset applied from `peer` (a replica's progress on its primary's stream).
    pub fn applied_from(&self, peer: u64) -> u64 {
        self.inbound.lock().get(&peer).map_or(0, |s| s.1)
    }

    /// Whether `peer` sent anything on its link within `d`: evidence, independent of the
    /// failure detector, that it is alive (idle links send keep-alive batches).
    pub fn heard_within(&self, peer: u64, d: Duration) -> bool {
        self.heard
            .lock()
            .get(&peer)
            .is_some_and(|t| t.last.elapsed() < d)
    }

    /// What `peer` sent us so far.
    pub fn inbound_from(&self, peer: u64) -> Option<Inbound> {
        self.heard.lock().get(&peer).copied()
    }

    /// The stamp time (NTP64) up to which replication is complete in both directions, or
    /// [`Keyspace::STANDALONE`] without links: every peer holds every change of ours at or
    /// below it (acks), and every peer's changes at or below it have reached us (their
    /// delivery promises). Tombstones wait for it: a tombstone collected earlier could be
    /// missed by a peer, or a concurrent older write still on its way could find the key gone
    /// and bring it back. (Eviction waits only for the acks: see `publish_watermark`.)
    pub fn watermark(&self) -> u64 {
        let links = self.links.read();
        let promises = self.promises.lock();
        links
            .values()
            .map(|l| {
                let inbound = promises.get(&l.peer).map_or(0, |p| p.2);
                l.watermark.load(Relaxed).min(inbound)
            })
            .min()
            .unwrap_or(Keyspace::STANDALONE)
    }

    /// Records `from`'s delivery promise carried by `batch` (only the newest batch of the
    /// session counts: batches travel on separate streams and may arrive out of order), then
    /// tells every link how far its upstream links have promised.
    fn note_promise(&self, from: u64, session: u64, batch: u64, promise: u64) {
        {
            let mut promises = self.promises.lock();
            let p = promises.entry(from).or_insert((session, 0, 0));
            if p.0 != session {
                *p = (session, 0, 0);
            }
            if batch > p.1 {
                p.1 = batch;
                p.2 = promise;
            }
        }
        self.refresh_upstream();
    }

    /// Sets each link's `upstream`: the smallest promise among the links whose changes are
    /// forwarded to it (see `publish`: every other link, and for a region link only the
    /// same-region links, since regions do not relay for each other).
    fn refresh_upstream(&self) {
        let links = self.links.read();
        let promises = self.promises.lock();
        let promise_of = |peer: u64| promises.get(&peer).map_or(0, |p| p.2);
        for to in links.values() {
            let upstream = links
                .values()
                .filter(|l| l.peer != to.peer)
                .filter(|l| to.kind != LinkKind::Region || l.kind != LinkKind::Region)
                .map(|l| promise_of(l.peer))
                .min()
                .unwrap_or(u64::MAX);
            to.upstream.store(upstream, Relaxed);
        }
    }

    /// Hands the current watermark to the keyspace (the cluster runtime calls it each tick).
    pub fn publish_watermark(&self) {
        self.refresh_upstream();
        let acked = self
            .links
            .read()
            .values()
            .map(|l| l.watermark.load(Relaxed))
            .min()
            .unwrap_or(Keyspace::STANDALONE);
        self.ks().set_watermarks(self.watermark(), acked);
    }

    /// Makes the set of links equal to `want`: new links start a session with a repair round,
    /// links no longer wanted drain their queue and stop (`Link::retire`), kept links take the
    /// new address and slots.
    pub fn set_links(self: &Arc<Self>, want: Vec<LinkSpec>) {
        let mut links = self.links.write();
        links.retain(|peer, l| {
            let keep = want.iter().any(|w| w.peer == *peer && w.kind == l.kind);
            if !keep {
                l.retire();
                let mut retired = self.retired.lock();
                retired.retain(|w| w.strong_count() > 0);
                retired.push(Arc::downgrade(l));
            }
            keep
        });
        for w in want {
            if let Some(l) = links.get(&w.peer) {
                *l.addr.lock() = w.addr;
                l.set_slots(w.slots);
                continue;
            }
            let link = Arc::new(
                Link::new(w.peer, w.kind, w.group, w.addr, w.slots, self.offset())
                    .with_scope(self.scope.clone())
                    .with_antientropy(self.antientropy_ms.clone()),
            );
            links.insert(w.peer, link.clone());
            let ks = self.ks().clone();
            let transport = self.transport.clone();
            let me = self.me;
            let parked = self.parked.take(w.peer);
            self.tasks.lock().spawn(async move {
                tracing::debug!(task = "repl-link", peer = %format_args!("{:x}", link.peer), parked = parked.len(), "starting");
                let addr = *link.addr.lock();
                for frame in parked {
                    if let Err(e) = transport.send(addr, frame).await {
                        tracing::debug!(error = %e, "cannot send a parked replication reply");
                    }
                }
                link::run(link, ks, transport, me).await
            });
        }
        self.regroup(&links);
    }

    /// Makes the fan-out groups anew (see [`Fanout`]): region links whose slots are the same
    /// share one. The old groups hand their queues to their members first.
    fn regroup(&self, links: &HashMap<u64, Arc<Link>>) {
        let mut groups = self.groups.write();
        for g in groups.drain(..) {
            g.dissolve();
        }
        let mut region: Vec<&Arc<Link>> = links
            .values()
            .filter(|l| l.kind == LinkKind::Region)
            .collect();
        region.sort_by_key(|l| l.peer);
        let mut by_slots: Vec<(SlotSet, Vec<Arc<Link>>)> = Vec::new();
        for l in region {
            let slots = l.slots.lock().clone();
            match by_slots.iter_mut().find(|(s, _)| *s == slots) {
                Some((_, members)) => members.push(l.clone()),
                None => by_slots.push((slots, vec![l.clone()])),
            }
        }
        for (slots, members) in by_slots {
            if members.len() > 1 && !slots.is_empty() {
                groups.push(Fanout::new(members, slots));
            }
        }
    }

    /// Retired links to `peer` whose tasks are still draining.
    fn retired_to(&self, peer: u64) -> Vec<Arc<Link>> {
        let retired = self.retired.lock();
        retired
            .iter()
            .filter_map(|w| w.upgrade())
            .filter(|l| l.peer == peer)
            .collect()
    }

    /// Sets the period of anti-entropy checks (`repl-antientropy`; zero: none), for every link.
    pub fn set_antientropy(&self, period: Duration) {
        let ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX);
        self.antientropy_ms.store(ms, Relaxed);
    }

    /// Waits until `n` replicas acknowledged everything published so far, or `timeout`
    /// (0 = forever); returns how many did (Redis `WAIT`).
    pub async fn wait_replicas(&self, n: usize, timeout: Duration) -> usize {
        self.wait_for(n, timeout, |r, target| r.replicas_at(target))
            .await
    }

    /// Waits until `n` other regions acknowledged everything published so far, or `timeout`
    /// (0 = forever); returns how many did (`MERIDIAN.WAITREGIONS`). A region counts when every
    /// link to it (one per owner of some of our slots there) has acknowledged the offset.
    pub async fn wait_regions(&self, n: usize, timeout: Duration) -> usize {
        self.wait_for(n, timeout, |r, target| r.regions_at(target))
            .await
    }

    async fn wait_for(
        &self,
        n: usize,
        timeout: Duration,
        count: impl Fn(&Self, u64) -> usize,
    ) -> usize {
        let target = self.offset();
        let deadline = (!timeout.is_zero()).then(|| tokio::time::Instant::now() + timeout);
        loop {
            let done = count(self, target);
            if done >= n || deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                return done;
            }
            for l in self.links.read().values() {
                l.wake.notify_one();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn replicas_at(&self, target: u64) -> usize {
        self.links
            .read()
            .values()
            .filter(|l| l.kind == LinkKind::Replica && l.acked.load(Relaxed) >= target)
            .count()
    }

    fn regions_at(&self, target: u64) -> usize {
        let mut regions: HashMap<&str, bool> = HashMap::new();
        let links = self.links.read();
        for l in links.values().filter(|l| l.kind == LinkKind::Region) {
            *regions.entry(&l.group).or_insert(true) &= l.acked.load(Relaxed) >= target;
        }
        regions.values().filter(|&&ok| ok).count()
    }

    /// Other regions that acknowledged everything published so far.
    pub fn regions_acked(&self) -> usize {
        self.regions_at(self.offset())
    }

    /// Replicas that acknowledged everything published so far (WAIT inside EXEC).
    pub fn acked_replicas(&self) -> usize {
        self.replicas_at(self.offset())
    }

    pub fn status(&self) -> Vec<LinkStatus> {
        let mut v: Vec<LinkStatus> = self
            .links
            .read()
            .values()
            .map(|l| LinkStatus {
                peer: l.peer,
                kind: l.kind,
                group: l.group.clone(),
                connected: l.connected.load(Relaxed),
                lag_ms: l.lag().as_millis() as u64,
                acked: l.acked.load(Relaxed),
                pending_keys: l.pending(),
                batches_sent: l.batches_sent.load(Relaxed),
                batches_shared: l.batches_shared.load(Relaxed),
                bytes_sent: l.bytes_sent.load(Relaxed),
                age_ms: l.created.elapsed().as_millis() as u64,
                repair: l.repair_counts(),
            })
            .collect();
        v.sort_by_key(|s| s.peer);
        v
    }

    /// Stops every link task and waits for them.
    pub async fn shutdown(&self) {
        for g in self.groups.write().drain(..) {
            g.dissolve();
        }
        for l in self.links.write().drain() {
            l.1.stop.notify_one();
        }
        for l in self.retired.lock().drain(..).filter_map(|w| w.upgrade()) {
            l.stop.notify_one();
        }
        self.acks.lock().abort_all();
        let mut tasks = std::mem::take(&mut *self.tasks.lock());
        while tasks.join_next().await.is_some() {}
    }
}

impl DeltaSink for Replicator {
    /// A pipelined read's writes reach the outboxes in one call (`store::held`).
    fn batched(&self) -> bool {
        true
    }

    /// Step 1: record each changed key in the outbox of every link that carries its slot.
    fn publish(&self, deltas: Vec<Delta>, origin: Origin) {
        let links = self.links.read();
        let _in_order = self.publishing.lock();
        let offset = self.offset.fetch_add(deltas.len() as u64, Relaxed) + deltas.len() as u64;
        let from_region = match origin {
            Origin::Peer(p) => links.get(&p).is_some_and(|l| l.kind == LinkKind::Region),
            _ => false,
        };
        if links.is_empty() {
            return;
        }
        let from_peer = |link: &Link| {
            origin == Origin::Peer(link.peer) || (from_region && link.kind == LinkKind::Region)
        };
        if links.values().all(|l| from_peer(l)) {
            // Nothing to carry (a region without replicas merging a peer's batch): the links
            // only learn the offset their next batch claims.
            for link in links.values() {
                link.claim(offset);
            }
            return;
        }
        let clocks = (std::time::Instant::now(), link::covered_now());
        // Hot keys take region links' priority lane; asked once per change, for all links.
        let scope = links
            .values()
            .any(|l| l.kind == LinkKind::Region)
            .then(|| self.scope.load_full())
            .flatten();
        let urgent = scope.as_ref().map(|s| s.urgent());
        // One shared allocation per change for all links (`repl::changes`).
        let changes: Vec<(u16, u64, Change, bool)> = deltas
            .into_iter()
            .map(|d| {
                let newest = d.entry.max_stamp().time;
                let hot = urgent.as_ref().is_some_and(|u| u.contains(&d.key));
                let change = Change::new(&d.key, Some(d.entry));
                (d.slot, newest, change, hot)
            })
            .collect();
        // A group stands for its members (region links, all refusing the same origins).
        let groups = self.groups.read();
        let grouped = |l: &Arc<Link>| {
            groups
                .iter()
                .any(|g| g.members.iter().any(|m| Arc::ptr_eq(m, l)))
        };
        let targets: Vec<Target> = groups
            .iter()
            .map(|g| Target::Group(g))
            .chain(links.values().filter(|l| !grouped(l)).map(Target::Link))
            .collect();
        let mut changes = Some(changes);
        for (i, target) in targets.iter().enumerate() {
            let link_slots;
            let (from_peer, slots): (bool, &SlotSet) = match target {
                Target::Group(g) => (from_region, &g.slots),
                Target::Link(l) => {
                    link_slots = l.slots.lock();
                    (from_peer(l), &link_slots)
                }
            };
            let carries = |c: &&(u16, u64, Change, bool)| !from_peer && slots.contains(c.0);
            let all = changes.as_ref().expect("taken by the last target only");
            // Commands stamp afresh; forwarded merges and imports may carry old stamps.
            let oldest = all
                .iter()
                .filter(carries)
                .map(|c| c.1)
                .min()
                .unwrap_or(u64::MAX);
            // Every target takes a count of each change it carries; the last takes ours.
            if i + 1 == targets.len() {
                let mut all = changes.take().expect("taken once");
                // Filtered in place (usually nothing to drop), so the changes then move
                // straight from the vector: through a filter adaptor each one was copied out
                // and read back in a way the CPU could not forward (a tenth of a publish).
                all.retain(|c| carries(&c));
                target.record(all.into_iter().map(|c| (c.2, c.3)), offset, oldest, clocks);
            } else {
                let carried = all.iter().filter(carries).map(|c| (c.2.clone(), c.3));
                target.record(carried, offset, oldest, clocks);
            }
        }
    }
}

/// Where `publish` records changes: a fan-out group for all its members, or one link.
enum Target<'a> {
    Group(&'a Fanout),
    Link(&'a Arc<Link>),
}

impl Target<'_> {
    fn record(
        &self,
        carried: impl Iterator<Item = (Change, bool)>,
        offset: u64,
        oldest: u64,
        clocks: (std::time::Instant, u64),
    ) {
        match self {
            Target::Group(g) => g.record(carried, offset, oldest, clocks),
            Target::Link(l) => {
                if l.record(carried, offset, oldest, clocks) {
                    l.wake.notify_one();
                }
            }
        }
    }
}

//! One replication link: the outbox of keys a peer has not acknowledged yet, and the task that
//! ships them.
//!
//! Invariants:
//! - The outbox holds each changed key once, however often it changed (coalescing): memory is
//!   bounded by the keyspace, not by the write rate. A batch carries each key's *current* full
//!   entry, which is the join of all its deltas, so skipping intermediate versions loses nothing.
//! - A key leaves the outbox when it is put in a batch, and comes back if that batch is not
//!   acknowledged within the link's adaptive ack timeout (`repl::pacing`; at-least-once,
//!   merges are idempotent).
//! - At most [`WINDOW`] batches are unacknowledged: a slow peer slows its link, never memory.
//! - `acked` only grows; WAIT reads it.

mod batch;
mod fanout;

use super::changes::{Change, Changes};
use super::scope::{ScopeState, Ship, COLD_DELAY};
use super::wire::{self, Invalidation, ReplMsg};
use super::Transport;
use crate::cluster::SlotSet;
use crate::store::{Keyspace, SLOTS};
pub(super) use batch::covered_now;
use batch::Body;
pub use fanout::Fanout;
use fanout::Shared;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Unacknowledged batches allowed in flight per link.
const WINDOW: usize = 16;
/// Keys per batch, and a soft byte budget per batch.
const BATCH_KEYS: usize = 1024;
const BATCH_BYTES: usize = 1 << 20;
/// Idle links still tell the peer how far they are (so WAIT and lag see progress).
const HEARTBEAT: Duration = Duration::from_millis(100);
/// An idle link sends an empty batch this often: the peer's evidence, on a channel
/// independent of membership's probes, that we are alive.
const KEEPALIVE: Duration = Duration::from_millis(300);

/// How long a link no longer wanted keeps sending what it had queued (see [`Link::retire`]).
const RETIRE_DRAIN: Duration = Duration::from_secs(2);

/// What kind of peer a link leads to (WAIT counts replicas only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// Our replica: we are its primary.
    Replica,
    /// Our primary: we are its replica (the link carries back what only we hold).
    Primary,
    /// The owner of some of our slots in another region (active-active peer).
    Region,
}

/// Wall-clock margin between reading the clock and the newest stamp a batch is known to
/// cover: a change is stamped a little before it is published to the outboxes.
const WATERMARK_MARGIN_MS: u64 = 1000;

pub struct Outbox {
    /// Changed keys not yet in a batch, each once, with their deltas (`repl::changes`).
    changes: Changes,
    /// Next slot of a full sync in progress, and the slots it still has to send.
    pub(super) resync: Option<usize>,
    pub(super) resync_slots: SlotSet,
    /// Offset of the last publish that has been recorded here.
    seen: u64,
    pub(super) session: u64,
    fresh: bool,
    next_batch: u64,
    inflight: VecDeque<InFlight>,
    /// (offset, when published) of changes not yet acknowledged, oldest first, at most one
    /// mark per millisecond: the link's lag is the age of the oldest.
    marks: VecDeque<(u64, Instant)>,
    /// Changes recorded with stamps at or below what the link may already have promised (a
    /// forwarded merge, a migration import): (the offset that must be acknowledged, the oldest
    /// such stamp). Until that offset is acknowledged the promise stays below the stamp.
    hold: Option<(u64, u64)>,
    /// Batches built for the link's fan-out group, to be sent in order (`fanout`).
    ready: VecDeque<Arc<Shared>>,
    /// Digest comparison of the slots a session (re)starts with (see `repl::repair`).
    pub(super) repair: super::repair::Repair,
    /// Ack timing: the adaptive timeout after which a batch counts as lost.
    rtt: super::pacing::Rtt,
    /// A hot key's change is queued (at the front): send without the cold delay.
    urgent: bool,
    /// Bumped whenever the watermark is reset (a new session, gained slots): a batch built
    /// across a reset promises nothing.
    resets: u64,
}

struct InFlight {
    batch: u64,
    sent: Instant,
    /// The offset this batch completes (0 = none); counts only once every earlier batch of
    /// the session is acknowledged too, since batches travel on separate streams and can
    /// arrive out of order.
    upto: u64,
    acked: bool,
    keys: Carried,
    /// Slots this batch synced in full (sent again if it is never acknowledged).
    synced: Vec<u16>,
    /// Stamp time (NTP64) below which every change is in this batch or an earlier one
    /// (meaningful when `upto` > 0).
    covers: u64,
}

/// The changes a batch in flight carries: its own, with the deltas they were queued with (a lost
/// batch re-queues those, rather than keys to be read again: the key may be evicted by then,
/// and eviction is local), or the packed entries of a batch built for its fan-out group (freed
/// with the last member's ack).
enum Carried {
    Own(Vec<Change>),
    Shared(Arc<Shared>),
}

impl Carried {
    fn len(&self) -> usize {
        match self {
            Carried::Own(keys) => keys.len(),
            Carried::Shared(s) => s.len(),
        }
    }

    /// Queues the changes again (the batch was lost).
    fn requeue(self, changes: &mut Changes) {
        match self {
            Carried::Own(keys) => changes.requeue(keys),
            Carried::Shared(s) => s.requeue(changes),
        }
    }
}

pub struct Link {
    pub peer: u64,
    pub kind: LinkKind,
    /// The peer's group (its region for [`LinkKind::Region`] links; empty otherwise).
    pub group: String,
    pub addr: Mutex<SocketAddr>,
    /// Slots whose changes this link carries.
    pub slots: Mutex<SlotSet>,
    pub outbox: Mutex<Outbox>,
    pub wake: Notify,
    pub acked: AtomicU64,
    pub batches_sent: AtomicU64,
    /// Of those, batches built once for the link's fan-out group (`fanout`).
    pub batches_shared: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub connected: AtomicBool,
    /// Stamp time (NTP64) the peer is known to hold every change of ours below (from acks of
    /// batches; see `Link::promise` for the value that also honours `hold`).
    pub watermark: AtomicU64,
    /// The smallest delivery promise received from the links whose changes we forward to this
    /// one (u64::MAX: none): deltas still on their way to us may be forwarded here later, with
    /// their old stamps, so this link cannot promise beyond them. Kept by the replicator.
    pub upstream: AtomicU64,
    pub created: Instant,
    last_batch: Mutex<Instant>,
    pub stop: Notify,
    /// Set when the link is no longer wanted: the deadline by which its task ends, sooner
    /// once its peer acknowledged everything (`Link::retire`).
    retire_by: Mutex<Option<Instant>>,
    /// The region links it shares a queue and batches with (`fanout`); set and cleared by the
    /// group.
    fanout: Mutex<Option<Arc<Fanout>>>,
    /// The node's hot set and `repl-scope` rules (region links only; see `repl::scope`).
    pub scope: Arc<arc_swap::ArcSwapOption<ScopeState>>,
    /// Keys this link reported as invalidations instead of full state.
    pub invalidations_sent: AtomicU64,
    /// The period of anti-entropy checks in ms, 0 = none (`repl-antientropy`; shared by every
    /// link of the replicator; see `repl::repair`).
    pub(super) antientropy_ms: Arc<AtomicU64>,
}

impl Link {
    pub fn new(
        peer: u64,
        kind: LinkKind,
        group: String,
        addr: SocketAddr,
        slots: SlotSet,
        offset: u64,
    ) -> Self {
        let mut repair = super::repair::Repair::default();
        repair.start(&slots);
        Link {
            peer,
            kind,
            group,
            addr: Mutex::new(addr),
            slots: Mutex::new(slots.clone()),
            outbox: Mutex::new(Outbox {
                changes: Changes::default(),
                resync: None,
                resync_slots: SlotSet::default(),
                seen: offset,
                session: rand::random::<u64>() | 1,
                fresh: true,
                next_batch: 1,
                inflight: VecDeque::new(),
                marks: VecDeque::new(),
                hold: None,
                ready: VecDeque::new(),
                repair,
                rtt: Default::default(),
                urgent: false,
                resets: 0,
            }),
            wake: Notify::new(),
            acked: AtomicU64::new(0),
            batches_sent: AtomicU64::new(0),
            batches_shared: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            watermark: AtomicU64::new(0),
            upstream: AtomicU64::new(u64::MAX),
            created: Instant::now(),
            last_batch: Mutex::new(Instant::now()),
            stop: Notify::new(),
            retire_by: Mutex::new(None),
            fanout: Mutex::new(None),
            scope: Default::default(),
            invalidations_sent: AtomicU64::new(0),
            antientropy_ms: Default::default(),
        }
    }

    /// Shares the replicator's scope state with this link.
    pub fn with_scope(mut self, scope: Arc<arc_swap::ArcSwapOption<ScopeState>>) -> Self {
        self.scope = scope;
        self
    }

    /// Shares the replicator's anti-entropy period with this link.
    pub fn with_antientropy(mut self, period_ms: Arc<AtomicU64>) -> Self {
        self.antientropy_ms = period_ms;
        self
    }

    /// The scope state, on a region link with one installed.
    fn region_scope(&self) -> Option<Arc<ScopeState>> {
        (self.kind == LinkKind::Region)
            .then(|| self.scope.load_full())
            .flatten()
    }

    /// Records published keys (already filtered by slot and origin) and the offset they reach.
    /// `oldest` is the smallest newest-stamp time among them: a change stamped before what a
    /// batch may claim to cover (a forwarded merge, an import) holds the promise below it until
    /// it is acknowledged. `now`, `covered` ([`covered_now`]) and whether each key is hot are
    /// read once per publish by the caller, for all links.
    ///
    /// Returns whether the link's task must be woken: keys arrived in an empty queue, or a hot
    /// key. Keys added to a queue that is not empty need no wake: the task is building batches
    /// until the queue is empty, or waits for an ack (which wakes it) or the cold delay; waking
    /// it for every write cost a futex call per write and link. A publish of nothing for this
    /// link (changes from its own peer, or from another region on a region link) only moves
    /// the offset the next batch claims: the heartbeat carries it, and a waiter (`WAIT`,
    /// `MERIDIAN.WAITREGIONS`) wakes the link itself. Waking for it made a region that
    /// receives a stream of writes answer each batch with an empty claim batch per link.
    pub fn record(
        &self,
        changes: impl Iterator<Item = (Change, bool)>,
        offset: u64,
        oldest: u64,
        (now, covered): (Instant, u64),
    ) -> bool {
        let region = self.kind == LinkKind::Region;
        let mut o = self.outbox.lock();
        let was_empty = o.changes.is_empty();
        let mut any = false;
        let mut urgent = false;
        for (c, hot) in changes {
            any = true;
            // The priority lane: a hot key's change goes first (`repl::scope`).
            let hot = hot && region;
            urgent |= o.changes.push(c, hot) && hot;
        }
        if urgent {
            o.urgent = true;
        }
        o.note(any, offset, oldest, (now, covered));
        any && (was_empty || urgent)
    }

    /// Moves the offset the next batch claims, with nothing to carry (see [`Link::record`]).
    pub fn claim(&self, offset: u64) {
        let mut o = self.outbox.lock();
        o.seen = o.seen.max(offset);
    }
}

impl Outbox {
    /// Notes a publish of which `any` change is carried by the link (see [`Link::record`]):
    /// the offset the next batch may claim, the hold of old stamps, and the lag mark.
    fn note(&mut self, any: bool, offset: u64, oldest: u64, (now, covered): (Instant, u64)) {
        self.seen = self.seen.max(offset);
        if any && oldest <= covered {
            let (at, stamp) = self.hold.unwrap_or((0, u64::MAX));
            self.hold = Some((at.max(offset), stamp.min(oldest)));
        }
        if any
            && self
                .marks
                .back()
                .is_none_or(|m| now.saturating_duration_since(m.1) >= Duration::from_millis(1))
        {
            self.marks.push_back((offset, now));
        }
    }

    /// Records a batch about to be sent as in flight under the next batch number, and returns
    /// its head: a [`ReplMsg::Batch`] with no entries (they are spliced in: `wire::splice`).
    fn dispatch(
        &mut self,
        from: u64,
        upto: u64,
        keys: Carried,
        synced: Vec<u16>,
        covers: u64,
    ) -> ReplMsg {
        let (session, fresh, batch) = (self.session, self.fresh, self.next_batch);
        self.next_batch += 1;
        self.fresh = false;
        self.inflight.push_back(InFlight {
            batch,
            sent: Instant::now(),
            upto,
            acked: false,
            keys,
            synced,
            covers,
        });
        ReplMsg::Batch {
            from,
            session,
            fresh,
            batch,
            upto,
            entries: Vec::new(),
        }
    }

    pub(super) fn rtt_probe_due(&mut self) -> bool {
        self.rtt.probe_due()
    }

    /// Whether no changed key waits to be batched.
    pub(super) fn queue_is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The replication offset this link has seen published (carried or only claimed).
    pub(super) fn seen(&self) -> u64 {
        self.seen
    }

    /// Nothing queued, in flight, being compared or waiting to be sent in full.
    pub(super) fn is_idle(&self) -> bool {
        self.changes.is_empty()
            && self.ready.is_empty()
            && self.inflight.is_empty()
            && self.resync.is_none()
            && !self.repair.busy()
    }
}

impl Link {
    /// The peer sent us a frame: if the link was backing off, re-send what is in flight now.
    pub fn heard_from_peer(&self) {
        if self.outbox.lock().rtt.peer_back() {
            self.wake.notify_one();
        }
    }

    /// Age of the oldest change the peer has not acknowledged (zero when caught up).
    pub fn lag(&self) -> Duration {
        self.outbox
            .lock()
            .marks
            .front()
            .map_or(Duration::ZERO, |m| m.1.elapsed())
    }

    /// The delivery promise this link makes to its peer: every change it would send stamped at
    /// or below the returned time has been acknowledged. It honours acknowledged coverage, the
    /// hold of old-stamped changes not yet acknowledged, and what is still upstream. Read with
    /// the outbox locked: the watermark only changes under that lock, so a promise cannot mix
    /// an old coverage with a new session or newly gained slots.
    fn promise(&self, o: &Outbox) -> u64 {
        let hold = o.hold.map_or(u64::MAX, |h| h.1.saturating_sub(1));
        self.watermark
            .load(Relaxed)
            .min(hold)
            .min(self.upstream.load(Relaxed))
    }

    /// Starts a new session with a repair round (a new peer, or one that lost its state).
    pub fn restart_session(&self) {
        let slots = self.slots.lock().clone();
        let mut o = self.outbox.lock();
        // The repair sends old stamps again: nothing is promised until it is acknowledged.
        self.watermark.store(0, Relaxed);
        o.resets += 1;
        o.session = rand::random::<u64>() | 1;
        o.fresh = true;
        // Not a full sync: a digest round finds the slots that differ (`repl::repair`).
        o.resync = None;
        o.resync_slots = SlotSet::default();
        o.repair.start(&slots);
        o.next_batch = 1;
        for b in std::mem::take(&mut o.inflight) {
            b.keys.requeue(&mut o.changes);
        }
        for s in std::mem::take(&mut o.ready) {
            s.requeue(&mut o.changes);
        }
        drop(o);
        self.wake.notify_one();
    }

    /// Changes the slots the link carries. Slots it gains are synced in full within the
    /// current session (a migration's import); slots it loses simply stop being sent.
    pub fn set_slots(&self, new: SlotSet) {
        let mut slots = self.slots.lock();
        let gained: Vec<u16> = new.iter().filter(|&s| !slots.contains(s)).collect();
        *slots = new;
        drop(slots);
        if !gained.is_empty() {
            // The gained slots' keys go out with their old stamps: promise nothing until a batch
            // built after the repair of them is acknowledged. Batches already in flight were
            // complete without those slots: their claims are void. A digest round finds which
            // of the gained slots differ (`repl::repair`).
            let mut o = self.outbox.lock();
            self.watermark.store(0, Relaxed);
            o.resets += 1;
            for b in o.inflight.iter_mut() {
                b.upto = 0;
            }
            let mut set = SlotSet::default();
            for s in gained {
                set.insert(s);
            }
            o.repair.add(&set);
            drop(o);
            self.wake.notify_one();
        }
    }

    /// The peer acknowledged `batch` of `session`.
    /// (The ack also echoes the batch's offset; the sender trusts its own record in `InFlight`.)
    pub fn on_ack(&self, session: u64, batch: u64) {
        let mut o = self.outbox.lock();
        if o.session != session {
            return;
        }
        if let Some(b) = o.inflight.iter_mut().find(|b| b.batch == batch) {
            b.acked = true;
            let sample = b.sent.elapsed();
            o.rtt.sample(sample);
        }
        // Only a contiguous prefix of acknowledged batches moves the acknowledged offset.
        let (mut reached, mut covers) = (0, 0);
        while o.inflight.front().is_some_and(|b| b.acked) {
            let b = o.inflight.pop_front().expect("checked");
            if b.upto > 0 {
                reached = reached.max(b.upto);
                covers = covers.max(b.covers);
            }
        }
        while o.marks.front().is_some_and(|m| m.0 <= reached) {
            o.marks.pop_front();
        }
        if o.hold.is_some_and(|h| h.0 <= reached) {
            o.hold = None;
        }
        // Under the lock: a session restart or a slot gain resets it under the same lock.
        self.watermark.fetch_max(covers, Relaxed);
        drop(o);
        self.acked.fetch_max(reached, Relaxed);
        self.wake.notify_one();
    }

    /// The link is no longer wanted (roles or slots changed): its task sends what it has
    /// queued until the peer acknowledged it, for at most [`RETIRE_DRAIN`], then ends. A
    /// primary demoted by CLUSTER FAILOVER thus still delivers the writes it acknowledged just
    /// before it learnt of the promotion to the new primary, which merges them; stopping at
    /// once dropped them.
    /// A link that has not sent its first batch stops at once: that batch would start a session
    /// on the receiver and void the session of the link that replaces this one.
    pub fn retire(&self) {
        if self.outbox.lock().fresh {
            self.stop.notify_one();
            return;
        }
        *self.retire_by.lock() = Some(Instant::now() + RETIRE_DRAIN);
        self.wake.notify_one();
    }

    /// A retired link whose peer acknowledged everything it had (or that is out of time).
    /// Until then it re-sends what goes unacknowledged, like any link.
    fn retired(&self) -> bool {
        let Some(by) = *self.retire_by.lock() else {
            return false;
        };
        let o = self.outbox.lock();
        Instant::now() >= by
            || (o.changes.is_empty() && o.ready.is_empty() && o.inflight.is_empty())
    }

    /// Unacknowledged keys (queued, here or in the fan-out group, or in flight), for INFO lag.
    pub fn pending(&self) -> usize {
        let group = self.fanout().map_or(0, |g| g.queued().0);
        let o = self.outbox.lock();
        group
            + o.changes.len()
            + o.ready.iter().map(|s| s.len()).sum::<usize>()
            + o.inflight.iter().map(|b| b.keys.len()).sum::<usize>()
    }

    /// How long the task waits before building a batch (see the batching delay in [`run`]).
    fn send_delay(&self) -> Duration {
        if self.region_scope().is_none() {
            return Duration::ZERO;
        }
        let (group, group_urgent) = self.fanout().map_or((0, false), |g| g.queued());
        let o = self.outbox.lock();
        let queued = o.changes.len() + group;
        if !o.ready.is_empty() || queued == 0 || queued >= super::pacing::BATCH_NOW {
            Duration::ZERO
        } else if o.urgent || group_urgent {
            COLD_DELAY.saturating_sub(self.last_batch.lock().elapsed())
        } else {
            COLD_DELAY
        }
    }
}

/// The link's task: ships batches until the link is dropped from the replicator.
pub async fn run(link: Arc<Link>, ks: Arc<Keyspace>, transport: Arc<dyn Transport>, me: u64) {
    let mut backoff = Duration::from_millis(50);
    loop {
        if let Some(probe) = link.probe_frame(me) {
            let addr = *link.addr.lock();
            // A probe goes to a peer that may be unreachable: the send (a dial) must not hold
            // up shutdown.
            tokio::select! {
                r = transport.send(addr, probe) => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "probe not sent");
                    }
                }
                _ = link.stop.notified() => return,
            }
        }
        loop {
            let built = Instant::now();
            let Some((frame, shared)) = link.next_batch(&ks, me) else {
                break;
            };
            let len = frame.len() as u64;
            let addr = *link.addr.lock();
            let sent = tokio::select! {
                r = transport.send(addr, frame) => r,
                _ = link.stop.notified() => return,
            };
            match sent {
                Ok(()) => {
                    if !link.connected.swap(true, Relaxed) {
                        // Back after a failure: what went before was sent into a dead
                        // connection; re-send it now rather than after the ack timeout.
                        link.outbox.lock().rtt.lost_before = Some(built);
                    }
                    link.batches_sent.fetch_add(1, Relaxed);
                    link.batches_shared.fetch_add(shared as u64, Relaxed);
                    link.bytes_sent.fetch_add(len, Relaxed);
                    backoff = Duration::from_millis(50);
                }
                Err(e) => {
                    if link.connected.swap(false, Relaxed) {
                        tracing::warn!(peer = %format_args!("{:x}", link.peer), %addr, error = %e, "replication link down");
                    }
                    // The batch counts as lost: its keys return after the ack timeout; wait a
                    // little before trying again.
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = link.stop.notified() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    break;
                }
            }
        }
        if link.retired() {
            return;
        }
        let quiet_beat = tokio::select! {
            _ = link.wake.notified() => false,
            _ = tokio::time::sleep(HEARTBEAT) => true,
            _ = link.stop.notified() => return,
        };
        // Only a heartbeat nobody woke us before can find the link idle: a wake means work,
        // so the anti-entropy rules stay off the path of every batch.
        if quiet_beat {
            link.start_antientropy_if_due();
        }
        // A few changes on a region link wait a moment to share a batch (`repl::pacing`):
        // cold ones COLD_DELAY, hot ones only what is left of COLD_DELAY since the last batch.
        // So a link sends at most one small batch per COLD_DELAY: under a skewed workload most
        // writes are to hot keys, and letting each of them leave at once sent a batch per few
        // writes (1.28x the payload in WAN bytes at 10k writes/s, against 0.93x).
        let delay = link.send_delay();
        if !delay.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = link.stop.notified() => return,
            }
        }
    }
}

#[cfg(test)]
mod priority_tests;

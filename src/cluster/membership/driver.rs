//! The membership event loop: owns the `foca` instance, its timers and the event dedupe.
//!
//! One tokio task runs [`Driver::run`]. Everything foca asks for goes through
//! [`LoopRuntime`]: datagrams straight to the [`Transport`], timers into a min-heap the
//! loop sleeps on (no task per timer, so nothing outlives the loop), notifications into
//! a "membership changed" flag. Each turn of the loop:
//!
//! 1. waits for the first of: stop request, inbound datagram, due timer, seed retry tick,
//!    room in the event channel for a pending event;
//! 2. feeds it to foca (`handle_data`, `handle_timer`, `announce`, `leave_cluster`);
//! 3. if foca reported a membership change, diffs foca's live set against what was last
//!    reported and queues exactly one `Down` per departure and one `Up` per arrival
//!    (a member replaced by a newer incarnation yields `Down(old)` then `Up(new)`);
//! 4. publishes the live set for [`super::Membership::members`].
//!
//! Garbage datagrams make foca return an error; they are logged at debug and dropped.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use foca::{Foca, NoCustomBroadcast, Notification, PostcardCodec, Runtime, Timer};
use rand_foca::rngs::SmallRng;
use rand_foca::SeedableRng;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};
use tokio::time::{interval, sleep_until, Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use super::{Member, MemberEvent, MembershipConfig, Transport, View};

type Swim = Foca<Member, PostcardCodec, SmallRng, NoCustomBroadcast>;

/// Everything [`super::Membership::try_spawn`] hands to the loop.
pub(super) struct Parts {
    pub(super) me: Member,
    pub(super) cfg: MembershipConfig,
    pub(super) foca_cfg: foca::Config,
    pub(super) transport: Arc<dyn Transport>,
    pub(super) inbound: mpsc::Receiver<(SocketAddr, Bytes)>,
    pub(super) seeds: Vec<SocketAddr>,
    pub(super) stop: watch::Receiver<bool>,
    pub(super) events: mpsc::Sender<MemberEvent>,
    pub(super) view: Arc<View>,
}

/// foca's window on the world: owned by the loop, it spawns nothing of its own.
struct LoopRuntime {
    transport: Arc<dyn Transport>,
    timers: BinaryHeap<Reverse<(Instant, Timer<Member>)>>,
    changed: bool,
    renewed: bool,
}

impl Runtime<Member> for LoopRuntime {
    fn notify(&mut self, notification: Notification<'_, Member>) {
        match notification {
            Notification::MemberUp(_) | Notification::MemberDown(_) => self.changed = true,
            Notification::Rename(old, new) => {
                debug!(
                    old.id,
                    new.id, new.incarnation, "identity replaced at {}", new.addr
                );
                self.changed = true;
            }
            Notification::Active => info!("joined the cluster"),
            Notification::Idle => info!("no live member known"),
            Notification::Defunct => warn!("declared down and unable to renew"),
            Notification::Rejoin(me) => {
                info!(
                    me.incarnation,
                    "declared down; renewed identity and rejoined"
                );
                self.renewed = true;
            }
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }

    fn send_to(&mut self, to: Member, data: &[u8]) {
        self.transport.send(to.addr, Bytes::copy_from_slice(data));
    }

    fn submit_after(&mut self, event: Timer<Member>, after: Duration) {
        // Equal deadlines pop in `Timer`'s order, which foca relies on.
        self.timers.push(Reverse((Instant::now() + after, event)));
    }
}

/// What woke the loop up.
enum Turn {
    Stop,
    Datagram(Option<(SocketAddr, Bytes)>),
    Timers,
    SeedTick,
    EventRoom,
}

/// The loop's state. See the module doc for the steps of one turn.
pub(super) struct Driver {
    foca: Swim,
    rt: LoopRuntime,
    seeds: Vec<SocketAddr>,
    seed_retry: Duration,
    inbound: mpsc::Receiver<(SocketAddr, Bytes)>,
    stop: watch::Receiver<bool>,
    events: mpsc::Sender<MemberEvent>,
    events_closed: bool,
    pending: VecDeque<MemberEvent>,
    event_buffer: usize,
    reported: HashMap<u64, Member>,
    view: Arc<View>,
}

impl Driver {
    pub(super) fn new(p: Parts) -> Self {
        let seeds = p.seeds.into_iter().filter(|s| *s != p.me.addr).collect();
        let rng = SmallRng::seed_from_u64(rand::random());
        Self {
            foca: Foca::new(p.me, p.foca_cfg, rng, PostcardCodec),
            rt: LoopRuntime {
                transport: p.transport,
                timers: BinaryHeap::new(),
                changed: false,
                renewed: false,
            },
            seeds,
            seed_retry: p.cfg.seed_retry,
            inbound: p.inbound,
            stop: p.stop,
            events: p.events,
            events_closed: false,
            pending: VecDeque::new(),
            event_buffer: p.cfg.event_buffer,
            reported: HashMap::new(),
            view: p.view,
        }
    }

    pub(super) async fn run(mut self) {
        info!(seeds = ?self.seeds, "membership started");
        // The first tick fires at once: announce to the seeds as soon as we start.
        let mut seed_tick = interval(self.seed_retry);
        seed_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let turn = self.next_turn(&mut seed_tick).await;
            match turn {
                Turn::Stop => {
                    // A stop request, or every handle dropped: leave either way.
                    self.leave();
                    break;
                }
                Turn::Datagram(Some((from, data))) => self.on_datagram(from, &data),
                Turn::Datagram(None) => {
                    info!("inbound channel closed; stopping without leaving");
                    break;
                }
                Turn::Timers => self.on_timers(),
                Turn::SeedTick => self.announce_to_seeds(),
                Turn::EventRoom => self.flush_events(),
            }
            self.after_interaction();
        }
        info!("membership stopped");
    }

    /// Step 1: waits for whatever comes first.
    async fn next_turn(&mut self, seed_tick: &mut tokio::time::Interval) -> Turn {
        let next_timer = self.rt.timers.peek().map(|Reverse((at, _))| *at);
        let has_pending = !self.pending.is_empty();
        tokio::select! {
            biased;
            _ = self.stop.changed() => Turn::Stop,
            datagram = self.inbound.recv() => Turn::Datagram(datagram),
            _ = sleep_until(next_timer.unwrap_or_else(Instant::now)), if next_timer.is_some() => {
                Turn::Timers
            }
            _ = seed_tick.tick() => Turn::SeedTick,
            room = self.events.reserve(), if has_pending => {
                // The permit is released here; `flush_events` uses the room it saw.
                if room.is_err() {
                    debug!("event receiver dropped; events are no longer queued");
                }
                Turn::EventRoom
            }
        }
    }

    fn on_datagram(&mut self, from: SocketAddr, data: &[u8]) {
        if let Err(error) = self.foca.handle_data(data, &mut self.rt) {
            debug!(%from, len = data.len(), %error, "membership datagram ignored");
        }
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        while self
            .rt
            .timers
            .peek()
            .is_some_and(|Reverse((at, _))| *at <= now)
        {
            let Some(Reverse((_, timer))) = self.rt.timers.pop() else {
                break;
            };
            if let Err(error) = self.foca.handle_timer(timer, &mut self.rt) {
                debug!(%error, "membership timer");
            }
        }
    }

    /// Joining by address: while nobody is known, announce to each seed's placeholder.
    fn announce_to_seeds(&mut self) {
        let meet = std::mem::take(&mut *self.view.meet.lock());
        for addr in meet {
            debug!(%addr, "announcing to a met node");
            if let Err(error) = self.foca.announce(Member::seed(addr), &mut self.rt) {
                debug!(%addr, %error, "announce to a met node");
            }
        }
        if self.foca.num_members() > 0 {
            return;
        }
        for seed in &self.seeds {
            debug!(%seed, "announcing to seed");
            if let Err(error) = self.foca.announce(Member::seed(*seed), &mut self.rt) {
                debug!(%seed, %error, "announce to seed");
            }
        }
    }

    /// Graceful leave: foca gossips our own Down to a few members, then goes quiet.
    fn leave(&mut self) {
        match self.foca.leave_cluster(&mut self.rt) {
            Ok(()) => info!("left the cluster"),
            Err(error) => debug!(%error, "leave_cluster"),
        }
    }

    fn after_interaction(&mut self) {
        if std::mem::take(&mut self.rt.renewed) {
            *self.view.me.write() = self.foca.identity().clone();
            self.resume_probing();
        }
        if std::mem::take(&mut self.rt.changed) {
            self.reconcile();
        }
    }

    /// Restarts the probe cycle after an identity renewal.
    ///
    /// Invariant: while foca knows a live member, it has a probe timer pending. A renewal
    /// breaks it: foca resets to "disconnected" and voids every pending timer, and only the
    /// next datagram it handles reconnects it. When the renewal came from a `TurnUndead`
    /// (whoever declared us down tells us so) and that member then dies silently, no
    /// datagram ever comes: we would keep it alive forever, and a replica would never see
    /// its stopped primary go. Applying no updates makes foca re-check its connection
    /// state, which reconnects it and re-arms the probe, announce and gossip timers.
    fn resume_probing(&mut self) {
        if let Err(error) = self.foca.apply_many(std::iter::empty(), true, &mut self.rt) {
            debug!(%error, "membership: resuming after renewal");
        }
    }

    /// Diffs foca's live set against the last reported one; queues Down then Up events.
    fn reconcile(&mut self) {
        let mut current: HashMap<u64, Member> = HashMap::with_capacity(self.reported.len() + 1);
        for member in self.foca.iter_members().map(|m| m.id()) {
            if member.is_placeholder() {
                continue;
            }
            // One entry per node id: if an id shows up at two addresses, newest wins.
            let slot = current.entry(member.id).or_insert_with(|| member.clone());
            if member.incarnation > slot.incarnation {
                *slot = member.clone();
            }
        }
        let mut downs: Vec<Member> = (self.reported.iter())
            .filter(|(id, m)| current.get(id) != Some(m))
            .map(|(_, m)| m.clone())
            .collect();
        let mut ups: Vec<Member> = (current.iter())
            .filter(|(id, m)| self.reported.get(id) != Some(m))
            .map(|(_, m)| m.clone())
            .collect();
        downs.sort_by_key(|m| m.id);
        ups.sort_by_key(|m| m.id);
        for m in downs {
            info!(peer = m.id, addr = %m.addr, incarnation = m.incarnation, "member down");
            self.queue(MemberEvent::Down(m));
        }
        for m in ups {
            info!(peer = m.id, addr = %m.addr, incarnation = m.incarnation, "member up");
            self.queue(MemberEvent::Up(m));
        }
        self.reported.clone_from(&current);
        *self.view.alive.write() = current;
        self.flush_events();
    }

    fn queue(&mut self, event: MemberEvent) {
        if self.events_closed {
            return;
        }
        if self.pending.len() >= self.event_buffer {
            warn!("membership event consumer too slow; dropping the oldest event");
            self.pending.pop_front();
        }
        self.pending.push_back(event);
    }

    /// Moves queued events into the channel while it has room, never waiting.
    fn flush_events(&mut self) {
        while let Some(event) = self.pending.pop_front() {
            match self.events.try_send(event) {
                Ok(()) => {}
                Err(TrySendError::Full(event)) => {
                    self.pending.push_front(event);
                    return;
                }
                Err(TrySendError::Closed(_)) => {
                    self.events_closed = true;
                    self.pending.clear();
                    return;
                }
            }
        }
    }
}

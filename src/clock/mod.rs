//! The node's hybrid logical clock (one per node), built on `uhlc`.
//!
//! Rules (DESIGN.md §2):
//! 1. Every local write takes a fresh stamp from [`Hlc::now`]; stamps from one node strictly
//!    increase.
//! 2. Every received stamp goes through [`Hlc::observe`], so a write that causally follows a
//!    received one always gets a larger stamp.
//! 3. A received stamp further ahead of our physical clock than `max_clock_drift` is still
//!    observed (never dropped, never re-stamped: either would break convergence or causality) but
//!    raises a skew alarm, counted here and reported by INFO and the logs.
//!
//! uhlc itself refuses stamps beyond its max delta; we give it an effectively unbounded delta and
//! make the drift check ourselves so that rule 2 holds even for a skewed peer.

use crate::crdt::{NodeId, Stamp};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use uhlc::{HLCBuilder, Timestamp, HLC, ID, NTP64};

/// A node's clock.
pub struct Hlc {
    inner: HLC,
    /// The physical clock the HLC reads; drift is measured against it.
    physical: fn() -> NTP64,
    node: NodeId,
    max_drift_ms: AtomicU64,
    skew_alarms: AtomicU64,
    /// Largest drift seen (ms) in a stamp that raised an alarm.
    max_skew_seen_ms: AtomicU64,
    /// Alarms per writing node, so an operator sees *which* peer is skewed (the dashboard
    /// marks its region). Touched only when an alarm fires; bounded by [`MAX_SKEWED_NODES`].
    skewed: parking_lot::Mutex<std::collections::HashMap<NodeId, SkewedNode>>,
}

/// Most nodes remembered as skewed; past it, new ones only count in the totals.
pub const MAX_SKEWED_NODES: usize = 1024;

/// Skew alarms raised by stamps of one writing node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SkewedNode {
    pub alarms: u64,
    pub max_ahead_ms: u64,
    /// Unix ms of the latest alarm.
    pub last_unix_ms: u64,
}

/// A received stamp was further ahead of our clock than `max_clock_drift`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "stamp from node {node:x} is {ahead_ms} ms ahead of the local clock (max drift {max_ms} ms)"
)]
pub struct SkewAlarm {
    pub node: NodeId,
    pub ahead_ms: u64,
    pub max_ms: u64,
}

impl Hlc {
    /// A clock for `node` (non-zero) reading the system time.
    pub fn new(node: NodeId, max_drift: Duration) -> Self {
        Self::with_clock(node, max_drift, uhlc::system_time_clock)
    }

    /// A clock reading a custom physical clock (tests use a skewed one).
    pub fn with_clock(node: NodeId, max_drift: Duration, clock: fn() -> NTP64) -> Self {
        assert!(node != 0, "node IDs are non-zero");
        let id = ID::try_from(node).expect("non-zero u64 is a valid uhlc ID");
        // Ten years: uhlc never refuses; our own check raises the alarm (rule 3).
        let inner = HLCBuilder::new()
            .with_id(id)
            .with_clock(clock)
            .with_max_delta(Duration::from_secs(10 * 365 * 24 * 3600))
            .build();
        Hlc {
            inner,
            physical: clock,
            node,
            max_drift_ms: AtomicU64::new(max_drift.as_millis() as u64),
            skew_alarms: AtomicU64::new(0),
            max_skew_seen_ms: AtomicU64::new(0),
            skewed: Default::default(),
        }
    }

    pub fn node(&self) -> NodeId {
        self.node
    }

    /// A fresh stamp, larger than every stamp issued or observed before.
    pub fn now(&self) -> Stamp {
        let ts = self.inner.new_timestamp();
        Stamp::new(ts.get_time().as_u64(), self.node)
    }

    /// Records a received stamp (rule 2); reports skew beyond `max_clock_drift` (rule 3).
    pub fn observe(&self, stamp: Stamp) -> Result<(), SkewAlarm> {
        let mut o = self.observer();
        o.check(stamp)
    }

    /// Starts observing a group of received stamps (a batch from a peer) against one reading
    /// of the physical clock; the HLC takes the newest of them when the observer is dropped,
    /// which the caller does before it applies any of them (rule 2 needs only the maximum).
    /// Reading the clock per stamp (twice: our check and uhlc's) was a tenth of a receiving
    /// node's profile.
    pub fn observer(&self) -> Observer<'_> {
        Observer {
            hlc: self,
            phys_ms: Stamp::new((self.physical)().as_u64(), 0).unix_ms(),
            newest: Stamp::ZERO,
        }
    }

    /// Counts and logs a stamp `ahead` ms ahead of the physical clock.
    fn alarm(&self, stamp: Stamp, ahead: u64, max: u64) -> SkewAlarm {
        self.skew_alarms.fetch_add(1, Ordering::Relaxed);
        self.max_skew_seen_ms.fetch_max(ahead, Ordering::Relaxed);
        {
            let mut skewed = self.skewed.lock();
            if skewed.len() < MAX_SKEWED_NODES || skewed.contains_key(&stamp.node) {
                let e = skewed.entry(stamp.node).or_default();
                e.alarms += 1;
                e.max_ahead_ms = e.max_ahead_ms.max(ahead);
                e.last_unix_ms = unix_ms();
            }
        }
        tracing::warn!(peer = %format_args!("{:x}", stamp.node), ahead_ms = ahead, max_ms = max, "clock skew alarm");
        SkewAlarm {
            node: stamp.node,
            ahead_ms: ahead,
            max_ms: max,
        }
    }

    pub fn max_drift_ms(&self) -> u64 {
        self.max_drift_ms.load(Ordering::Relaxed)
    }

    pub fn set_max_drift_ms(&self, ms: u64) {
        self.max_drift_ms.store(ms, Ordering::Relaxed);
    }

    pub fn skew_alarms(&self) -> u64 {
        self.skew_alarms.load(Ordering::Relaxed)
    }

    pub fn max_skew_seen_ms(&self) -> u64 {
        self.max_skew_seen_ms.load(Ordering::Relaxed)
    }

    /// The writing nodes whose stamps raised alarms, by node ID.
    pub fn skewed_nodes(&self) -> Vec<(NodeId, SkewedNode)> {
        let mut v: Vec<_> = self.skewed.lock().iter().map(|(&n, &s)| (n, s)).collect();
        v.sort_unstable_by_key(|&(n, _)| n);
        v
    }
}

/// Received stamps checked against one reading of the physical clock (see [`Hlc::observer`]).
pub struct Observer<'a> {
    hlc: &'a Hlc,
    phys_ms: u64,
    newest: Stamp,
}

impl Observer<'_> {
    /// Checks a received stamp for skew (rule 3) and keeps it if it is the newest so far.
    pub fn check(&mut self, stamp: Stamp) -> Result<(), SkewAlarm> {
        if stamp.is_zero() {
            return Ok(());
        }
        self.newest = self.newest.max(stamp);
        let ahead = stamp.unix_ms().saturating_sub(self.phys_ms);
        let max = self.hlc.max_drift_ms.load(Ordering::Relaxed);
        if ahead > max {
            return Err(self.hlc.alarm(stamp, ahead, max));
        }
        Ok(())
    }
}

impl Drop for Observer<'_> {
    /// Rule 2: the HLC moves past the newest stamp checked.
    fn drop(&mut self) {
        if self.newest.is_zero() {
            return;
        }
        let id = ID::try_from(self.newest.node.max(1)).expect("non-zero");
        let _ = self
            .hlc
            .inner
            .update_with_timestamp(&Timestamp::new(NTP64(self.newest.time), id));
    }
}

/// Offsets of the skewed physical clocks handed out by [`skewed_clock`] (ms, one per slot).
static OFFSETS: [std::sync::atomic::AtomicI64; 16] =
    [const { std::sync::atomic::AtomicI64::new(0) }; 16];
static NEXT_OFFSET: AtomicU64 = AtomicU64::new(0);

fn offset_clock<const I: usize>() -> NTP64 {
    let now = uhlc::system_time_clock().as_u64() as i128;
    // NTP64: 32 bits of seconds, 32 of fraction; ms → NTP64 units is ms·2^32/1000.
    let delta = OFFSETS[I].load(Ordering::Relaxed) as i128 * (1i128 << 32) / 1000;
    NTP64((now + delta).max(0) as u64)
}

const OFFSET_CLOCKS: [fn() -> NTP64; 16] = [
    offset_clock::<0>,
    offset_clock::<1>,
    offset_clock::<2>,
    offset_clock::<3>,
    offset_clock::<4>,
    offset_clock::<5>,
    offset_clock::<6>,
    offset_clock::<7>,
    offset_clock::<8>,
    offset_clock::<9>,
    offset_clock::<10>,
    offset_clock::<11>,
    offset_clock::<12>,
    offset_clock::<13>,
    offset_clock::<14>,
    offset_clock::<15>,
];

/// A physical clock `offset_ms` ahead of (or behind) the system clock, for `debug-clock-offset`
/// (skew drills). `uhlc` takes a plain function, so offsets live in a fixed table: at most 16
/// skewed clocks per process (`None` beyond that).
pub fn skewed_clock(offset_ms: i64) -> Option<fn() -> NTP64> {
    let i = NEXT_OFFSET.fetch_add(1, Ordering::Relaxed) as usize;
    let slot = OFFSETS.get(i)?;
    slot.store(offset_ms, Ordering::Relaxed);
    Some(OFFSET_CLOCKS[i])
}

/// Wall-clock milliseconds since the UNIX epoch (expiry deadlines are in this unit).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Generates a random non-zero node ID.
pub fn random_node_id() -> NodeId {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skewed_clock_reads_ahead_by_its_offset() {
        let clock = skewed_clock(2000).expect("a free slot");
        let ahead = Stamp::new(clock().as_u64(), 0).unix_ms() as i64 - unix_ms() as i64;
        assert!((1900..2100).contains(&ahead), "{ahead}");
    }

    #[test]
    fn stamps_increase_and_follow_observed() {
        let a = Hlc::new(1, Duration::from_millis(500));
        let s1 = a.now();
        let s2 = a.now();
        assert!(s2 > s1);
        let far = Stamp::new(s2.time + (5u64 << 32), 2); // 5 s ahead
        let err = a.observe(far).unwrap_err();
        assert!(err.ahead_ms >= 4_000);
        assert_eq!(a.skew_alarms(), 1);
        assert!(
            a.now() > far,
            "a write after observing a skewed stamp still wins causally"
        );
    }

    #[test]
    fn an_observer_checks_each_stamp_and_moves_the_clock_past_the_newest_when_done() {
        let a = Hlc::new(1, Duration::from_millis(500));
        let base = a.now();
        let near = Stamp::new(base.time + (1u64 << 30), 2); // 250 ms ahead: no alarm
        let far = Stamp::new(base.time + (3u64 << 32), 3); // 3 s ahead
        let mut o = a.observer();
        assert!(o.check(near).is_ok());
        assert_eq!(o.check(far).unwrap_err().node, 3);
        assert!(o.check(Stamp::ZERO).is_ok());
        drop(o);
        assert_eq!(a.skew_alarms(), 1);
        assert!(
            a.now() > far,
            "the clock moved past the newest stamp observed"
        );
    }
}

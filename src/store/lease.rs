//! Stampede control state, local to this node: outstanding recompute leases and the refresh
//! metadata (soft deadline, measured recompute time) of values written by a lease fill.
//!
//! Nothing here is replicated or persisted. The value a fill writes is a normal CRDT register
//! write made by the caller through `KeyMut`; this module only decides *who* may write it and
//! *when* a reader should be told to refresh. Losing this state (a restart, a failover) costs at
//! most one extra recompute per key, never a wrong value, so it cannot affect convergence.
//!
//! Lock order: a slot lock (held by the caller) may be held while a shard of this table is
//! locked, never the reverse, so a command's hook can void leases from anywhere.
//!
//! A lease is voided by:
//! - any write command on its key ([`Leases::on_write`], called after the command ran: this
//!   catches a DEL of a missing key too, which changes nothing in the keyspace);
//! - a change to the key's entry the node did not see as a command (a merged delta from a
//!   replica or region): the lease remembers the entry's newest stamp at grant time and a fill
//!   against a different live entry is refused ([`Leases::take_for_fill`]);
//! - its own deadline, or its holder disconnecting ([`Leases::disconnected`]).
//!
//! Waiters subscribe to the lease's `watch` channel; the lease leaving the table drops the
//! sender, which wakes all of them at once to look again.

use crate::crdt::Stamp;
use hashbrown::HashMap;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Shards of each table (by hash slot), so unrelated keys rarely share a lock.
const SHARDS: usize = 64;

/// What the fetching command saw of the key, read under its slot lock.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    /// The key has a value now.
    pub live: bool,
    /// Newest stamp of the live entry (register, expiry or counters): any write changes it.
    pub version: Option<Stamp>,
    /// Stamp of the live register: identifies *which* value the refresh metadata belongs to.
    pub register: Stamp,
    /// The key's hard deadline (UNIX ms), if it has one.
    pub deadline: Option<u64>,
}

/// A caller's tolerance and tuning for one fetch.
#[derive(Debug, Clone, Copy)]
pub struct FetchOpts {
    /// Serve a value at most this long past its soft deadline while another caller refreshes
    /// it (`None` = until the hard deadline).
    pub grace_ms: Option<u64>,
    /// XFetch β: 0 never refreshes early; larger values refresh earlier.
    pub beta: f64,
    /// How long a lease granted by this fetch lasts.
    pub lease: Duration,
}

/// What a fetch should answer (or wait for).
#[derive(Debug)]
pub enum Step {
    /// The value is fresh.
    Fresh,
    /// The value is past its soft deadline and someone else is refreshing it.
    Stale,
    /// The caller must recompute and fill (a live value, stale or early, may be served meanwhile).
    Granted { token: u64 },
    /// Someone else holds the lease: wait for `changed` (the lease left the table) or until the
    /// lease's own deadline, whichever comes first, then look again.
    Wait {
        changed: watch::Receiver<()>,
        lease_expires: Instant,
    },
}

/// Why a fill or release was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    #[error("NOLEASE no such lease: the token is wrong, expired, already used, or voided by a write to the key")]
    NoLease,
}

/// An outstanding recompute lease.
struct Lease {
    token: u64,
    holder: u64,
    granted: Instant,
    expires: Instant,
    /// `Snapshot::version` at grant time.
    version: Option<Stamp>,
    /// Dropped with the lease: wakes every waiter.
    wake: watch::Sender<()>,
}

/// Refresh metadata of a value written by a fill.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    /// The register stamp of the fill's write: the metadata is ignored once another write
    /// replaced the value.
    pub register: Stamp,
    /// Past this UNIX ms the value is stale: served, but one caller gets a refresh lease.
    pub soft: Option<u64>,
    /// The hard deadline, kept so the sweep can drop metadata of expired values.
    pub hard: Option<u64>,
    /// Lease grant → fill, as measured by this node (XFetch's Δ).
    pub recompute: Duration,
}

/// A hash map that sweeps itself: after it doubled since the last sweep, inserting drops the
/// entries `dead` says are dead, so leaked entries cost amortised O(1) and memory stays bounded
/// by what is really outstanding.
struct Swept<V> {
    map: HashMap<Box<[u8]>, V>,
    swept_len: usize,
}

impl<V> Default for Swept<V> {
    fn default() -> Self {
        Swept {
            map: HashMap::new(),
            swept_len: 0,
        }
    }
}

impl<V> Swept<V> {
    /// Inserts; returns how many dead entries the sweep removed (`replaced` tells whether
    /// `key` already had an entry).
    fn insert(&mut self, key: &[u8], v: V, dead: impl Fn(&V) -> bool) -> (usize, bool) {
        let mut removed = 0;
        if self.map.len() >= 2 * self.swept_len + 64 {
            let before = self.map.len();
            self.map.retain(|_, v| !dead(v));
            removed = before - self.map.len();
            self.swept_len = self.map.len();
        }
        let replaced = self.map.insert(key.into(), v).is_some();
        (removed, replaced)
    }
}

/// The node's lease and refresh-metadata tables.
pub struct Leases {
    leases: Box<[Mutex<Swept<Lease>>]>,
    meta: Box<[Mutex<Swept<Meta>>]>,
    /// Leases in the table (expired ones included until removed): lets the write hook and
    /// disconnects skip all locking when stampede control is not in use.
    outstanding: AtomicUsize,
    metas: AtomicUsize,
}

impl Default for Leases {
    fn default() -> Self {
        Leases {
            leases: (0..SHARDS).map(|_| Mutex::default()).collect(),
            meta: (0..SHARDS).map(|_| Mutex::default()).collect(),
            outstanding: AtomicUsize::new(0),
            metas: AtomicUsize::new(0),
        }
    }
}

fn shard_of(key: &[u8]) -> usize {
    super::key_slot(key) as usize % SHARDS
}

/// XFetch (Vattani et al., VLDB 2015): refresh now if `now − Δ·β·ln(r) ≥ expiry`, r ∈ (0, 1].
fn xfetch_early(now_ms: u64, expiry_ms: u64, recompute: Duration, beta: f64) -> bool {
    if beta <= 0.0 || recompute.is_zero() {
        return false;
    }
    let r = 1.0 - rand::random::<f64>();
    let lead = recompute.as_secs_f64() * 1000.0 * beta * -r.ln();
    now_ms as f64 + lead >= expiry_ms as f64
}

impl Leases {
    /// True when no lease and no metadata exist: nothing for the write hook to void.
    pub fn is_idle(&self) -> bool {
        self.outstanding.load(Relaxed) == 0 && self.metas.load(Relaxed) == 0
    }

    /// Outstanding leases (expired ones not yet noticed included).
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Relaxed)
    }

    /// The fetch state machine (see `docs/stampede.md`). Runs under the key's slot lock.
    pub fn fetch(
        &self,
        key: &[u8],
        snap: &Snapshot,
        opts: &FetchOpts,
        client: u64,
        now_ms: u64,
    ) -> Step {
        let now = Instant::now();
        let shard = shard_of(key);
        let meta = if snap.live {
            self.meta_of(key, snap.register)
        } else {
            None
        };
        let mut leases = self.leases[shard].lock();
        // An expired lease is gone: dropping it wakes its waiters.
        if leases.map.get(key).is_some_and(|l| l.expires <= now) {
            leases.map.remove(key);
            self.outstanding.fetch_sub(1, Relaxed);
        }
        let held = leases.map.get(key);
        if let Some(l) = held.filter(|l| l.holder == client) {
            // Asking again for a lease you hold (a retry): it is still yours to fill.
            return Step::Granted { token: l.token };
        }
        if snap.live {
            let soft = meta.and_then(|m| m.soft);
            match soft.filter(|&s| now_ms >= s) {
                // Fresh: maybe an early (XFetch) refresh, if nobody is refreshing already.
                None => {
                    let expiry = soft.or(snap.deadline);
                    let early = held.is_none()
                        && meta
                            .zip(expiry)
                            .is_some_and(|(m, e)| xfetch_early(now_ms, e, m.recompute, opts.beta));
                    if !early {
                        return Step::Fresh;
                    }
                }
                // Stale: one refresh lease; the others get the stale value inside their grace.
                Some(s) => {
                    if let Some(l) = held {
                        if opts.grace_ms.is_none_or(|g| now_ms - s <= g) {
                            return Step::Stale;
                        }
                        return Step::Wait {
                            changed: l.wake.subscribe(),
                            lease_expires: l.expires,
                        };
                    }
                }
            }
        } else if let Some(l) = held {
            return Step::Wait {
                changed: l.wake.subscribe(),
                lease_expires: l.expires,
            };
        }
        let token = rand::random::<u64>();
        let lease = Lease {
            token,
            holder: client,
            granted: now,
            expires: now + opts.lease,
            version: snap.version,
            wake: watch::channel(()).0,
        };
        let (swept, _) = leases.insert(key, lease, |l| l.expires <= now);
        self.outstanding.fetch_add(1, Relaxed);
        self.outstanding.fetch_sub(swept, Relaxed);
        Step::Granted { token }
    }

    /// The metadata of the live value with register stamp `register`; drops metadata of a
    /// value that was replaced.
    fn meta_of(&self, key: &[u8], register: Stamp) -> Option<Meta> {
        if self.metas.load(Relaxed) == 0 {
            return None;
        }
        let mut meta = self.meta[shard_of(key)].lock();
        match meta.map.get(key) {
            Some(m) if m.register == register => Some(*m),
            Some(_) => {
                meta.map.remove(key);
                self.metas.fetch_sub(1, Relaxed);
                None
            }
            None => None,
        }
    }

    /// Validates and consumes the lease for a fill, under the key's slot lock; returns when
    /// it was granted (for the recompute time). A lease whose key changed since the grant is
    /// voided; a key that merely expired since (a refresh racing the hard TTL) may be filled.
    pub fn take_for_fill(
        &self,
        key: &[u8],
        token: u64,
        snap: &Snapshot,
    ) -> Result<Instant, LeaseError> {
        let mut leases = self.leases[shard_of(key)].lock();
        let l = leases
            .map
            .get(key)
            .filter(|l| l.token == token)
            .ok_or(LeaseError::NoLease)?;
        let valid = l.expires > Instant::now() && (!snap.live || snap.version == l.version);
        let granted = l.granted;
        leases.map.remove(key);
        self.outstanding.fetch_sub(1, Relaxed);
        valid.then_some(granted).ok_or(LeaseError::NoLease)
    }

    /// Records the refresh metadata of a value just filled (when it has any deadline: without
    /// one there is nothing to refresh early).
    pub fn remember(&self, key: &[u8], m: Meta, now_ms: u64) {
        let mut meta = self.meta[shard_of(key)].lock();
        if m.soft.is_none() && m.hard.is_none() {
            if meta.map.remove(key).is_some() {
                self.metas.fetch_sub(1, Relaxed);
            }
            return;
        }
        let (swept, replaced) = meta.insert(key, m, |m| m.hard.is_some_and(|h| h <= now_ms));
        self.metas.fetch_add(usize::from(!replaced), Relaxed);
        self.metas.fetch_sub(swept, Relaxed);
    }

    /// Gives a lease back without filling (the recompute failed): the next caller gets one.
    pub fn release(&self, key: &[u8], token: u64) -> bool {
        let mut leases = self.leases[shard_of(key)].lock();
        if leases.map.get(key).is_some_and(|l| l.token == token) {
            leases.map.remove(key);
            self.outstanding.fetch_sub(1, Relaxed);
            return true;
        }
        false
    }

    /// A write command touched `key`: void its lease and forget its refresh metadata.
    pub fn on_write(&self, key: &[u8]) {
        let shard = shard_of(key);
        if self.outstanding.load(Relaxed) > 0 && self.leases[shard].lock().map.remove(key).is_some()
        {
            self.outstanding.fetch_sub(1, Relaxed);
        }
        if self.metas.load(Relaxed) > 0 && self.meta[shard].lock().map.remove(key).is_some() {
            self.metas.fetch_sub(1, Relaxed);
        }
    }

    /// FLUSHALL / FLUSHDB: every lease is void and every value gone.
    pub fn clear(&self) {
        for s in self.leases.iter() {
            let mut s = s.lock();
            self.outstanding.fetch_sub(s.map.len(), Relaxed);
            *s = Swept::default();
        }
        for s in self.meta.iter() {
            let mut s = s.lock();
            self.metas.fetch_sub(s.map.len(), Relaxed);
            *s = Swept::default();
        }
    }

    /// A client disconnected: its leases pass to the next caller (their waiters wake now).
    pub fn disconnected(&self, client: u64) {
        if self.outstanding.load(Relaxed) == 0 {
            return;
        }
        for s in self.leases.iter() {
            let mut s = s.lock();
            let before = s.map.len();
            s.map.retain(|_, l| l.holder != client);
            self.outstanding.fetch_sub(before - s.map.len(), Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> FetchOpts {
        FetchOpts {
            grace_ms: None,
            beta: 0.0,
            lease: Duration::from_secs(10),
        }
    }

    #[test]
    fn one_lease_per_missing_key_and_waiters_wake_when_it_ends() {
        let t = Leases::default();
        let miss = Snapshot::default();
        let Step::Granted { token } = t.fetch(b"k", &miss, &opts(), 1, 0) else {
            panic!("first caller must get the lease")
        };
        let Step::Wait { changed, .. } = t.fetch(b"k", &miss, &opts(), 2, 0) else {
            panic!("second caller must wait")
        };
        assert_eq!(
            t.take_for_fill(b"k", token ^ 1, &miss),
            Err(LeaseError::NoLease)
        );
        assert!(t.take_for_fill(b"k", token, &miss).is_ok());
        assert!(
            changed.has_changed().is_err(),
            "the sender is gone: waiters wake"
        );
        assert_eq!(t.outstanding(), 0);
        assert!(t.is_idle());
    }

    #[test]
    fn a_write_or_a_changed_entry_voids_the_lease() {
        let t = Leases::default();
        let miss = Snapshot::default();
        let Step::Granted { token } = t.fetch(b"k", &miss, &opts(), 1, 0) else {
            panic!()
        };
        t.on_write(b"k");
        assert!(t.take_for_fill(b"k", token, &miss).is_err());
        let Step::Granted { token } = t.fetch(b"k", &miss, &opts(), 1, 0) else {
            panic!()
        };
        let now = Snapshot {
            live: true,
            version: Some(Stamp::default()),
            ..Snapshot::default()
        };
        assert!(
            t.take_for_fill(b"k", token, &now).is_err(),
            "a merged write voids it"
        );
        assert_eq!(t.outstanding(), 0);
    }

    #[test]
    fn leaked_leases_are_swept_and_disconnects_release() {
        let t = Leases::default();
        let o = FetchOpts {
            lease: Duration::ZERO,
            ..opts()
        };
        for i in 0..10_000u32 {
            t.fetch(&i.to_be_bytes(), &Snapshot::default(), &o, 7, 0);
        }
        assert!(t.outstanding() < 2_000, "{}", t.outstanding());
        t.fetch(b"x", &Snapshot::default(), &opts(), 9, 0);
        t.disconnected(9);
        assert!(matches!(
            t.fetch(b"x", &Snapshot::default(), &opts(), 3, 0),
            Step::Granted { .. }
        ));
    }

    #[test]
    fn xfetch_never_early_with_beta_zero_and_early_with_a_large_beta() {
        let d = Duration::from_millis(100);
        assert!((0..1000).all(|_| !xfetch_early(0, 1, d, 0.0)));
        let early = (0..1000)
            .filter(|_| xfetch_early(0, 1_000, d, 100.0))
            .count();
        assert!(early > 800, "{early}");
    }
}

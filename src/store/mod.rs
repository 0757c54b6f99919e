//! The keyspace: CRDT entries sharded by hash slot, and the only place they change.
//!
//! Knows nothing of the network or of commands. A caller locks the slots of the keys it needs
//! ([`Keyspace::lock`], ascending slot order, so multi-key commands and transactions are atomic
//! and deadlock-free), works on keys through [`KeyMut`], and every mutation yields the delta it
//! produced. Deltas are handed, after the locks are released, to every installed [`DeltaSink`]
//! (persistence and replication plug in there, in the order they were added) — the seam the
//! mesh and the log build on.

mod access;
mod bulk;
mod digest;
mod evict;
mod expire;
mod held;
mod invalidate;
mod key;
pub mod lease;
mod merge;
mod prefetch;
mod shard;
mod sieve;
pub mod slot;
mod tinylfu;

pub use access::{idle_ms, lfu_count, Policy};
pub use evict::{used_memory, Eviction, EvictionSettings, OutOfMemory};
pub use expire::CycleStats;
pub use held::HeldPublish;
pub use key::{KeyMut, Ttl};
pub use prefetch::GROUP as PREFETCH_GROUP;
pub use slot::{key_slot, SLOTS};

use crate::clock::{unix_ms, Hlc};
use crate::crdt::{Entry, EntryDelta};
use parking_lot::{Mutex, MutexGuard};
use shard::{Node, Shard};
use smallvec::SmallVec;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// A change to one key, as shipped to replicas, peers and the log.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Delta {
    pub slot: u16,
    /// Inline when short (most keys): a write allocates nothing for its key, and each sink
    /// copies what it keeps (replication queues its own inline copy: `repl::changes`).
    pub key: DeltaKey,
    /// Shared: every sink of the command holds the same allocation.
    pub entry: Arc<EntryDelta>,
}

/// A delta's key: inline up to 32 bytes.
pub type DeltaKey = SmallVec<[u8; 32]>;

/// The deltas of one command (usually one): inline, so a write allocates no list for them.
pub(crate) type Deltas = SmallVec<[Delta; 1]>;

/// Where a change came from: replication must not send a peer's changes back to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A command on this node (or a merge with no peer to spare, like a migration import).
    Local,
    /// Merged from this peer node.
    Peer(u64),
}

/// Receives every delta the keyspace produces, after the slot locks are released.
pub trait DeltaSink: Send + Sync {
    fn publish(&self, deltas: Vec<Delta>, origin: Origin);

    /// Keys that lost their value here without a delta: expired (lazily or actively) or
    /// evicted. Both are local and never replicated; client-side caching must still hear of
    /// them (`tracking`). Called after the slot lock is released, except for lazy expiry,
    /// which is noticed under it.
    fn dropped(&self, _keys: &[Box<[u8]>]) {}

    /// True: local writes made inside a [`Keyspace::hold_publish`] scope reach this sink
    /// together when the scope ends (`store::held`), instead of one command at a time.
    fn batched(&self) -> bool {
        false
    }
}

/// Counters reported by INFO.
#[derive(Default)]
pub struct Stats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub expired_keys: AtomicU64,
    pub tombstones_collected: AtomicU64,
    pub merges_applied: AtomicU64,
    pub merges_noop: AtomicU64,
    pub merges_dropped_stale: AtomicU64,
    /// Merges that resolved concurrent state, by kind (`Entry::conflicts`).
    pub conflicts_register: AtomicU64,
    pub conflicts_counter: AtomicU64,
    pub conflicts_expiry: AtomicU64,
}

/// What a merge did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeOutcome {
    Changed,
    Unchanged,
    /// Older than the tombstone-collection watermark for a key we no longer hold: dropped so a
    /// late or duplicated delta cannot resurrect a collected key.
    Stale,
}

pub struct Keyspace {
    shards: Box<[Mutex<Shard>]>,
    hasher: ahash::RandomState,
    clock: Arc<Hlc>,
    /// Every installed sink, in publication order (persistence, then replication). Sinks are
    /// added, never removed; `has_sinks` lets the write path skip recording deltas at no cost
    /// while there are none.
    sinks: arc_swap::ArcSwap<Vec<Arc<dyn DeltaSink>>>,
    has_sinks: std::sync::atomic::AtomicBool,
    pub stats: Stats,
    /// Tombstones (and expired entries) are kept at least this long after their last stamp.
    tombstone_grace_ms: AtomicU64,
    /// Stamp time up to which this node has received every delta from every peer, and every
    /// peer has acknowledged ours. `STANDALONE` (u64::MAX) when the node has no peers.
    peer_watermark: AtomicU64,
    /// Stamp time up to which every peer has acknowledged our changes (outbound only); eviction
    /// waits for it alone, so a flood arriving from a peer never blocks eviction. `STANDALONE`
    /// without peers.
    acked_watermark: AtomicU64,
    expire_cursor: AtomicUsize,
    /// `maxmemory` and its policy; eviction itself lives in `store::evict`.
    pub evict: Eviction,
}

/// What OBJECT reports about a key, read without counting as an access.
pub struct Peek {
    /// The node's access word (see `store::access`).
    pub access: u32,
    pub value: Box<[u8]>,
}

impl Keyspace {
    pub fn new(clock: Arc<Hlc>, sink: Option<Arc<dyn DeltaSink>>) -> Self {
        Keyspace {
            shards: (0..SLOTS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: ahash::RandomState::new(),
            clock,
            has_sinks: std::sync::atomic::AtomicBool::new(sink.is_some()),
            sinks: arc_swap::ArcSwap::from_pointee(sink.into_iter().collect()),
            stats: Stats::default(),
            tombstone_grace_ms: AtomicU64::new(5_000),
            peer_watermark: AtomicU64::new(u64::MAX),
            acked_watermark: AtomicU64::new(u64::MAX),
            expire_cursor: AtomicUsize::new(0),
            evict: Eviction::default(),
        }
    }

    /// Adds a delta sink: it receives every delta published from now on, after the sinks
    /// already installed.
    pub fn add_sink(&self, sink: Arc<dyn DeltaSink>) {
        self.sinks.rcu(|cur| {
            let mut next = Vec::clone(cur);
            next.push(sink.clone());
            next
        });
        self.has_sinks
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Installs `sink` as the only sink of a keyspace that has none yet; false (and nothing
    /// installed) otherwise.
    pub fn set_sink(&self, sink: Arc<dyn DeltaSink>) -> bool {
        let mut installed = false;
        self.sinks.rcu(|cur| {
            installed = cur.is_empty();
            if installed {
                vec![sink.clone()]
            } else {
                Vec::clone(cur)
            }
        });
        if installed {
            self.has_sinks
                .store(true, std::sync::atomic::Ordering::Release);
        }
        installed
    }

    /// Hands deltas to every sink (a copy each but the last), except that batched sinks get
    /// them at the end of an open [`Keyspace::hold_publish`] scope.
    fn publish(&self, mut deltas: Deltas, origin: Origin) {
        let sinks = self.sinks.load();
        let hold = sinks.iter().any(|s| s.batched()) && self.holding(origin);
        let now = |s: &&Arc<dyn DeltaSink>| !(hold && s.batched());
        let mut left = sinks.iter().filter(now).count();
        let held = left < sinks.len();
        for s in sinks.iter().filter(now) {
            left -= 1;
            if left == 0 && !held {
                s.publish(std::mem::take(&mut deltas).into_vec(), origin);
            } else {
                s.publish(deltas.to_vec(), origin);
            }
        }
        if held {
            self.hold(&mut deltas);
        }
    }

    /// Tells every sink that `keys` expired or were evicted (see [`DeltaSink::dropped`]).
    pub(crate) fn publish_dropped(&self, keys: &[Box<[u8]>]) {
        if keys.is_empty() || !self.recording() {
            return;
        }
        for s in self.sinks.load().iter() {
            s.dropped(keys);
        }
    }

    fn recording(&self) -> bool {
        self.has_sinks.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn clock(&self) -> &Arc<Hlc> {
        &self.clock
    }

    pub fn set_tombstone_grace_ms(&self, ms: u64) {
        self.tombstone_grace_ms.store(ms, Relaxed);
    }

    pub fn tombstone_grace_ms(&self) -> u64 {
        self.tombstone_grace_ms.load(Relaxed)
    }

    /// Entries held without a value (tombstones and expired keys) that the collector has not
    /// removed yet: what waits for the grace period and every peer's acknowledgement.
    pub fn tombstones_pending(&self) -> usize {
        let (live, _, held) = self.counts();
        held - live
    }

    /// Replication reports the stamp time (NTP64) up to which every delta from and to every
    /// peer has been delivered (see `peer_watermark`). Calling it puts the keyspace in
    /// replicated mode; [`Keyspace::STANDALONE`] returns it to standalone.
    pub fn set_peer_watermark(&self, ntp64: u64) {
        self.set_watermarks(ntp64, ntp64);
    }

    /// Both watermarks: `delivered` (both directions, gates tombstone collection) and `acked`
    /// (every peer holds our changes up to it, gates eviction).
    pub fn set_watermarks(&self, delivered: u64, acked: u64) {
        self.peer_watermark.store(delivered, Relaxed);
        self.acked_watermark.store(acked, Relaxed);
    }

    /// The watermark value of a node without peers.
    pub const STANDALONE: u64 = u64::MAX;

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Locks the slots of `keys` (ascending, deduplicated) for one atomic unit of work.
    pub fn lock<'a, I, K>(&'a self, keys: I) -> Txn<'a>
    where
        I: IntoIterator<Item = K>,
        K: AsRef<[u8]>,
    {
        let mut slots: SmallVec<[u16; 4]> =
            keys.into_iter().map(|k| key_slot(k.as_ref())).collect();
        slots.sort_unstable();
        slots.dedup();
        self.lock_slots(&slots)
    }

    /// Locks one key's slot (the common case, without sorting).
    #[inline]
    pub fn lock_key<'a>(&'a self, key: &[u8]) -> Txn<'a> {
        self.lock_slots(&[key_slot(key)])
    }

    /// Locks the given slots, which must be sorted and distinct.
    pub fn lock_slots<'a>(&'a self, slots: &[u16]) -> Txn<'a> {
        let guards = slots
            .iter()
            .map(|&s| (s, self.shards[s as usize].lock()))
            .collect();
        Txn {
            ks: self,
            guards,
            now_ms: unix_ms(),
            deltas: Deltas::new(),
        }
    }

    /// Registers a WATCH on `key`; returns the version to compare at EXEC.
    pub fn watch(&self, key: &[u8]) -> u64 {
        self.shards[key_slot(key) as usize].lock().watch(key)
    }

    pub fn unwatch(&self, key: &[u8]) {
        self.shards[key_slot(key) as usize].lock().unwatch(key)
    }
}

/// Locked slots and the deltas produced under them; publishes the deltas when dropped.
pub struct Txn<'a> {
    ks: &'a Keyspace,
    guards: SmallVec<[(u16, MutexGuard<'a, Shard>); 2]>,
    now_ms: u64,
    deltas: Deltas,
}

impl<'a> Txn<'a> {
    /// Access to one key; its slot must be among the locked ones.
    pub fn key<'t>(&'t mut self, key: &'t [u8]) -> KeyMut<'t> {
        let slot = key_slot(key);
        let idx = self
            .guards
            .iter()
            .position(|(s, _)| *s == slot)
            .unwrap_or_else(|| panic!("slot {slot} was not locked for this command"));
        let record = self.ks.recording();
        KeyMut::new(
            self.ks,
            &mut self.guards[idx].1,
            slot,
            key,
            self.ks.hash(key),
            self.now_ms,
            record.then_some(&mut self.deltas),
        )
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Current WATCH version of a key in a locked slot.
    pub fn watch_version(&self, key: &[u8]) -> u64 {
        let slot = key_slot(key);
        self.guards
            .iter()
            .find(|(s, _)| *s == slot)
            .map_or(0, |(_, g)| g.watch_version(key))
    }

    pub fn keyspace(&self) -> &'a Keyspace {
        self.ks
    }
}

impl Drop for Txn<'_> {
    fn drop(&mut self) {
        self.guards.clear();
        if !self.deltas.is_empty() {
            self.ks
                .publish(std::mem::take(&mut self.deltas), Origin::Local);
        }
    }
}

//! Eviction under `maxmemory`: the settings, the memory check write commands make, and the
//! choice and local removal of victims.
//!
//! Memory is jemalloc's allocated bytes (INFO used_memory). Before a command that may grow the
//! dataset (flagged `denyoom`), [`Keyspace::ensure_memory`] evicts until used memory is under
//! the limit or answers OOM, as Redis's processCommand does. Without a limit the check is one
//! relaxed load.
//!
//! Victims are chosen like Redis (random samples feeding a pool of the 16 best candidates), by
//! SIEVE (see `store::sieve`), or from the pool by TinyLFU frequency with newcomers competing
//! for admission (see `store::tinylfu`). Eviction is local: the node is dropped from this node's table —
//! no tombstone, no delta — and three rules keep it from changing what the replicated keyspace
//! converges to (docs/eviction.md):
//! - only live entries are evicted; tombstones stay until the collector proves them useless;
//! - with peers, only entries whose every stamp is at or below the delivery watermark are
//!   evicted, and the stale-drop bound is raised to it, so a late duplicate of an older write
//!   cannot bring an overwritten or deleted value back;
//! - the counter contributions of an evicted key (every actor's epoch and totals) are kept as a
//!   floor and restored when the key reappears here. This node's own contribution, so its next
//!   increment continues from it: without it the node would hold no contribution of its own and
//!   open a new epoch, whose totals would replace, everywhere, the ones replicas hold for it
//!   (`crdt::counter`). The other actors', so a register write (SET) here observes them as it
//!   would have before the eviction: without them the write would observe none, and replicas
//!   would add them back to its value.

use super::access::{Policy, Tracking};
use super::shard::{Node, Shard};
use super::sieve::Sieve;
use super::tinylfu::{self, TinyLfu};
use super::{Keyspace, SLOTS};
use crate::crdt::{Entry, EntryDelta};
use hashbrown::HashMap;
use parking_lot::Mutex;
use rand::Rng;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering::Relaxed};

/// Values up to this size live inside the entry (crdt::entry's INLINE_VALUE): no heap part.
const INLINE_VALUE: usize = 32;

/// Redis's EVPOOL_SIZE.
const POOL: usize = 16;

/// The reply to a write refused for memory (Redis's exact text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("OOM command not allowed when used memory > 'maxmemory'.")]
pub struct OutOfMemory;

/// The eviction settings (CONFIG SET changes them live) and counters.
pub struct Eviction {
    /// Bytes; 0 = no limit.
    maxmemory: AtomicU64,
    policy: AtomicU8,
    samples: AtomicU32,
    log_factor: AtomicU32,
    decay_minutes: AtomicU32,
    /// Bumped each time SIEVE is switched on: slot queues of an older epoch are rebuilt.
    sieve_epoch: AtomicU32,
    /// Next slot SIEVE evicts from (round robin keeps the slots' queues evenly drained).
    cursor: AtomicUsize,
    /// Keys evicted (INFO evicted_keys).
    pub evicted: AtomicU64,
    /// The candidate pool; its lock also lets one thread evict at a time.
    pool: Mutex<Vec<Candidate>>,
    /// Frequency sketch and newcomers of `allkeys-tinylfu`.
    pub(super) tinylfu: TinyLfu,
}

/// A sampled key and how good a victim it is (larger = evict first).
struct Candidate {
    score: u64,
    slot: u16,
    hash: u64,
    key: Box<[u8]>,
}

impl Default for Eviction {
    fn default() -> Self {
        Eviction {
            maxmemory: AtomicU64::new(0),
            policy: AtomicU8::new(Policy::NoEviction.to_u8()),
            samples: AtomicU32::new(5),
            log_factor: AtomicU32::new(10),
            decay_minutes: AtomicU32::new(1),
            sieve_epoch: AtomicU32::new(0),
            cursor: AtomicUsize::new(0),
            evicted: AtomicU64::new(0),
            pool: Mutex::new(Vec::with_capacity(POOL)),
            tinylfu: TinyLfu::default(),
        }
    }
}

/// The eviction parameters, as CONFIG holds them.
#[derive(Debug, Clone, Copy)]
pub struct EvictionSettings {
    pub maxmemory: u64,
    pub policy: Policy,
    pub samples: u32,
    pub lfu_log_factor: u32,
    pub lfu_decay_time: u32,
}

impl Eviction {
    pub fn configure(&self, s: EvictionSettings) {
        let old = self.policy.swap(s.policy.to_u8(), Relaxed);
        if old != s.policy.to_u8() {
            self.pool.lock().clear();
            self.tinylfu.clear();
            if s.policy == Policy::AllkeysSieve {
                self.sieve_epoch.fetch_add(1, Relaxed);
            }
        }
        self.samples.store(s.samples.max(1), Relaxed);
        self.log_factor.store(s.lfu_log_factor, Relaxed);
        self.decay_minutes.store(s.lfu_decay_time, Relaxed);
        self.maxmemory.store(s.maxmemory, Relaxed);
    }

    pub fn maxmemory(&self) -> u64 {
        self.maxmemory.load(Relaxed)
    }

    pub fn policy(&self) -> Policy {
        Policy::from_u8(self.policy.load(Relaxed))
    }

    /// How to record an access under the current policy.
    #[inline]
    pub fn tracking(&self) -> Tracking {
        let lfu = self.policy().is_lfu();
        Tracking {
            lfu,
            log_factor: if lfu {
                self.log_factor.load(Relaxed)
            } else {
                0
            },
            decay_minutes: if lfu {
                self.decay_minutes.load(Relaxed)
            } else {
                0
            },
        }
    }

    pub fn decay_minutes(&self) -> u32 {
        self.decay_minutes.load(Relaxed)
    }

    /// The epoch new nodes join SIEVE queues under, when SIEVE is the policy.
    #[inline]
    pub fn sieve_epoch(&self) -> Option<u32> {
        (self.policy() == Policy::AllkeysSieve).then(|| self.sieve_epoch.load(Relaxed))
    }
}

/// Bytes jemalloc has handed out (what Redis calls used_memory). The control names are
/// resolved once; each call refreshes jemalloc's statistics epoch.
pub fn used_memory() -> usize {
    use std::sync::OnceLock;
    use tikv_jemalloc_ctl::{epoch, epoch_mib, stats};
    static MIBS: OnceLock<Option<(epoch_mib, stats::allocated_mib)>> = OnceLock::new();
    let Some((e, a)) = MIBS
        .get_or_init(|| Some((epoch::mib().ok()?, stats::allocated::mib().ok()?)))
        .as_ref()
    else {
        return 0;
    };
    let _ = e.advance();
    a.read().unwrap_or(0)
}

/// The counter totals of evicted keys, per slot: key → the delta restoring them.
#[derive(Default)]
pub struct Floors(HashMap<Box<[u8]>, EntryDelta>);

impl Floors {
    pub fn take(&mut self, key: &[u8]) -> Option<EntryDelta> {
        self.0.remove(key)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn holds(&self, key: &[u8]) -> bool {
        self.0.contains_key(key)
    }

    /// Remembers the contributions (every actor's epoch and totals) of an evicted entry, if it
    /// has any.
    fn keep(floors: &mut Option<Box<Floors>>, key: &[u8], entry: &Entry) {
        let Some((contrib, _, stamp)) = entry.contributions() else {
            return;
        };
        if contrib.is_empty() {
            return;
        }
        let delta = EntryDelta {
            contrib: contrib.clone(),
            contrib_stamp: stamp,
            ..EntryDelta::default()
        };
        floors
            .get_or_insert_with(Default::default)
            .0
            .insert(key.into(), delta);
    }
}

/// Approximate bytes a node holds: the node, its spilled key and value, its counter box.
fn footprint(n: &Node) -> usize {
    let key = if n.key.spilled() { n.key.len() } else { 0 };
    let value =
        n.entry
            .register_value()
            .map_or(0, |v| if v.len() > INLINE_VALUE { v.len() } else { 0 });
    let counters = if n.entry.contributions().is_some() {
        96
    } else {
        0
    };
    128 + key + value + counters
}

impl Keyspace {
    /// Before a command that may grow memory: evicts until used memory is under `maxmemory`.
    /// `Err` under noeviction, or when nothing the policy may evict is left.
    #[inline]
    pub fn ensure_memory(&self) -> Result<(), OutOfMemory> {
        let max = self.evict.maxmemory();
        if max == 0 {
            return Ok(());
        }
        self.evict_to(max as usize)
    }

    #[cold]
    fn evict_to(&self, max: usize) -> Result<(), OutOfMemory> {
        if used_memory() <= max {
            return Ok(());
        }
        let policy = self.evict.policy();
        if policy == Policy::NoEviction {
            return Err(OutOfMemory);
        }
        let mut pool = self.evict.pool.lock();
        let mut evicted_any = false;
        // Each round evicts what the estimate says is needed, then measures again (freed memory
        // returns to jemalloc's counters in batches, so the estimate is trusted, not awaited).
        for _ in 0..64 {
            let used = used_memory();
            if used <= max {
                return Ok(());
            }
            let mut need = used - max;
            while need > 0 {
                match self.evict_one(policy, &mut pool) {
                    Some(freed) => {
                        evicted_any = true;
                        need = need.saturating_sub(freed);
                    }
                    None if evicted_any => return Ok(()),
                    None => return Err(OutOfMemory),
                }
            }
        }
        Ok(())
    }

    /// May this node be evicted now? (see the module doc)
    fn evictable(n: &Node, volatile_only: bool, watermark: u64) -> bool {
        n.counted
            && (!volatile_only || n.volatile)
            && (watermark == Self::STANDALONE || n.entry.max_stamp().time <= watermark)
    }

    /// Evicts one key; returns the bytes it is estimated to free, `None` if no key qualifies.
    fn evict_one(&self, policy: Policy, pool: &mut Vec<Candidate>) -> Option<usize> {
        match policy {
            Policy::NoEviction => None,
            Policy::AllkeysSieve => self.evict_sieve(),
            Policy::AllkeysRandom | Policy::VolatileRandom => self.evict_random(policy),
            _ => self.evict_pooled(policy, pool),
        }
    }

    /// Removes a victim from its locked shard: a local removal, never a delete.
    fn remove_victim(&self, shard: &mut Shard, hash: u64, key: &[u8]) -> usize {
        let Some(node) = shard.remove(hash, key) else {
            return 0;
        };
        shard.touch(key);
        Floors::keep(&mut shard.floors, key, &node.entry);
        self.evict.evicted.fetch_add(1, Relaxed);
        // Client-side caches must drop it too (Redis invalidates evicted keys).
        self.publish_dropped(&[Box::from(key)]);
        footprint(&node)
    }

    fn evict_sieve(&self) -> Option<usize> {
        let epoch = self.evict.sieve_epoch.load(Relaxed);
        let watermark = self.acked_watermark.load(Relaxed);
        // Two rounds: the first may only clear visited bits.
        for _ in 0..2 * SLOTS {
            let slot = self.evict.cursor.fetch_add(1, Relaxed) % SLOTS;
            let mut guard = self.shards[slot].lock();
            let shard = &mut *guard;
            if shard.live == 0 {
                continue;
            }
            if shard.sieve.as_ref().is_none_or(|s| s.epoch() != epoch) {
                shard.sieve = Some(Box::new(Sieve::build(&shard.table, epoch, |k| {
                    self.hash(k)
                })));
            }
            let sieve = shard.sieve.as_mut().expect("built above");
            let victim = sieve.victim(&mut shard.table, |n| Self::evictable(n, false, watermark));
            if let Some((hash, key)) = victim {
                return Some(self.remove_victim(shard, hash, &key));
            }
        }
        None
    }

    fn evict_random(&self, policy: Policy) -> Option<usize> {
        let volatile = policy.volatile_only();
        let watermark = self.acked_watermark.load(Relaxed);
        let mut rng = rand::thread_rng();
        let start = rng.gen_range(0..SLOTS);
        for i in 0..SLOTS {
            let mut shard = self.shards[(start + i) % SLOTS].lock();
            if (if volatile { shard.volatile } else { shard.live }) == 0 {
                continue;
            }
            let keys: Vec<Box<[u8]>> = shard
                .table
                .iter()
                .filter(|n| Self::evictable(n, volatile, watermark))
                .map(|n| Box::from(&n.key[..]))
                .collect();
            if keys.is_empty() {
                continue;
            }
            let key = &keys[rng.gen_range(0..keys.len())];
            return Some(self.remove_victim(&mut shard, self.hash(key), key));
        }
        None
    }

    /// Redis's approximated LRU / LFU / TTL: sample, keep the best candidates in the pool,
    /// evict the best one that still exists.
    fn evict_pooled(&self, policy: Policy, pool: &mut Vec<Candidate>) -> Option<usize> {
        let volatile = policy.volatile_only();
        let watermark = self.acked_watermark.load(Relaxed);
        self.sample_into(policy, pool);
        if policy == Policy::AllkeysTinyLfu {
            self.admit_newcomers(pool, watermark);
            // Frequencies change while candidates wait in the pool: score them afresh.
            for c in pool.iter_mut() {
                c.score = tinylfu::rescore(c.score, self.evict.tinylfu.estimate(c.hash));
            }
            pool.sort_unstable_by_key(|c| c.score);
        }
        while let Some(c) = pool.pop() {
            let mut shard = self.shards[c.slot as usize].lock();
            let ok = shard
                .find(c.hash, &c.key)
                .is_some_and(|n| Self::evictable(n, volatile, watermark));
            if ok {
                return Some(self.remove_victim(&mut shard, c.hash, &c.key));
            }
        }
        None
    }

    /// Adds `maxmemory-samples` random eligible keys to the pool (sorted, best last).
    fn sample_into(&self, policy: Policy, pool: &mut Vec<Candidate>) {
        let volatile = policy.volatile_only();
        let watermark = self.acked_watermark.load(Relaxed);
        let decay = self.evict.decay_minutes();
        let now = crate::clock::unix_ms();
        let want = self.evict.samples.load(Relaxed) as usize;
        let score = |n: &Node| -> u64 {
            match policy {
                Policy::AllkeysLfu | Policy::VolatileLfu => {
                    255 - super::access::lfu_count(n.access, now, decay) as u64
                }
                Policy::VolatileTtl => u64::MAX - n.entry.deadline().unwrap_or(u64::MAX),
                Policy::AllkeysTinyLfu => tinylfu::score(
                    self.evict.tinylfu.estimate(self.hash(&n.key)),
                    super::access::idle_ms(n.access, now),
                    false,
                ),
                _ => super::access::idle_ms(n.access, now),
            }
        };
        let mut rng = rand::thread_rng();
        let start = rng.gen_range(0..SLOTS);
        let mut taken = 0;
        for i in 0..SLOTS {
            if taken >= want {
                break;
            }
            let slot = (start + i) % SLOTS;
            let shard = self.shards[slot].lock();
            if (if volatile { shard.volatile } else { shard.live }) == 0 {
                continue;
            }
            let skip = rng.gen_range(0..shard.table.len());
            let nodes = shard
                .table
                .iter()
                .skip(skip)
                .chain(shard.table.iter().take(skip));
            for n in nodes.filter(|n| Self::evictable(n, volatile, watermark)) {
                if taken >= want {
                    break;
                }
                taken += 1;
                let s = score(n);
                if pool.iter().any(|c| *c.key == n.key[..]) {
                    continue;
                }
                pool_insert(pool, s, || Candidate {
                    score: s,
                    slot: slot as u16,
                    hash: self.hash(&n.key),
                    key: Box::from(&n.key[..]),
                });
            }
        }
    }
}

impl Keyspace {
    /// `allkeys-tinylfu` admission: the keys created since the last eviction join the pool,
    /// scored by their estimated frequency and ahead of residents of equal frequency, so a
    /// newcomer read less often than the best resident victim is the one evicted.
    fn admit_newcomers(&self, pool: &mut Vec<Candidate>, watermark: u64) {
        let now = crate::clock::unix_ms();
        for n in self.evict.tinylfu.take_newcomers() {
            if pool.iter().any(|c| c.key == n.key) {
                continue;
            }
            let shard = self.shards[n.slot as usize].lock();
            let Some(node) = shard.find(n.hash, &n.key) else {
                continue;
            };
            if !Self::evictable(node, false, watermark) {
                continue;
            }
            let idle = super::access::idle_ms(node.access, now);
            drop(shard);
            let s = tinylfu::score(self.evict.tinylfu.estimate(n.hash), idle, true);
            pool_insert(pool, s, || Candidate {
                score: s,
                slot: n.slot,
                hash: n.hash,
                key: n.key,
            });
        }
    }
}

/// Puts a candidate scoring `score` in the pool (kept sorted, best victim last), dropping the
/// worst when full; a candidate no better than the worst of a full pool is not built at all.
fn pool_insert(pool: &mut Vec<Candidate>, score: u64, build: impl FnOnce() -> Candidate) {
    if pool.len() >= POOL {
        if score <= pool[0].score {
            return;
        }
        pool.remove(0);
    }
    let at = pool.partition_point(|c| c.score < score);
    pool.insert(at, build());
}

//! Hot keys (DESIGN.md §3, §7): a per-node top-k of the keys clients touch most, with rates in
//! operations per second that decay over time, and the *hot set* replication asks about.
//!
//! Owns: the sketch (16 HeavyKeeper shards, `sketch`), time (counts halve every second, which
//! turns a decayed count into a rate), the sampled `record` path commands call, and the
//! replication scope rules (`scope`). Knows nothing of commands or the network: `cmd` feeds it
//! and reads it, `repl` asks [`HotKeys::is_hot`].
//!
//! Cost on the command path: a command records each key with probability 1/`SAMPLE` (a
//! thread-local xorshift decides before the key is even hashed); a sampled record hashes the
//! key and takes one shard lock with `try_lock` (a contended sample is dropped rather than
//! waited for). Counts are therefore in samples; rates are scaled back by `SAMPLE`.
//!
//! Rate estimate: counts halve once a second (α = 0.5, T = 1 s). A key accessed at a steady r
//! samples/s holds `r·(1 + t)` samples t seconds after a halving (between r and 2r), so the rate
//! is `count / (1 + t)` samples/s, exact for a steady rate at any point of the period.

pub mod scope;
pub mod sketch;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use sketch::Shard;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Independent shards (locks) of the sketch.
const SHARDS: usize = 16;
/// How often counts halve.
const DECAY_PERIOD: Duration = Duration::from_secs(1);
/// How often the hot set is rebuilt from the candidates.
pub const REFRESH_PERIOD: Duration = Duration::from_millis(100);
/// One access in this many is recorded (a power of two). See docs/benchmarks.md for the cost
/// that chose it.
pub const SAMPLE: u32 = 8;

/// Defaults of `hotkeys-k` and `hotkeys-threshold`.
pub const DEFAULT_K: usize = 32;
pub const DEFAULT_THRESHOLD: u64 = 100;

/// A hot key as reported: the key and its estimated rate (operations per second).
#[derive(Debug, Clone, PartialEq)]
pub struct HotKey {
    pub key: Box<[u8]>,
    pub rate: f64,
}

pub struct HotKeys {
    shards: Box<[Mutex<Shard>]>,
    hasher: ahash::RandomState,
    /// Accesses per recorded sample (1 = record everything; tests use it).
    sample: u32,
    k: AtomicUsize,
    /// Operations per second from which a top-k key is hot.
    threshold: AtomicU64,
    /// Hashes of the hot keys, rebuilt every [`REFRESH_PERIOD`]; readers never lock.
    hot: ArcSwap<hashbrown::HashSet<u64>>,
    last_decay: Mutex<Instant>,
    /// Samples recorded, and samples dropped because their shard was busy.
    pub recorded: AtomicU64,
    pub dropped: AtomicU64,
}

/// A snapshot of the hot set ([`HotKeys::hot_set`]).
pub struct HotSet<'a> {
    set: arc_swap::Guard<Arc<hashbrown::HashSet<u64>>>,
    hasher: &'a ahash::RandomState,
}

impl HotSet<'_> {
    pub fn contains(&self, key: &[u8]) -> bool {
        !self.set.is_empty() && self.set.contains(&self.hasher.hash_one(key))
    }
}

impl Default for HotKeys {
    fn default() -> Self {
        HotKeys::new(DEFAULT_K, DEFAULT_THRESHOLD, SAMPLE)
    }
}

thread_local! {
    static COIN: Cell<u32> = const { Cell::new(0x9E37_79B9) };
}

/// True once in `n` calls on average (`n` a power of two); a few instructions, no hashing.
#[inline]
fn sampled(n: u32) -> bool {
    if n <= 1 {
        return true;
    }
    COIN.with(|c| {
        // xorshift32
        let mut x = c.get();
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        c.set(x);
        x & (n - 1) == 0
    })
}

fn width_for(k: usize) -> usize {
    (k * 8).max(256)
}

impl HotKeys {
    /// A sketch tracking the top `k` keys; keys at `threshold` ops/s or more are hot; one
    /// access in `sample` is recorded.
    pub fn new(k: usize, threshold: u64, sample: u32) -> HotKeys {
        let k = k.max(1);
        HotKeys {
            shards: (0..SHARDS)
                .map(|i| Mutex::new(Shard::new(k, width_for(k), 0x5eed + i as u64)))
                .collect(),
            hasher: ahash::RandomState::new(),
            sample: sample.max(1).next_power_of_two(),
            k: AtomicUsize::new(k),
            threshold: AtomicU64::new(threshold),
            hot: ArcSwap::from_pointee(Default::default()),
            last_decay: Mutex::new(Instant::now()),
            recorded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Applies `hotkeys-k` and `hotkeys-threshold`. A new k starts the sketch over (its memory
    /// is sized by k).
    pub fn configure(&self, k: usize, threshold: u64) {
        let k = k.max(1);
        self.threshold.store(threshold, Relaxed);
        if self.k.swap(k, Relaxed) != k {
            for (i, s) in self.shards.iter().enumerate() {
                *s.lock() = Shard::new(k, width_for(k), 0x5eed + i as u64);
            }
            self.refresh(Instant::now());
        }
    }

    pub fn k(&self) -> usize {
        self.k.load(Relaxed)
    }

    pub fn threshold(&self) -> u64 {
        self.threshold.load(Relaxed)
    }

    /// Accesses per recorded sample.
    pub fn sample(&self) -> u32 {
        self.sample
    }

    fn shard_of(&self, hash: u64) -> usize {
        (hash >> 60) as usize % SHARDS
    }

    /// Counts one access of `key` (sampled; never blocks).
    #[inline]
    pub fn record(&self, key: &[u8]) {
        if sampled(self.sample) {
            self.record_sample(key);
        }
    }

    #[cold]
    fn record_sample(&self, key: &[u8]) {
        let hash = self.hasher.hash_one(key);
        match self.shards[self.shard_of(hash)].try_lock() {
            Some(mut s) => {
                s.record(hash, key);
                self.recorded.fetch_add(1, Relaxed);
            }
            None => {
                self.dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// Time passes: halves the counts once per elapsed period and rebuilds the hot set. The
    /// node's `hotkeys` task calls it every [`REFRESH_PERIOD`]; tests pass their own `now`.
    pub fn refresh(&self, now: Instant) {
        {
            let mut last = self.last_decay.lock();
            while now.saturating_duration_since(*last) >= DECAY_PERIOD {
                for s in self.shards.iter() {
                    s.lock().halve();
                }
                *last += DECAY_PERIOD;
            }
        }
        let threshold = self.threshold() as f64;
        let hot: hashbrown::HashSet<u64> = self
            .top_at(self.k(), now)
            .into_iter()
            .filter(|h| h.rate >= threshold && h.rate > 0.0)
            .map(|h| self.hasher.hash_one(&h.key[..]))
            .collect();
        self.hot.store(Arc::new(hot));
    }

    /// Samples/s per unit of count, `t` after the last halving (see the module doc).
    fn rate_factor(&self, now: Instant) -> f64 {
        let t = now
            .saturating_duration_since(*self.last_decay.lock())
            .as_secs_f64();
        self.sample as f64 / (1.0 + t)
    }

    /// The `n` hottest keys by estimated rate, hottest first (at most `hotkeys-k`).
    pub fn top(&self, n: usize) -> Vec<HotKey> {
        self.top_at(n, Instant::now())
    }

    /// [`Self::top`] at a given instant.
    pub fn top_at(&self, n: usize, now: Instant) -> Vec<HotKey> {
        let factor = self.rate_factor(now);
        let mut all: Vec<(u32, Box<[u8]>)> = Vec::new();
        for s in self.shards.iter() {
            let s = s.lock();
            all.extend(s.candidates().iter().map(|c| (c.count, c.key.clone())));
        }
        all.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        all.truncate(n.min(self.k()));
        all.into_iter()
            .map(|(count, key)| HotKey {
                key,
                rate: count as f64 * factor,
            })
            .collect()
    }

    /// Whether `key` was in the hot set at the last refresh (lock-free).
    pub fn is_hot(&self, key: &[u8]) -> bool {
        self.hot_set().contains(key)
    }

    /// The hot set as it is now, to ask about many keys with one load of it (a pipelined
    /// read's writes: each load is an atomic read-modify-write).
    pub fn hot_set(&self) -> HotSet<'_> {
        HotSet {
            set: self.hot.load(),
            hasher: &self.hasher,
        }
    }

    /// Keys in the hot set.
    pub fn hot_count(&self) -> usize {
        self.hot.load().len()
    }

    /// Candidates tracked across the shards (up to 16·k; `top` reports the best k).
    pub fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().candidates().len())
            .sum()
    }

    /// Bytes held by the sketch.
    pub fn memory(&self) -> usize {
        self.shards.iter().map(|s| s.lock().memory()).sum()
    }

    /// The node's `hotkeys` task: refreshes until shutdown.
    pub async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        tracing::debug!(task = "hotkeys", "starting");
        loop {
            tokio::select! {
                _ = tokio::time::sleep(REFRESH_PERIOD) => self.refresh(Instant::now()),
                _ = shutdown.changed() => break,
            }
        }
        tracing::debug!(task = "hotkeys", "stopping");
    }
}

#[cfg(test)]
mod tests;

//! `allkeys-tinylfu`: TinyLFU admission (Einziger, Friedman, Manes, 2017) over Redis-style
//! sampled eviction. This module owns the frequency sketch and the queue of newcomers; the
//! eviction loop (`store::evict`) uses both.
//!
//! Why: on skewed workloads the keys worth keeping are the frequently read ones, and a cache
//! that forgets a key's history when it evicts it (LRU, Redis's LFU) keeps readmitting one-hit
//! wonders at the expense of keys that will be read again. TinyLFU remembers approximate read
//! frequencies of *all* recently seen keys, resident or not, in a small count-min sketch:
//! 1. every read (hit or miss) of a key adds one to its count (4 counters of 8 bits, saturating
//!    at 15, the minimum of the 4 is the estimate);
//! 2. after `RESET` recorded reads every counter is halved, so frequencies follow the workload;
//! 3. a key created by a write is a *newcomer*: the next eviction considers it alongside the
//!    sampled residents, and evicts whichever has the lowest estimated frequency, the newcomer
//!    on a tie (admission: a new key stays only if it is read more often than the victim it
//!    would displace); among residents of equal frequency, the least recently used goes first.
//!
//! The sketch is allocated when the policy is first selected (128 KiB, counted in used memory
//! like everything else); other policies pay nothing but one relaxed load per read.

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering::Relaxed};
use std::sync::OnceLock;

/// Counters in the sketch (a power of two).
const WIDTH: usize = 1 << 17;
/// Reads recorded between two halvings (Caffeine uses ten times the cache's capacity in keys).
const RESET: u32 = 1 << 18;
/// Saturation value of a counter (4-bit counters, as in the paper).
const MAX: u8 = 15;
/// Newcomers remembered for the next eviction; older ones were admitted by default.
const NEWCOMERS: usize = 64;

/// A newcomer: where it lives, so the eviction loop can find it without a lookup by key.
pub struct Newcomer {
    pub slot: u16,
    pub hash: u64,
    pub key: Box<[u8]>,
}

#[derive(Default)]
pub struct TinyLfu {
    counters: OnceLock<Box<[AtomicU8]>>,
    recorded: AtomicU32,
    newcomers: Mutex<VecDeque<Newcomer>>,
}

/// The four counter positions of a key hash (Kirsch–Mitzenmacher double hashing).
#[inline]
fn positions(hash: u64) -> [usize; 4] {
    let h1 = hash as u32 as usize;
    let h2 = ((hash >> 32) as u32 | 1) as usize;
    std::array::from_fn(|i| h1.wrapping_add(i.wrapping_mul(h2)) & (WIDTH - 1))
}

impl TinyLfu {
    fn counters(&self) -> &[AtomicU8] {
        self.counters
            .get_or_init(|| (0..WIDTH).map(|_| AtomicU8::new(0)).collect())
    }

    /// Records one read of the key with this hash. Races between threads may lose an
    /// increment; an estimate does not need more.
    pub fn record(&self, hash: u64) {
        let c = self.counters();
        for i in positions(hash) {
            let v = c[i].load(Relaxed);
            if v < MAX {
                c[i].store(v + 1, Relaxed);
            }
        }
        if self.recorded.fetch_add(1, Relaxed) + 1 >= RESET {
            self.recorded.store(0, Relaxed);
            for x in c {
                x.store(x.load(Relaxed) / 2, Relaxed);
            }
        }
    }

    /// The estimated recent read frequency of the key with this hash (0..=15).
    pub fn estimate(&self, hash: u64) -> u8 {
        let c = self.counters();
        positions(hash)
            .into_iter()
            .map(|i| c[i].load(Relaxed))
            .min()
            .unwrap_or(0)
    }

    /// Notes a key just created by a write (see the module doc, step 3).
    pub fn newcomer(&self, slot: u16, hash: u64, key: &[u8]) {
        let mut q = self.newcomers.lock();
        if q.len() >= NEWCOMERS {
            q.pop_front();
        }
        q.push_back(Newcomer {
            slot,
            hash,
            key: key.into(),
        });
    }

    /// Takes the newcomers noted since the last eviction.
    pub fn take_newcomers(&self) -> VecDeque<Newcomer> {
        std::mem::take(&mut *self.newcomers.lock())
    }

    /// Forgets the newcomers (the policy changed).
    pub fn clear(&self) {
        self.newcomers.lock().clear();
    }
}

/// The eviction score of a key (larger = evict first): low frequency first, then, among equal
/// frequencies, newcomers, then the longest idle.
pub fn score(freq: u8, idle_ms: u64, newcomer: bool) -> u64 {
    let idle = if newcomer {
        (1 << 40) - 1
    } else {
        idle_ms.min((1 << 40) - 2)
    };
    ((MAX - freq.min(MAX)) as u64) << 40 | idle
}

/// `score` with the frequency part replaced by a fresh estimate (the idle or newcomer part is
/// kept as sampled).
pub fn rescore(score: u64, freq: u8) -> u64 {
    ((MAX - freq.min(MAX)) as u64) << 40 | (score & ((1 << 40) - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_saturate_halve_and_order_keys() {
        let t = TinyLfu::default();
        let (hot, cold, unseen) = (0x1234_5678_9abc_def0u64, 0x0fed_cba9_8765_4321, 42);
        for _ in 0..40 {
            t.record(hot);
        }
        for _ in 0..3 {
            t.record(cold);
        }
        assert_eq!(t.estimate(hot), MAX);
        assert!((3..MAX).contains(&t.estimate(cold)));
        assert_eq!(t.estimate(unseen), 0);
        // Equal frequency: the newcomer goes first; lower frequency beats idle time.
        assert!(score(3, 1_000, true) > score(3, 1_000_000, false));
        assert!(score(2, 0, false) > score(3, 1_000_000, true));
        assert_eq!(rescore(score(2, 77, false), 9), score(9, 77, false));
        // A halving after RESET reads.
        for i in 0..RESET as u64 {
            t.record(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1 << 63);
        }
        assert!(t.estimate(hot) <= MAX / 2 + 1, "{}", t.estimate(hot));
    }
}

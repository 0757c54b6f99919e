//! One HeavyKeeper shard (Gong et al., ATC'18): a small count sketch with exponential-decay
//! eviction of colliding keys, plus the list of its current top-k candidates.
//!
//! Why HeavyKeeper rather than Space-Saving: Space-Saving gives every newcomer the count of the
//! evicted minimum, so a stream of one-off keys keeps inflating the tail of the list and a cold
//! key can briefly look hot; HeavyKeeper's "count-with-exponential-decay" makes a colliding
//! key's count fall with probability b^-C, so large (hot) counts are almost never knocked down
//! while small ones churn. Memory is fixed at construction: `DEPTH × width` buckets of 8 bytes
//! and at most `k` candidates (each holding a copy of its key).
//!
//! Pure and single-threaded: `hot::HotKeys` puts one shard behind each of its locks and owns
//! time (the periodic halving that turns counts into rates).

/// Rows of buckets; each key lands in one bucket per row.
pub const DEPTH: usize = 2;
/// HeavyKeeper's decay base `b` (the paper and RedisBloom use 1.08 / 0.9 ≈ 1/1.1 alike).
const DECAY_BASE: f64 = 1.08;

#[derive(Clone, Copy, Default)]
struct Bucket {
    /// Fingerprint of the key holding the bucket (never 0 once used).
    fp: u32,
    count: u32,
}

/// A top-k candidate: the key, its hash, its current (decayed, sampled) count.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub hash: u64,
    pub key: Box<[u8]>,
    pub count: u32,
}

pub struct Shard {
    buckets: Box<[Bucket]>,
    /// Buckets per row (a power of two).
    width: usize,
    /// At most `k` candidates, unordered.
    top: Vec<Candidate>,
    /// `top[i].hash`, packed: the membership scan every record makes reads 8 bytes a
    /// candidate instead of 40.
    hashes: Vec<u64>,
    k: usize,
    /// Smallest candidate count when the list is full (a lower bound; kept fresh enough to
    /// reject most non-members without scanning).
    floor: u32,
    rng: u64,
}

/// `DECAY[c]` = b^-c scaled to u32: the chance a colliding key decrements a count of `c`.
fn decay_threshold(count: u32) -> u32 {
    static TABLE: std::sync::LazyLock<[u32; 256]> = std::sync::LazyLock::new(|| {
        let mut t = [0u32; 256];
        for (c, v) in t.iter_mut().enumerate() {
            *v = (DECAY_BASE.powi(-(c as i32)) * u32::MAX as f64) as u32;
        }
        t
    });
    TABLE.get(count as usize).copied().unwrap_or(0)
}

impl Shard {
    /// A shard keeping `k` candidates in `DEPTH` rows of `width` (rounded up to a power of two).
    pub fn new(k: usize, width: usize, seed: u64) -> Shard {
        let width = width.max(16).next_power_of_two();
        Shard {
            buckets: vec![Bucket::default(); DEPTH * width].into_boxed_slice(),
            width,
            top: Vec::with_capacity(k),
            hashes: Vec::with_capacity(k),
            k: k.max(1),
            floor: 0,
            rng: seed | 1,
        }
    }

    /// Bytes this shard holds (buckets, candidates and their keys).
    pub fn memory(&self) -> usize {
        self.buckets.len() * std::mem::size_of::<Bucket>()
            + self.top.capacity() * std::mem::size_of::<Candidate>()
            + self.top.iter().map(|c| c.key.len()).sum::<usize>()
    }

    fn next_u32(&mut self) -> u32 {
        // xorshift64: plenty for a coin flip, one cycle of work.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        (x >> 32) as u32
    }

    /// Counts one (sampled) access of `key`, whose hash is `hash`.
    pub fn record(&mut self, hash: u64, key: &[u8]) {
        let fp = ((hash >> 32) as u32) | 1;
        let step = fp.rotate_left(11) | 1;
        let mut est = 0u32;
        for row in 0..DEPTH {
            let col = (hash as u32).wrapping_add(step.wrapping_mul(row as u32)) as usize
                & (self.width - 1);
            let i = row * self.width + col;
            let b = self.buckets[i];
            if b.count == 0 {
                self.buckets[i] = Bucket { fp, count: 1 };
                est = est.max(1);
            } else if b.fp == fp {
                let count = b.count.saturating_add(1);
                self.buckets[i].count = count;
                est = est.max(count);
            } else if self.next_u32() < decay_threshold(b.count) {
                let count = b.count - 1;
                self.buckets[i] = if count == 0 {
                    est = est.max(1);
                    Bucket { fp, count: 1 }
                } else {
                    Bucket { fp: b.fp, count }
                };
            }
        }
        if est > 0 {
            self.offer(hash, key, est);
        }
    }

    /// Updates the candidate list with `key`'s new estimate.
    fn offer(&mut self, hash: u64, key: &[u8], est: u32) {
        let member = self
            .hashes
            .iter()
            .enumerate()
            .filter(|(_, &h)| h == hash)
            .map(|(i, _)| i)
            .find(|&i| *self.top[i].key == *key);
        if let Some(i) = member {
            self.top[i].count = est;
            return;
        }
        if self.top.len() < self.k {
            self.top.push(Candidate {
                hash,
                key: key.into(),
                count: est,
            });
            self.hashes.push(hash);
            if self.top.len() == self.k {
                self.floor = self.min_count();
            }
            return;
        }
        if est <= self.floor {
            return;
        }
        let (at, min) = self
            .top
            .iter()
            .enumerate()
            .min_by_key(|(_, c)| c.count)
            .map(|(i, c)| (i, c.count))
            .expect("k >= 1");
        if est > min {
            self.top[at] = Candidate {
                hash,
                key: key.into(),
                count: est,
            };
            self.hashes[at] = hash;
        }
        self.floor = self.min_count();
    }

    fn min_count(&self) -> u32 {
        self.top.iter().map(|c| c.count).min().unwrap_or(0)
    }

    /// Halves every count (the time decay); candidates that reach 0 leave the list.
    pub fn halve(&mut self) {
        for b in self.buckets.iter_mut() {
            b.count >>= 1;
        }
        for c in self.top.iter_mut() {
            c.count >>= 1;
        }
        self.top.retain(|c| c.count > 0);
        self.hashes.clear();
        self.hashes.extend(self.top.iter().map(|c| c.hash));
        self.floor = if self.top.len() == self.k {
            self.min_count()
        } else {
            0
        };
    }

    /// The current candidates.
    pub fn candidates(&self) -> &[Candidate] {
        &self.top
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(key: &[u8]) -> u64 {
        ahash::RandomState::with_seeds(1, 2, 3, 4).hash_one(key)
    }

    #[test]
    fn a_repeated_key_counts_exactly_without_collisions() {
        let mut s = Shard::new(4, 64, 7);
        for _ in 0..100 {
            s.record(h(b"k"), b"k");
        }
        assert_eq!(s.candidates().len(), 1);
        assert_eq!(s.candidates()[0].count, 100);
        s.halve();
        assert_eq!(s.candidates()[0].count, 50);
    }

    #[test]
    fn candidates_never_exceed_k_and_memory_is_fixed() {
        let mut s = Shard::new(8, 64, 7);
        let before = s.memory();
        for i in 0..10_000u32 {
            let k = i.to_be_bytes();
            s.record(h(&k), &k);
        }
        assert!(s.candidates().len() <= 8);
        // Buckets are fixed; only the (at most k) candidate keys add bytes.
        assert!(s.memory() <= before + 8 * 4);
    }
}

//! Per-key access metadata for eviction: the policy names, Redis's LRU clock and LFU log
//! counter packed into a node's 32-bit `access` word, and the SIEVE visited bit.
//!
//! The word is interpreted by the policy in force, like Redis's 24-bit `lru` field: an LRU clock
//! in milliseconds (wrapping every 49 days; idle times are differences, so wrapping is harmless)
//! or, under the LFU policies, 16 bits of minutes and an 8-bit logarithmic counter. Switching
//! between LRU and LFU at runtime reinterprets old words, which then take a while to adjust —
//! exactly what Redis warns about in OBJECT FREQ's error.

use super::shard::Node;
use rand::Rng;

/// A `maxmemory-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    NoEviction,
    AllkeysLru,
    AllkeysLfu,
    AllkeysRandom,
    VolatileLru,
    VolatileLfu,
    VolatileRandom,
    VolatileTtl,
    /// SIEVE (Zhang et al., NSDI'24): a FIFO per slot with a visited bit and a moving hand.
    AllkeysSieve,
    /// TinyLFU admission over sampled LRU (`store::tinylfu`).
    AllkeysTinyLfu,
}

impl Policy {
    /// Every policy, in the order of the `maxmemory-policy` parameter's word list.
    pub const ALL: [Policy; 10] = [
        Policy::NoEviction,
        Policy::AllkeysLru,
        Policy::AllkeysLfu,
        Policy::AllkeysRandom,
        Policy::VolatileLru,
        Policy::VolatileLfu,
        Policy::VolatileRandom,
        Policy::VolatileTtl,
        Policy::AllkeysSieve,
        Policy::AllkeysTinyLfu,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Policy::NoEviction => "noeviction",
            Policy::AllkeysLru => "allkeys-lru",
            Policy::AllkeysLfu => "allkeys-lfu",
            Policy::AllkeysRandom => "allkeys-random",
            Policy::VolatileLru => "volatile-lru",
            Policy::VolatileLfu => "volatile-lfu",
            Policy::VolatileRandom => "volatile-random",
            Policy::VolatileTtl => "volatile-ttl",
            Policy::AllkeysSieve => "allkeys-sieve",
            Policy::AllkeysTinyLfu => "allkeys-tinylfu",
        }
    }

    pub fn from_name(s: &str) -> Option<Policy> {
        Policy::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
    }

    pub fn is_lfu(self) -> bool {
        matches!(self, Policy::AllkeysLfu | Policy::VolatileLfu)
    }

    /// Only keys with a TTL may be evicted.
    pub fn volatile_only(self) -> bool {
        matches!(
            self,
            Policy::VolatileLru
                | Policy::VolatileLfu
                | Policy::VolatileRandom
                | Policy::VolatileTtl
        )
    }

    pub(super) fn from_u8(n: u8) -> Policy {
        Policy::ALL[n as usize]
    }

    pub(super) fn to_u8(self) -> u8 {
        Policy::ALL.iter().position(|p| *p == self).unwrap_or(0) as u8
    }
}

/// Redis's LFU_INIT_VAL: a new key starts above zero so it is not evicted before it had a
/// chance to be read again.
const LFU_INIT: u32 = 5;

/// The LFU clock: minutes, 16 bits (wraps every 45 days, as in Redis).
fn lfu_minutes(now_ms: u64) -> u32 {
    ((now_ms / 60_000) & 0xFFFF) as u32
}

/// The LRU clock: milliseconds, wrapping.
pub fn lru_clock(now_ms: u64) -> u32 {
    now_ms as u32
}

/// The access word of a key created now.
pub fn fresh(lfu: bool, now_ms: u64) -> u32 {
    if lfu {
        lfu_minutes(now_ms) << 8 | LFU_INIT
    } else {
        lru_clock(now_ms)
    }
}

/// Milliseconds since the last access recorded in an LRU word.
pub fn idle_ms(access: u32, now_ms: u64) -> u64 {
    lru_clock(now_ms).wrapping_sub(access) as u64
}

/// The LFU counter after decay: one less per `decay_minutes` elapsed (0 = never decays).
pub fn lfu_count(access: u32, now_ms: u64, decay_minutes: u32) -> u8 {
    let counter = access & 0xFF;
    if decay_minutes == 0 {
        return counter as u8;
    }
    let then = access >> 8;
    let now = lfu_minutes(now_ms);
    let elapsed = if now >= then {
        now - then
    } else {
        0xFFFF - then + now
    };
    counter.saturating_sub(elapsed / decay_minutes) as u8
}

/// Redis's LFULogIncr: the counter grows with probability 1/((c − 5)·factor + 1), so it reaches
/// 255 only after about a million hits with factor 10.
fn lfu_incr(counter: u8, log_factor: u32) -> u8 {
    if counter == 255 {
        return 255;
    }
    let base = (counter as u32).saturating_sub(LFU_INIT) as f64;
    let p = 1.0 / (base * log_factor as f64 + 1.0);
    if rand::thread_rng().gen::<f64>() < p {
        counter + 1
    } else {
        counter
    }
}

/// How accesses are recorded; copied out of the eviction settings once per access.
#[derive(Debug, Clone, Copy)]
pub struct Tracking {
    pub lfu: bool,
    pub log_factor: u32,
    pub decay_minutes: u32,
}

impl Tracking {
    /// Records one access to `node` at `now_ms`.
    #[inline]
    pub fn touch(self, node: &mut Node, now_ms: u64) {
        node.visited = true;
        node.access = if self.lfu {
            let c = lfu_count(node.access, now_ms, self.decay_minutes);
            lfu_minutes(now_ms) << 8 | lfu_incr(c, self.log_factor) as u32
        } else {
            lru_clock(now_ms)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Policy::ALL {
            assert_eq!(Policy::from_name(p.name()), Some(p));
            assert_eq!(Policy::from_u8(p.to_u8()), p);
        }
    }

    #[test]
    fn lfu_counter_is_logarithmic_like_redis() {
        let mut c = LFU_INIT as u8;
        for _ in 0..1000 {
            c = lfu_incr(c, 10);
        }
        // Redis's table: about 18 after 1K hits with factor 10.
        assert!((12..=25).contains(&c), "{c}");
    }

    #[test]
    fn lfu_decays_one_per_period() {
        let now = 10 * 60_000;
        let word = lfu_minutes(now - 3 * 60_000) << 8 | 20;
        assert_eq!(lfu_count(word, now, 1), 17);
        assert_eq!(lfu_count(word, now, 0), 20);
    }
}

//! The sketch against exact counts: skewed streams, bounded memory, decay, rates.

use super::*;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

/// A Zipf(s)-distributed stream of `n` accesses over `keys` keys, and the exact counts.
fn zipf_stream(seed: u64, keys: usize, n: usize, s: f64) -> (Vec<usize>, Vec<u64>) {
    let weights: Vec<f64> = (1..=keys).map(|i| 1.0 / (i as f64).powf(s)).collect();
    let total: f64 = weights.iter().sum();
    let mut cdf = Vec::with_capacity(keys);
    let mut acc = 0.0;
    for w in &weights {
        acc += w / total;
        cdf.push(acc);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut counts = vec![0u64; keys];
    // Key ids are shuffled so "hot" is not "small id".
    let mut ids: Vec<usize> = (0..keys).collect();
    for i in (1..keys).rev() {
        ids.swap(i, rng.gen_range(0..=i));
    }
    let stream: Vec<usize> = (0..n)
        .map(|_| {
            let u: f64 = rng.gen();
            let rank = cdf.partition_point(|&c| c < u).min(keys - 1);
            counts[ids[rank]] += 1;
            ids[rank]
        })
        .collect();
    (stream, counts)
}

fn key(id: usize) -> Vec<u8> {
    format!("user:{id:07}").into_bytes()
}

fn true_top(counts: &[u64], n: usize) -> Vec<usize> {
    let mut ids: Vec<usize> = (0..counts.len()).collect();
    ids.sort_by_key(|&i| std::cmp::Reverse(counts[i]));
    ids.truncate(n);
    ids
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// A skewed stream: the sketch's top 10 holds at least 9 of the true top 10, and the
    /// hottest key's rate is within 10% of its true rate.
    #[test]
    fn skewed_stream_finds_the_true_top_keys(seed in any::<u64>()) {
        let hk = HotKeys::new(32, 0, 1);
        let start = *hk.last_decay.lock();
        let (stream, counts) = zipf_stream(seed, 20_000, 100_000, 1.1);
        for &id in &stream {
            hk.record(&key(id));
        }
        // All of it within the first second: the rate is count / (1 + 0.5) at t = 0.5 s.
        let top = hk.top_at(10, start + Duration::from_millis(500));
        let want = true_top(&counts, 10);
        let found = want.iter().filter(|&&id| top.iter().any(|h| *h.key == key(id)[..])).count();
        prop_assert!(found >= 9, "found {found} of the true top 10");
        let hottest = counts[want[0]] as f64 / 1.5;
        prop_assert!((top[0].rate - hottest).abs() <= hottest * 0.1, "{} vs {hottest}", top[0].rate);
    }
}

#[test]
fn memory_is_bounded_by_k_not_by_the_keys_seen() {
    let hk = HotKeys::new(32, 0, 1);
    for i in 0..1_000 {
        hk.record(&key(i));
    }
    let after_1k = hk.memory();
    for i in 0..200_000 {
        hk.record(&key(i));
    }
    assert!(hk.tracked() <= 32 * SHARDS);
    // Only the candidates' keys (at most 16·k of 12 bytes) can add to the fixed buckets.
    assert!(
        hk.memory() <= after_1k + 32 * SHARDS * 12,
        "{} vs {after_1k}",
        hk.memory()
    );
    assert!(hk.memory() < 256 * 1024, "{} bytes", hk.memory());
}

#[test]
fn a_steady_rate_is_reported_in_ops_per_second() {
    let hk = HotKeys::new(8, 0, 1);
    let start = *hk.last_decay.lock();
    for sec in 1..=6u64 {
        for _ in 0..400 {
            hk.record(b"steady");
        }
        for _ in 0..50 {
            hk.record(b"slow");
        }
        hk.refresh(start + Duration::from_secs(sec));
    }
    let top = hk.top_at(2, start + Duration::from_secs(6));
    assert_eq!(&*top[0].key, b"steady");
    assert!((top[0].rate - 400.0).abs() < 20.0, "{}", top[0].rate);
    assert_eq!(&*top[1].key, b"slow");
    assert!((top[1].rate - 50.0).abs() < 5.0, "{}", top[1].rate);
}

#[test]
fn decay_makes_a_formerly_hot_key_fall_out() {
    let hk = HotKeys::new(4, 100, 1);
    let start = *hk.last_decay.lock();
    for _ in 0..5_000 {
        hk.record(b"was-hot");
    }
    hk.refresh(start + Duration::from_millis(500));
    assert!(hk.is_hot(b"was-hot"));
    // Then only other keys, 200/s each, for 12 seconds.
    for sec in 1..=12u64 {
        for i in 0..6 {
            for _ in 0..200 {
                hk.record(format!("now-{i}").as_bytes());
            }
        }
        hk.refresh(start + Duration::from_secs(sec));
    }
    let top = hk.top_at(4, start + Duration::from_secs(12));
    assert!(
        top.iter().all(|h| &*h.key != b"was-hot"),
        "still listed: {top:?}"
    );
    assert!(!hk.is_hot(b"was-hot"));
    assert!(hk.is_hot(b"now-0"));
}

#[test]
fn the_threshold_decides_what_is_hot() {
    let hk = HotKeys::new(8, 300, 1);
    let start = *hk.last_decay.lock();
    for _ in 0..1_000 {
        hk.record(b"fast");
    }
    for _ in 0..100 {
        hk.record(b"slow");
    }
    hk.refresh(start);
    assert!(hk.is_hot(b"fast"));
    assert!(!hk.is_hot(b"slow"));
    assert!(!hk.is_hot(b"never-seen"));
    hk.configure(8, 50);
    hk.refresh(start);
    // A new threshold keeps the counts (only a new k starts over).
    assert!(hk.is_hot(b"slow"));
}

#[test]
fn sampling_still_estimates_rates() {
    let hk = HotKeys::new(8, 0, 8);
    let start = *hk.last_decay.lock();
    for _ in 0..80_000 {
        hk.record(b"sampled");
    }
    let top = hk.top_at(1, start);
    assert_eq!(&*top[0].key, b"sampled");
    assert!((top[0].rate - 80_000.0).abs() < 8_000.0, "{}", top[0].rate);
}

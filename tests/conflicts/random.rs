//! Randomized convergence: seeded random SET / APPEND / DEL / INCRBY / EXPIRE over a small
//! keyspace in three regions of different shapes (one node, two primaries splitting the slots,
//! one node) while random partitions, one-way blocks and impairments come and go; then heal.
//! Every region must end byte-identical through the protocol (DUMP and GET), and every pure
//! counter key (only INCRBY ever applied to it) must equal the exact sum of the acknowledged
//! increments. The seed is printed; `CONFLICTS_SEED=<n>` replays a run's operations.

use crate::common::cluster::key_slot;
use crate::regions::{RegionSpec, World};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::Value;
use std::time::Duration;

const ROUNDS: usize = 8;
const OPS_PER_ROUND: usize = 30;
const VALUES: [&str; 7] = ["1", "42", "-7", "abc", "x y", "", "3.5"];

/// `n` keys `<prefix><i>` in each half of the slot space (so the two-primary region serves
/// some from each primary).
fn keys(prefix: &str, n: usize) -> Vec<String> {
    let mut low = Vec::new();
    let mut high = Vec::new();
    for i in 0.. {
        let k = format!("{prefix}{i}");
        let half = if key_slot(k.as_bytes()) < 8192 {
            &mut low
        } else {
            &mut high
        };
        if half.len() < n {
            half.push(k);
        }
        if low.len() == n && high.len() == n {
            break;
        }
    }
    low.into_iter().chain(high).collect()
}

fn seed() -> u64 {
    match std::env::var("CONFLICTS_SEED") {
        Ok(s) => s
            .parse()
            .expect("CONFLICTS_SEED must be an unsigned integer"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

/// Changes the network at random; returns what it did.
fn shake(world: &World, rng: &mut StdRng) -> String {
    world.heal();
    world.net.clear_impairments();
    let n = world.regions.len();
    match rng.gen_range(0..5) {
        0 => "whole".into(),
        1 => {
            let r = rng.gen_range(0..n);
            let rest: Vec<usize> = (0..n).filter(|&o| o != r).collect();
            world.partition(&[r], &rest);
            format!("{} cut off", world.name(r))
        }
        2 => {
            world.split_all();
            "all apart".into()
        }
        3 => {
            let from = rng.gen_range(0..n);
            let to = (from + rng.gen_range(1..n)) % n;
            world.block_one_way(&[from], &[to]);
            format!("{} -> {} blocked", world.name(from), world.name(to))
        }
        _ => {
            // Reordering has its own test (rows::reordered_deltas).
            world.net.set_duplicate(0.2);
            world.net.set_loss(0.02);
            "duplicates, loss".into()
        }
    }
}

/// One random command on the mixed keys.
fn mixed_op(rng: &mut StdRng, key: &str) -> Vec<String> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    match rng.gen_range(0..10) {
        0..=2 => s(&["SET", key, VALUES[rng.gen_range(0..VALUES.len())]]),
        3 => s(&["APPEND", key, ["x", "7", "-"][rng.gen_range(0..3)]]),
        4 => s(&["DEL", key]),
        5 | 6 => s(&["INCRBY", key, &rng.gen_range(-20..=20).to_string()]),
        // Long TTLs never run out during the test; short ones all have by the final checks.
        7 => s(&["EXPIRE", key, &rng.gen_range(100..=1000).to_string()]),
        8 => s(&["PEXPIRE", key, &rng.gen_range(50..=400).to_string()]),
        _ => s(&[
            "SET",
            key,
            VALUES[rng.gen_range(0..VALUES.len())],
            "EX",
            "600",
        ]),
    }
}

#[tokio::test]
async fn random_ops_under_random_partitions() {
    let seed = seed();
    eprintln!("random convergence: CONFLICTS_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let world = World::start(
        &[
            RegionSpec::single(),
            RegionSpec::nodes(2, 0),
            RegionSpec::single(),
        ],
        &[("tombstone-grace", "200")],
    )
    .await;
    let counters = keys("rc", 2);
    let mixed = keys("rm", 3);
    let mut sums = vec![0i64; counters.len()];
    let mut touched = vec![false; counters.len()];
    let mut log: Vec<String> = Vec::new();
    let mut last_op = tokio::time::Instant::now();

    for round in 0..ROUNDS {
        let net = shake(&world, &mut rng);
        log.push(format!("-- round {round}: {net}"));
        for _ in 0..OPS_PER_ROUND {
            let r = rng.gen_range(0..world.regions.len());
            if rng.gen_bool(0.35) {
                let i = rng.gen_range(0..counters.len());
                let by: i64 = rng.gen_range(-100..=100);
                let res = world
                    .run(r, &["INCRBY", &counters[i], &by.to_string()])
                    .await;
                log.push(format!(
                    "{} INCRBY {} {by} -> {res:?}",
                    world.name(r),
                    counters[i]
                ));
                match res {
                    Ok(Value::Int(_)) => {
                        sums[i] += by;
                        touched[i] = true;
                    }
                    other => panic!(
                        "seed {seed}: INCRBY on a pure counter must succeed, got {other:?}\n{}",
                        log.join("\n")
                    ),
                }
            } else {
                let key = &mixed[rng.gen_range(0..mixed.len())];
                let args = mixed_op(&mut rng, key);
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                let res = world.run(r, &a).await;
                // Errors (INCRBY on a non-integer) are part of the game.
                log.push(format!("{} {} -> {res:?}", world.name(r), args.join(" ")));
            }
            last_op = tokio::time::Instant::now();
        }
        // Part of the scenario: the network stays in this state a random while, so that
        // membership may judge peers down and links may reconnect, or not.
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..700))).await;
    }
    world.heal();
    world.net.clear_impairments();
    // Every PEXPIRE deadline (at most 400 ms) has passed before the values are compared
    // twice below; this is the last moment one of them could change a key.
    tokio::time::sleep_until(last_op + Duration::from_millis(450)).await;

    let all: Vec<String> = counters.iter().chain(&mixed).cloned().collect();
    let values = match world.try_converged(&all).await {
        Ok(v) => v,
        Err(e) => panic!("seed {seed}: {e}\noperations:\n{}", log.join("\n")),
    };
    for (i, k) in counters.iter().enumerate() {
        let want = touched[i].then(|| sums[i].to_string().into_bytes());
        assert_eq!(
            values[i],
            want,
            "seed {seed}: counter {k} is not the sum of its acknowledged increments\n{}\noperations:\n{}",
            world.explain(k).await,
            log.join("\n")
        );
    }
    // Converged also means: nothing is still in flight that could change a key later.
    for r in 0..world.regions.len() {
        assert!(
            world.synced(r, 5000).await,
            "seed {seed}: region {} is not synced after the heal\n{}",
            world.name(r),
            world.dump().await
        );
    }
    let again = world
        .try_converged(&all)
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    assert_eq!(
        again, values,
        "seed {seed}: values changed after every region was synced"
    );
    world.shutdown().await;
}

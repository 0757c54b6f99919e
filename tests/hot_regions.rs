//! Replication scope and hot keys across regions (docs/regions.md, "Replication scope and hot
//! keys"): two in-process regions over real QUIC, `repl-scope "s:* hot, * all"`.
//!
//! - a cold `s:` key written in one region is invalidated (absent) in the other, never shipped;
//! - a hot `s:` key's value arrives, promptly;
//! - counters under `hot` scope still ship in full (no increment lost), `all` keys too;
//! - the bytes a region link sends for a cold-heavy workload drop versus the same workload
//!   under `all`.

mod common;
#[path = "common/regions.rs"]
mod regions;
#[path = "common/relay.rs"]
mod relay;

use common::{eventually, info_field};
use redis::aio::MultiplexedConnection;
use regions::{RegionSpec, World};
use std::time::{Duration, Instant};

async fn get(c: &mut MultiplexedConnection, key: &str) -> Option<String> {
    q!(*c, "GET", key).expect("GET")
}

/// `bytes_sent` of the link from node 0 of region `r` to region `peer` (INFO regions).
async fn bytes_sent(world: &World, r: usize, peer: &str) -> u64 {
    let info = world.info(r, 0, "regions").await;
    let line = info_field(&info, &format!("peer_region_{peer}")).expect("peer region line");
    line.split(',')
        .find_map(|f| f.strip_prefix("bytes_sent="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no bytes_sent in {line}"))
}

/// Writes `n` keys `prefix:i` with 1 KiB values that do not compress, pipelined.
async fn write_big(c: &mut MultiplexedConnection, prefix: &str, n: usize) {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut p = redis::pipe();
    for i in 0..n {
        let v: String = (0..64)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                format!("{x:016x}")
            })
            .collect();
        p.cmd("SET").arg(format!("{prefix}:{i}")).arg(v).ignore();
    }
    let r: redis::RedisResult<()> = tokio::time::timeout(Duration::from_secs(20), p.query_async(c))
        .await
        .expect("pipeline timed out");
    r.expect("pipelined SETs");
}

#[tokio::test]
async fn hot_scope_ships_hot_keys_and_invalidates_cold_ones() {
    let world = World::start(
        &[RegionSpec::single(), RegionSpec::single()],
        &[
            ("repl-scope", "s:* hot, * all"),
            ("hotkeys-threshold", "50"),
        ],
    )
    .await;
    let (a, b) = (0, 1);
    let mut ca = world.con(a, 0).await;
    let mut cb = world.con(b, 0).await;

    // A cold key: each region's write only invalidates the other's copy.
    let _: () = q!(cb, "SET", "s:cold", "from-b").unwrap();
    assert_eq!(world.wait_regions(b, 0, 1, 5000).await, 1);
    assert_eq!(
        get(&mut ca, "s:cold").await,
        None,
        "a cold value crossed regions"
    );
    let _: () = q!(ca, "SET", "s:cold", "from-a").unwrap();
    assert_eq!(world.wait_regions(a, 0, 1, 5000).await, 1);
    assert_eq!(get(&mut cb, "s:cold").await, None, "b kept its older copy");
    assert_eq!(get(&mut ca, "s:cold").await.as_deref(), Some("from-a"));
    let info_b = world.info(b, 0, "hotkeys").await;
    let applied: u64 = info_field(&info_b, "hotkeys_invalidations_applied")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(applied >= 1, "{info_b}");
    // B refills locally: a newer write there stays (and invalidates a's older copy in turn).
    let _: () = q!(cb, "SET", "s:cold", "refill-b").unwrap();
    assert_eq!(world.wait_regions(b, 0, 1, 5000).await, 1);
    assert_eq!(get(&mut cb, "s:cold").await.as_deref(), Some("refill-b"));
    assert_eq!(get(&mut ca, "s:cold").await, None);

    // A hot key: read it a lot in region a, then write it; region b gets the value promptly.
    let mut p = redis::pipe();
    for _ in 0..4000 {
        p.cmd("GET").arg("s:hot").ignore();
    }
    let _: () = p.query_async(&mut ca).await.unwrap();
    let hot = eventually(Duration::from_secs(2), || {
        let world = &world;
        async move {
            let info = world.info(a, 0, "hotkeys").await;
            info_field(&info, "hotkeys_hot").is_some_and(|n| n != "0")
        }
    })
    .await;
    assert!(hot, "{}", world.info(a, 0, "hotkeys").await);
    let _: () = q!(ca, "SET", "s:hot", "v1").unwrap();
    let t = Instant::now();
    let arrived = eventually(Duration::from_secs(5), || {
        let mut cb = cb.clone();
        async move { get(&mut cb, "s:hot").await.as_deref() == Some("v1") }
    })
    .await;
    assert!(arrived, "the hot key's value never reached region b");
    let lag = t.elapsed();
    assert!(lag < Duration::from_secs(2), "took {lag:?}");

    // Counters under `hot` scope and keys under `all` ship in full.
    let _: i64 = q!(ca, "INCRBY", "s:count", 5).unwrap();
    let _: i64 = q!(cb, "INCRBY", "s:count", 7).unwrap();
    let _: () = q!(ca, "SET", "u:plain", "x").unwrap();
    assert_eq!(world.wait_regions(a, 0, 1, 5000).await, 1);
    assert_eq!(world.wait_regions(b, 0, 1, 5000).await, 1);
    assert_eq!(get(&mut ca, "s:count").await.as_deref(), Some("12"));
    assert_eq!(get(&mut cb, "s:count").await.as_deref(), Some("12"));
    assert_eq!(get(&mut cb, "u:plain").await.as_deref(), Some("x"));

    // WAN bytes: 300 cold 1 KiB writes under `hot` cost a fraction of the same under `all`.
    let before = bytes_sent(&world, a, "b").await;
    write_big(&mut ca, "u", 300).await;
    assert_eq!(world.wait_regions(a, 0, 1, 10_000).await, 1);
    let mid = bytes_sent(&world, a, "b").await;
    write_big(&mut ca, "s", 300).await;
    assert_eq!(world.wait_regions(a, 0, 1, 10_000).await, 1);
    let after = bytes_sent(&world, a, "b").await;
    let (all, hot) = (mid - before, after - mid);
    eprintln!("hot key lag {lag:?}; bytes a->b for 300 x 1 KiB: all {all}, hot-scope cold {hot}");
    assert!(all > 250 * 1024, "scope all sent only {all} bytes");
    assert!(
        hot * 10 < all,
        "scope hot sent {hot} bytes vs {all} under all"
    );
    assert_eq!(get(&mut cb, "u:7").await.map(|v| v.len()), Some(1024));
    assert_eq!(get(&mut cb, "s:7").await, None);
    world.shutdown().await;
}

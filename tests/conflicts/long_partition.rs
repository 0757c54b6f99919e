//! A partition much longer than `tombstone-grace`, with one side writing far more than the
//! other: after the heal every write made on either side is in every region.
//!
//! This is the regression test of a data-loss bug: the collector used to raise its "stale"
//! threshold to what the *peers* had acknowledged of *our* writes. The side with little to send
//! got its acks first after the heal, raised the threshold to about "now", and then dropped the
//! other side's partition-time writes (older stamps, keys it did not hold) as late duplicates,
//! while acknowledging them, so they were never sent again. Stale-dropping now needs the
//! sender's own promise that the delta was already delivered.

use crate::common::info_field;
use crate::regions::{RegionSpec, World};
use std::time::Duration;

/// Writes `n` keys `prefix:0..n` on node 0 of region `r`, pipelined.
async fn write_keys(world: &World, r: usize, prefix: &str, from: usize, n: usize) {
    let mut con = world.con(r, 0).await;
    let mut pipe = redis::pipe();
    for i in from..from + n {
        pipe.cmd("SET").arg(format!("{prefix}:{i}")).arg(i).ignore();
    }
    let _: () = tokio::time::timeout(Duration::from_secs(30), pipe.query_async(&mut con))
        .await
        .expect("pipeline timed out")
        .expect("pipelined SETs");
}

async fn dbsize(world: &World, r: usize) -> i64 {
    let mut con = world.con(r, 0).await;
    crate::q!(con, "DBSIZE").expect("DBSIZE")
}

#[tokio::test]
async fn writes_from_a_partition_longer_than_the_grace_are_never_dropped() {
    let spec = RegionSpec::single()
        .opt("tombstone-grace", "100")
        .opt("hz", "100");
    let world = World::start(&[spec.clone(), spec], &[]).await;
    let (a, b) = (0, 1);
    // Forming the world leaves its probe keys behind.
    let base = dbsize(&world, a).await;
    world.partition(&[a], &[b]);
    // Region b writes a large backlog spread over the partition; region a writes a little
    // (and deletes a little, so both sides have tombstones to collect).
    let per_round = 8_000;
    for round in 0..3 {
        write_keys(&world, b, "b", round * per_round, per_round).await;
        write_keys(&world, a, "a", round * 10, 10).await;
        world
            .run(a, &["DEL", &format!("a:{}", round * 10)])
            .await
            .expect("DEL");
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    world.heal();
    let want = base + (3 * per_round + 3 * 10 - 3) as i64;
    let ok = crate::common::eventually(Duration::from_secs(40), || async {
        dbsize(&world, a).await == want && dbsize(&world, b).await == want
    })
    .await;
    let (da, db) = (dbsize(&world, a).await, dbsize(&world, b).await);
    let stale = |info: String| info_field(&info, "crdt_merges_dropped_stale").unwrap_or_default();
    let sa = stale(world.info(a, 0, "crdt").await);
    let sb = stale(world.info(b, 0, "crdt").await);
    assert!(
        ok,
        "keys after the heal: {da} in a, {db} in b, want {want}; dropped as stale: {sa} in a, {sb} in b"
    );
    world.shutdown().await;
}

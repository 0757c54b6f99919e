//! Counters and registers across node restarts and failovers, with other regions writing all
//! along: an acknowledged increment is counted exactly once in every region, never lost and
//! never doubled (DESIGN.md §2: an actor's totals stay monotonic across restart and failover).
//!
//! - restart: append-only log on, a node stopped and restarted with the same ports and data
//!   directory, including increments it accepted while cut from the other region;
//! - failover: a region with a replica loses its primary, the replica takes over;
//! - failover in one region while the regions are partitioned.

use crate::regions::{RegionSpec, World};
use redis::Value;
use std::time::Duration;

async fn int(world: &World, r: usize, args: &[&str]) -> i64 {
    match world.run(r, args).await {
        Ok(Value::Int(n)) => n,
        other => panic!("{args:?} in {}: {other:?}", world.name(r)),
    }
}

async fn incr_times(world: &World, r: usize, key: &str, by: i64, n: usize) -> i64 {
    let by = by.to_string();
    for _ in 0..n {
        int(world, r, &["INCRBY", key, &by]).await;
    }
    by.parse::<i64>().unwrap() * n as i64
}

async fn get(world: &World, r: usize, key: &str) -> Option<Vec<u8>> {
    match world.run(r, &["GET", key]).await {
        Ok(Value::BulkString(b)) => Some(b),
        Ok(Value::Nil) => None,
        other => panic!("GET {key} in {}: {other:?}", world.name(r)),
    }
}

/// Asserts that every region converges on `key` = `want` (bounded). Regions can agree for a
/// moment on an earlier state around a failover: under CI load both regions once read 161
/// right after an INCRBY 1000 was acknowledged in region a (just after its old primary
/// restarted), and a read 1161 a moment later. The cause is not established (suspected: the
/// restarted old primary serving from its layout before it learns of the promotion); the
/// final value must still be exact, which is what this asserts.
async fn expect_all(world: &World, key: &str, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let v = world.converged(&[key.to_string()]).await;
        let got = v[0].as_deref().map(String::from_utf8_lossy);
        if got.as_deref() == Some(want) {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "{key}: regions agree on {got:?}, want {want}\n{}",
                world.explain(key).await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `WAIT 1 <ms>` on node `i` of region `r`: how many replicas acknowledged.
async fn wait_replica(world: &World, r: usize, i: usize) -> i64 {
    let mut con = world.con(r, i).await;
    crate::q!(con, "WAIT", 1, 3000).expect("WAIT")
}

/// Waits (bounded) until node `i` of region `r` serves slots as a primary.
async fn promoted(world: &World, r: usize, i: usize) {
    let ok = crate::common::eventually(Duration::from_secs(20), || async {
        world.primaries(r).await.iter().any(|(n, _)| *n == i)
    })
    .await;
    assert!(
        ok,
        "node {i} of {} was never promoted:\n{}",
        world.name(r),
        world.dump().await
    );
    world.reconnect(r).await;
}

#[tokio::test]
async fn counters_through_restart() {
    let spec = RegionSpec::single()
        .opt("appendonly", "yes")
        .opt("appendfsync", "always");
    let mut world = World::start(&[spec.clone(), spec], &[]).await;
    let (a, b) = (0, 1);
    let mut total = 0;
    total += incr_times(&world, a, "rc", 5, 4).await;
    total += incr_times(&world, b, "rc", 1, 3).await;
    world.run(a, &["SET", "rs", "kept"]).await.expect("SET");
    expect_all(&world, "rc", &total.to_string()).await;

    // Increments a accepted while cut off, then a restart before it could ship them.
    world.split_all();
    total += incr_times(&world, a, "rc", 100, 1).await;
    let local_a = total;
    world.stop(a, 0).await;
    total += incr_times(&world, b, "rc", 7, 1).await;
    world.restart(a, 0).await;
    assert_eq!(
        get(&world, a, "rc").await,
        Some(local_a.to_string().into_bytes()),
        "after the restart a must hold what it acknowledged before (its log)"
    );
    assert_eq!(get(&world, a, "rs").await.as_deref(), Some(&b"kept"[..]));
    total += incr_times(&world, a, "rc", 1000, 1).await;
    world.heal();
    expect_all(&world, "rc", &total.to_string()).await;
    expect_all(&world, "rs", "kept").await;

    // Once more with the network whole: b's restart, increments on both sides.
    world.stop(b, 0).await;
    total += incr_times(&world, a, "rc", 3, 2).await;
    world.restart(b, 0).await;
    total += incr_times(&world, b, "rc", 2, 2).await;
    expect_all(&world, "rc", &total.to_string()).await;
    assert_eq!(total, 1140);
    world.shutdown().await;
}

#[tokio::test]
async fn counters_through_failover() {
    let mut world = World::start(&[RegionSpec::nodes(2, 1), RegionSpec::single()], &[]).await;
    let (a, b) = (0, 1);
    let mut total = 0;
    total += incr_times(&world, a, "fo", 10, 5).await;
    total += incr_times(&world, b, "fo", 1, 5).await;
    world
        .run(a, &["SET", "fo:reg", "before"])
        .await
        .expect("SET");
    assert_eq!(
        wait_replica(&world, a, 0).await,
        1,
        "the replica did not acknowledge"
    );

    world.stop(a, 0).await;
    // The other region keeps counting while a fails over.
    total += incr_times(&world, b, "fo", 1, 5).await;
    promoted(&world, a, 1).await;
    total += incr_times(&world, a, "fo", 100, 1).await;
    expect_all(&world, "fo", &total.to_string()).await;
    expect_all(&world, "fo:reg", "before").await;
    assert_eq!(total, 160);

    // The old primary comes back (as a replica of the new one), merges, and loses nothing.
    // Its layout still names it primary: until it has heard the new primary's record it must
    // not take a write for the slot it lost (it answers CLUSTERDOWN, or MOVED once it knows).
    world.restart(a, 0).await;
    let mut old = world.con(a, 0).await;
    let early: redis::RedisResult<Value> = redis::cmd("INCRBY")
        .arg("fo")
        .arg(1)
        .query_async(&mut old)
        .await;
    match early {
        Err(e)
            if matches!(
                e.kind(),
                redis::ErrorKind::ClusterDown | redis::ErrorKind::Moved
            ) => {}
        other => panic!("the restarted old primary answered INCRBY with {other:?}"),
    }
    total += incr_times(&world, a, "fo", 1000, 1).await;
    total += incr_times(&world, b, "fo", 1, 1).await;
    expect_all(&world, "fo", &total.to_string()).await;
    world.shutdown().await;
}

#[tokio::test]
async fn failover_during_a_partition() {
    let mut world = World::start(&[RegionSpec::nodes(2, 1), RegionSpec::single()], &[]).await;
    let (a, b) = (0, 1);
    world.run(a, &["SET", "fp:reg", "v0"]).await.expect("SET");
    world.converged(&["fp:reg".to_string()]).await;

    world.partition(&[a], &[b]);
    let mut total = 0;
    total += incr_times(&world, a, "fp:c", 10, 1).await;
    world
        .run(a, &["SET", "fp:reg", "a-old"])
        .await
        .expect("SET");
    world
        .run(a, &["SET", "fp:only-old", "from-old-primary"])
        .await
        .expect("SET");
    assert_eq!(
        wait_replica(&world, a, 0).await,
        1,
        "the replica did not acknowledge"
    );
    total += incr_times(&world, b, "fp:c", 1, 1).await;
    tokio::time::sleep(Duration::from_millis(5)).await; // later stamp than a's writes
    world.run(b, &["SET", "fp:reg", "b"]).await.expect("SET");

    // a's primary goes away while a cannot reach b: a's replica must take over on its own.
    world.stop(a, 0).await;
    promoted(&world, a, 1).await;
    total += incr_times(&world, a, "fp:c", 100, 1).await;
    world
        .run(a, &["SET", "fp:last", "a-new"])
        .await
        .expect("SET");
    assert_eq!(get(&world, a, "fp:c").await, Some(b"110".to_vec()));
    assert_eq!(
        get(&world, b, "fp:only-old").await,
        None,
        "the partition leaked"
    );

    world.heal();
    expect_all(&world, "fp:c", &total.to_string()).await;
    assert_eq!(total, 111);
    expect_all(&world, "fp:reg", "b").await;
    // Written only to the old primary during the partition: it reaches b through the replica
    // that took over.
    expect_all(&world, "fp:only-old", "from-old-primary").await;
    expect_all(&world, "fp:last", "a-new").await;
    world.shutdown().await;
}

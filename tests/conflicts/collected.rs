//! A counter counted again after its tombstone was collected in some regions but not in all:
//! the demo's bug (docs/operations.md, "Found by the demo"), over real QUIC through the relays.
//!
//! Regions a (the counting actor) and b (which deletes) collect tombstones 100 ms after every
//! peer has them; c keeps them for ten minutes, like a region whose collector lags (its links
//! restarted). a's INCR after its collection must show in c, whose tombstone observed a's first
//! increment. Before counters had epochs, a counted from 0 again, c took the new totals for the
//! ones its tombstone had observed and answered nil while a and b answered 1.
//!
//! The second test is the register-write variant (docs/operations.md, "a register write on a key
//! its node no longer holds"): b counts 3, a deletes and collects, b and c keep the tombstone;
//! a's `SET` must read the same everywhere. Before floors, b and c answered 8 instead of 5.

use crate::regions::{RegionSpec, World};
use redis::Value;
use std::time::Duration;

async fn get(world: &World, r: usize, key: &str) -> Option<Vec<u8>> {
    match world.run(r, &["GET", key]).await {
        Ok(Value::BulkString(b)) => Some(b),
        Ok(Value::Nil) => None,
        other => panic!("GET {key} in {}: {other:?}", world.name(r)),
    }
}

/// Whether the region's node holds the key at all (a tombstone counts; a collected key not).
async fn held(world: &World, r: usize, key: &str) -> bool {
    let e = world.run(r, &["MERIDIAN", "EXPLAIN", key]).await;
    !matches!(e, Ok(Value::Nil))
}

async fn incr(world: &World, r: usize, key: &str) -> i64 {
    match world.run(r, &["INCR", key]).await {
        Ok(Value::Int(n)) => n,
        other => panic!("INCR {key} in {}: {other:?}", world.name(r)),
    }
}

/// Waits (bounded) until every region reads `want` for `key`.
async fn everywhere(world: &World, key: &str, want: Option<&[u8]>) {
    let ok = crate::common::eventually(Duration::from_secs(15), || async {
        for r in 0..3 {
            if get(world, r, key).await.as_deref() != want {
                return false;
            }
        }
        true
    })
    .await;
    assert!(
        ok,
        "{key} is not {want:?} everywhere:\n{}",
        world.explain(key).await
    );
}

/// A region that collects tombstones 100 ms after every region acknowledged them, and one
/// that keeps them for ten minutes: the two sides of a collection race.
fn fast_and_slow_collectors() -> (RegionSpec, RegionSpec) {
    let collector = |grace: &str| {
        RegionSpec::single()
            .opt("tombstone-grace", grace)
            .opt("hz", "100")
    };
    (collector("100"), collector("600000"))
}

#[tokio::test]
async fn an_increment_after_collection_shows_where_the_tombstone_is_still_held() {
    let (fast, slow) = fast_and_slow_collectors();
    let world = World::start(&[fast.clone(), fast, slow], &[]).await;
    let (a, b, c) = (0, 1, 2);
    let key = "session-hits";
    assert_eq!(incr(&world, a, key).await, 1);
    everywhere(&world, key, Some(b"1")).await;
    let del = world.run(b, &["DEL", key]).await;
    assert!(matches!(del, Ok(Value::Int(1))), "DEL: {del:?}");
    everywhere(&world, key, None).await;
    let collected = crate::common::eventually(Duration::from_secs(15), || async {
        !held(&world, a, key).await && !held(&world, b, key).await
    })
    .await;
    assert!(
        collected,
        "a and b never collected the tombstone:\n{}",
        world.explain(key).await
    );
    assert!(
        held(&world, c, key).await,
        "c collected its tombstone too early"
    );
    assert_eq!(incr(&world, a, key).await, 1, "a counts a fresh key");
    everywhere(&world, key, Some(b"1")).await;
    // The new epoch goes on from there; a DEL in the lagging region observes all of it.
    assert_eq!(incr(&world, a, key).await, 2);
    everywhere(&world, key, Some(b"2")).await;
    let del = world.run(c, &["DEL", key]).await;
    assert!(matches!(del, Ok(Value::Int(1))), "DEL: {del:?}");
    everywhere(&world, key, None).await;
    world.shutdown().await;
}

async fn set(world: &World, r: usize, key: &str, value: &str) {
    let ok = world.run(r, &["SET", key, value]).await;
    assert!(matches!(ok, Ok(Value::Okay)), "SET {key}: {ok:?}");
}

#[tokio::test]
async fn a_set_after_collection_reads_the_same_everywhere() {
    let (fast, slow) = fast_and_slow_collectors();
    let world = World::start(&[fast, slow.clone(), slow], &[]).await;
    let (a, b, c) = (0, 1, 2);
    let key = "session-hits";
    let n = world.run(b, &["INCRBY", key, "3"]).await;
    assert!(matches!(n, Ok(Value::Int(3))), "INCRBY: {n:?}");
    everywhere(&world, key, Some(b"3")).await;
    let del = world.run(a, &["DEL", key]).await;
    assert!(matches!(del, Ok(Value::Int(1))), "DEL: {del:?}");
    everywhere(&world, key, None).await;
    let collected = crate::common::eventually(Duration::from_secs(15), || async {
        !held(&world, a, key).await
    })
    .await;
    assert!(
        collected,
        "a never collected the tombstone:\n{}",
        world.explain(key).await
    );
    assert!(held(&world, b, key).await && held(&world, c, key).await);
    set(&world, a, key, "5").await;
    everywhere(&world, key, Some(b"5")).await;
    // Increments after the SET add to it everywhere, b's (its epoch goes on) and c's.
    let n = world.run(b, &["INCR", key]).await;
    assert!(matches!(n, Ok(Value::Int(6))), "INCR in b: {n:?}");
    everywhere(&world, key, Some(b"6")).await;
    let n = world.run(c, &["INCRBY", key, "2"]).await;
    assert!(matches!(n, Ok(Value::Int(8))), "INCRBY in c: {n:?}");
    everywhere(&world, key, Some(b"8")).await;
    world.shutdown().await;
}

//! Clock skew between regions: region a runs with its clock 2 s fast (`debug-clock-offset`),
//! region b on time. A concurrent SET from the fast region wins even when it was issued first
//! in real time; the slow region raises a skew alarm (INFO `regions` and `crdt`) and the fast
//! one does not; and a write issued after seeing the fast region's write still wins, because
//! the slow region's clock moved past the stamp it received (DESIGN.md §2, last row).

use crate::common::info_field;
use crate::regions::{RegionSpec, World};
use std::time::{Duration, Instant};

const FAST: usize = 0;
const SLOW: usize = 1;

fn field(info: &str, name: &str) -> i64 {
    info_field(info, name)
        .unwrap_or_else(|| panic!("no {name} in INFO:\n{info}"))
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number in INFO:\n{info}"))
}

async fn get(world: &World, r: usize, key: &str) -> Option<String> {
    match world.run(r, &["GET", key]).await {
        Ok(redis::Value::BulkString(b)) => Some(String::from_utf8_lossy(&b).into_owned()),
        _ => None,
    }
}

async fn set(world: &World, r: usize, key: &str, value: &str) {
    world
        .run(r, &["SET", key, value])
        .await
        .unwrap_or_else(|e| panic!("SET {key} {value} in {}: {e}", world.name(r)));
}

#[tokio::test]
async fn a_region_two_seconds_fast() {
    let world = World::start(
        &[
            RegionSpec::single().opt("debug-clock-offset", "2000"),
            RegionSpec::single(),
        ],
        &[("max-clock-drift", "500")],
    )
    .await;

    // Concurrent SETs: the fast region writes first, the slow one 300 ms later in real time.
    world.split_all();
    set(&world, FAST, "sk1", "fast").await;
    // Part of the scenario, not a synchronisation: the slow region's write must be later in
    // real time than the fast one's, yet earlier by stamp.
    tokio::time::sleep(Duration::from_millis(300)).await;
    set(&world, SLOW, "sk1", "slow").await;
    assert_eq!(
        get(&world, SLOW, "sk1").await.as_deref(),
        Some("slow"),
        "the slow region saw the fast write during the partition"
    );
    world.heal();
    let v = world.converged(&["sk1".to_string()]).await;
    assert_eq!(
        v[0].as_deref(),
        Some(&b"fast"[..]),
        "the fast region's stamp is larger: its concurrent SET must win\n{}",
        world.explain("sk1").await
    );

    // The slow region received stamps 2 s ahead: alarms in both INFO sections; the fast one
    // never received a stamp ahead of its own clock.
    let ok = crate::common::eventually(Duration::from_secs(10), || async {
        let info = world.info(SLOW, 0, "regions").await;
        info_field(&info, "skew_alarms")
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
            > 0
    })
    .await;
    let regions = world.info(SLOW, 0, "regions").await;
    assert!(
        ok,
        "no skew alarm in the slow region's INFO regions:\n{regions}"
    );
    let crdt = world.info(SLOW, 0, "crdt").await;
    assert!(
        field(&crdt, "crdt_skew_alarms") > 0,
        "INFO crdt of the slow region:\n{crdt}"
    );
    let seen = field(&crdt, "crdt_max_skew_seen_ms");
    assert!(
        (1000..=4000).contains(&seen),
        "crdt_max_skew_seen_ms = {seen}, the skew is 2000 ms"
    );
    let fast = world.info(FAST, 0, "regions").await;
    assert_eq!(
        field(&fast, "skew_alarms"),
        0,
        "the fast region raised a skew alarm:\n{fast}"
    );

    // Causally later: the slow region writes right after it saw the fast region's write, while
    // its own physical clock is still 2 s behind that stamp; its write must win.
    set(&world, FAST, "sk2", "x").await;
    let t = Instant::now();
    let seen_x = crate::common::eventually(Duration::from_secs(10), || async {
        get(&world, SLOW, "sk2").await.as_deref() == Some("x")
    })
    .await;
    assert!(seen_x, "the slow region never received sk2");
    set(&world, SLOW, "sk2", "y").await;
    let lag = t.elapsed();
    assert!(
        lag < Duration::from_millis(1800),
        "the causal write came {lag:?} later: no longer inside the skew, nothing proved"
    );
    let v = world.converged(&["sk2".to_string()]).await;
    assert_eq!(
        v[0].as_deref(),
        Some(&b"y"[..]),
        "a write issued after seeing another must win, whatever the clocks\n{}",
        world.explain("sk2").await
    );

    // A TTL set by the slow region after seeing the fast region's EXPIRE decides too.
    world
        .run(FAST, &["SET", "sk3", "v", "EX", "5000"])
        .await
        .expect("SET EX");
    let seen = crate::common::eventually(Duration::from_secs(10), || async {
        matches!(world.run(SLOW, &["PTTL", "sk3"]).await, Ok(redis::Value::Int(p)) if p > 0)
    })
    .await;
    assert!(seen, "the slow region never received sk3's TTL");
    world.run(SLOW, &["PERSIST", "sk3"]).await.expect("PERSIST");
    world.converged(&["sk3".to_string()]).await;
    for r in [FAST, SLOW] {
        let p = world.run(r, &["PTTL", "sk3"]).await.expect("PTTL");
        assert_eq!(
            p,
            redis::Value::Int(-1),
            "{}: the causally later PERSIST lost\n{}",
            world.name(r),
            world.explain("sk3").await
        );
    }
    world.shutdown().await;
}

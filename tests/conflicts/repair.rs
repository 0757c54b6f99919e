//! Repair by per-slot digests (docs/regions.md, "Repair by digests"): a node that restarts from
//! its append-only log is brought up to date by comparing slot digests with the other region,
//! not by a full sync of every slot. Both sides end byte-identical, and the repair traffic
//! (`repair_bytes` in `INFO regions`) is a small fraction of what a full sync would ship.
//! Anti-entropy checks (`repl-antientropy`) run over the real mesh once configured.

use crate::common::peer_field;
use crate::regions::{RegionSpec, World};
use rand::Rng;
use std::time::Duration;

/// Keys loaded before the restart, and the bytes of each value.
const KEYS: usize = 10_000;
const VALUE: usize = 200;

/// Sets `keys` on node 0 of region `r` to random values, pipelined; returns the payload bytes.
async fn write(world: &World, r: usize, keys: &[String]) -> usize {
    let mut con = world.con(r, 0).await;
    let mut rng = rand::thread_rng();
    let mut bytes = 0;
    for chunk in keys.chunks(500) {
        let mut pipe = redis::pipe();
        for k in chunk {
            let v: String = (0..VALUE)
                .map(|_| rng.sample(rand::distributions::Alphanumeric) as char)
                .collect();
            bytes += k.len() + v.len();
            pipe.cmd("SET").arg(k).arg(v).ignore();
        }
        let _: () = tokio::time::timeout(Duration::from_secs(30), pipe.query_async(&mut con))
            .await
            .expect("pipeline timed out")
            .expect("pipelined SETs");
    }
    bytes
}

/// Field `name` of the `peer_region_<peer>` line node 0 of `r` reports in INFO regions.
async fn region_field(world: &World, r: usize, peer: usize, name: &str) -> u64 {
    let info = world.info(r, 0, "regions").await;
    peer_field(&info, world.name(peer), name)
        .unwrap_or_else(|| panic!("no {name} for {} in:\n{info}", world.name(peer)))
        .parse()
        .expect("a number")
}

/// (resync_rounds, repair_slots, repair_bytes) node 0 of `r` reports for region `peer`.
async fn repair_figures(world: &World, r: usize, peer: usize) -> (u64, u64, u64) {
    (
        region_field(world, r, peer, "resync_rounds").await,
        region_field(world, r, peer, "repair_slots").await,
        region_field(world, r, peer, "repair_bytes").await,
    )
}

/// `antientropy_checks` node 0 of `r` reports for region `peer`.
async fn checks(world: &World, r: usize, peer: usize) -> u64 {
    region_field(world, r, peer, "antientropy_checks").await
}

async fn dbsize(world: &World, r: usize) -> i64 {
    let mut con = world.con(r, 0).await;
    crate::q!(con, "DBSIZE").expect("DBSIZE")
}

#[tokio::test]
async fn a_restarted_node_is_repaired_by_digests_not_by_a_full_sync() {
    let spec = RegionSpec::single()
        .opt("appendonly", "yes")
        .opt("appendfsync", "everysec");
    let mut world = World::start(&[spec.clone(), spec], &[]).await;
    let (a, b) = (0, 1);
    let keys: Vec<String> = (0..KEYS).map(|i| format!("bulk:{i}")).collect();
    let full = write(&world, a, &keys).await;
    assert_eq!(
        world.wait_regions(a, 0, 1, 20_000).await,
        1,
        "b never got the load"
    );
    assert_eq!(world.wait_regions(b, 0, 1, 20_000).await, 1);
    let (rounds_before, _, bytes_before) = repair_figures(&world, a, b).await;

    // Cut off, both sides write (new keys and overwrites); then b restarts from its log, so
    // its writes are on its disk but in no outbox: only the repair can ship them.
    world.split_all();
    let on_a: Vec<String> = (0..40)
        .map(|i| format!("a:{i}"))
        .chain((0..40).map(|i| format!("bulk:{}", i * 97)))
        .collect();
    let on_b: Vec<String> = (0..40)
        .map(|i| format!("b:{i}"))
        .chain((0..40).map(|i| format!("bulk:{}", i * 89 + 1)))
        .collect();
    write(&world, a, &on_a).await;
    write(&world, b, &on_b).await;
    tokio::time::sleep(Duration::from_millis(1200)).await; // everysec: on b's disk
    world.stop(b, 0).await;
    world.restart(b, 0).await;
    world.heal();
    // b writes again as soon as it is back.
    let after: Vec<String> = (0..20).map(|i| format!("back:{i}")).collect();
    write(&world, b, &after).await;

    assert_eq!(
        world.wait_regions(a, 0, 1, 30_000).await,
        1,
        "a → b never caught up"
    );
    assert_eq!(
        world.wait_regions(b, 0, 1, 30_000).await,
        1,
        "b → a never caught up"
    );
    let size = dbsize(&world, a).await;
    assert_eq!(size, dbsize(&world, b).await, "DBSIZE differs");
    assert!(size >= (KEYS + 100) as i64, "DBSIZE {size}");
    let mut check: Vec<String> = on_a.iter().chain(&on_b).chain(&after).cloned().collect();
    check.extend((0..KEYS).step_by(53).map(|i| format!("bulk:{i}")));
    world.converged(&check).await;

    // Each side ran a repair round for the other; together they shipped under a tenth of the
    // data a full sync would have sent (either direction's full sync alone is `full` bytes;
    // 160 keys changed in 100-180 slots, ~500 B a slot, come to about 5%).
    let (rounds_a, slots_a, bytes_a) = repair_figures(&world, a, b).await;
    let (rounds_b, slots_b, bytes_b) = repair_figures(&world, b, a).await;
    assert!(
        rounds_a > rounds_before,
        "a ran no repair round for the restarted b"
    );
    assert!(rounds_b >= 1, "the restarted b ran no repair round");
    assert!(
        slots_b >= 1,
        "b found no differing slot, yet a missed b's writes from before the restart"
    );
    let repair = (bytes_a - bytes_before) + bytes_b;
    eprintln!(
        "repair: a→b {} B in {slots_a} slots ({} rounds), b→a {bytes_b} B in {slots_b} slots ({rounds_b} rounds); full sync {full} B",
        bytes_a - bytes_before,
        rounds_a - rounds_before
    );
    assert!(
        repair * 10 < full as u64,
        "repair shipped {repair} bytes (a: {} in {slots_a} slots, b: {bytes_b} in {slots_b} slots); a full sync is {full}",
        bytes_a - bytes_before
    );
    world.shutdown().await;
}

/// Anti-entropy over the real mesh (docs/regions.md, "Repair by digests"): once `CONFIG SET
/// repl-antientropy` gives a period, a quiet pair of regions checks each other's digests every
/// period (`antientropy_checks` in INFO regions) and, holding the same data, ships no slot; at 0
/// the checks stop.
#[tokio::test]
async fn quiet_regions_check_each_other_every_period_and_ship_nothing_when_equal() {
    let spec = RegionSpec::single();
    let world = World::start(&[spec.clone(), spec], &[]).await;
    let (a, b) = (0, 1);
    let keys: Vec<String> = (0..200).map(|i| format!("ae:{i}")).collect();
    write(&world, a, &keys).await;
    assert_eq!(world.wait_regions(a, 0, 1, 20_000).await, 1);
    for r in [a, b] {
        world
            .run(r, &["CONFIG", "SET", "repl-antientropy", "300"])
            .await
            .expect("CONFIG SET repl-antientropy");
    }
    let (rounds0, slots0, _) = repair_figures(&world, a, b).await;
    let checks0 = checks(&world, a, b).await;
    // Quiet for 1 s, then a check every 300 ms.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let (rounds1, slots1, _) = repair_figures(&world, a, b).await;
    let checks1 = checks(&world, a, b).await;
    assert!(
        checks1 >= checks0 + 2,
        "checks ran: antientropy_checks {checks0} -> {checks1}"
    );
    assert_eq!(
        (rounds1, slots1),
        (rounds0, slots0),
        "equal digests: no repair round, no slot shipped"
    );

    for r in [a, b] {
        world
            .run(r, &["CONFIG", "SET", "repl-antientropy", "0"])
            .await
            .expect("CONFIG SET repl-antientropy 0");
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // a check may be on its way
    let checks2 = checks(&world, a, b).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        checks(&world, a, b).await,
        checks2,
        "period 0: no more checks"
    );
    world.shutdown().await;
}

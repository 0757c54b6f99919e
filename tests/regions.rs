//! Active-active across regions as operators and clients see it: in-process regions (each a
//! hash-slot cluster of in-process nodes) that found each other through `region-peers` and
//! replicate over real QUIC with mutual TLS.
//!
//! - regions with different slot splits exchange every key (a delta goes to the owner of its
//!   slot in the other region) and `INFO regions` shows the links;
//! - a writer whose two peer regions split their slots alike sends both one batch built once
//!   (`batches_shared`), and both get every key;
//! - `MERIDIAN.WAITREGIONS` (cross-region WAIT) and its errors;
//! - a failover in a remote region moves the link to the promoted replica;
//! - tombstones are kept while a region is unreachable and collected once it acknowledged;
//! - a region whose clock runs 2 s fast raises a skew alarm, and causality still holds.
//!
//! The conflict table itself is tested in `tests/conflicts/`.

mod common;

use common::world::World;
use common::{info_field, peer_field};
use std::time::Duration;

type Con = redis::aio::MultiplexedConnection;

/// Flags per region for [`start`]: `(nodes, replicas, extra flags of every node)`.
type Layout<'a> = (usize, usize, &'a [(&'a str, &'a str)]);

async fn start(layout: &[Layout<'_>]) -> World {
    let shape: Vec<(usize, usize)> = layout.iter().map(|l| (l.0, l.1)).collect();
    World::start(&shape, |r, _| {
        layout[r]
            .2
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
    .await
}

async fn regions_info(con: &mut Con) -> String {
    q!(*con, "INFO", "regions").expect("INFO regions")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regions_with_different_slot_splits_exchange_every_key() {
    // r0: two primaries (slots split in two); r1: one node owning every slot.
    let w = start(&[(2, 0, &[]), (1, 0, &[])]).await;
    for i in 0..2 {
        w.wait_linked(0, i).await;
    }
    w.wait_linked(1, 0).await;
    let mut b = w.con(1, 0).await;
    let info = regions_info(&mut b).await;
    assert_eq!(
        peer_field(&info, "r0", "links").as_deref(),
        Some("2"),
        "{info}"
    );
    // Writes in r1 (one node) reach whichever r0 node owns each key's slot, and back.
    let client = redis::cluster::ClusterClient::new(vec![format!("redis://{}", w.node(0, 0).addr)])
        .expect("cluster client");
    let mut a = client
        .get_async_connection()
        .await
        .expect("cluster connection");
    for i in 0..200 {
        let () = q!(b, "SET", format!("from-b:{i}"), i).unwrap();
        let () = q!(a, "SET", format!("from-a:{i}"), i).unwrap();
        let _: i64 = q!(a, "INCRBY", format!("count:{}", i % 10), 1).unwrap();
        let _: i64 = q!(b, "INCRBY", format!("count:{}", i % 10), 2).unwrap();
    }
    let acked: i64 = q!(b, "MERIDIAN.WAITREGIONS", 1, 5000).unwrap();
    assert_eq!(acked, 1, "r1 waited for r0");
    for i in 0..2 {
        let mut c = w.con(0, i).await;
        let acked: i64 = q!(c, "MERIDIAN.WAITREGIONS", 1, 5000).unwrap();
        assert_eq!(acked, 1, "r0 node {i} waited for r1");
    }
    for i in 0..200 {
        let got: Option<String> = q!(b, "GET", format!("from-a:{i}")).unwrap();
        assert_eq!(got, Some(i.to_string()), "from-a:{i} in r1");
        let got: Option<String> = q!(a, "GET", format!("from-b:{i}")).unwrap();
        assert_eq!(got, Some(i.to_string()), "from-b:{i} in r0");
    }
    for k in 0..10 {
        let key = format!("count:{k}");
        let in_a: i64 = q!(a, "GET", &key).unwrap();
        let in_b: i64 = q!(b, "GET", &key).unwrap();
        assert_eq!((in_a, in_b), (60, 60), "{key}: 20 x 1 in r0 + 20 x 2 in r1");
    }
    let info = regions_info(&mut b).await;
    for f in ["batches_received", "bytes_received", "batches_sent"] {
        let n: u64 = peer_field(&info, "r0", f).unwrap().parse().unwrap();
        assert!(n > 0, "{f} in {info}");
    }
    assert_eq!(
        peer_field(&info, "r0", "pending_keys").as_deref(),
        Some("0")
    );
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peer_regions_with_the_same_slots_get_shared_batches_and_every_key() {
    let w = start(&[(1, 0, &[]), (1, 0, &[]), (1, 0, &[])]).await;
    for r in 0..3 {
        w.wait_linked(r, 0).await;
    }
    let mut a = w.con(0, 0).await;
    let mut pipe = redis::pipe();
    for i in 0..2000 {
        pipe.cmd("SET").arg(format!("k:{i}")).arg(i).ignore();
        pipe.cmd("INCRBY")
            .arg(format!("n:{}", i % 7))
            .arg(3)
            .ignore();
    }
    let () = pipe.query_async(&mut a).await.expect("pipelined writes");
    let acked: i64 = q!(a, "MERIDIAN.WAITREGIONS", 2, 10000).unwrap();
    assert_eq!(acked, 2, "both peer regions acknowledged");
    let info = regions_info(&mut a).await;
    for peer in ["r1", "r2"] {
        let field = |f| -> u64 { peer_field(&info, peer, f).unwrap().parse().unwrap() };
        assert!(field("batches_shared") > 0, "{peer}: {info}");
        assert!(field("batches_shared") <= field("batches_sent"), "{info}");
        let mut c = w.con(peer[1..].parse().unwrap(), 0).await;
        for i in (0..2000).step_by(97) {
            let got: Option<i64> = q!(c, "GET", format!("k:{i}")).unwrap();
            assert_eq!(got, Some(i), "k:{i} in {peer}");
        }
        let mut sum = 0;
        for k in 0..7 {
            let n: i64 = q!(c, "GET", format!("n:{k}")).unwrap();
            sum += n;
        }
        assert_eq!(sum, 2000 * 3, "every increment in {peer}");
    }
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waitregions_answers_like_wait_and_refuses_bad_input() {
    let standalone = common::start().await;
    let mut s = common::client(standalone.addr()).await;
    let e = common::err(&mut s, &["MERIDIAN.WAITREGIONS", "1", "10"]).await;
    assert!(
        e.starts_with("ERR MERIDIAN.WAITREGIONS needs cluster-enabled"),
        "{e}"
    );
    let e = common::err(&mut s, &["MERIDIAN.WAITREGIONS", "1"]).await;
    assert_eq!(
        e,
        "ERR wrong number of arguments for 'meridian.waitregions' command"
    );
    standalone.shutdown().await;

    let w = start(&[(1, 0, &[]), (1, 0, &[])]).await;
    w.wait_linked(0, 0).await;
    let mut a = w.con(0, 0).await;
    let e = common::err(&mut a, &["MERIDIAN.WAITREGIONS", "1", "-1"]).await;
    assert_eq!(e, "ERR timeout is negative");
    let e = common::err(&mut a, &["MERIDIAN.WAITREGIONS", "x", "10"]).await;
    assert_eq!(e, "ERR value is not an integer or out of range");
    let () = q!(a, "SET", "k", "v").unwrap();
    let got: i64 = q!(a, "MERIDIAN.WAITREGIONS", 1, 5000).unwrap();
    assert_eq!(got, 1);
    // Only one other region exists: asking for two waits out the timeout and answers 1.
    let t = std::time::Instant::now();
    let got: i64 = q!(a, "MERIDIAN.WAITREGIONS", 2, 300).unwrap();
    assert_eq!(got, 1);
    assert!(
        t.elapsed() >= Duration::from_millis(290),
        "{:?}",
        t.elapsed()
    );
    // Inside MULTI it answers at once with what is already acknowledged.
    let (n,): (i64,) = redis::pipe()
        .atomic()
        .cmd("MERIDIAN.WAITREGIONS")
        .arg(1)
        .arg(0)
        .query_async(&mut a)
        .await
        .unwrap();
    assert!(n <= 1);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_in_a_remote_region_moves_the_link_to_the_promoted_replica() {
    // r0: one node; r1: a primary and its replica.
    let mut w = start(&[(1, 0, &[]), (2, 1, &[])]).await;
    w.wait_linked(0, 0).await;
    w.wait_linked(1, 0).await;
    let mut a = w.con(0, 0).await;
    let () = q!(a, "SET", "before", "1").unwrap();
    let acked: i64 = q!(a, "MERIDIAN.WAITREGIONS", 1, 5000).unwrap();
    assert_eq!(acked, 1);
    w.stop(1, 0).await;
    let replica = w.node(1, 1).addr;
    let promoted = common::eventually(Duration::from_secs(20), || async move {
        let mut c = common::client(replica).await;
        let nodes: String = q!(c, "CLUSTER", "NODES").unwrap_or_default();
        nodes.lines().any(|l| l.contains("myself,master"))
    })
    .await;
    assert!(promoted, "r1's replica never took over");
    // r0's link follows the promoted node's record (larger config epoch).
    let () = q!(a, "SET", "after", "2").unwrap();
    let acked: i64 = q!(a, "MERIDIAN.WAITREGIONS", 1, 10_000).unwrap();
    assert_eq!(acked, 1, "r0 never reached r1's new primary");
    let mut b = w.con(1, 1).await;
    let got: (Option<String>, Option<String>) = (
        q!(b, "GET", "before").unwrap(),
        q!(b, "GET", "after").unwrap(),
    );
    assert_eq!(got, (Some("1".into()), Some("2".into())));
    // And the other way.
    let () = q!(b, "SET", "from-new-primary", "3").unwrap();
    let acked: i64 = q!(b, "MERIDIAN.WAITREGIONS", 1, 10_000).unwrap();
    assert_eq!(acked, 1);
    let got: Option<String> = q!(a, "GET", "from-new-primary").unwrap();
    assert_eq!(got.as_deref(), Some("3"));
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_wait_until_every_region_has_acknowledged_them() {
    let grace: &[(&str, &str)] = &[("tombstone-grace", "100"), ("hz", "50")];
    let mut w = start(&[(1, 0, grace), (1, 0, grace)]).await;
    w.wait_linked(0, 0).await;
    let mut a = w.con(0, 0).await;
    for i in 0..20 {
        let () = q!(a, "SET", format!("k{i}"), "v").unwrap();
    }
    let acked: i64 = q!(a, "MERIDIAN.WAITREGIONS", 1, 5000).unwrap();
    assert_eq!(acked, 1);
    w.stop(1, 0).await;
    for i in 0..20 {
        let _: i64 = q!(a, "DEL", format!("k{i}")).unwrap();
    }
    // Far past the grace period, the region that has not acknowledged the DELs keeps them.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let info = regions_info(&mut a).await;
    assert_eq!(
        peer_field(&info, "r1", "state").as_deref(),
        Some("down"),
        "{info}"
    );
    let pending: u64 = info_field(&info, "tombstones_pending")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        pending, 20,
        "collection must pause while r1 is away: {info}"
    );
    // r1 comes back empty; the link starts over, r1 acknowledges, the tombstones go.
    w.start_again(1, 0).await;
    let addr = w.node(0, 0).addr;
    let collected = common::eventually(Duration::from_secs(20), || async move {
        let mut c = common::client(addr).await;
        let info: String = q!(c, "INFO", "regions").unwrap_or_default();
        info_field(&info, "tombstones_pending").as_deref() == Some("0")
    })
    .await;
    assert!(collected, "tombstones never collected after r1 returned");
    let mut b = w.con(1, 0).await;
    for i in 0..20 {
        let got: Option<String> = q!(b, "GET", format!("k{i}")).unwrap();
        assert_eq!(got, None, "k{i} resurrected in r1");
    }
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_with_a_fast_clock_raises_an_alarm_and_causality_still_holds() {
    let fast: &[(&str, &str)] = &[("debug-clock-offset", "2000")];
    let w = start(&[(1, 0, fast), (1, 0, &[])]).await;
    w.wait_linked(0, 0).await;
    w.wait_linked(1, 0).await;
    let mut a = w.con(0, 0).await;
    let mut b = w.con(1, 0).await;
    let () = q!(a, "SET", "k", "from-fast-region").unwrap();
    let acked: i64 = q!(a, "MERIDIAN.WAITREGIONS", 1, 5000).unwrap();
    assert_eq!(acked, 1);
    let got: Option<String> = q!(b, "GET", "k").unwrap();
    assert_eq!(
        got.as_deref(),
        Some("from-fast-region"),
        "merged, not dropped"
    );
    let info = regions_info(&mut b).await;
    let alarms: u64 = info_field(&info, "skew_alarms").unwrap().parse().unwrap();
    let skew: u64 = info_field(&info, "max_skew_seen_ms")
        .unwrap()
        .parse()
        .unwrap();
    assert!(alarms >= 1 && (1500..3000).contains(&skew), "{info}");
    // B saw the fast stamp, so its next write is stamped after it and wins everywhere,
    // although B's own clock is 2 s behind.
    let () = q!(b, "SET", "k", "after-seeing-it").unwrap();
    let acked: i64 = q!(b, "MERIDIAN.WAITREGIONS", 1, 5000).unwrap();
    assert_eq!(acked, 1);
    for c in [&mut a, &mut b] {
        let got: Option<String> = q!(*c, "GET", "k").unwrap();
        assert_eq!(got.as_deref(), Some("after-seeing-it"));
    }
    w.shutdown().await;
}

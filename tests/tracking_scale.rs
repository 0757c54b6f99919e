//! Client-side caching beyond the protocol of one connection: a client that stops reading (its
//! backlog stays bounded), a key migrated to another node of the region, a tracking client in
//! region B invalidated by a write in region A (in-process regions over QUIC), and redis-py's
//! own client-side cache (`tests/py/tracking_cache.py`) against a node process and across the
//! two regions of `meridian demo --regions 2`.

mod common;
#[path = "common/demo.rs"]
mod demo;
#[path = "common/regions.rs"]
mod regions;
#[path = "common/relay.rs"]
mod relay;
#[path = "common/tracking.rs"]
mod tracking_helpers;

use common::{call, expect_all, start, Raw};
use demo::{require_python, run_python, Demo, PortRange, Spec};
use std::time::Duration;
use tracking_helpers::{expect_str, push, resp3};

#[tokio::test]
async fn a_client_that_does_not_read_gets_one_flush_instead_of_an_unbounded_backlog() {
    use tokio::io::AsyncReadExt;
    let s = start().await;
    let mut slow = resp3(s.addr()).await;
    assert_eq!(
        call(&mut slow, &["CLIENT", "TRACKING", "on", "BCAST"]).await,
        "+OK\r\n"
    );
    // 30 000 writes of distinct 1000-byte keys: over 30 MB of pushes, far beyond the socket
    // buffers and the 1 MiB inbox, while `slow` reads nothing.
    let n = 30_000;
    let mut pipeline = Vec::new();
    for i in 0..n {
        let key = format!("{i:0>1000}");
        pipeline.extend(common::encode(&[b"SET", key.as_bytes(), b"v"]));
    }
    let mut w = Raw::connect(s.addr()).await;
    w.send(&pipeline).await;
    w.expect(&b"+OK\r\n".repeat(n)).await;
    // Now read. A write made while the inbox is coalesced is covered by the flush, so the
    // end marker is written until its own push arrives (after the drain), bounded in time.
    let end = push(&["zz-end"]);
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !got.windows(end.len()).any(|w| w == end.as_bytes()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the end marker's invalidation never came"
        );
        assert_eq!(call(&mut w, &["SET", "zz-end", "1"]).await, "+OK\r\n");
        // Read whatever arrives until the connection is quiet for 200 ms.
        loop {
            let mut chunk = vec![0u8; 1 << 20];
            let quiet = tokio::time::sleep(Duration::from_millis(200));
            let r = tokio::select! {
                r = slow.stream.read(&mut chunk) => r.expect("read"),
                _ = quiet => break,
            };
            assert!(r > 0, "connection closed");
            got.extend_from_slice(&chunk[..r]);
        }
    }
    let full = n * 1000;
    assert!(
        got.len() < full / 2,
        "{} bytes delivered, the full backlog is {full}",
        got.len()
    );
    let flush = b">2\r\n$10\r\ninvalidate\r\n_\r\n";
    assert!(
        got.windows(flush.len()).any(|w| w == flush),
        "no coalesced flush in the stream"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn a_key_migrated_to_another_node_is_invalidated() {
    use common::cluster::{key_slot, Region};
    let region = Region::start(2, 0).await;
    let (a, b) = (region.node(0), region.node(1));
    // The initial layout gives the first node slots 0..=8191.
    let key = (0..)
        .map(|n| format!("mig{n}"))
        .find(|k| key_slot(k.as_bytes()) < 8192)
        .unwrap();
    let slot = key_slot(key.as_bytes()).to_string();
    let mut ac = a.raw().await;
    let mut bc = b.raw().await;
    assert_eq!(call(&mut ac, &["SET", &key, "v"]).await, "+OK\r\n");
    let mut t = resp3(a.addr).await;
    expect_all(
        &mut t,
        &[
            (&["CLIENT", "TRACKING", "on"], "+OK\r\n"),
            (&["GET", &key], "$1\r\nv\r\n"),
        ],
    )
    .await;
    let importing = ["CLUSTER", "SETSLOT", &slot, "IMPORTING", &a.name];
    assert_eq!(call(&mut bc, &importing).await, "+OK\r\n");
    let migrating = ["CLUSTER", "SETSLOT", &slot, "MIGRATING", &b.name];
    assert_eq!(call(&mut ac, &migrating).await, "+OK\r\n");
    let port = b.addr.port().to_string();
    let migrate = ["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS", &key];
    assert_eq!(call(&mut ac, &migrate).await, "+OK\r\n");
    // The key left node a: a's tracking client must not keep serving it from its cache.
    expect_str(&mut t, &push(&[&key])).await;
    region.shutdown().await;
}

#[tokio::test]
async fn a_write_in_region_a_invalidates_a_cache_in_region_b() {
    use regions::{RegionSpec, World};
    let world = World::start(&[RegionSpec::single(), RegionSpec::single()], &[]).await;
    let addr_b = world.regions[1].nodes[0].node.as_ref().unwrap().addr;
    let mut b = resp3(addr_b).await;
    expect_all(
        &mut b,
        &[
            (&["CLIENT", "TRACKING", "on"], "+OK\r\n"),
            (&["GET", "user:1"], "_\r\n"),
        ],
    )
    .await;
    world
        .run(0, &["SET", "user:1", "ada"])
        .await
        .expect("SET in region a");
    // Replication merges the delta in region b, and b's tracking sink tells the client.
    expect_str(&mut b, &push(&["user:1"])).await;
    assert_eq!(call(&mut b, &["GET", "user:1"]).await, "$3\r\nada\r\n");
    // BCAST across regions too, and a remote DEL.
    let mut bc = resp3(addr_b).await;
    assert_eq!(
        call(
            &mut bc,
            &["CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "user:"]
        )
        .await,
        "+OK\r\n"
    );
    world
        .run(0, &["DEL", "user:1"])
        .await
        .expect("DEL in region a");
    expect_str(&mut b, &push(&["user:1"])).await;
    expect_str(&mut bc, &push(&["user:1"])).await;
    world.shutdown().await;
}

/// A `meridian` node process, SIGKILLed when dropped, also when the test panics.
struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// redis-py's client-side cache (`redis.cache`) came with redis-py 5.1.
fn have_redis_py_cache() {
    require_python("redis.cache", "redis-py >= 5.1 (redis.cache)");
}

/// Runs `tests/py/tracking_cache.py` with `args` (bounded: 120 s); panics with its output
/// unless it succeeds.
fn run_tracking_cache_py(args: &[String]) -> String {
    let out = run_python("tracking_cache.py", args, Duration::from_secs(120));
    assert!(out.contains("OK"), "{out}");
    out
}

/// redis-py's own client-side cache (`protocol=3`, `CacheConfig`) against a node process:
/// `tests/py/tracking_cache.py` checks cached reads skip the server and writes by another
/// client (SET, DEL, INCR, FLUSHALL) reach the cached reader.
#[test]
fn redis_py_client_side_cache_against_a_node_process() {
    use std::process::{Command, Stdio};
    use std::time::Instant;
    have_redis_py_cache();
    let port = common::ports::claim();
    let _node = Proc(
        Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start meridian"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "meridian did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    run_tracking_cache_py(&["127.0.0.1".into(), port.to_string()]);
}

/// The same redis-py cache in region 2 of `meridian demo --regions 2`, every write made in
/// region 1: the invalidations come from cross-region replication.
#[test]
fn redis_py_cache_in_one_region_sees_writes_made_in_another() {
    have_redis_py_cache();
    // Region r listens on base + 100·r; bases from 23000 in steps of 10 (190 of them).
    let range = PortRange {
        first: 23_000,
        slots: 190,
    };
    let demo = Demo::start(&Spec::regions(2, range));
    let ports = demo.ports();
    assert_eq!(ports.len(), 2, "one node per region");
    let out = run_tracking_cache_py(&[
        "127.0.0.1".into(),
        ports[1].to_string(),
        ports[0].to_string(),
    ]);
    assert!(out.contains("another region"), "{out}");
    drop(demo);
}

/// Under `repl-scope hot`, a cold key written in region a only invalidates region b's copy
/// (no value ships): b drops its older copy, and b's tracking clients must drop theirs.
#[tokio::test]
async fn a_cold_key_dropped_by_a_scope_invalidation_is_invalidated_in_client_caches() {
    use regions::{RegionSpec, World};
    let world = World::start(
        &[RegionSpec::single(), RegionSpec::single()],
        &[("repl-scope", "s:* hot, * all")],
    )
    .await;
    let addr_b = world.regions[1].nodes[0].node.as_ref().unwrap().addr;
    let mut wb = common::Raw::connect(addr_b).await;
    assert_eq!(call(&mut wb, &["SET", "s:cold", "from-b"]).await, "+OK\r\n");
    let mut t = resp3(addr_b).await;
    expect_all(
        &mut t,
        &[
            (&["CLIENT", "TRACKING", "on"], "+OK\r\n"),
            (&["GET", "s:cold"], "$6\r\nfrom-b\r\n"),
        ],
    )
    .await;
    world
        .run(0, &["SET", "s:cold", "from-a"])
        .await
        .expect("SET in region a");
    // The invalidation from region a removes b's copy: b's cache is told.
    expect_str(&mut t, &push(&["s:cold"])).await;
    assert_eq!(call(&mut t, &["GET", "s:cold"]).await, "_\r\n");
    world.shutdown().await;
}

//! Client-side caching beyond the protocol of one connection: a client that stops reading (its
//! backlog stays bounded), a key migrated to another node of the region, a tracking client in
//! region B invalidated by a write in region A (in-process regions over QUIC), and redis-py's
//! own client-side cache (`tests/py/tracking_cache.py`) against a node process and across the
//! two regions of `meridian demo --regions 2`.

mod common;
#[path = "common/regions.rs"]
mod regions;
#[path = "common/relay.rs"]
mod relay;
#[path = "common/tracking.rs"]
mod tracking_helpers;

use common::{call, expect_all, start, Raw};
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

/// A `meridian` process (and, for a demo, the node processes it started) SIGKILLed when
/// dropped, also when the test panics.
struct Proc {
    child: std::process::Child,
    /// Node pids a demo printed: killed first, so none outlives its demo.
    nodes: Vec<u32>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        for pid in &self.nodes {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn have_redis_py_cache() {
    let have = std::process::Command::new("python3")
        .args(["-c", "import redis.cache"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        have,
        "python3 with redis-py >= 5.1 (redis.cache) is required: run .ci/run (or `pip install redis`)"
    );
}

/// Runs `tests/py/tracking_cache.py` with `args` (bounded: 120 s); panics with its output
/// unless it succeeds.
fn run_tracking_cache_py(args: &[String]) -> String {
    use std::io::Read;
    use std::process::{Command, Stdio};
    use std::time::Instant;
    let script =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/tracking_cache.py");
    let mut child = Command::new("python3")
        .arg("-u")
        .arg(&script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tracking_cache.py did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (out_t.join().unwrap(), err_t.join().unwrap());
    println!("{out}");
    assert!(
        status.success(),
        "tracking_cache.py failed ({status}):\n{out}\n{err}"
    );
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
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().unwrap().port()
    };
    let _node = Proc {
        child: Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start meridian"),
        nodes: Vec::new(),
    };
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
    use std::io::BufRead;
    use std::net::{TcpListener, UdpSocket};
    use std::process::{Command, Stdio};
    use std::time::Instant;
    have_redis_py_cache();
    // Region r listens on base + 100·r (mesh: +10000); a base whose four ports are free.
    let offset = (std::process::id() as u16).wrapping_mul(7919) % 190;
    let base = (0..190)
        .map(|k| 23_000 + ((offset + k) % 190) * 10)
        .find(|&b| {
            [b, b + 100].iter().all(|&p| {
                TcpListener::bind(("127.0.0.1", p)).is_ok()
                    && UdpSocket::bind(("127.0.0.1", p + 10_000)).is_ok()
            })
        })
        .expect("free ports for the demo");
    let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["demo", "--regions", "2", "--nodes", "1"])
        .args(["--base-port", &base.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start meridian demo");
    let stdout = child.stdout.take().unwrap();
    let mut demo = Proc {
        child,
        nodes: Vec::new(),
    };
    // `node <region> <id> <pid> <resp> <mesh> <role>` per node, then `ready` (bounded).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ports = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("demo did not print `ready` within 60 s");
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.first() == Some(&"node") && f.len() >= 6 {
            demo.nodes.push(f[3].parse().expect("pid"));
            let addr: std::net::SocketAddr = f[4].parse().expect("resp address");
            ports.push(addr.port());
        }
        if line == "ready" {
            break;
        }
    }
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

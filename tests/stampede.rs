//! Stampede control as a client sees it (MERIDIAN.FETCH / FILL / RELEASE, docs/stampede.md):
//! one recompute for 200 concurrent misses with the others coalesced server-side; fills refused
//! with a wrong, voided or expired token; DEL and SET voiding leases and waking waiters; leases
//! passing on when their holder disconnects, releases or times out; soft TTL (stale value, one
//! refresh lease) and hard TTL; XFetch early refresh with a large β and never with β = 0; the
//! argument errors byte for byte.

mod common;

use common::{call, expect_all, start, Raw};
use redis::aio::MultiplexedConnection;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A FETCH reply: (status, value, token).
type Fetched = (String, Option<String>, Option<String>);

async fn fetch(c: &mut MultiplexedConnection, key: &str, opts: &[&str]) -> Fetched {
    let mut cmd = redis::cmd("MERIDIAN.FETCH");
    cmd.arg(key).arg(opts);
    tokio::time::timeout(Duration::from_secs(10), cmd.query_async(c))
        .await
        .expect("FETCH timed out")
        .expect("FETCH")
}

/// Takes the lease of a missing key and returns its token.
async fn lease(c: &mut MultiplexedConnection, key: &str, opts: &[&str]) -> String {
    let (status, value, token) = fetch(c, key, opts).await;
    assert_eq!((status.as_str(), value), ("LEASE", None));
    token.expect("a lease carries a token")
}

async fn fill(c: &mut MultiplexedConnection, key: &str, token: &str, rest: &[&str]) -> String {
    let mut cmd = redis::cmd("MERIDIAN.FILL");
    cmd.arg(key).arg(token).arg(rest);
    let r: redis::RedisResult<String> = cmd.query_async(c).await;
    r.unwrap_or_else(|e| common::error_text(&e))
}

const NOLEASE: &str =
    "NOLEASE no such lease: the token is wrong, expired, already used, or voided by a write to the key";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_misses_cost_one_recompute() {
    let s = start().await;
    let recomputes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(200));
    let mut tasks = Vec::new();
    for _ in 0..200 {
        // One connection each: a waiting FETCH blocks its connection, like BLPOP.
        let mut c = common::client(s.addr()).await;
        let (recomputes, barrier) = (recomputes.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let (status, value, token) = fetch(&mut c, "hot", &["WAIT", "5000"]).await;
            if status == "LEASE" {
                recomputes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                let ok = fill(&mut c, "hot", &token.unwrap(), &["computed", "EX", "60"]).await;
                assert_eq!(ok, "OK");
                return ("LEASE".to_string(), "computed".to_string());
            }
            (status, value.expect("a waiter gets the filled value"))
        }));
    }
    let mut hits = 0;
    for t in tasks {
        let (status, value) = t.await.unwrap();
        assert_eq!(value, "computed");
        hits += (status == "HIT") as usize;
    }
    assert_eq!(recomputes.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(hits, 199, "the other 199 waited for the fill server-side");
    assert_eq!(s.node.leases.outstanding(), 0);
    s.shutdown().await;
}

#[tokio::test]
async fn fills_with_a_wrong_or_voided_token_are_refused() {
    let s = start().await;
    let mut c = common::client(s.addr()).await;
    let t = lease(&mut c, "k", &[]).await;
    let wrong = (t.parse::<u64>().unwrap() ^ 1).to_string();
    assert_eq!(fill(&mut c, "k", &wrong, &["v"]).await, NOLEASE);
    assert_eq!(
        fill(&mut c, "k", "nope", &["v"]).await,
        "ERR invalid lease token"
    );
    // A DEL of the (still missing) key voids the lease: the fill may predate the change.
    let _: i64 = q!(c, "DEL", "k").unwrap();
    assert_eq!(fill(&mut c, "k", &t, &["v"]).await, NOLEASE);
    let v: Option<String> = q!(c, "GET", "k").unwrap();
    assert_eq!(v, None, "a refused fill writes nothing");
    // A SET voids it too, and the fill does not overwrite the newer value.
    let t = lease(&mut c, "k", &[]).await;
    let _: () = q!(c, "SET", "k", "newer").unwrap();
    assert_eq!(fill(&mut c, "k", &t, &["older"]).await, NOLEASE);
    let v: String = q!(c, "GET", "k").unwrap();
    assert_eq!(v, "newer");
    // A token is good for one fill.
    let _: i64 = q!(c, "DEL", "k").unwrap();
    let t = lease(&mut c, "k", &[]).await;
    assert_eq!(fill(&mut c, "k", &t, &["v1"]).await, "OK");
    assert_eq!(fill(&mut c, "k", &t, &["v2"]).await, NOLEASE);
    assert_eq!(s.node.leases.outstanding(), 0);
    s.shutdown().await;
}

/// Starts a FETCH that waits in the background; returns its result and how long it took.
fn waiter(
    mut c: MultiplexedConnection,
    key: &'static str,
    wait_ms: &'static str,
) -> tokio::task::JoinHandle<(Fetched, Duration)> {
    tokio::spawn(async move {
        let t0 = Instant::now();
        let r = fetch(&mut c, key, &["WAIT", wait_ms]).await;
        (r, t0.elapsed())
    })
}

#[tokio::test]
async fn set_and_del_void_leases_and_wake_the_waiters() {
    let s = start().await;
    let mut holder = common::client(s.addr()).await;
    let mut other = common::client(s.addr()).await;
    let _t = lease(&mut holder, "k", &[]).await;
    let w = waiter(common::client(s.addr()).await, "k", "5000");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _: () = q!(other, "SET", "k", "from-set").unwrap();
    let ((status, value, _), took) = w.await.unwrap();
    assert_eq!(
        (status.as_str(), value.as_deref()),
        ("HIT", Some("from-set"))
    );
    assert!(
        took < Duration::from_secs(2),
        "woken by the SET, not the timeout: {took:?}"
    );
    // DEL: the waiter wakes and, the key being missing, takes the new lease.
    let _: i64 = q!(other, "DEL", "k").unwrap();
    let t = lease(&mut holder, "k", &[]).await;
    let w = waiter(common::client(s.addr()).await, "k", "5000");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _: i64 = q!(other, "DEL", "k").unwrap();
    let ((status, value, token), took) = w.await.unwrap();
    assert_eq!((status.as_str(), value), ("LEASE", None));
    assert_ne!(token.as_deref(), Some(t.as_str()));
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(fill(&mut holder, "k", &t, &["stale"]).await, NOLEASE);
    s.shutdown().await;
}

#[tokio::test]
async fn a_holder_that_disconnects_hands_the_lease_to_a_waiter() {
    let s = start().await;
    let mut holder = Raw::connect(s.addr()).await;
    let reply = call(&mut holder, &["MERIDIAN.FETCH", "k"]).await;
    assert!(
        reply.starts_with("*3\r\n$5\r\nLEASE\r\n$-1\r\n$"),
        "{reply:?}"
    );
    let w = waiter(common::client(s.addr()).await, "k", "5000");
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(holder);
    let ((status, _, token), took) = w.await.unwrap();
    assert_eq!(status, "LEASE");
    assert!(token.is_some());
    assert!(
        took < Duration::from_secs(2),
        "handed over at the disconnect: {took:?}"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn an_expired_or_released_lease_passes_to_the_next_caller() {
    let s = start().await;
    let mut holder = common::client(s.addr()).await;
    let t = lease(&mut holder, "k", &["LEASE", "300"]).await;
    let w = waiter(common::client(s.addr()).await, "k", "5000");
    let ((status, _, _), took) = w.await.unwrap();
    assert_eq!(status, "LEASE", "the waiter inherits the expired lease");
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(fill(&mut holder, "k", &t, &["late"]).await, NOLEASE);
    // RELEASE gives it back at once.
    let _: i64 = q!(holder, "DEL", "k").unwrap();
    let t = lease(&mut holder, "k", &[]).await;
    // Without WAIT, a caller that finds the lease taken is told MISS at once.
    let mut other = common::client(s.addr()).await;
    let (status, value, token) = fetch(&mut other, "k", &[]).await;
    assert_eq!((status.as_str(), value, token), ("MISS", None, None));
    let w = waiter(common::client(s.addr()).await, "k", "5000");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let released: i64 = q!(holder, "MERIDIAN.RELEASE", "k", &t).unwrap();
    assert_eq!(released, 1);
    let ((status, _, _), took) = w.await.unwrap();
    assert_eq!(status, "LEASE");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let again: i64 = q!(holder, "MERIDIAN.RELEASE", "k", &t).unwrap();
    assert_eq!(again, 0);
    s.shutdown().await;
}

#[tokio::test]
async fn soft_ttl_serves_stale_with_one_refresh_lease_and_hard_ttl_removes_the_key() {
    let s = start().await;
    let mut c = common::client(s.addr()).await;
    let t = lease(&mut c, "k", &[]).await;
    assert_eq!(
        fill(&mut c, "k", &t, &["v1", "PX", "1500", "SOFT", "300"]).await,
        "OK"
    );
    let fresh = fetch(&mut c, "k", &["BETA", "0"]).await;
    assert_eq!(fresh, ("HIT".into(), Some("v1".into()), None));
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Past the soft TTL: 20 concurrent callers, exactly one refresh lease, the others stale.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let mut c = common::client(s.addr()).await;
        // Each task hands its connection back: a holder that disconnected would pass the lease on.
        tasks.push(tokio::spawn(async move {
            (fetch(&mut c, "k", &["BETA", "0", "WAIT", "2000"]).await, c)
        }));
    }
    let (mut leases, mut stale) = (0, 0);
    let mut conns = Vec::new();
    for t in tasks {
        let ((status, value, token), con) = t.await.unwrap();
        conns.push(con);
        assert_eq!(value.as_deref(), Some("v1"), "{status}");
        match status.as_str() {
            "LEASE" => leases += token.is_some() as usize,
            "STALE" => stale += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((leases, stale), (1, 19));
    // A caller whose GRACE is shorter than the staleness does not take the stale value.
    let (status, value, _) = fetch(&mut c, "k", &["GRACE", "10"]).await;
    assert_eq!((status.as_str(), value), ("MISS", None));
    // The refresh never comes: after the hard TTL the key is gone.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let v: Option<String> = q!(c, "GET", "k").unwrap();
    assert_eq!(v, None);
    let (status, value, _) = fetch(&mut c, "k", &[]).await;
    assert_eq!(
        (status.as_str(), value),
        ("MISS", None),
        "the refresh lease is still out"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn xfetch_refreshes_early_with_a_large_beta_and_never_with_beta_zero() {
    let s = start().await;
    let mut c = common::client(s.addr()).await;
    let t = lease(&mut c, "k", &[]).await;
    tokio::time::sleep(Duration::from_millis(150)).await; // the measured recompute time
    assert_eq!(fill(&mut c, "k", &t, &["v1", "PX", "3000"]).await, "OK");
    for _ in 0..100 {
        let (status, _, _) = fetch(&mut c, "k", &["BETA", "0"]).await;
        assert_eq!(status, "HIT", "β = 0 never refreshes early");
    }
    // Δ·β = 150 ms · 50 ≫ the 3 s TTL: almost every fetch refreshes early; the first does.
    let mut early = None;
    for _ in 0..20 {
        match fetch(&mut c, "k", &["BETA", "50"]).await {
            (s, Some(v), Some(token)) if s == "LEASE" => {
                assert_eq!(v, "v1", "an early refresh still serves the fresh value");
                early = Some(token);
                break;
            }
            (s, _, _) => assert_eq!(s, "HIT"),
        }
    }
    let token = early.expect("an early refresh lease");
    let pttl: i64 = q!(c, "PTTL", "k").unwrap();
    assert!(pttl > 2000, "refreshed well before expiry: {pttl} ms left");
    // While it is out, nobody else is sent to recompute.
    let (status, _, _) = fetch(&mut c, "k", &["BETA", "50"]).await;
    assert_eq!(
        status, "LEASE",
        "the holder asking again gets its own lease back"
    );
    let mut other = common::client(s.addr()).await;
    let (status, _, _) = fetch(&mut other, "k", &["BETA", "50"]).await;
    assert_eq!(status, "HIT");
    assert_eq!(fill(&mut c, "k", &token, &["v2", "PX", "3000"]).await, "OK");
    let v: String = q!(c, "GET", "k").unwrap();
    assert_eq!(v, "v2");
    s.shutdown().await;
}

#[tokio::test]
async fn fetch_inside_multi_never_blocks() {
    let s = start().await;
    let mut c = common::client(s.addr()).await;
    let mut holder = common::client(s.addr()).await;
    let _t = lease(&mut holder, "k", &[]).await;
    let r: (Fetched,) = redis::pipe()
        .atomic()
        .cmd("MERIDIAN.FETCH")
        .arg("k")
        .arg("WAIT")
        .arg("5000")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(r.0, ("MISS".into(), None, None));
    s.shutdown().await;
}

#[tokio::test]
async fn argument_errors_match_redis_style() {
    let s = start().await;
    let mut raw = Raw::connect(s.addr()).await;
    expect_all(
        &mut raw,
        &[
            (
                &["MERIDIAN.FETCH"],
                "-ERR wrong number of arguments for 'meridian.fetch' command\r\n",
            ),
            (
                &["MERIDIAN.FILL", "k", "1"],
                "-ERR wrong number of arguments for 'meridian.fill' command\r\n",
            ),
            (
                &["MERIDIAN.RELEASE", "k"],
                "-ERR wrong number of arguments for 'meridian.release' command\r\n",
            ),
            (
                &["MERIDIAN.FETCH", "k", "WAIT", "soon"],
                "-ERR value is not an integer or out of range\r\n",
            ),
            (
                &["MERIDIAN.FETCH", "k", "WAIT", "-1"],
                "-ERR timeout is negative\r\n",
            ),
            (
                &["MERIDIAN.FETCH", "k", "GRACE", "1.5"],
                "-ERR value is not an integer or out of range\r\n",
            ),
            (
                &["MERIDIAN.FETCH", "k", "BETA", "x"],
                "-ERR value is not a valid float\r\n",
            ),
            (
                &["MERIDIAN.FETCH", "k", "BETA", "-1"],
                "-ERR BETA must be a non-negative number\r\n",
            ),
            (
                &["MERIDIAN.FETCH", "k", "LEASE", "0"],
                "-ERR LEASE must be positive\r\n",
            ),
            (&["MERIDIAN.FETCH", "k", "WAIT"], "-ERR syntax error\r\n"),
            (
                &["MERIDIAN.FETCH", "k", "NOW", "1"],
                "-ERR syntax error\r\n",
            ),
            (
                &["MERIDIAN.FILL", "k", "x", "v"],
                "-ERR invalid lease token\r\n",
            ),
            (
                &["MERIDIAN.FILL", "k", "1", "v"],
                &format!("-{NOLEASE}\r\n"),
            ),
            (
                &["MERIDIAN.FILL", "k", "1", "v", "EX", "0"],
                "-ERR invalid expire time in 'meridian.fill' command\r\n",
            ),
            (
                &["MERIDIAN.FILL", "k", "1", "v", "EX", "1", "PX", "1"],
                "-ERR syntax error\r\n",
            ),
            (
                &["MERIDIAN.FILL", "k", "1", "v", "SOFT", "x"],
                "-ERR value is not an integer or out of range\r\n",
            ),
            (
                &["MERIDIAN.FILL", "k", "1", "v", "KEEPTTL"],
                "-ERR syntax error\r\n",
            ),
            (
                &["MERIDIAN.RELEASE", "k", "x"],
                "-ERR invalid lease token\r\n",
            ),
            (&["MERIDIAN.RELEASE", "k", "1"], ":0\r\n"),
        ],
    )
    .await;
    s.shutdown().await;
}

/// Records the deltas a node publishes (what replication and the mesh would ship).
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<meridian::store::Delta>>);

impl meridian::store::DeltaSink for Recorder {
    fn publish(&self, deltas: Vec<meridian::store::Delta>, _: meridian::store::Origin) {
        self.0.lock().unwrap().extend(deltas);
    }
}

#[tokio::test]
async fn a_fill_is_a_normal_replicated_write_and_leases_are_not() {
    let s = start().await;
    let sink = Arc::new(Recorder::default());
    assert!(s.node.keyspace.set_sink(sink.clone()));
    let mut c = common::client(s.addr()).await;
    let t = lease(&mut c, "k", &[]).await;
    let mut other = common::client(s.addr()).await;
    assert_eq!(fetch(&mut other, "k", &[]).await.0, "MISS");
    assert!(
        sink.0.lock().unwrap().is_empty(),
        "leases are node-local state"
    );
    assert_eq!(
        fill(&mut c, "k", &t, &["v", "EX", "100", "SOFT", "10"]).await,
        "OK"
    );
    let deltas = std::mem::take(&mut *sink.0.lock().unwrap());
    assert_eq!(deltas.len(), 1);
    let d = &deltas[0].entry;
    assert_eq!(&*deltas[0].key, b"k");
    let reg = d.register.as_ref().expect("a register write");
    assert_eq!(reg.value.as_deref(), Some(&b"v"[..]));
    let expiry = d.expiry.expect("the hard TTL travels with it, like SET EX");
    assert_eq!(expiry.stamp, reg.stamp, "one stamp, as a SET writes");
    assert!(expiry.deadline_ms.is_some());
    s.shutdown().await;
}

//! Hot keys as a client and an operator see them (docs/regions.md, "Replication scope and hot
//! keys"): a skewed workload puts the right keys, in the right order, into `MERIDIAN.HOTKEYS`
//! and `INFO hotkeys`; OBJECT FREQ keeps working and does not count as an access; the
//! `hotkeys-k`, `hotkeys-threshold` and `repl-scope` parameters; argument errors.

mod common;

use common::{err, info_field, start_with};
use redis::aio::MultiplexedConnection;
use std::time::Duration;

/// `hot:1` ×3000, `hot:2` ×1800, `hot:3` ×900, 1000 cold keys ×2, shuffled, as GET / SET /
/// INCR in pipelines of 500.
async fn skewed_workload(c: &mut MultiplexedConnection) {
    let mut ops: Vec<String> = Vec::new();
    for (key, n) in [("hot:1", 3000), ("hot:2", 1800), ("hot:3", 900)] {
        ops.extend(std::iter::repeat_n(key.to_string(), n));
    }
    for i in 0..1000 {
        ops.extend(std::iter::repeat_n(format!("cold:{i}"), 2));
    }
    // Deterministic shuffle (LCG): hot and cold accesses interleave.
    let mut x: u64 = 42;
    for i in (1..ops.len()).rev() {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ops.swap(i, (x >> 33) as usize % (i + 1));
    }
    for (n, chunk) in ops.chunks(500).enumerate() {
        let mut p = redis::pipe();
        for (i, key) in chunk.iter().enumerate() {
            match (n + i) % 3 {
                0 => p.cmd("GET").arg(key).ignore(),
                1 => p.cmd("SET").arg(key).arg("v").ignore(),
                _ => p.cmd("EXISTS").arg(key).ignore(),
            };
        }
        let r: redis::RedisResult<()> =
            tokio::time::timeout(Duration::from_secs(10), p.query_async(c))
                .await
                .expect("pipeline timed out");
        r.expect("pipeline");
    }
}

async fn hotkeys(c: &mut MultiplexedConnection, count: usize) -> Vec<(String, i64)> {
    q!(*c, "MERIDIAN.HOTKEYS", "COUNT", count).expect("MERIDIAN.HOTKEYS")
}

async fn info_hotkeys(c: &mut MultiplexedConnection) -> String {
    q!(*c, "INFO", "hotkeys").expect("INFO hotkeys")
}

#[tokio::test]
async fn a_skewed_workload_shows_its_hot_keys_in_order_with_rates() {
    let srv = start_with(&[("maxmemory-policy", "allkeys-lfu")]).await;
    let mut c = common::client(srv.addr()).await;
    let _: () = q!(c, "SET", "probe", "v").unwrap();
    skewed_workload(&mut c).await;
    // OBJECT looks without touching: 600 of them do not make a cold key hot.
    for _ in 0..600 {
        let _: i64 = q!(c, "OBJECT", "FREQ", "probe").expect("OBJECT FREQ");
    }
    let top = hotkeys(&mut c, 3).await;
    let keys: Vec<&str> = top.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["hot:1", "hot:2", "hot:3"], "{top:?}");
    // Rates are ops/s: positive, ordered, and hot:1 ~3.3x hot:3 (sampled, so loosely).
    assert!(
        top[0].1 > top[1].1 && top[1].1 > top[2].1 && top[2].1 > 0,
        "{top:?}"
    );
    let ratio = top[0].1 as f64 / top[2].1 as f64;
    assert!(
        (2.0..5.0).contains(&ratio),
        "hot:1 / hot:3 = {ratio} ({top:?})"
    );
    // The default COUNT is 10; cold keys, if listed at all, come after the hot ones.
    let ten = hotkeys(&mut c, 10).await;
    let first: Vec<&str> = ten.iter().take(3).map(|(k, _)| k.as_str()).collect();
    assert!(ten.len() <= 10 && first == keys, "{ten:?}");

    // INFO hotkeys: the three hot keys above the 100 ops/s threshold, hottest first.
    let ok = common::eventually(Duration::from_secs(2), || {
        let mut c = c.clone();
        async move { info_field(&info_hotkeys(&mut c).await, "hotkeys_hot").as_deref() == Some("3") }
    })
    .await;
    let info = info_hotkeys(&mut c).await;
    assert!(ok, "{info}");
    assert_eq!(info_field(&info, "hotkeys_k").as_deref(), Some("32"));
    assert_eq!(
        info_field(&info, "hotkeys_threshold").as_deref(),
        Some("100")
    );
    let tracked: usize = info_field(&info, "hotkeys_tracked")
        .unwrap()
        .parse()
        .unwrap();
    assert!((3..=32).contains(&tracked), "{info}");
    assert!(
        info_field(&info, "hotkey_0")
            .unwrap()
            .starts_with("key=hot:1,rate="),
        "{info}"
    );
    assert!(
        info_field(&info, "hotkey_2")
            .unwrap()
            .starts_with("key=hot:3,rate="),
        "{info}"
    );
    // The section is part of plain INFO too.
    let all: String = q!(c, "INFO").unwrap();
    assert!(all.contains("# Hotkeys\r\n"));

    // OBJECT FREQ keeps answering from the LFU counters (which the sketch does not replace).
    let hot: i64 = q!(c, "OBJECT", "FREQ", "hot:1").unwrap();
    let cold: i64 = q!(c, "OBJECT", "FREQ", "probe").unwrap();
    assert!(hot > cold, "OBJECT FREQ hot:1 {hot} vs probe {cold}");
    srv.shutdown().await;
}

#[tokio::test]
async fn parameters_and_errors() {
    let srv = start_with(&[("hotkeys-threshold", "1000000")]).await;
    let mut c = common::client(srv.addr()).await;
    skewed_workload(&mut c).await;
    // A threshold nobody reaches: listed (top-k) but not hot.
    assert_eq!(hotkeys(&mut c, 1).await[0].0, "hot:1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        info_field(&info_hotkeys(&mut c).await, "hotkeys_hot").as_deref(),
        Some("0")
    );
    // hotkeys-k caps the list; a new k starts the sketch over.
    let _: () = q!(c, "CONFIG", "SET", "hotkeys-k", "2").unwrap();
    let cfg: Vec<String> = q!(c, "CONFIG", "GET", "hotkeys-k").unwrap();
    assert_eq!(cfg, ["hotkeys-k", "2"]);
    assert!(hotkeys(&mut c, 10).await.is_empty());
    skewed_workload(&mut c).await;
    let top = hotkeys(&mut c, 10).await;
    assert_eq!(
        top.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["hot:1", "hot:2"]
    );
    // Errors.
    assert_eq!(
        err(&mut c, &["MERIDIAN.HOTKEYS", "COUNT", "0"]).await,
        "ERR COUNT must be positive"
    );
    assert_eq!(
        err(&mut c, &["MERIDIAN.HOTKEYS", "COUNT", "x"]).await,
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err(&mut c, &["MERIDIAN.HOTKEYS", "COUNT"]).await,
        "ERR syntax error"
    );
    assert_eq!(
        err(&mut c, &["MERIDIAN.HOTKEYS", "LIMIT", "3"]).await,
        "ERR syntax error"
    );
    let e = err(&mut c, &["CONFIG", "SET", "repl-scope", "session:* warm"]).await;
    assert!(e.starts_with("ERR") && e.contains("repl-scope"), "{e}");
    let e = err(&mut c, &["CONFIG", "SET", "hotkeys-k", "0"]).await;
    assert!(e.starts_with("ERR") && e.contains("hotkeys-k"), "{e}");
    let _: () = q!(c, "CONFIG", "SET", "repl-scope", "session:* hot, * all").unwrap();
    let cfg: Vec<String> = q!(c, "CONFIG", "GET", "repl-scope").unwrap();
    assert_eq!(cfg, ["repl-scope", "session:* hot, * all"]);
    srv.shutdown().await;
}

/// `/metrics` on the admin port (raw HTTP/1.1, read to the end, bounded).
async fn metrics(srv: &common::Server) -> String {
    admin_get(srv, "/metrics").await
}

/// GET `path` on the admin port (raw HTTP/1.1, read to the end, bounded).
async fn admin_get(srv: &common::Server, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let port = srv
        .node
        .admin_port
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_ne!(port, 0, "admin port open");
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port as u16))
            .await
            .unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut body = Vec::new();
        s.read_to_end(&mut body).await.unwrap();
        String::from_utf8_lossy(&body).into_owned()
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .expect("admin request timed out")
}

#[tokio::test]
async fn metrics_show_the_hot_keys() {
    let srv = start_with(&[("admin-port", "0")]).await;
    let mut c = common::client(srv.addr()).await;
    skewed_workload(&mut c).await;
    let text = metrics(&srv).await;
    let rate = text
        .lines()
        .find(|l| l.starts_with("meridian_hotkeys_rate_ops{") && l.contains("key=\"hot:1\""))
        .unwrap_or_else(|| panic!("no rate for hot:1 in\n{text}"));
    let v: f64 = rate.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(v > 100.0, "{rate}");
    let recorded = text
        .lines()
        .find(|l| {
            l.starts_with("meridian_hotkeys_samples_total{") && l.contains("result=\"recorded\"")
        })
        .unwrap_or_else(|| panic!("no samples counter in\n{text}"));
    assert!(!recorded.ends_with(" 0"), "{recorded}");
    assert!(text.contains("meridian_hotkeys_tracked"), "{text}");
    srv.shutdown().await;
}

#[tokio::test]
async fn the_dashboard_state_lists_the_hot_keys() {
    let srv = start_with(&[("admin-port", "0")]).await;
    let mut c = common::client(srv.addr()).await;
    skewed_workload(&mut c).await;
    let text = admin_get(&srv, "/api/state").await;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let state: serde_json::Value = serde_json::from_str(body).expect("JSON state");
    let hot = state["hot_keys"].as_array().expect("hot_keys is a list");
    assert_eq!(
        hot.first().and_then(|h| h["key"].as_str()),
        Some("hot:1"),
        "{hot:?}"
    );
    assert!(hot[0]["rate"].as_f64().unwrap_or(0.0) > 100.0, "{hot:?}");
    srv.shutdown().await;
}

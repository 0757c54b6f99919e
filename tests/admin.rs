//! The admin HTTP port as an operator and a Prometheus server use it: `/metrics` parses as the
//! Prometheus text format and follows the commands clients run, `/health` tells serving from
//! down, `/api/state` feeds the dashboard, bad requests get clear 4xx answers without hurting
//! the node, and on two in-process regions the per-peer-region series are there and move.
//! Requests are raw HTTP/1.1 bytes over TCP: the exact status line is the point.

mod common;
#[path = "common/regions.rs"]
mod regions;
#[path = "common/relay.rs"]
mod relay;

use common::{client, eventually, info_field, start_with, IO_TIMEOUT};
use regions::{RegionSpec, World};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Status code, header block (lower-cased) and body of one exchange.
struct Reply {
    status: u16,
    head: String,
    body: String,
}

/// Sends `raw` and reads the response until the server closes (`Connection: close`).
async fn exchange(addr: SocketAddr, raw: &[u8]) -> Reply {
    let fut = async {
        let mut s = TcpStream::connect(addr).await.expect("connect admin port");
        s.write_all(raw).await.expect("send");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.expect("read");
        buf
    };
    let buf = tokio::time::timeout(IO_TIMEOUT, fut)
        .await
        .expect("admin reply timed out");
    let text = String::from_utf8(buf).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("status line: {head}"));
    Reply {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_string(),
    }
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
    .await
}

/// One sample: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// A strict reader of the Prometheus text format (0.0.4): every sample's metric has `# HELP`
/// and `# TYPE` lines before it, names and label names are valid, values are numbers.
fn parse_prometheus(text: &str) -> Vec<Sample> {
    let valid = |n: &str| {
        !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let (mut help, mut kind) = (BTreeMap::new(), BTreeMap::new());
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, h) = rest.split_once(' ').expect("HELP name text");
            assert!(valid(name) && !h.is_empty(), "HELP line: {line}");
            help.insert(name.to_string(), h.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, t) = rest.split_once(' ').expect("TYPE name type");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                "{line}"
            );
            kind.insert(name.to_string(), t.to_string());
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment line: {line}");
        let (series, value) = line.rsplit_once(' ').expect("sample: series value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels end with }");
                let mut labels = BTreeMap::new();
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                    assert!(valid(k), "label name in {line}");
                    labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
                }
                (name, labels)
            }
        };
        assert!(valid(name), "metric name in {line}");
        assert!(kind.contains_key(name), "{name} has no # TYPE before it");
        assert!(help.contains_key(name), "{name} has no # HELP before it");
        out.push((name.to_string(), labels, value));
    }
    out
}

/// The value of the one sample of `name` whose labels include `with`.
fn value(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && with
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.2)
}

async fn scrape(addr: SocketAddr) -> Vec<Sample> {
    let r = get(addr, "/metrics").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.head.contains("content-type: text/plain; version=0.0.4"),
        "{}",
        r.head
    );
    parse_prometheus(&r.body)
}

fn admin_addr(s: &common::Server) -> SocketAddr {
    let port = s.node.admin_port.load(Relaxed) as u16;
    assert_ne!(port, 0, "admin-port 0 opens an admin port");
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test]
async fn metrics_parse_and_follow_the_commands_clients_run() {
    let s = start_with(&[("admin-port", "0")]).await;
    let admin = admin_addr(&s);
    let before = scrape(admin).await;
    for (name, _, _) in &before {
        assert!(name.starts_with("meridian_"), "{name}");
    }
    for (_, labels, _) in &before {
        assert_eq!(labels.get("region").map(String::as_str), Some("local"));
    }
    for name in [
        "meridian_keyspace_keys",
        "meridian_keyspace_hits_total",
        "meridian_keyspace_misses_total",
        "meridian_keyspace_evicted_total",
        "meridian_memory_used_bytes",
        "meridian_commands_processed_total",
        "meridian_clients_connected",
        "meridian_crdt_tombstones_pending",
        "meridian_clock_skew_alarms_total",
        "meridian_persist_aof_enabled",
    ] {
        assert!(value(&before, name, &[]).is_some(), "{name} missing");
    }
    for kind in ["register", "counter", "expiry"] {
        let v = value(
            &before,
            "meridian_crdt_conflicts_resolved_total",
            &[("kind", kind)],
        );
        assert_eq!(v, Some(0.0), "conflicts of kind {kind}");
    }
    assert_eq!(value(&before, "meridian_keyspace_keys", &[]), Some(0.0));

    let mut c = client(s.addr()).await;
    let () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut c)
        .await
        .unwrap();
    let _: Option<String> = redis::cmd("GET")
        .arg("k")
        .query_async(&mut c)
        .await
        .unwrap();
    let _: Option<String> = redis::cmd("GET")
        .arg("nope")
        .query_async(&mut c)
        .await
        .unwrap();
    let after = scrape(admin).await;
    let delta = |name: &str| value(&after, name, &[]).unwrap() - value(&before, name, &[]).unwrap();
    assert_eq!(value(&after, "meridian_keyspace_keys", &[]), Some(1.0));
    assert_eq!(delta("meridian_keyspace_hits_total"), 1.0);
    assert_eq!(delta("meridian_keyspace_misses_total"), 1.0);
    assert!(delta("meridian_commands_processed_total") >= 3.0);
    assert_eq!(value(&after, "meridian_clients_connected", &[]), Some(1.0));
    s.shutdown().await;
}

#[tokio::test]
async fn health_state_and_dashboard_are_served() {
    let s = start_with(&[("admin-port", "0"), ("region", "eu-west")]).await;
    let admin = admin_addr(&s);
    let h = get(admin, "/health").await;
    assert_eq!(h.status, 200);
    let body: serde_json::Value = serde_json::from_str(&h.body).unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["cluster_state"], "standalone");

    let st = get(admin, "/api/state").await;
    assert!(st.head.contains("content-type: application/json"));
    let state: serde_json::Value = serde_json::from_str(&st.body).unwrap();
    assert_eq!(state["regions"][0]["name"], "eu-west");
    assert_eq!(state["regions"][0]["local"], true);
    assert!(state["hot_keys"].is_array(), "hot_keys is a list");
    assert!(
        state["keyspace"]["hit_ratio"].is_null(),
        "no reads yet: no ratio"
    );

    let page = get(admin, "/").await;
    assert_eq!(page.status, 200);
    assert!(page.head.contains("content-type: text/html"));
    assert!(page.body.contains("/api/state") && page.body.contains("<script>"));

    // HEAD: the headers with the length of the body it does not send.
    let head = exchange(admin, b"HEAD /health HTTP/1.1\r\n\r\n").await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert!(head.head.contains("content-length: "));

    // INFO server tells an operator where the admin port is.
    let mut c = client(s.addr()).await;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(
        info_field(&info, "admin_port"),
        Some(admin.port().to_string())
    );
    s.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_the_node_keeps_serving() {
    let s = start_with(&[("admin-port", "0")]).await;
    let admin = admin_addr(&s);
    // A connection that sends nothing must not block anyone else.
    let _idle = TcpStream::connect(admin).await.unwrap();

    let r = get(admin, "/nope").await;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("/nope"));

    let r = exchange(
        admin,
        b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 405);
    assert!(r.head.contains("allow: get, head"), "{}", r.head);

    for bad in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /metrics HTTP/9.9\r\n\r\n",
        b"GET / HTTP/1.1\r\nthis is not a header\r\n\r\n",
        b"\x00\x01\x02\xff\r\n\r\n",
    ] {
        let r = exchange(admin, bad).await;
        assert_eq!(
            r.status,
            400,
            "{:?} -> {}",
            String::from_utf8_lossy(bad),
            r.body
        );
        assert!(r.body.contains("Bad Request"), "{}", r.body);
    }
    // A head far beyond the limit: refused once the limit is passed, not buffered forever.
    let mut huge = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 64 * 1024));
    huge.extend_from_slice(b"\r\n\r\n");
    let r = exchange(admin, &huge).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("larger than"), "{}", r.body);

    assert_eq!(get(admin, "/health").await.status, 200);
    let mut c = client(s.addr()).await;
    let pong: String = redis::cmd("PING").query_async(&mut c).await.unwrap();
    assert_eq!(pong, "PONG");
    s.shutdown().await;
}

/// Starts a node through `server::spawn` (to see its start error) with RESP port 0.
async fn spawn_with(o: Vec<(&str, String)>) -> Result<meridian::server::Running, String> {
    let o: Vec<(String, String)> = [("port", "0".to_string())]
        .into_iter()
        .chain(o)
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let config = meridian::config::Config::layered(None, false, &o).expect("config layers");
    meridian::server::spawn(config)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn admin_port_settings_are_checked_at_start() {
    let start = spawn_with;
    let err = start(vec![("admin-port", "yes".into())])
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("admin-port 'yes'"), "{err}");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let err = start(vec![("admin-port", port)])
        .await
        .err()
        .expect("busy port refused");
    assert!(
        err.to_string().contains("admin port: cannot listen"),
        "{err}"
    );
    // The admin task stops with the node: its port closes.
    let running = start(vec![("admin-port", "0".into())])
        .await
        .expect("starts");
    let port = running.node.admin_port.load(Relaxed) as u16;
    assert_eq!(
        get(SocketAddr::from(([127, 0, 0, 1], port)), "/health")
            .await
            .status,
        200
    );
    running.shutdown().await;
    assert!(
        TcpStream::connect(("127.0.0.1", port)).await.is_err(),
        "admin port still open after shutdown"
    );
    // `no` and the default `auto` with an ephemeral RESP port: no admin port.
    for v in ["no", "-1", "auto"] {
        let running = start(vec![("admin-port", v.into())]).await.expect("starts");
        assert_eq!(running.node.admin_port.load(Relaxed), 0, "admin-port {v}");
        running.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_regions_have_per_peer_region_metrics_and_state() {
    // Region b's clock runs 3 s fast: its stamps raise skew alarms in region a.
    let w = World::start(
        &[
            RegionSpec::single(),
            RegionSpec::single().opt("debug-clock-offset", "3000"),
        ],
        &[("admin-port", "0")],
    )
    .await;
    let port = |info: String| -> SocketAddr {
        let p: u16 = info_field(&info, "admin_port").unwrap().parse().unwrap();
        assert_ne!(p, 0);
        SocketAddr::from(([127, 0, 0, 1], p))
    };
    let a = port(w.info(0, 0, "server").await);
    let before = scrape(a).await;
    let peer = [("peer_region", "b")];
    assert_eq!(
        value(&before, "meridian_region_connected", &peer),
        Some(1.0)
    );
    for name in [
        "meridian_region_lag_seconds",
        "meridian_region_keys_pending",
        "meridian_region_sent_bytes_total",
        "meridian_region_received_batches_total",
        "meridian_region_resync_rounds_total",
    ] {
        assert!(
            value(&before, name, &peer).is_some(),
            "{name}{{peer_region=b}} missing"
        );
    }
    assert!(value(&before, "meridian_region_resync_rounds_total", &peer).unwrap() >= 1.0);

    for i in 0..20 {
        w.run(1, &["SET", &format!("k{i}"), "from-b"])
            .await
            .unwrap();
        w.run(0, &["SET", &format!("j{i}"), "from-a"])
            .await
            .unwrap();
    }
    assert_eq!(w.wait_regions(0, 0, 1, 5000).await, 1);
    assert_eq!(w.wait_regions(1, 0, 1, 5000).await, 1);
    let moved = eventually(Duration::from_secs(10), || async {
        let after = scrape(a).await;
        let grew = |n: &str| value(&after, n, &peer) > value(&before, n, &peer);
        grew("meridian_region_sent_bytes_total")
            && grew("meridian_region_received_batches_total")
            && value(&after, "meridian_region_skew_alarms_total", &peer) >= Some(1.0)
    })
    .await;
    assert!(
        moved,
        "per-region counters did not move:\n{}",
        get(a, "/metrics").await.body
    );

    // INFO regions and /metrics read the same figures (b writes no more, so they hold still).
    let info = w.info(0, 0, "regions").await;
    let field = |f: &str| -> f64 {
        common::peer_field(&info, "b", f)
            .unwrap_or_else(|| panic!("{f} in {info}"))
            .parse()
            .unwrap()
    };
    let now = scrape(a).await;
    for (f, metric) in [
        ("skew_alarms", "meridian_region_skew_alarms_total"),
        ("resync_rounds", "meridian_region_resync_rounds_total"),
        ("nodes", "meridian_region_nodes"),
    ] {
        assert_eq!(
            Some(field(f)),
            value(&now, metric, &peer),
            "{f} vs {metric}"
        );
    }

    let state: serde_json::Value = serde_json::from_str(&get(a, "/api/state").await.body).unwrap();
    let regions = state["regions"].as_array().unwrap();
    let names: Vec<&str> = regions
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(regions[1]["state"], "up");
    assert_eq!(regions[1]["skewed"], true, "b's clock is 3 s fast");
    assert_eq!(regions[0]["skewed"], false);
    let node_regions: Vec<&str> = state["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["region"].as_str().unwrap())
        .collect();
    assert_eq!(node_regions, ["a", "b"], "one node per region, ours first");
    let h = get(a, "/health").await;
    assert_eq!(h.status, 200, "{}", h.body);
    assert!(h.body.contains("\"peer_regions_down\":0"), "{}", h.body);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_while_the_region_is_down() {
    let mut w = World::start(&[RegionSpec::nodes(2, 0)], &[("admin-port", "0")]).await;
    let info = w.info(0, 0, "server").await;
    let p: u16 = info_field(&info, "admin_port").unwrap().parse().unwrap();
    let a = SocketAddr::from(([127, 0, 0, 1], p));
    assert_eq!(get(a, "/health").await.status, 200);
    // Half the slots lose their only owner: the region is down (CLUSTERDOWN), and says so.
    w.stop(0, 1).await;
    let down = eventually(Duration::from_secs(20), || async {
        get(a, "/health").await.status == 503
    })
    .await;
    assert!(down, "health stayed 200 with half the slots unowned");
    let h = get(a, "/health").await;
    assert!(h.body.contains("\"status\":\"cluster_down\""), "{}", h.body);
    let metrics = scrape(a).await;
    assert_eq!(value(&metrics, "meridian_cluster_state_ok", &[]), Some(0.0));
    w.shutdown().await;
}

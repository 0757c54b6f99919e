//! Eviction as a client sees it: the OOM reply under noeviction; every policy keeping memory
//! within 5% of `maxmemory` under a write flood; volatile policies touching only keys with a
//! TTL; LRU, LFU and SIEVE keeping the keys that are read; CONFIG SET at runtime; OBJECT and
//! INFO; and the CRDT rules — an evicted counter resumes from this node's totals so a merge
//! with a replica sums exactly, and a tombstone is never evicted.
//!
//! Memory is the whole process's jemalloc count, so the tests take a lock and run one at a
//! time, and limits are set relative to what the process holds when each starts.

mod common;

use common::{err, info_field, start_with};
use meridian::store::used_memory;
use redis::aio::MultiplexedConnection;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";
const MB: usize = 1024 * 1024;

async fn config_set(c: &mut MultiplexedConnection, name: &str, value: &str) {
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query_async(c)
        .await
        .unwrap_or_else(|e| panic!("CONFIG SET {name} {value}: {e}"));
}

async fn info(c: &mut MultiplexedConnection, field: &str) -> String {
    let text: String = redis::cmd("INFO").query_async(c).await.unwrap();
    info_field(&text, field).unwrap_or_else(|| panic!("INFO has no {field}"))
}

/// SETs `prefix{i}` for i in `range` with `size`-byte values (and a TTL when `ttl`), pipelined;
/// returns the highest used memory seen after each batch.
async fn flood(
    c: &mut MultiplexedConnection,
    prefix: &str,
    range: std::ops::Range<usize>,
    size: usize,
    ttl: bool,
) -> usize {
    let value = vec![b'v'; size];
    let mut peak = 0;
    let ids: Vec<usize> = range.collect();
    for batch in ids.chunks(200) {
        let mut p = redis::pipe();
        for i in batch {
            let cmd = p.cmd("SET").arg(format!("{prefix}{i}")).arg(&value[..]);
            if ttl {
                cmd.arg("EX").arg(3600);
            }
            cmd.ignore();
        }
        let () = p.query_async(c).await.expect("flood batch");
        peak = peak.max(used_memory());
    }
    peak
}

async fn exists(c: &mut MultiplexedConnection, keys: &[String]) -> usize {
    let mut p = redis::pipe();
    for k in keys {
        p.cmd("EXISTS").arg(k);
    }
    let v: Vec<usize> = p.query_async(c).await.unwrap();
    v.into_iter().sum()
}

#[tokio::test]
async fn noeviction_answers_oom_and_reads_still_work() {
    let _g = SERIAL.lock().await;
    let s = start_with(&[]).await;
    let mut c = common::client(s.addr()).await;
    let () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut c)
        .await
        .unwrap();
    config_set(&mut c, "maxmemory", "1").await;
    assert_eq!(err(&mut c, &["SET", "k2", "v"]).await, OOM);
    assert_eq!(err(&mut c, &["INCR", "n"]).await, OOM);
    let v: String = redis::cmd("GET")
        .arg("k")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(v, "v", "reads are not refused");
    let n: i64 = redis::cmd("DEL")
        .arg("k")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 1, "DEL frees memory, so it is not refused (not denyoom)");
    assert_eq!(info(&mut c, "maxmemory").await, "1");
    assert_eq!(info(&mut c, "maxmemory_policy").await, "noeviction");
    config_set(&mut c, "maxmemory", "0").await;
    let () = redis::cmd("SET")
        .arg("k2")
        .arg("v")
        .query_async(&mut c)
        .await
        .unwrap();
}

#[tokio::test]
async fn every_policy_stays_within_five_percent_under_a_flood() {
    let _g = SERIAL.lock().await;
    for policy in [
        "allkeys-lru",
        "allkeys-lfu",
        "allkeys-random",
        "allkeys-sieve",
        "allkeys-tinylfu",
        "volatile-lru",
        "volatile-lfu",
        "volatile-random",
        "volatile-ttl",
    ] {
        let s = start_with(&[("maxmemory-policy", policy)]).await;
        let mut c = common::client(s.addr()).await;
        let limit = used_memory() + 32 * MB;
        config_set(&mut c, "maxmemory", &limit.to_string()).await;
        let ttl = policy.starts_with("volatile");
        // About twice what fits.
        let peak = flood(&mut c, "k", 0..60_000, 1000, ttl).await;
        let evicted: u64 = info(&mut c, "evicted_keys").await.parse().unwrap();
        assert!(evicted > 20_000, "{policy}: only {evicted} evicted");
        assert!(
            peak as f64 <= limit as f64 * 1.05,
            "{policy}: peak {peak} vs limit {limit}"
        );
        let dbsize: usize = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
        assert!(
            dbsize > 10_000,
            "{policy}: over-evicted, {dbsize} keys left"
        );
        let () = redis::cmd("FLUSHALL").query_async(&mut c).await.unwrap();
        drop(c);
        s.shutdown().await;
    }
}

#[tokio::test]
async fn volatile_policies_evict_only_keys_with_a_ttl() {
    let _g = SERIAL.lock().await;
    let s = start_with(&[("maxmemory-policy", "volatile-lru")]).await;
    let mut c = common::client(s.addr()).await;
    let base = used_memory();
    flood(&mut c, "persistent", 0..2000, 1000, false).await;
    flood(&mut c, "volatile", 0..4000, 1000, true).await;
    config_set(&mut c, "maxmemory", &(base + 4 * MB).to_string()).await;
    flood(&mut c, "more", 0..1000, 1000, true).await;
    let persistent: Vec<String> = (0..2000).map(|i| format!("persistent{i}")).collect();
    assert_eq!(
        exists(&mut c, &persistent).await,
        2000,
        "no key without a TTL evicted"
    );
    let volatile: Vec<String> = (0..4000).map(|i| format!("volatile{i}")).collect();
    assert!(exists(&mut c, &volatile).await < 4000);
    // Once only keys without a TTL remain, writes are refused.
    let mut refused = false;
    for i in 0..20_000 {
        let r: redis::RedisResult<()> = redis::cmd("SET")
            .arg(format!("p{i}"))
            .arg(vec![b'v'; 1000])
            .query_async(&mut c)
            .await;
        if let Err(e) = r {
            assert_eq!(common::error_text(&e), OOM);
            refused = true;
            break;
        }
    }
    assert!(
        refused,
        "volatile-lru with no volatile key left must answer OOM"
    );
    assert_eq!(exists(&mut c, &persistent).await, 2000);
}

/// Writes `hot` keys, then floods cold keys while reading the hot ones (once per batch, or
/// `reads` times up front); returns the fraction of hot keys and of the first cold keys left.
async fn keeps_what_is_read(policy: &str, reads_per_batch: bool) -> (f64, f64) {
    let s = start_with(&[("maxmemory-policy", policy)]).await;
    let mut c = common::client(s.addr()).await;
    let limit = used_memory() + 8 * MB;
    config_set(&mut c, "maxmemory", &limit.to_string()).await;
    let hot: Vec<String> = (0..1000).map(|i| format!("hot{i}")).collect();
    flood(&mut c, "hot", 0..1000, 1000, false).await;
    let read_all = |c: &mut MultiplexedConnection| {
        let mut p = redis::pipe();
        for k in &hot {
            p.cmd("GET").arg(k).ignore();
        }
        let c = c.clone();
        async move {
            let mut c = c;
            let () = p.query_async(&mut c).await.unwrap();
        }
    };
    if !reads_per_batch {
        for _ in 0..30 {
            read_all(&mut c).await;
        }
    }
    for b in 0..40 {
        flood(&mut c, "cold", b * 500..(b + 1) * 500, 1000, false).await;
        if reads_per_batch {
            read_all(&mut c).await;
        }
    }
    let cold: Vec<String> = (0..2000).map(|i| format!("cold{i}")).collect();
    let h = exists(&mut c, &hot).await as f64 / 1000.0;
    let k = exists(&mut c, &cold).await as f64 / 2000.0;
    drop(c);
    s.shutdown().await;
    (h, k)
}

#[tokio::test]
async fn lru_and_sieve_keep_recently_read_keys() {
    let _g = SERIAL.lock().await;
    for policy in ["allkeys-lru", "allkeys-sieve"] {
        let (hot, cold) = keeps_what_is_read(policy, true).await;
        assert!(hot > 0.9, "{policy}: {hot} of hot keys left");
        assert!(cold < 0.2, "{policy}: {cold} of early cold keys left");
    }
}

#[tokio::test]
async fn lfu_keeps_frequently_read_keys() {
    let _g = SERIAL.lock().await;
    let (hot, cold) = keeps_what_is_read("allkeys-lfu", false).await;
    assert!(hot > 0.9, "{hot} of hot keys left");
    assert!(cold < 0.2, "{cold} of early cold keys left");
}

/// TinyLFU remembers how often keys were read: hot keys read only before a flood of new keys
/// that are never read survive it (the newcomers lose admission), where LRU, which sees the hot
/// keys as the longest idle, evicts them first.
#[tokio::test]
async fn tinylfu_keeps_frequently_read_keys_through_a_write_flood() {
    let _g = SERIAL.lock().await;
    let (hot, _) = keeps_what_is_read("allkeys-tinylfu", false).await;
    let (lru_hot, _) = keeps_what_is_read("allkeys-lru", false).await;
    assert!(hot > 0.9, "tinylfu: {hot} of hot keys left");
    assert!(lru_hot < 0.5, "lru: {lru_hot} of hot keys left");
}

#[tokio::test]
async fn config_set_switches_policy_and_limit_at_runtime() {
    let _g = SERIAL.lock().await;
    let s = start_with(&[]).await;
    let mut c = common::client(s.addr()).await;
    config_set(&mut c, "maxmemory", "32mb").await;
    config_set(&mut c, "maxmemory-policy", "ALLKEYS-LFU").await;
    let got: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory*")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(
        got.windows(2).any(|w| w == ["maxmemory", "33554432"]),
        "{got:?}"
    );
    assert!(
        got.windows(2)
            .any(|w| w == ["maxmemory-policy", "allkeys-lfu"]),
        "{got:?}"
    );
    assert_eq!(info(&mut c, "maxmemory_human").await, "32.00M");
    assert_eq!(info(&mut c, "maxmemory_policy").await, "allkeys-lfu");
    let e = err(&mut c, &["CONFIG", "SET", "maxmemory-policy", "lru"]).await;
    assert!(e.starts_with("ERR"), "{e}");
    // A limit below what is held evicts on the next write, under the policy just chosen.
    flood(&mut c, "k", 0..3000, 1000, false).await;
    config_set(&mut c, "maxmemory", &(used_memory() - MB).to_string()).await;
    flood(&mut c, "x", 0..10, 10, false).await;
    let evicted: u64 = info(&mut c, "evicted_keys").await.parse().unwrap();
    assert!(evicted > 0);
    // CONFIG RESETSTAT zeroes it, as in Redis.
    let () = q!(c, "CONFIG", "RESETSTAT").unwrap();
    assert_eq!(info(&mut c, "evicted_keys").await, "0");
}

#[tokio::test]
async fn an_evicted_counter_resumes_from_its_totals_and_merges_exactly() {
    let _g = SERIAL.lock().await;
    let a = start_with(&[("node-id", "a1"), ("maxmemory-policy", "allkeys-lru")]).await;
    let b = start_with(&[("node-id", "b2")]).await;
    let mut ca = common::client(a.addr()).await;
    let mut cb = common::client(b.addr()).await;
    let n: i64 = redis::cmd("INCRBY")
        .arg("c")
        .arg(10)
        .query_async(&mut ca)
        .await
        .unwrap();
    assert_eq!(n, 10);
    // The replica has A's increments (as replication would have delivered them) and its own.
    let before = a.node.keyspace.entry(b"c").unwrap();
    b.node.keyspace.merge(b"c", &before.to_delta());
    let n: i64 = redis::cmd("INCRBY")
        .arg("c")
        .arg(7)
        .query_async(&mut cb)
        .await
        .unwrap();
    assert_eq!(n, 17);
    // Tombstones are never evicted.
    let () = redis::cmd("SET")
        .arg("gone")
        .arg("v")
        .query_async(&mut ca)
        .await
        .unwrap();
    let _: i64 = redis::cmd("DEL")
        .arg("gone")
        .query_async(&mut ca)
        .await
        .unwrap();
    // A limit of one byte evicts every live key on the next write.
    config_set(&mut ca, "maxmemory", "1").await;
    let () = redis::cmd("SET")
        .arg("trigger")
        .arg("v")
        .query_async(&mut ca)
        .await
        .unwrap();
    config_set(&mut ca, "maxmemory", "0").await;
    assert!(
        a.node.keyspace.entry(b"c").is_none(),
        "the counter was evicted"
    );
    let tomb = a.node.keyspace.entry(b"gone").expect("the tombstone stays");
    assert!(tomb.register_value().is_none());
    assert!(info(&mut ca, "evicted_keys").await.parse::<u64>().unwrap() >= 1);
    let n: i64 = redis::cmd("INCRBY")
        .arg("c")
        .arg(5)
        .query_async(&mut ca)
        .await
        .unwrap();
    assert_eq!(n, 15, "A's totals continue from 10, not from 0");
    // Exchange full states both ways: the sum is exact everywhere.
    let ea = a.node.keyspace.entry(b"c").unwrap();
    let eb = b.node.keyspace.entry(b"c").unwrap();
    a.node.keyspace.merge(b"c", &eb.to_delta());
    b.node.keyspace.merge(b"c", &ea.to_delta());
    for c in [&mut ca, &mut cb] {
        let v: i64 = redis::cmd("GET").arg("c").query_async(c).await.unwrap();
        assert_eq!(v, 22, "10 + 7 + 5");
    }
}

#[tokio::test]
async fn object_subcommands() {
    let _g = SERIAL.lock().await;
    let s = start_with(&[]).await;
    let mut c = common::client(s.addr()).await;
    let enc = |v: &'static str| {
        let mut c = c.clone();
        async move {
            let () = redis::cmd("SET")
                .arg("k")
                .arg(v)
                .query_async(&mut c)
                .await
                .unwrap();
            let e: String = redis::cmd("OBJECT")
                .arg("ENCODING")
                .arg("k")
                .query_async(&mut c)
                .await
                .unwrap();
            e
        }
    };
    assert_eq!(enc("12345").await, "int");
    assert_eq!(enc("hello").await, "embstr");
    assert_eq!(
        enc("a value that is definitely longer than forty-four bytes").await,
        "raw"
    );
    let missing: Option<String> = redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg("nope")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(missing, None);
    assert_eq!(
        err(&mut c, &["OBJECT", "FREQ", "k"]).await,
        "ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust."
    );
    let idle: i64 = redis::cmd("OBJECT")
        .arg("IDLETIME")
        .arg("k")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!((0..=2).contains(&idle), "{idle}");
    let rc: i64 = redis::cmd("OBJECT")
        .arg("REFCOUNT")
        .arg("k")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(rc, 1);
    config_set(&mut c, "maxmemory-policy", "allkeys-lfu").await;
    assert_eq!(
        err(&mut c, &["OBJECT", "IDLETIME", "k"]).await,
        "ERR An LFU maxmemory policy is selected, idle time not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust."
    );
    config_set(&mut c, "lfu-log-factor", "0").await;
    let () = redis::cmd("SET")
        .arg("f")
        .arg("v")
        .query_async(&mut c)
        .await
        .unwrap();
    for _ in 0..10 {
        let _: String = redis::cmd("GET")
            .arg("f")
            .query_async(&mut c)
            .await
            .unwrap();
    }
    let freq: i64 = redis::cmd("OBJECT")
        .arg("FREQ")
        .arg("f")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(freq, 15, "starts at 5; with factor 0 every read counts");
    let help: Vec<String> = redis::cmd("OBJECT")
        .arg("HELP")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(help[0].starts_with("OBJECT <subcommand>"));
    assert!(err(&mut c, &["OBJECT", "NOPE", "k"])
        .await
        .starts_with("ERR unknown subcommand 'NOPE'"));
}

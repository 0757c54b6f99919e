//! Keyspace and expiry commands as a client sees them: DEL UNLINK EXISTS TYPE RENAME RENAMENX
//! COPY (REPLACE, DB) TOUCH KEYS (glob) SCAN (MATCH COUNT TYPE, a full iteration returns every
//! key at least once) RANDOMKEY DBSIZE FLUSHDB FLUSHALL; EXPIRE PEXPIRE EXPIREAT PEXPIREAT with
//! NX XX GT LT and their errors, TTL PTTL EXPIRETIME PEXPIRETIME PERSIST; lazy expiry (a key is
//! gone once its deadline passed) and active expiry (DBSIZE drops with no access to the keys).

mod common;

use common::{eventually, expect_all, start, Raw};
use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn del_unlink_exists_touch_type() {
    let s = start().await;
    let mut c = common::client(s.addr()).await;
    let _: () = q!(c, "MSET", "a", "1", "b", "2", "c", "3", "d", "4").unwrap();
    let n: i64 = q!(c, "EXISTS", "a", "a", "b", "nope").unwrap();
    assert_eq!(n, 3, "EXISTS counts a key once per mention");
    let n: i64 = q!(c, "TOUCH", "a", "b", "nope").unwrap();
    assert_eq!(n, 2);
    let n: i64 = q!(c, "DEL", "a", "a", "nope").unwrap();
    assert_eq!(n, 1, "a key named twice is deleted once");
    let n: i64 = q!(c, "UNLINK", "b", "c").unwrap();
    assert_eq!(n, 2);
    let n: i64 = q!(c, "EXISTS", "a", "b", "c", "d").unwrap();
    assert_eq!(n, 1);
    let t: String = q!(c, "TYPE", "d").unwrap();
    assert_eq!(t, "string");
    let t: String = q!(c, "TYPE", "a").unwrap();
    assert_eq!(t, "none");
    let mut raw = Raw::connect(s.addr()).await;
    expect_all(
        &mut raw,
        &[
            (&["TYPE", "d"], "+string\r\n"),
            (&["TYPE", "a"], "+none\r\n"),
            (
                &["DEL"],
                "-ERR wrong number of arguments for 'del' command\r\n",
            ),
            (
                &["EXISTS"],
                "-ERR wrong number of arguments for 'exists' command\r\n",
            ),
        ],
    )
    .await;
    s.shutdown().await;
}

#[tokio::test]
async fn rename_and_renamenx() {
    let s = start().await;
    let mut c = common::client(s.addr()).await;
    let _: () = q!(c, "SET", "src", "v", "EX", 100).unwrap();
    let _: () = q!(c, "RENAME", "src", "dst").unwrap();
    let v: Option<String> = q!(c, "GET", "src").unwrap();
    assert_eq!(v, None);
    let v: String = q!(c, "GET", "dst").unwrap();
    assert_eq!(v, "v");
    let ttl: i64 = q!(c, "TTL", "dst").unwrap();
    assert!((99..=100).contains(&ttl), "RENAME keeps the TTL: {ttl}");
    // Overwrites an existing destination, and its TTL.
    let _: () = q!(c, "SET", "other", "o").unwrap();
    let _: () = q!(c, "RENAME", "other", "dst").unwrap();
    let v: String = q!(c, "GET", "dst").unwrap();
    assert_eq!(v, "o");
    let ttl: i64 = q!(c, "TTL", "dst").unwrap();
    assert_eq!(ttl, -1);
    // A counter renames with its value.
    let _: i64 = q!(c, "INCRBY", "cnt", 7).unwrap();
    let _: () = q!(c, "RENAME", "cnt", "cnt2").unwrap();
    let n: i64 = q!(c, "INCR", "cnt2").unwrap();
    assert_eq!(n, 8);
    let _: () = q!(c, "SET", "x", "1").unwrap();
    let n: i64 = q!(c, "RENAMENX", "x", "dst").unwrap();
    assert_eq!(n, 0);
    let n: i64 = q!(c, "RENAMENX", "x", "y").unwrap();
    assert_eq!(n, 1);
    let mut raw = Raw::connect(s.addr()).await;
    expect_all(
        &mut raw,
        &[
            (&["RENAME", "nope", "z"], "-ERR no such key\r\n"),
            (&["RENAMENX", "nope", "z"], "-ERR no such key\r\n"),
            (&["RENAME", "nope", "nope"], "-ERR no such key\r\n"),
            (&["RENAME", "y", "y"], "+OK\r\n"),
            (&["RENAMENX", "y", "y"], ":0\r\n"),
            (&["GET", "y"], "$1\r\n1\r\n"),
            (
                &["RENAME", "y"],
                "-ERR wrong number of arguments for 'rename' command\r\n",
            ),
        ],
    )
    .await;
    s.shutdown().await;
}

#[tokio::test]
async fn copy_with_replace_and_db() {
    let s = start().await;
    let mut c = common::client(s.addr()).await;
    let _: () = q!(c, "SET", "src", "v", "EX", 100).unwrap();
    let n: i64 = q!(c, "COPY", "src", "dst").unwrap();
    assert_eq!(n, 1);
    let v: Vec<String> = q!(c, "MGET", "src", "dst").unwrap();
    assert_eq!(v, vec!["v", "v"]);
    let ttl: i64 = q!(c, "TTL", "dst").unwrap();
    assert!((99..=100).contains(&ttl), "COPY copies the TTL: {ttl}");
    let _: () = q!(c, "SET", "src", "w").unwrap();
    let n: i64 = q!(c, "COPY", "src", "dst").unwrap();
    assert_eq!(n, 0, "COPY onto an existing key needs REPLACE");
    let v: String = q!(c, "GET", "dst").unwrap();
    assert_eq!(v, "v");
    let n: i64 = q!(c, "COPY", "src", "dst", "REPLACE").unwrap();
    assert_eq!(n, 1);
    let v: String = q!(c, "GET", "dst").unwrap();
    assert_eq!(v, "w");
    let ttl: i64 = q!(c, "TTL", "dst").unwrap();
    assert_eq!(ttl, -1);
    let n: i64 = q!(c, "COPY", "nope", "dst2").unwrap();
    assert_eq!(n, 0);
    let n: i64 = q!(c, "COPY", "src", "dst3", "DB", 0).unwrap();
    assert_eq!(n, 1);
    let mut raw = Raw::connect(s.addr()).await;
    expect_all(
        &mut raw,
        &[
            (
                &["COPY", "src", "src"],
                "-ERR source and destination objects are the same\r\n",
            ),
            (&["COPY", "src", "d", "FOO"], "-ERR syntax error\r\n"),
            (&["COPY", "src", "d", "DB"], "-ERR syntax error\r\n"),
            (
                &["COPY", "src", "d", "DB", "x"],
                "-ERR value is not an integer or out of range\r\n",
            ),
            (
                &["COPY", "src", "d", "DB", "1"],
                "-ERR Copying to another database is not allowed in cluster mode\r\n",
            ),
            (&["EXISTS", "d"], ":0\r\n"),
        ],
    )
    .await;
    s.shutdown().await;
}

#[tokio::test]
async fn keys_glob_patterns() {
    let s = start().await;
    let mut c = common::client(s.addr()).await;
    let _: () =
        q!(c, "MSET", "hello", 1, "hallo", 1, "hxllo", 1, "hllo", 1, "heeeello", 1).unwrap();
    let _: () = q!(c, "MSET", "a*b", 1, "axb", 1, "user:1", 1, "user:2", 1).unwrap();
    let cases: &[(&str, &[&str])] = &[
        ("h?llo", &["hello", "hallo", "hxllo"]),
        ("h*llo", &["hello", "hallo", "hxllo", "hllo", "heeeello"]),
        ("h[ae]llo", &["hello", "hallo"]),
        ("h[^e]llo", &["hallo", "hxllo"]),
        ("h[a-b]llo", &["hallo"]),
        ("a\\*b", &["a*b"]),
        ("user:*", &["user:1", "user:2"]),
        ("nomatch*", &[]),
    ];
    for (pat, want) in cases {
        let mut got: Vec<String> = q!(c, "KEYS", *pat).unwrap();
        got.sort();
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "KEYS {pat}");
    }
    let all: Vec<String> = q!(c, "KEYS", "*").unwrap();
    assert_eq!(all.len(), 9);
    s.shutdown().await;
}

/// Iterates SCAN to the end (bounded) and returns every key seen, with repetitions.
async fn scan_all(c: &mut redis::aio::MultiplexedConnection, extra: &[&str]) -> Vec<String> {
    let mut cursor = "0".to_string();
    let mut seen = Vec::new();
    for _ in 0..100_000 {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(&cursor);
        for a in extra {
            cmd.arg(*a);
        }
        let (next, keys): (String, Vec<String>) = cmd.query_async(c).await.unwrap();
        seen.extend(keys);
        if next == "0" {
            return seen;
        }
        cursor = next;
    }
    panic!("SCAN did not finish");
}

#[tokio::test]
async fn scan_returns_every_key_with_match_count_type() {
    let s = start().await;
    let mut c = common::client(s.addr()).await;
    let mut mset = redis::cmd("MSET");
    for i in 0..600 {
        mset.arg(format!("k:{i}")).arg(i);
    }
    for i in 0..50 {
        mset.arg(format!("other:{i}")).arg(i);
    }
    let _: () = mset.query_async(&mut c).await.unwrap();
    let want: HashSet<String> = (0..600).map(|i| format!("k:{i}")).collect();
    for count in ["1", "7", "1000"] {
        let seen = scan_all(&mut c, &["COUNT", count, "MATCH", "k:*"]).await;
        let set: HashSet<String> = seen.iter().cloned().collect();
        assert_eq!(set, want, "SCAN COUNT {count} MATCH k:*");
    }
    let all: HashSet<String> = scan_all(&mut c, &[]).await.into_iter().collect();
    assert_eq!(all.len(), 650);
    let typed: HashSet<String> = scan_all(&mut c, &["TYPE", "string"])
        .await
        .into_iter()
        .collect();
    assert_eq!(typed.len(), 650);
    let none = scan_all(&mut c, &["TYPE", "list"]).await;
    assert!(none.is_empty(), "no key is a list: {none:?}");
    // Keys deleted before the scan never show up; keys present throughout always do.
    let _: i64 = q!(c, "DEL", "k:0", "k:1").unwrap();
    let seen: HashSet<String> = scan_all(&mut c, &["MATCH", "k:?"])
        .await
        .into_iter()
        .collect();
    let want: HashSet<String> = (2..10).map(|i| format!("k:{i}")).collect();
    assert_eq!(seen, want);
    let mut raw = Raw::connect(s.addr()).await;
    expect_all(
        &mut raw,
        &[
            (&["SCAN", "abc"], "-ERR invalid cursor\r\n"),
            (&["SCAN", " 1"], "-ERR invalid cursor\r\n"),
            (&["SCAN", "99999999999999999999"], "-ERR invalid cursor\r\n"),
            // Redis reads the cursor with strtoul: "-1" is a (huge) valid cursor, past the end.
            (&["SCAN", "-1"], "*2\r\n$1\r\n0\r\n*0\r\n"),
            (&["SCAN", "0", "COUNT", "0"], "-ERR syntax error\r\n"),
            (
                &["SCAN", "0", "COUNT", "abc"],
                "-ERR value is not an integer or out of range\r\n",
            ),
            (&["SCAN", "0", "MATCH"], "-ERR syntax error\r\n"),
            (&["SCAN", "0", "FOO", "bar"], "-ERR syntax error\r\n"),
            (
                &["SCAN"],
                "-ERR wrong number of arguments for 'scan' command\r\n",
            ),
        ],
    )
    .await;
    s.shutdown().await;
}

#[tokio::test]
async fn randomkey_dbsize_flush() {
    let s = start().await;
    let mut c = common::client(s.addr()).await;
    let k: Option<String> = q!(c, "RANDOMKEY").unwrap();
    assert_eq!(k, None);
    let n: i64 = q!(c, "DBSIZE").unwrap();
    assert_eq!(n, 0);
    let _: () = q!(c, "MSET", "a", 1, "b", 2, "c", 3).unwrap();
    let n: i64 = q!(c, "DBSIZE").unwrap();
    assert_eq!(n, 3);
    for _ in 0..20 {
        let k: String = q!(c, "RANDOMKEY").unwrap();
        assert!(["a", "b", "c"].contains(&k.as_str()), "RANDOMKEY gave {k}");
    }
    let _: () = q!(c, "FLUSHDB").unwrap();
    let n: i64 = q!(c, "DBSIZE").unwrap();
    assert_eq!(n, 0);
    let v: Option<String> = q!(c, "GET", "a").unwrap();
    assert_eq!(v, None);
    let _: () = q!(c, "SET", "a", 1).unwrap();
    let _: () = q!(c, "FLUSHALL", "ASYNC").unwrap();
    let n: i64 = q!(c, "DBSIZE").unwrap();
    assert_eq!(n, 0);
    let _: () = q!(c, "SET", "a", 1).unwrap();
    let _: () = q!(c, "FLUSHDB", "SYNC").unwrap();
    let k: Option<String> = q!(c, "RANDOMKEY").unwrap();
    assert_eq!(k, None);
    // A counter flushed starts again from zero.
    let _: i64 = q!(c, "INCRBY", "n", 5).unwrap();
    let _: () = q!(c, "FLUSHALL").unwrap();
    let n: i64 = q!(c, "INCR", "n").unwrap();
    assert_eq!(n, 1);
    let mut raw = Raw::connect(s.addr()).await;
    expect_all(
        &mut raw,
        &[
            (&["FLUSHDB", "foo"], "-ERR syntax error\r\n"),
            (&["FLUSHALL", "ASYNC", "SYNC"], "-ERR syntax error\r\n"),
            (
                &["DBSIZE", "x"],
                "-ERR wrong number of arguments for 'dbsize' command\r\n",
            ),
            (&["DBSIZE"], ":1\r\n"),
        ],
    )
    .await;
    s.shutdown().await;
}

#[tokio::test]
async fn expire_family_and_ttl_readers() {
    let s = start().await;
    let mut c = common::client(s.addr()).await;
    let _: () = q!(c, "SET", "k", "v").unwrap();
    let ttl: i64 = q!(c, "TTL", "k").unwrap();
    assert_eq!(ttl, -1);
    let ttl: i64 = q!(c, "PTTL", "nope").unwrap();
    assert_eq!(ttl, -2);
    let n: i64 = q!(c, "EXPIRE", "nope", 10).unwrap();
    assert_eq!(n, 0);
    let n: i64 = q!(c, "EXPIRE", "k", 100).unwrap();
    assert_eq!(n, 1);
    let ttl: i64 = q!(c, "TTL", "k").unwrap();
    assert_eq!(ttl, 100);
    let n: i64 = q!(c, "PEXPIRE", "k", 50_000).unwrap();
    assert_eq!(n, 1);
    let pttl: i64 = q!(c, "PTTL", "k").unwrap();
    assert!((49_000..=50_000).contains(&pttl));
    let at = now_ms() / 1000 + 1000;
    let _: i64 = q!(c, "EXPIREAT", "k", at).unwrap();
    let t: i64 = q!(c, "EXPIRETIME", "k").unwrap();
    assert_eq!(t, at);
    let t: i64 = q!(c, "PEXPIRETIME", "k").unwrap();
    assert_eq!(t, at * 1000);
    // EXPIRETIME rounds to the nearest second, like TTL.
    let _: i64 = q!(c, "PEXPIREAT", "k", 33177117420999i64).unwrap();
    let t: i64 = q!(c, "PEXPIRETIME", "k").unwrap();
    assert_eq!(t, 33177117420999);
    let t: i64 = q!(c, "EXPIRETIME", "k").unwrap();
    assert_eq!(t, 33177117421);
    let n: i64 = q!(c, "PERSIST", "k").unwrap();
    assert_eq!(n, 1);
    let n: i64 = q!(c, "PERSIST", "k").unwrap();
    assert_eq!(n, 0);
    let t: i64 = q!(c, "EXPIRETIME", "k").unwrap();
    assert_eq!(t, -1);
    let t: i64 = q!(c, "PEXPIRETIME", "nope").unwrap();
    assert_eq!(t, -2);
    // A deadline in the past deletes the key and still answers 1.
    let n: i64 = q!(c, "EXPIRE", "k", -1).unwrap();
    assert_eq!(n, 1);
    let e: i64 = q!(c, "EXISTS", "k").unwrap();
    assert_eq!(e, 0);
    let _: () = q!(c, "SET", "k", "v").unwrap();
    let n: i64 = q!(c, "PEXPIREAT", "k", 1).unwrap();
    assert_eq!(n, 1);
    let e: i64 = q!(c, "EXISTS", "k").unwrap();
    assert_eq!(e, 0);
    s.shutdown().await;
}

#[tokio::test]
async fn expire_nx_xx_gt_lt_and_errors() {
    let s = start().await;
    let mut c = common::client(s.addr()).await;
    let _: () = q!(c, "SET", "k", "v").unwrap();
    let mut raw = Raw::connect(s.addr()).await;
    let notcompat = "-ERR NX and XX, GT or LT options at the same time are not compatible\r\n";
    expect_all(
        &mut raw,
        &[
            (&["EXPIRE", "k", "100", "XX"], ":0\r\n"),
            (&["EXPIRE", "k", "100", "GT"], ":0\r\n"),
            (&["TTL", "k"], ":-1\r\n"),
            (&["EXPIRE", "k", "100", "LT"], ":1\r\n"),
            (&["TTL", "k"], ":100\r\n"),
            (&["EXPIRE", "k", "200", "NX"], ":0\r\n"),
            (&["EXPIRE", "k", "50", "GT"], ":0\r\n"),
            (&["EXPIRE", "k", "200", "gt"], ":1\r\n"),
            (&["TTL", "k"], ":200\r\n"),
            (&["EXPIRE", "k", "300", "LT"], ":0\r\n"),
            (&["EXPIRE", "k", "150", "XX", "LT"], ":1\r\n"),
            (&["TTL", "k"], ":150\r\n"),
            (&["PERSIST", "k"], ":1\r\n"),
            (&["PEXPIRE", "k", "100000", "NX"], ":1\r\n"),
            (&["TTL", "k"], ":100\r\n"),
            (&["EXPIRE", "k", "10", "NX", "XX"], notcompat),
            (&["EXPIRE", "k", "10", "NX", "GT"], notcompat),
            (&["EXPIRE", "k", "10", "LT", "NX"], notcompat),
            (
                &["EXPIRE", "k", "10", "GT", "LT"],
                "-ERR GT and LT options at the same time are not compatible\r\n",
            ),
            (
                &["EXPIRE", "k", "10", "FOO"],
                "-ERR Unsupported option FOO\r\n",
            ),
            // Options are checked before the number.
            (
                &["EXPIRE", "k", "abc", "FOO"],
                "-ERR Unsupported option FOO\r\n",
            ),
            (
                &["EXPIRE", "k", "abc"],
                "-ERR value is not an integer or out of range\r\n",
            ),
            (
                &["EXPIRE", "k", "9223372036854775807"],
                "-ERR invalid expire time in 'expire' command\r\n",
            ),
            (
                &["PEXPIRE", "k", "9223372036854775807"],
                "-ERR invalid expire time in 'pexpire' command\r\n",
            ),
            (
                &["EXPIREAT", "k", "9223372036854775807"],
                "-ERR invalid expire time in 'expireat' command\r\n",
            ),
            (
                &["EXPIRE", "k"],
                "-ERR wrong number of arguments for 'expire' command\r\n",
            ),
            (
                &["TTL", "k", "x"],
                "-ERR wrong number of arguments for 'ttl' command\r\n",
            ),
            (&["TTL", "k"], ":100\r\n"),
        ],
    )
    .await;
    s.shutdown().await;
}

#[tokio::test]
async fn lazy_expiry_hides_keys_after_their_deadline() {
    let s = start_slow_expiry().await;
    let mut c = common::client(s.addr()).await;
    let _: () = q!(c, "SET", "k", "v", "PX", 100).unwrap();
    let _: () = q!(c, "SET", "k2", "v").unwrap();
    let _: i64 = q!(c, "PEXPIRE", "k2", 100).unwrap();
    let v: Option<String> = q!(c, "GET", "k").unwrap();
    assert_eq!(v.as_deref(), Some("v"), "still there before the deadline");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let v: Option<String> = q!(c, "GET", "k").unwrap();
    assert_eq!(v, None);
    let n: i64 = q!(c, "EXISTS", "k", "k2").unwrap();
    assert_eq!(n, 0);
    let t: i64 = q!(c, "TTL", "k2").unwrap();
    assert_eq!(t, -2);
    let keys: Vec<String> = q!(c, "KEYS", "*").unwrap();
    assert!(keys.is_empty(), "KEYS lists expired keys: {keys:?}");
    let e = common::err(&mut c, &["RENAMENX", "k2", "x"]).await;
    assert_eq!(e, "ERR no such key", "RENAMENX of an expired key");
    s.shutdown().await;
}

/// A node whose active expiry runs rarely, so only lazy expiry can explain a missing key.
async fn start_slow_expiry() -> common::Server {
    common::start_with(&[("hz", "1")]).await
}

#[tokio::test]
async fn active_expiry_reclaims_keys_nobody_reads() {
    let s = start().await;
    let mut c = common::client(s.addr()).await;
    let mut mset = redis::cmd("MSET");
    for i in 0..300 {
        mset.arg(format!("v:{i}")).arg(i);
    }
    let _: () = mset.query_async(&mut c).await.unwrap();
    let mut p = redis::pipe();
    for i in 0..300 {
        p.cmd("PEXPIRE").arg(format!("v:{i}")).arg(100).ignore();
    }
    let _: () = p.query_async(&mut c).await.unwrap();
    let _: () = q!(c, "SET", "stays", "1").unwrap();
    let n: i64 = q!(c, "DBSIZE").unwrap();
    assert_eq!(n, 301);
    let dropped = eventually(Duration::from_secs(3), || {
        let mut c = c.clone();
        async move {
            let n: i64 = q!(c, "DBSIZE").unwrap();
            n == 1
        }
    })
    .await;
    assert!(dropped, "active expiry did not reclaim keys within 3 s");
    let info: String = q!(c, "INFO", "stats").unwrap();
    let expired: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("expired_keys:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("expired_keys in INFO stats");
    assert!(expired >= 300, "expired_keys = {expired}");
    s.shutdown().await;
}

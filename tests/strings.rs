//! String commands as a client sees them: GET/SET with every option (EX PX EXAT PXAT NX XX
//! KEEPTTL GET, their errors and incompatible combinations), SETNX SETEX PSETEX GETSET GETDEL
//! GETEX (every option), MGET MSET MSETNX, APPEND STRLEN GETRANGE SUBSTR SETRANGE (negative
//! ranges, zero padding, size and offset errors). Error texts are checked byte for byte on a raw
//! socket, against what Redis 7 answers.

mod common;

use common::{expect_all, start, start_with, Raw};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn set_and_get_roundtrip_binary_values() {
    let s = start().await;
    let mut c = common::client(s.addr()).await;
    let missing: Option<String> = q!(c, "GET", "nope").unwrap();
    assert_eq!(missing, None);
    let ok: String = q!(c, "SET", "k", "v1").unwrap();
    assert_eq!(ok, "OK");
    let _: () = q!(c, "SET", "k", "v2").unwrap();
    let v: String = q!(c, "GET", "k").unwrap();
    assert_eq!(v, "v2");
    let bin: Vec<u8> = vec![0, 1, 2, b'\r', b'\n', 255];
    let _: () = q!(c, "SET", &bin[..], &bin[..]).unwrap();
    let back: Vec<u8> = q!(c, "GET", &bin[..]).unwrap();
    assert_eq!(back, bin);
    let _: () = q!(c, "SET", "empty", "").unwrap();
    let e: Option<Vec<u8>> = q!(c, "GET", "empty").unwrap();
    assert_eq!(e, Some(vec![]), "an empty string is a value, not nil");
    s.shutdown().await;
}

#[tokio::test]
async fn set_expire_options_set_the_ttl() {
    let s = start().await;
    let mut c = common::client(s.addr()).await;
    let _: () = q!(c, "SET", "ex", "v", "EX", 100).unwrap();
    let ttl: i64 = q!(c, "TTL", "ex").unwrap();
    assert!((99..=100).contains(&ttl), "EX 100 → TTL {ttl}");
    let _: () = q!(c, "SET", "px", "v", "px", 50_000).unwrap();
    let pttl: i64 = q!(c, "PTTL", "px").unwrap();
    assert!((45_000..=50_000).contains(&pttl), "PX 50000 → PTTL {pttl}");
    let at = now_ms() / 1000 + 200;
    let _: () = q!(c, "SET", "exat", "v", "EXAT", at).unwrap();
    let t: i64 = q!(c, "EXPIRETIME", "exat").unwrap();
    assert_eq!(t, at as i64);
    let pat = now_ms() + 300_000;
    let _: () = q!(c, "SET", "pxat", "v", "PXAT", pat).unwrap();
    let t: i64 = q!(c, "PEXPIRETIME", "pxat").unwrap();
    assert_eq!(t, pat as i64);
    // A deadline already past: accepted, and the key is gone.
    let ok: String = q!(c, "SET", "past", "v", "PXAT", 1).unwrap();
    assert_eq!(ok, "OK");
    let gone: Option<String> = q!(c, "GET", "past").unwrap();
    assert_eq!(gone, None);
    // Redis accepts the same expire option twice; the last one wins.
    let _: () = q!(c, "SET", "twice", "v", "EX", 10, "EX", 20).unwrap();
    let ttl: i64 = q!(c, "TTL", "twice").unwrap();
    assert!((19..=20).contains(&ttl), "EX 10 EX 20 → TTL {ttl}");
    // A plain SET clears the TTL.
    let _: () = q!(c, "SET", "ex", "v2").unwrap();
    let ttl: i64 = q!(c, "TTL", "ex").unwrap();
    assert_eq!(ttl, -1);
    s.shutdown().await;
}

#[tokio::test]
async fn set_nx_xx_keepttl_and_get() {
    let s = start().await;
    let mut c = common::client(s.addr()).await;
    let r: Option<String> = q!(c, "SET", "k", "a", "NX").unwrap();
    assert_eq!(r.as_deref(), Some("OK"));
    let r: Option<String> = q!(c, "SET", "k", "b", "nx").unwrap();
    assert_eq!(r, None, "NX on an existing key is a nil reply");
    let r: Option<String> = q!(c, "SET", "missing", "b", "XX").unwrap();
    assert_eq!(r, None, "XX on a missing key is a nil reply");
    let e: i64 = q!(c, "EXISTS", "missing").unwrap();
    assert_eq!(e, 0);
    let r: Option<String> = q!(c, "SET", "k", "c", "XX").unwrap();
    assert_eq!(r.as_deref(), Some("OK"));
    let v: String = q!(c, "GET", "k").unwrap();
    assert_eq!(v, "c");
    // KEEPTTL keeps the deadline.
    let _: () = q!(c, "SET", "t", "1", "EX", 100).unwrap();
    let _: () = q!(c, "SET", "t", "2", "KEEPTTL").unwrap();
    let ttl: i64 = q!(c, "TTL", "t").unwrap();
    assert!((99..=100).contains(&ttl), "KEEPTTL lost the TTL: {ttl}");
    // GET returns the old value (nil when there was none) and still writes.
    let old: Option<String> = q!(c, "SET", "g", "1", "GET").unwrap();
    assert_eq!(old, None);
    let old: Option<String> = q!(c, "SET", "g", "2", "GET").unwrap();
    assert_eq!(old.as_deref(), Some("1"));
    // NX GET on an existing key: old value, no write.
    let old: Option<String> = q!(c, "SET", "g", "3", "NX", "GET").unwrap();
    assert_eq!(old.as_deref(), Some("2"));
    let v: String = q!(c, "GET", "g").unwrap();
    assert_eq!(v, "2");
    // XX GET on a missing key: nil, no write.
    let old: Option<String> = q!(c, "SET", "g2", "x", "XX", "GET").unwrap();
    assert_eq!(old, None);
    let e: i64 = q!(c, "EXISTS", "g2").unwrap();
    assert_eq!(e, 0);
    s.shutdown().await;
}

#[tokio::test]
async fn set_option_errors_match_redis() {
    let s = start().await;
    let mut raw = Raw::connect(s.addr()).await;
    let syntax = "-ERR syntax error\r\n";
    let invalid = "-ERR invalid expire time in 'set' command\r\n";
    let notint = "-ERR value is not an integer or out of range\r\n";
    expect_all(
        &mut raw,
        &[
            (&["SET", "k", "v", "NX", "XX"], syntax),
            (&["SET", "k", "v", "XX", "NX"], syntax),
            (&["SET", "k", "v", "EX", "10", "PX", "100"], syntax),
            (&["SET", "k", "v", "EX", "10", "KEEPTTL"], syntax),
            (&["SET", "k", "v", "KEEPTTL", "PXAT", "10"], syntax),
            (&["SET", "k", "v", "EX"], syntax),
            (&["SET", "k", "v", "FOO"], syntax),
            // Options are checked before the expire value is parsed.
            (&["SET", "k", "v", "EX", "abc", "FOO"], syntax),
            (&["SET", "k", "v", "EX", "abc"], notint),
            (&["SET", "k", "v", "EX", "0"], invalid),
            (&["SET", "k", "v", "PX", "-1"], invalid),
            (&["SET", "k", "v", "EX", "9223372036854775807"], invalid),
            (&["SET", "k", "v", "PX", "9223372036854775807"], invalid),
            (
                &["SET", "k"],
                "-ERR wrong number of arguments for 'set' command\r\n",
            ),
            (
                &["GET"],
                "-ERR wrong number of arguments for 'get' command\r\n",
            ),
            (
                &["GET", "a", "b"],
                "-ERR wrong number of arguments for 'get' command\r\n",
            ),
            // Nothing above wrote the key.
            (&["EXISTS", "k"], ":0\r\n"),
            (
                &["SET", "k", "v", "NX", "NX", "KEEPTTL", "KEEPTTL"],
                "+OK\r\n",
            ),
        ],
    )
    .await;
    s.shutdown().await;
}

#[tokio::test]
async fn setnx_setex_psetex_getset_getdel() {
    let s = start().await;
    let mut c = common::client(s.addr()).await;
    let n: i64 = q!(c, "SETNX", "k", "a").unwrap();
    assert_eq!(n, 1);
    let n: i64 = q!(c, "SETNX", "k", "b").unwrap();
    assert_eq!(n, 0);
    let v: String = q!(c, "GET", "k").unwrap();
    assert_eq!(v, "a");
    let _: () = q!(c, "SETEX", "se", 100, "v").unwrap();
    let ttl: i64 = q!(c, "TTL", "se").unwrap();
    assert!((99..=100).contains(&ttl));
    let _: () = q!(c, "PSETEX", "pse", 100_000, "v").unwrap();
    let pttl: i64 = q!(c, "PTTL", "pse").unwrap();
    assert!((95_000..=100_000).contains(&pttl));
    // GETSET: old value (nil first), new value written, TTL cleared.
    let old: Option<String> = q!(c, "GETSET", "gs", "1").unwrap();
    assert_eq!(old, None);
    let _: () = q!(c, "EXPIRE", "gs", 100).unwrap();
    let old: Option<String> = q!(c, "GETSET", "gs", "2").unwrap();
    assert_eq!(old.as_deref(), Some("1"));
    let ttl: i64 = q!(c, "TTL", "gs").unwrap();
    assert_eq!(ttl, -1, "GETSET clears the TTL");
    // GETDEL: value then gone.
    let v: Option<String> = q!(c, "GETDEL", "gs").unwrap();
    assert_eq!(v.as_deref(), Some("2"));
    let v: Option<String> = q!(c, "GETDEL", "gs").unwrap();
    assert_eq!(v, None);
    let mut raw = Raw::connect(s.addr()).await;
    expect_all(
        &mut raw,
        &[
            (
                &["SETEX", "x", "0", "v"],
                "-ERR invalid expire time in 'setex' command\r\n",
            ),
            (
                &["SETEX", "x", "abc", "v"],
                "-ERR value is not an integer or out of range\r\n",
            ),
            (
                &["PSETEX", "x", "-5", "v"],
                "-ERR invalid expire time in 'psetex' command\r\n",
            ),
            (
                &["SETEX", "x", "10"],
                "-ERR wrong number of arguments for 'setex' command\r\n",
            ),
            (
                &["SETNX", "x"],
                "-ERR wrong number of arguments for 'setnx' command\r\n",
            ),
            (&["EXISTS", "x"], ":0\r\n"),
        ],
    )
    .await;
    s.shutdown().await;
}

#[tokio::test]
async fn getex_every_option() {
    let s = start().await;
    let mut c = common::client(s.addr()).await;
    let _: () = q!(c, "SET", "k", "v").unwrap();
    let v: String = q!(c, "GETEX", "k").unwrap();
    assert_eq!(v, "v");
    let ttl: i64 = q!(c, "TTL", "k").unwrap();
    assert_eq!(ttl, -1, "GETEX without options leaves the TTL alone");
    let _: String = q!(c, "GETEX", "k", "EX", 100).unwrap();
    let ttl: i64 = q!(c, "TTL", "k").unwrap();
    assert!((99..=100).contains(&ttl));
    let _: String = q!(c, "GETEX", "k", "PX", 200_000).unwrap();
    let pttl: i64 = q!(c, "PTTL", "k").unwrap();
    assert!((195_000..=200_000).contains(&pttl));
    let at = now_ms() / 1000 + 500;
    let _: String = q!(c, "GETEX", "k", "EXAT", at).unwrap();
    let t: i64 = q!(c, "EXPIRETIME", "k").unwrap();
    assert_eq!(t, at as i64);
    let pat = now_ms() + 600_000;
    let _: String = q!(c, "GETEX", "k", "PXAT", pat).unwrap();
    let t: i64 = q!(c, "PEXPIRETIME", "k").unwrap();
    assert_eq!(t, pat as i64);
    let _: String = q!(c, "GETEX", "k", "PERSIST").unwrap();
    let ttl: i64 = q!(c, "TTL", "k").unwrap();
    assert_eq!(ttl, -1);
    // A deadline in the past returns the value and deletes the key.
    let v: String = q!(c, "GETEX", "k", "PXAT", 1).unwrap();
    assert_eq!(v, "v");
    let e: i64 = q!(c, "EXISTS", "k").unwrap();
    assert_eq!(e, 0);
    let v: Option<String> = q!(c, "GETEX", "missing", "EX", 10).unwrap();
    assert_eq!(v, None);
    let _: () = q!(c, "SET", "k", "v").unwrap();
    let mut raw = Raw::connect(s.addr()).await;
    expect_all(
        &mut raw,
        &[
            (
                &["GETEX", "k", "EX", "0"],
                "-ERR invalid expire time in 'getex' command\r\n",
            ),
            (
                &["GETEX", "k", "EX", "abc"],
                "-ERR value is not an integer or out of range\r\n",
            ),
            (
                &["GETEX", "k", "EX", "10", "PERSIST"],
                "-ERR syntax error\r\n",
            ),
            (
                &["GETEX", "k", "PERSIST", "EX", "10"],
                "-ERR syntax error\r\n",
            ),
            (&["GETEX", "k", "KEEPTTL"], "-ERR syntax error\r\n"),
            (&["GETEX", "k", "PX"], "-ERR syntax error\r\n"),
            (&["GETEX", "k", "FOO"], "-ERR syntax error\r\n"),
            (&["TTL", "k"], ":-1\r\n"),
            // Like Redis: a repeated option is accepted (the last expire wins) ...
            (&["GETEX", "k", "EX", "10", "EX", "20"], "$1\r\nv\r\n"),
            (&["TTL", "k"], ":20\r\n"),
            (&["GETEX", "k", "PERSIST", "PERSIST"], "$1\r\nv\r\n"),
            (&["TTL", "k"], ":-1\r\n"),
            // ... and a missing key answers nil before the expire value is looked at.
            (&["GETEX", "missing", "EX", "abc"], "$-1\r\n"),
        ],
    )
    .await;
    s.shutdown().await;
}

#[tokio::test]
async fn mget_mset_msetnx() {
    let s = start().await;
    let mut c = common::client(s.addr()).await;
    let _: () = q!(c, "MSET", "a", "1", "b", "2", "c", "3").unwrap();
    let v: Vec<Option<String>> = q!(c, "MGET", "a", "nope", "c", "b").unwrap();
    assert_eq!(
        v,
        vec![Some("1".into()), None, Some("3".into()), Some("2".into())]
    );
    // MSET clears TTLs like SET.
    let _: () = q!(c, "EXPIRE", "a", 100).unwrap();
    let _: () = q!(c, "MSET", "a", "10").unwrap();
    let ttl: i64 = q!(c, "TTL", "a").unwrap();
    assert_eq!(ttl, -1);
    // MSETNX is all or nothing.
    let n: i64 = q!(c, "MSETNX", "x", "1", "a", "2").unwrap();
    assert_eq!(n, 0);
    let e: i64 = q!(c, "EXISTS", "x").unwrap();
    assert_eq!(e, 0, "MSETNX wrote a key although another existed");
    let n: i64 = q!(c, "MSETNX", "x", "1", "y", "2").unwrap();
    assert_eq!(n, 1);
    let v: Vec<String> = q!(c, "MGET", "x", "y").unwrap();
    assert_eq!(v, vec!["1", "2"]);
    // Keys in many slots in one MSET (the command locks them all).
    let mut cmd = redis::cmd("MSET");
    for i in 0..200 {
        cmd.arg(format!("key:{i}")).arg(i);
    }
    let _: () = cmd.query_async(&mut c).await.unwrap();
    let mut get = redis::cmd("MGET");
    for i in 0..200 {
        get.arg(format!("key:{i}"));
    }
    let vals: Vec<i64> = get.query_async(&mut c).await.unwrap();
    assert_eq!(vals, (0..200).collect::<Vec<_>>());
    let mut raw = Raw::connect(s.addr()).await;
    expect_all(
        &mut raw,
        &[
            (
                &["MSET", "a"],
                "-ERR wrong number of arguments for 'mset' command\r\n",
            ),
            (
                &["MSET", "a", "1", "b"],
                "-ERR wrong number of arguments for 'mset' command\r\n",
            ),
            (
                &["MSETNX", "a", "1", "b"],
                "-ERR wrong number of arguments for 'msetnx' command\r\n",
            ),
            (
                &["MGET"],
                "-ERR wrong number of arguments for 'mget' command\r\n",
            ),
            (&["GET", "b"], "$1\r\n2\r\n"),
        ],
    )
    .await;
    s.shutdown().await;
}

#[tokio::test]
async fn append_and_strlen() {
    let s = start().await;
    let mut c = common::client(s.addr()).await;
    let n: i64 = q!(c, "APPEND", "k", "Hello").unwrap();
    assert_eq!(n, 5);
    let n: i64 = q!(c, "APPEND", "k", " World").unwrap();
    assert_eq!(n, 11);
    let v: String = q!(c, "GET", "k").unwrap();
    assert_eq!(v, "Hello World");
    let n: i64 = q!(c, "STRLEN", "k").unwrap();
    assert_eq!(n, 11);
    let n: i64 = q!(c, "STRLEN", "nope").unwrap();
    assert_eq!(n, 0);
    // APPEND keeps the TTL.
    let _: () = q!(c, "EXPIRE", "k", 100).unwrap();
    let _: i64 = q!(c, "APPEND", "k", "!").unwrap();
    let ttl: i64 = q!(c, "TTL", "k").unwrap();
    assert!(ttl > 0, "APPEND dropped the TTL");
    // APPEND to a counter appends to its decimal form.
    let _: i64 = q!(c, "INCRBY", "n", 12).unwrap();
    let _: i64 = q!(c, "APPEND", "n", "3").unwrap();
    let v: String = q!(c, "GET", "n").unwrap();
    assert_eq!(v, "123");
    s.shutdown().await;
}

#[tokio::test]
async fn append_and_setrange_respect_proto_max_bulk_len() {
    let s = start_with(&[("proto-max-bulk-len", "1000")]).await;
    let mut raw = Raw::connect(s.addr()).await;
    let big = "x".repeat(600);
    let too_big = "-ERR string exceeds maximum allowed size (proto-max-bulk-len)\r\n";
    expect_all(
        &mut raw,
        &[
            (&["APPEND", "k", &big], ":600\r\n"),
            (&["APPEND", "k", &big], too_big),
            (&["STRLEN", "k"], ":600\r\n"),
            (&["SETRANGE", "k", "1000", "x"], too_big),
            (&["SETRANGE", "k", "999", "x"], ":1000\r\n"),
        ],
    )
    .await;
    s.shutdown().await;
}

#[tokio::test]
async fn getrange_and_substr_follow_redis_ranges() {
    let s = start().await;
    let mut c = common::client(s.addr()).await;
    let _: () = q!(c, "SET", "s", "This is a string").unwrap();
    let cases: &[(i64, i64, &str)] = &[
        (0, 3, "This"),
        (-3, -1, "ing"),
        (0, -1, "This is a string"),
        (10, 100, "string"),
        (5, 3, ""),
        (-1, -5, ""),
        (-100, -90, "T"),
        (-100, 2, "Thi"),
        (100, 200, ""),
        (15, 15, "g"),
    ];
    for (a, b, want) in cases {
        let v: String = q!(c, "GETRANGE", "s", *a, *b).unwrap();
        assert_eq!(v, *want, "GETRANGE s {a} {b}");
        let v: String = q!(c, "SUBSTR", "s", *a, *b).unwrap();
        assert_eq!(v, *want, "SUBSTR s {a} {b}");
    }
    let _: () = q!(c, "SET", "e", "").unwrap();
    let v: String = q!(c, "GETRANGE", "e", 0, -1).unwrap();
    assert_eq!(v, "");
    let v: String = q!(c, "GETRANGE", "missing", 0, -1).unwrap();
    assert_eq!(v, "", "a missing key reads as an empty string, not nil");
    let mut raw = Raw::connect(s.addr()).await;
    expect_all(
        &mut raw,
        &[
            (&["GETRANGE", "missing", "0", "-1"], "$0\r\n\r\n"),
            (
                &["GETRANGE", "s", "0", "abc"],
                "-ERR value is not an integer or out of range\r\n",
            ),
            (
                &["GETRANGE", "s", "0"],
                "-ERR wrong number of arguments for 'getrange' command\r\n",
            ),
        ],
    )
    .await;
    s.shutdown().await;
}

#[tokio::test]
async fn setrange_pads_with_zero_bytes() {
    let s = start().await;
    let mut c = common::client(s.addr()).await;
    let _: () = q!(c, "SET", "k", "Hello World").unwrap();
    let n: i64 = q!(c, "SETRANGE", "k", 6, "Redis").unwrap();
    assert_eq!(n, 11);
    let v: String = q!(c, "GET", "k").unwrap();
    assert_eq!(v, "Hello Redis");
    let n: i64 = q!(c, "SETRANGE", "pad", 5, "x").unwrap();
    assert_eq!(n, 6);
    let v: Vec<u8> = q!(c, "GET", "pad").unwrap();
    assert_eq!(v, b"\0\0\0\0\0x");
    let n: i64 = q!(c, "SETRANGE", "k", 13, "!").unwrap();
    assert_eq!(n, 14);
    let v: Vec<u8> = q!(c, "GET", "k").unwrap();
    assert_eq!(v, b"Hello Redis\0\0!");
    // An empty patch changes nothing and does not create the key.
    let n: i64 = q!(c, "SETRANGE", "none", 5, "").unwrap();
    assert_eq!(n, 0);
    let e: i64 = q!(c, "EXISTS", "none").unwrap();
    assert_eq!(e, 0);
    let n: i64 = q!(c, "SETRANGE", "k", 100, "").unwrap();
    assert_eq!(n, 14);
    // SETRANGE keeps the TTL.
    let _: () = q!(c, "EXPIRE", "k", 100).unwrap();
    let _: i64 = q!(c, "SETRANGE", "k", 0, "J").unwrap();
    let ttl: i64 = q!(c, "TTL", "k").unwrap();
    assert!(ttl > 0);
    let mut raw = Raw::connect(s.addr()).await;
    expect_all(
        &mut raw,
        &[
            (
                &["SETRANGE", "k", "-1", "x"],
                "-ERR offset is out of range\r\n",
            ),
            (
                &["SETRANGE", "k", "abc", "x"],
                "-ERR value is not an integer or out of range\r\n",
            ),
            (
                &["SETRANGE", "k", "536870912", "x"],
                "-ERR string exceeds maximum allowed size (proto-max-bulk-len)\r\n",
            ),
        ],
    )
    .await;
    s.shutdown().await;
}

#[tokio::test]
async fn expired_string_reads_as_missing() {
    let s = start().await;
    let mut c = common::client(s.addr()).await;
    let _: () = q!(c, "SET", "k", "v", "PX", 50).unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    let v: Option<String> = q!(c, "GET", "k").unwrap();
    assert_eq!(v, None);
    let n: i64 = q!(c, "STRLEN", "k").unwrap();
    assert_eq!(n, 0);
    let n: i64 = q!(c, "SETNX", "k", "new").unwrap();
    assert_eq!(n, 1, "SETNX must see an expired key as absent");
    let n: i64 = q!(c, "APPEND", "k", "er").unwrap();
    assert_eq!(n, 5);
    let ttl: i64 = q!(c, "TTL", "k").unwrap();
    assert_eq!(ttl, -1);
    s.shutdown().await;
}

/// SETBIT / GETBIT / BITCOUNT, with the replies and errors of Redis 7 (checked against a live
/// redis-server): bit 0 is the most significant bit, strings grow with zero bytes, ranges count
/// from the end when negative.
#[tokio::test]
async fn bit_commands_match_redis() {
    let s = start().await;
    let mut raw = Raw::connect(s.addr()).await;
    expect_all(
        &mut raw,
        &[
            (&["SETBIT", "b", "7", "1"], ":0\r\n"),
            (&["SETBIT", "b", "7", "1"], ":1\r\n"),
            (&["SETBIT", "b", "100", "0"], ":0\r\n"),
            (&["GETBIT", "b", "7"], ":1\r\n"),
            (&["GETBIT", "b", "1000"], ":0\r\n"),
            (&["GETBIT", "nokey", "3"], ":0\r\n"),
            (&["STRLEN", "b"], ":13\r\n"),
            (&["GETRANGE", "b", "0", "0"], "$1\r\n\x01\r\n"),
            (&["BITCOUNT", "b"], ":1\r\n"),
            (&["BITCOUNT", "b", "0", "-1", "BIT"], ":1\r\n"),
            (&["BITCOUNT", "b", "7", "7", "bit"], ":1\r\n"),
            (&["BITCOUNT", "b", "1", "1"], ":0\r\n"),
            (&["SET", "s", "foobar"], "+OK\r\n"),
            (&["BITCOUNT", "s", "1", "-2"], ":18\r\n"),
            (&["BITCOUNT", "s", "-3", "-1", "BIT"], ":1\r\n"),
            (&["BITCOUNT", "s", "5", "2"], ":0\r\n"),
            (&["BITCOUNT", "nokey"], ":0\r\n"),
            (
                &["SETBIT", "b", "-1", "1"],
                "-ERR bit offset is not an integer or out of range\r\n",
            ),
            (
                &["SETBIT", "b", "4294967296", "1"],
                "-ERR bit offset is not an integer or out of range\r\n",
            ),
            (
                &["SETBIT", "b", "1", "2"],
                "-ERR bit is not an integer or out of range\r\n",
            ),
            (
                &["GETBIT", "b", "x"],
                "-ERR bit offset is not an integer or out of range\r\n",
            ),
            (&["BITCOUNT", "b", "0"], "-ERR syntax error\r\n"),
            (&["BITCOUNT", "b", "0", "1", "foo"], "-ERR syntax error\r\n"),
            (
                &["SETBIT", "b", "1"],
                "-ERR wrong number of arguments for 'setbit' command\r\n",
            ),
        ],
    )
    .await;
    s.shutdown().await;
}

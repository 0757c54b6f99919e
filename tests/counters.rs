//! Counter commands as a client sees them: INCR DECR INCRBY DECRBY INCRBYFLOAT, their errors
//! (not an integer, overflow, not a valid float, NaN/Infinity), how they mix with SET (INCR
//! after SET adds to the value; SET after INCR resets it), INCRBYFLOAT's number formatting, and
//! INCR on an expired key (starts from 0, no TTL). Meridian keeps increments as CRDT
//! contributions, so these tests pin that the client-visible result is still Redis's.

mod common;

use common::{expect_all, start, Raw};
use std::time::Duration;

#[tokio::test]
async fn incr_decr_family() {
    let s = start().await;
    let mut c = common::client(s.addr()).await;
    let n: i64 = q!(c, "INCR", "n").unwrap();
    assert_eq!(n, 1, "a missing key counts from 0");
    let n: i64 = q!(c, "INCR", "n").unwrap();
    assert_eq!(n, 2);
    let n: i64 = q!(c, "DECR", "n").unwrap();
    assert_eq!(n, 1);
    let n: i64 = q!(c, "INCRBY", "n", 10).unwrap();
    assert_eq!(n, 11);
    let n: i64 = q!(c, "DECRBY", "n", 5).unwrap();
    assert_eq!(n, 6);
    let n: i64 = q!(c, "INCRBY", "n", -10).unwrap();
    assert_eq!(n, -4);
    let n: i64 = q!(c, "DECRBY", "n", -4).unwrap();
    assert_eq!(n, 0);
    let v: String = q!(c, "GET", "n").unwrap();
    assert_eq!(v, "0", "a counter reads back as its decimal string");
    let n: i64 = q!(c, "DECR", "neg").unwrap();
    assert_eq!(n, -1);
    // A zero increment still creates the key, as in Redis.
    let n: i64 = q!(c, "INCRBY", "zero", 0).unwrap();
    assert_eq!(n, 0);
    let v: Option<String> = q!(c, "GET", "zero").unwrap();
    assert_eq!(v.as_deref(), Some("0"));
    let _: () = q!(c, "SET", "seven", 7, "EX", 100).unwrap();
    let n: i64 = q!(c, "DECRBY", "seven", 0).unwrap();
    assert_eq!(n, 7);
    let ttl: i64 = q!(c, "TTL", "seven").unwrap();
    assert!(ttl > 0, "a zero increment keeps the TTL");
    let t: String = q!(c, "TYPE", "neg").unwrap();
    assert_eq!(t, "string");
    let n: i64 = q!(c, "STRLEN", "neg").unwrap();
    assert_eq!(n, 2);
    s.shutdown().await;
}

#[tokio::test]
async fn incr_after_set_and_set_after_incr() {
    let s = start().await;
    let mut c = common::client(s.addr()).await;
    let _: () = q!(c, "SET", "k", "10").unwrap();
    let n: i64 = q!(c, "INCR", "k").unwrap();
    assert_eq!(n, 11);
    let _: () = q!(c, "SET", "k", "-5").unwrap();
    let n: i64 = q!(c, "INCRBY", "k", -5).unwrap();
    assert_eq!(n, -10);
    // SET after increments replaces the whole value: earlier increments do not come back.
    for _ in 0..3 {
        let _: i64 = q!(c, "INCR", "c").unwrap();
    }
    let _: () = q!(c, "SET", "c", "100").unwrap();
    let v: String = q!(c, "GET", "c").unwrap();
    assert_eq!(v, "100");
    let n: i64 = q!(c, "INCR", "c").unwrap();
    assert_eq!(n, 101);
    // A non-integer SET after increments is just that string.
    let _: () = q!(c, "SET", "c", "hello").unwrap();
    let v: String = q!(c, "GET", "c").unwrap();
    assert_eq!(v, "hello");
    // DEL after increments: the next INCR starts from 0.
    let _: i64 = q!(c, "INCRBY", "d", 41).unwrap();
    let _: i64 = q!(c, "DEL", "d").unwrap();
    let n: i64 = q!(c, "INCR", "d").unwrap();
    assert_eq!(n, 1);
    // GETSET and MSET reset a counter too.
    let old: String = q!(c, "GETSET", "d", "7").unwrap();
    assert_eq!(old, "1");
    let n: i64 = q!(c, "INCR", "d").unwrap();
    assert_eq!(n, 8);
    let _: () = q!(c, "MSET", "d", "0").unwrap();
    let n: i64 = q!(c, "DECR", "d").unwrap();
    assert_eq!(n, -1);
    s.shutdown().await;
}

#[tokio::test]
async fn integer_errors_leave_the_value_alone() {
    let s = start().await;
    let mut c = common::client(s.addr()).await;
    let _: () = q!(c, "MSET", "abc", "abc", "lead0", "01", "space", " 1", "frac", "1.5").unwrap();
    let _: () = q!(c, "MSET", "plus", "+1", "max", i64::MAX, "min", i64::MIN).unwrap();
    let mut raw = Raw::connect(s.addr()).await;
    let notint = "-ERR value is not an integer or out of range\r\n";
    let overflow = "-ERR increment or decrement would overflow\r\n";
    expect_all(
        &mut raw,
        &[
            (&["INCR", "abc"], notint),
            (&["INCR", "lead0"], notint),
            (&["INCR", "space"], notint),
            (&["INCR", "frac"], notint),
            (&["INCR", "plus"], notint),
            (&["DECR", "abc"], notint),
            (&["INCRBY", "n", "abc"], notint),
            (&["INCRBY", "n", "1.0"], notint),
            (&["INCRBY", "n", "9223372036854775808"], notint),
            (&["DECRBY", "n", ""], notint),
            (&["INCR", "max"], overflow),
            (&["INCRBY", "max", "1"], overflow),
            (&["DECR", "min"], overflow),
            (&["DECRBY", "min", "1"], overflow),
            (&["INCRBY", "min", "-1"], overflow),
            (
                &["DECRBY", "n", "-9223372036854775808"],
                "-ERR decrement would overflow\r\n",
            ),
            (
                &["INCR"],
                "-ERR wrong number of arguments for 'incr' command\r\n",
            ),
            (
                &["INCRBY", "n"],
                "-ERR wrong number of arguments for 'incrby' command\r\n",
            ),
            // Values untouched, and no failed command created "n".
            (&["GET", "max"], "$19\r\n9223372036854775807\r\n"),
            (&["GET", "min"], "$20\r\n-9223372036854775808\r\n"),
            (&["GET", "abc"], "$3\r\nabc\r\n"),
            (&["EXISTS", "n"], ":0\r\n"),
            // The extremes are reachable.
            (&["DECRBY", "max", "9223372036854775807"], ":0\r\n"),
            (&["INCRBY", "min", "9223372036854775807"], ":-1\r\n"),
        ],
    )
    .await;
    // Reaching i64::MAX by increments, then one more, overflows.
    let n: i64 = q!(c, "INCRBY", "big", i64::MAX - 1).unwrap();
    assert_eq!(n, i64::MAX - 1);
    let n: i64 = q!(c, "INCR", "big").unwrap();
    assert_eq!(n, i64::MAX);
    let e = common::err(&mut c, &["INCR", "big"]).await;
    assert_eq!(e, "ERR increment or decrement would overflow");
    let v: i64 = q!(c, "GET", "big").unwrap();
    assert_eq!(v, i64::MAX);
    s.shutdown().await;
}

#[tokio::test]
async fn incrbyfloat_formats_like_redis() {
    let s = start().await;
    let mut c = common::client(s.addr()).await;
    let cases: &[(Option<&str>, &str, &str)] = &[
        (Some("10.5"), "0.1", "10.6"),
        (Some("5.0e3"), "2.0e2", "5200"),
        (Some("10"), "1.5", "11.5"),
        (Some("11.5"), "-11.5", "0"),
        (Some("0.1"), "0.2", "0.3"),
        (Some("1"), "1e20", "100000000000000000000"),
        (Some("3.0e3"), "1", "3001"),
        (Some("-5"), "-0.6", "-5.6"),
        (None, "3e-5", "0.00003"),
        (None, "7", "7"),
        (None, "-0", "0"),
        (None, "0", "0"),
        (Some("5.0"), "0", "5"),
    ];
    for (i, (start, by, want)) in cases.iter().enumerate() {
        let key = format!("f{i}");
        if let Some(v) = start {
            let _: () = q!(c, "SET", &key, *v).unwrap();
        }
        let got: String = q!(c, "INCRBYFLOAT", &key, *by).unwrap();
        assert_eq!(got, *want, "INCRBYFLOAT {start:?} + {by}");
        let back: String = q!(c, "GET", &key).unwrap();
        assert_eq!(back, *want, "GET after INCRBYFLOAT {start:?} + {by}");
    }
    // A float result that is an integer is an integer to INCR.
    let n: i64 = q!(c, "INCR", "f1").unwrap();
    assert_eq!(n, 5201);
    let v: String = q!(c, "INCRBYFLOAT", "f1", "0.5").unwrap();
    assert_eq!(v, "5201.5");
    let e = common::err(&mut c, &["INCR", "f1"]).await;
    assert_eq!(e, "ERR value is not an integer or out of range");
    // Many small float increments add up to the same bytes as one decimal sum would.
    for _ in 0..10 {
        let _: String = q!(c, "INCRBYFLOAT", "tenth", "0.1").unwrap();
    }
    let v: String = q!(c, "GET", "tenth").unwrap();
    assert_eq!(v, "1");
    s.shutdown().await;
}

#[tokio::test]
async fn incrbyfloat_errors() {
    let s = start().await;
    let mut c = common::client(s.addr()).await;
    let _: () = q!(c, "SET", "abc", "abc").unwrap();
    let _: () = q!(c, "SET", "f", "1.5").unwrap();
    let mut raw = Raw::connect(s.addr()).await;
    let notfloat = "-ERR value is not a valid float\r\n";
    let naninf = "-ERR increment would produce NaN or Infinity\r\n";
    expect_all(
        &mut raw,
        &[
            (&["INCRBYFLOAT", "abc", "1"], notfloat),
            (&["INCRBYFLOAT", "f", "abc"], notfloat),
            (&["INCRBYFLOAT", "f", "nan"], notfloat),
            (&["INCRBYFLOAT", "f", " 1"], notfloat),
            (&["INCRBYFLOAT", "f", "1 "], notfloat),
            (&["INCRBYFLOAT", "f", ""], notfloat),
            (&["INCRBYFLOAT", "f", "inf"], naninf),
            (&["INCRBYFLOAT", "f", "-inf"], naninf),
            (&["INCRBYFLOAT", "new", "+inf"], naninf),
            (
                &["INCRBYFLOAT", "f"],
                "-ERR wrong number of arguments for 'incrbyfloat' command\r\n",
            ),
            (&["GET", "f"], "$3\r\n1.5\r\n"),
            (&["EXISTS", "new"], ":0\r\n"),
            (&["INCRBYFLOAT", "f", "1"], "$3\r\n2.5\r\n"),
        ],
    )
    .await;
    s.shutdown().await;
}

#[tokio::test]
async fn counters_and_ttl() {
    let s = start().await;
    let mut c = common::client(s.addr()).await;
    // INCR keeps an existing TTL, like Redis.
    let _: () = q!(c, "SET", "t", "5", "EX", 100).unwrap();
    let n: i64 = q!(c, "INCR", "t").unwrap();
    assert_eq!(n, 6);
    let ttl: i64 = q!(c, "TTL", "t").unwrap();
    assert!((99..=100).contains(&ttl), "INCR dropped the TTL: {ttl}");
    let _: String = q!(c, "INCRBYFLOAT", "t", "0.5").unwrap();
    let ttl: i64 = q!(c, "TTL", "t").unwrap();
    assert!(ttl > 0, "INCRBYFLOAT dropped the TTL");
    // INCR on an expired key starts from 0 and has no TTL.
    let _: () = q!(c, "SET", "e", "10", "PX", 50).unwrap();
    let _: i64 = q!(c, "INCRBY", "e2", 10).unwrap();
    let _: i64 = q!(c, "PEXPIRE", "e2", 50).unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let n: i64 = q!(c, "INCR", "e").unwrap();
    assert_eq!(n, 1, "INCR on an expired key must start from 0");
    let ttl: i64 = q!(c, "TTL", "e").unwrap();
    assert_eq!(
        ttl, -1,
        "the old deadline must not apply to the new counter"
    );
    let n: i64 = q!(c, "INCR", "e2").unwrap();
    assert_eq!(
        n, 1,
        "earlier increments of an expired counter must not come back"
    );
    let ttl: i64 = q!(c, "TTL", "e2").unwrap();
    assert_eq!(ttl, -1);
    let _: () = q!(c, "SET", "ef", "2.5", "PX", 50).unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let v: String = q!(c, "INCRBYFLOAT", "ef", "0.5").unwrap();
    assert_eq!(v, "0.5");
    // Still a counter afterwards, and still gone at its deadline when given one.
    let _: i64 = q!(c, "PEXPIRE", "e", 50).unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let v: Option<String> = q!(c, "GET", "e").unwrap();
    assert_eq!(v, None);
    s.shutdown().await;
}

#[tokio::test]
async fn concurrent_increments_from_many_clients_add_up() {
    let s = start().await;
    let addr = s.addr();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        tasks.push(tokio::spawn(async move {
            let mut c = common::client(addr).await;
            for _ in 0..250 {
                let _: i64 = q!(c, "INCR", "hits").unwrap();
            }
            for _ in 0..50 {
                let _: i64 = q!(c, "DECRBY", "hits", 2).unwrap();
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("clients finished")
            .unwrap();
    }
    let mut c = common::client(addr).await;
    let v: i64 = q!(c, "GET", "hits").unwrap();
    assert_eq!(v, 8 * (250 - 100));
    s.shutdown().await;
}

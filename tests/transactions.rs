//! Transactions as a client sees them: MULTI/EXEC/DISCARD replies byte for byte, errors found
//! while queueing doom the transaction (EXECABORT), errors at run time do not, WATCH aborts
//! EXEC when another connection (or this one) changed or expired a watched key and not when
//! other keys changed, UNWATCH, nested MULTI, EXEC/DISCARD without MULTI, QUIT and RESET inside
//! MULTI, and commands that must not deadlock against EXEC's slot locks.

mod common;

use common::{expect_all, start, Raw};
use std::time::Duration;

#[tokio::test]
async fn multi_exec_runs_the_queue_in_order() {
    let s = start().await;
    let mut raw = Raw::connect(s.addr()).await;
    expect_all(
        &mut raw,
        &[
            (&["MULTI"], "+OK\r\n"),
            (&["SET", "k", "1"], "+QUEUED\r\n"),
            (&["INCR", "k"], "+QUEUED\r\n"),
            (&["GET", "k"], "+QUEUED\r\n"),
            (&["GET", "nope"], "+QUEUED\r\n"),
            (&["EXEC"], "*4\r\n+OK\r\n:2\r\n$1\r\n2\r\n$-1\r\n"),
            (&["MULTI"], "+OK\r\n"),
            (&["EXEC"], "*0\r\n"),
            (&["GET", "k"], "$1\r\n2\r\n"),
        ],
    )
    .await;
    // The same through a real client's atomic pipeline.
    let mut c = common::client(s.addr()).await;
    let (a, b, v): (String, i64, String) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("p")
        .arg("10")
        .cmd("INCRBY")
        .arg("p")
        .arg(5)
        .cmd("GET")
        .arg("p")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!((a.as_str(), b, v.as_str()), ("OK", 15, "15"));
    s.shutdown().await;
}

#[tokio::test]
async fn runtime_errors_do_not_abort_the_rest() {
    let s = start().await;
    let mut raw = Raw::connect(s.addr()).await;
    expect_all(
        &mut raw,
        &[
            (&["MULTI"], "+OK\r\n"),
            (&["SET", "k", "abc"], "+QUEUED\r\n"),
            (&["INCR", "k"], "+QUEUED\r\n"),
            (&["SET", "k2", "v"], "+QUEUED\r\n"),
            (
                &["EXEC"],
                "*3\r\n+OK\r\n-ERR value is not an integer or out of range\r\n+OK\r\n",
            ),
            (&["GET", "k2"], "$1\r\nv\r\n"),
        ],
    )
    .await;
    s.shutdown().await;
}

#[tokio::test]
async fn queueing_errors_abort_with_execabort() {
    let s = start().await;
    let mut raw = Raw::connect(s.addr()).await;
    let abort = "-EXECABORT Transaction discarded because of previous errors.\r\n";
    expect_all(
        &mut raw,
        &[
            (&["MULTI"], "+OK\r\n"),
            (&["SET", "x", "y"], "+QUEUED\r\n"),
            (
                &["SET", "a"],
                "-ERR wrong number of arguments for 'set' command\r\n",
            ),
            (
                &["foo"],
                "-ERR unknown command 'foo', with args beginning with: \r\n",
            ),
            (&["SET", "x2", "y"], "+QUEUED\r\n"),
            (&["EXEC"], abort),
            (&["EXISTS", "x", "x2"], ":0\r\n"),
            // A subcommand error is a queueing error too, as in Redis.
            (&["MULTI"], "+OK\r\n"),
            (
                &["CLIENT", "foo"],
                "-ERR unknown subcommand 'foo'. Try CLIENT HELP.\r\n",
            ),
            (&["SET", "x", "y"], "+QUEUED\r\n"),
            (&["EXEC"], abort),
            (&["MULTI"], "+OK\r\n"),
            (
                &["CLIENT", "SETNAME"],
                "-ERR wrong number of arguments for 'client|setname' command\r\n",
            ),
            (&["EXEC"], abort),
            (&["EXISTS", "x"], ":0\r\n"),
            // After EXECABORT the connection is out of MULTI.
            (&["EXEC"], "-ERR EXEC without MULTI\r\n"),
        ],
    )
    .await;
    s.shutdown().await;
}

#[tokio::test]
async fn discard_nested_multi_and_misplaced_commands() {
    let s = start().await;
    let mut raw = Raw::connect(s.addr()).await;
    expect_all(
        &mut raw,
        &[
            (&["EXEC"], "-ERR EXEC without MULTI\r\n"),
            (&["DISCARD"], "-ERR DISCARD without MULTI\r\n"),
            (&["MULTI"], "+OK\r\n"),
            (&["SET", "k", "v"], "+QUEUED\r\n"),
            (&["DISCARD"], "+OK\r\n"),
            (&["EXISTS", "k"], ":0\r\n"),
            // A nested MULTI is refused but does not doom the transaction.
            (&["MULTI"], "+OK\r\n"),
            (&["MULTI"], "-ERR MULTI calls can not be nested\r\n"),
            (&["SET", "k", "1"], "+QUEUED\r\n"),
            (
                &["WATCH", "k"],
                "-ERR WATCH inside MULTI is not allowed\r\n",
            ),
            (&["EXEC"], "*1\r\n+OK\r\n"),
            (
                &["MULTI", "x"],
                "-ERR wrong number of arguments for 'multi' command\r\n",
            ),
            // RESET leaves MULTI.
            (&["MULTI"], "+OK\r\n"),
            (&["RESET"], "+RESET\r\n"),
            (&["PING"], "+PONG\r\n"),
            (&["GET", "k"], "$1\r\n1\r\n"),
        ],
    )
    .await;
    // QUIT inside MULTI is not queued: it closes the connection.
    raw.cmd(&[b"MULTI"]).await;
    raw.expect(b"+OK\r\n").await;
    raw.cmd(&[b"QUIT"]).await;
    raw.expect(b"+OK\r\n").await;
    let rest = raw.expect_closed().await;
    assert!(rest.is_empty(), "unexpected bytes after QUIT: {rest:?}");
    s.shutdown().await;
}

#[tokio::test]
async fn watch_aborts_when_another_client_writes_the_key() {
    let s = start().await;
    let mut a = Raw::connect(s.addr()).await;
    let mut b = common::client(s.addr()).await;
    let _: () = q!(b, "SET", "k", "0").unwrap();
    expect_all(&mut a, &[(&["WATCH", "k"], "+OK\r\n")]).await;
    let _: () = q!(b, "SET", "k", "theirs").unwrap();
    expect_all(
        &mut a,
        &[
            (&["MULTI"], "+OK\r\n"),
            (&["SET", "k", "mine"], "+QUEUED\r\n"),
            (&["EXEC"], "*-1\r\n"),
            (&["GET", "k"], "$6\r\ntheirs\r\n"),
            // The WATCH is gone after EXEC: the next transaction runs.
            (&["MULTI"], "+OK\r\n"),
            (&["SET", "k", "mine"], "+QUEUED\r\n"),
            (&["EXEC"], "*1\r\n+OK\r\n"),
        ],
    )
    .await;
    // Any kind of write counts: INCR, DEL, EXPIRE, and creating a watched missing key.
    for (setup, write) in [
        (&["SET", "w", "1"][..], &["INCR", "w"][..]),
        (&["SET", "w", "1"][..], &["DEL", "w"][..]),
        (&["SET", "w", "1"][..], &["EXPIRE", "w", "100"][..]),
        (&["DEL", "w"][..], &["SET", "w", "new"][..]),
        (&["SET", "w", "1"][..], &["APPEND", "w", "x"][..]),
    ] {
        let mut c = redis::cmd(setup[0]);
        c.arg(&setup[1..]);
        let _: redis::Value = c.query_async(&mut b).await.unwrap();
        expect_all(&mut a, &[(&["WATCH", "w"], "+OK\r\n")]).await;
        let mut c = redis::cmd(write[0]);
        c.arg(&write[1..]);
        let _: redis::Value = c.query_async(&mut b).await.unwrap();
        expect_all(
            &mut a,
            &[
                (&["MULTI"], "+OK\r\n"),
                (&["SET", "w", "mine"], "+QUEUED\r\n"),
            ],
        )
        .await;
        a.cmd(&[b"EXEC"]).await;
        let got = a.read_reply().await;
        assert_eq!(got, b"*-1\r\n", "EXEC after {write:?} on a watched key");
    }
    s.shutdown().await;
}

#[tokio::test]
async fn watch_ignores_other_keys_and_unwatch_forgets() {
    let s = start().await;
    let mut a = Raw::connect(s.addr()).await;
    let mut b = common::client(s.addr()).await;
    expect_all(&mut a, &[(&["WATCH", "k", "k2"], "+OK\r\n")]).await;
    // Writes to other keys, even in the same slot, do not abort.
    let _: () = q!(b, "SET", "other", "x").unwrap();
    let _: () = q!(b, "SET", "{k}x", "x").unwrap();
    expect_all(
        &mut a,
        &[
            (&["MULTI"], "+OK\r\n"),
            (&["SET", "k", "mine"], "+QUEUED\r\n"),
            (&["EXEC"], "*1\r\n+OK\r\n"),
            (&["WATCH", "k"], "+OK\r\n"),
        ],
    )
    .await;
    let _: () = q!(b, "SET", "k", "theirs").unwrap();
    expect_all(
        &mut a,
        &[
            (&["UNWATCH"], "+OK\r\n"),
            (&["MULTI"], "+OK\r\n"),
            (&["SET", "k", "mine2"], "+QUEUED\r\n"),
            (&["EXEC"], "*1\r\n+OK\r\n"),
            (&["GET", "k"], "$5\r\nmine2\r\n"),
            // DISCARD also forgets WATCHes.
            (&["WATCH", "k"], "+OK\r\n"),
        ],
    )
    .await;
    let _: () = q!(b, "SET", "k", "theirs").unwrap();
    expect_all(
        &mut a,
        &[
            (&["MULTI"], "+OK\r\n"),
            (&["DISCARD"], "+OK\r\n"),
            (&["MULTI"], "+OK\r\n"),
            (&["GET", "k"], "+QUEUED\r\n"),
            (&["EXEC"], "*1\r\n$6\r\ntheirs\r\n"),
        ],
    )
    .await;
    s.shutdown().await;
}

#[tokio::test]
async fn watch_sees_own_writes_and_expiry() {
    let s = start().await;
    let mut a = Raw::connect(s.addr()).await;
    expect_all(
        &mut a,
        &[
            (&["SET", "k", "1"], "+OK\r\n"),
            (&["WATCH", "k"], "+OK\r\n"),
            (&["SET", "k", "2"], "+OK\r\n"),
            (&["MULTI"], "+OK\r\n"),
            (&["GET", "k"], "+QUEUED\r\n"),
            (&["EXEC"], "*-1\r\n"),
            (&["SET", "e", "1", "PX", "100"], "+OK\r\n"),
            (&["WATCH", "e"], "+OK\r\n"),
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    expect_all(
        &mut a,
        &[
            (&["MULTI"], "+OK\r\n"),
            (&["SET", "e", "2"], "+QUEUED\r\n"),
            (&["EXEC"], "*-1\r\n"),
            (&["EXISTS", "e"], ":0\r\n"),
        ],
    )
    .await;
    s.shutdown().await;
}

#[tokio::test]
async fn exec_with_keyspace_commands_and_introspection_does_not_hang() {
    let s = start().await;
    let mut raw = Raw::connect(s.addr()).await;
    for cmds in [
        vec![vec!["SET", "k", "v"], vec!["DBSIZE"], vec!["KEYS", "*"]],
        vec![vec!["INCR", "n"], vec!["MERIDIAN", "EXPLAIN", "n"]],
        vec![
            vec!["SET", "k", "v"],
            vec!["INFO", "keyspace"],
            vec!["FLUSHALL"],
        ],
        vec![
            vec!["SET", "{n}a", "v"],
            vec!["MERIDIAN", "EXPLAIN", "n"],
            vec!["GET", "{n}a"],
        ],
    ] {
        raw.cmd(&[b"MULTI"]).await;
        raw.expect(b"+OK\r\n").await;
        for c in &cmds {
            let a: Vec<&[u8]> = c.iter().map(|s| s.as_bytes()).collect();
            raw.cmd(&a).await;
            raw.expect(b"+QUEUED\r\n").await;
        }
        raw.cmd(&[b"EXEC"]).await;
        let reply = raw.read_reply().await;
        let head = format!("*{}\r\n", cmds.len());
        assert!(
            reply.starts_with(head.as_bytes()),
            "EXEC of {cmds:?} replied {:?}",
            String::from_utf8_lossy(&reply)
        );
    }
    // The server is still responsive to another client.
    let mut c = common::client(s.addr()).await;
    let pong: String = q!(c, "PING").unwrap();
    assert_eq!(pong, "PONG");
    s.shutdown().await;
}

#[tokio::test]
async fn exec_is_atomic_against_concurrent_writers() {
    let s = start().await;
    let addr = s.addr();
    // Each transaction moves 1 from "a" to "b"; a concurrent reader must never see a state in
    // the middle of a transfer (a + b is always 0).
    let mut tasks = Vec::new();
    for _ in 0..4 {
        tasks.push(tokio::spawn(async move {
            let mut c = common::client(addr).await;
            for _ in 0..100 {
                let _: (i64, i64) = redis::pipe()
                    .atomic()
                    .cmd("DECR")
                    .arg("a")
                    .cmd("INCR")
                    .arg("b")
                    .query_async(&mut c)
                    .await
                    .unwrap();
            }
        }));
    }
    let mut reader = common::client(addr).await;
    for _ in 0..200 {
        let (a, b): (Option<i64>, Option<i64>) = q!(reader, "MGET", "a", "b").unwrap();
        assert_eq!(
            a.unwrap_or(0) + b.unwrap_or(0),
            0,
            "saw a half-applied EXEC"
        );
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("writers finished")
            .unwrap();
    }
    let (a, b): (i64, i64) = q!(reader, "MGET", "a", "b").unwrap();
    assert_eq!((a, b), (-400, 400));
    s.shutdown().await;
}

//! RESP on the wire, byte for byte: pipelining (many commands in one write, all replies in
//! order), inline commands with quoting, malformed input (`-ERR Protocol error: ...` and then
//! the connection closes, as Redis does), bulk and multibulk headers that claim huge sizes (no
//! allocation from the header alone, no hang for other clients), query and output buffer
//! limits, commands split across many small writes, and RESP3 encodings after HELLO 3.

mod common;

use common::{start, start_with, Raw};
use std::time::Duration;

fn info_used_memory(info: &str) -> u64 {
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory in INFO")
}

#[tokio::test]
async fn pipelined_commands_get_replies_in_order() {
    let s = start().await;
    let mut raw = Raw::connect(s.addr()).await;
    let mut req = Vec::new();
    let mut want = Vec::new();
    for i in 0..1000 {
        let k = format!("k{i}");
        let v = format!("v{i}");
        req.extend(common::encode(&[b"SET", k.as_bytes(), v.as_bytes()]));
        want.extend_from_slice(b"+OK\r\n");
        req.extend(common::encode(&[b"GET", k.as_bytes()]));
        want.extend(format!("${}\r\n{v}\r\n", v.len()).into_bytes());
        req.extend(common::encode(&[b"INCR", b"counter"]));
        want.extend(format!(":{}\r\n", i + 1).into_bytes());
    }
    // Inline and multibulk mixed in the same write.
    req.extend_from_slice(b"PING\r\nECHO hi\r\n");
    want.extend_from_slice(b"+PONG\r\n$2\r\nhi\r\n");
    raw.send(&req).await;
    raw.expect(&want).await;
    s.shutdown().await;
}

/// A pipeline's keys are warmed in the caches a group of commands ahead of running them
/// (`server::conn`): whatever the group holds — keyless, unknown, wrong-arity, multi-key,
/// transaction and hash-tagged commands, the same key twice, a truncated command and a
/// malformed one — every
/// reply is the one it gets alone and in order, and the malformed command still ends the
/// connection after everything before it was answered.
#[tokio::test]
async fn pipelines_warmed_ahead_answer_every_kind_of_command_in_order() {
    let s = start().await;
    let mut req: Vec<u8> = Vec::new();
    let mut want: Vec<u8> = Vec::new();
    let mut cmd = |args: &[&str], reply: &str| {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        req.extend(common::encode(&args));
        want.extend_from_slice(reply.as_bytes());
    };
    for round in 0..3 {
        let n = round + 1;
        cmd(&["SET", "a", &n.to_string()], "+OK\r\n");
        cmd(&["PING"], "+PONG\r\n");
        cmd(
            &["NOSUCH", "a"],
            "-ERR unknown command 'NOSUCH', with args beginning with: 'a' \r\n",
        );
        cmd(
            &["GET"],
            "-ERR wrong number of arguments for 'get' command\r\n",
        );
        cmd(&["INCR", "a"], &format!(":{}\r\n", n + 1));
        cmd(
            &["GET", "a"],
            &format!("${}\r\n{}\r\n", (n + 1).to_string().len(), n + 1),
        );
        cmd(&["MULTI"], "+OK\r\n");
        cmd(&["INCR", "{t}x"], "+QUEUED\r\n");
        cmd(&["GET", "{t}x"], "+QUEUED\r\n");
        cmd(&["EXEC"], &format!("*2\r\n:{n}\r\n$1\r\n{n}\r\n"));
        cmd(&["DEL", "gone"], ":0\r\n");
        cmd(&["GET", "gone"], "$-1\r\n");
        cmd(&["ECHO", "e"], "$1\r\ne\r\n");
        cmd(&["MSET", "m1", "x", "m2", &n.to_string()], "+OK\r\n");
        cmd(
            &["MGET", "m1", "m2", "none"],
            &format!("*3\r\n$1\r\nx\r\n$1\r\n{n}\r\n$-1\r\n"),
        );
        for i in 0..7 {
            cmd(&["SET", &format!("k{i}"), "v"], "+OK\r\n");
        }
    }
    let mut raw = Raw::connect(s.addr()).await;
    // The pipeline ends with a command cut short: answered once its rest arrives.
    let tail = common::encode(&[b"GET".as_slice(), b"a"]);
    raw.send(&[&req[..], &tail[..tail.len() - 3]].concat())
        .await;
    raw.expect(&want).await;
    raw.send(&[&tail[tail.len() - 3..], b"PING\r\n*1\r\n$-5\r\nGET a\r\n"].concat())
        .await;
    let got = raw.expect_closed().await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        "$1\r\n4\r\n+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn inline_commands_and_quoting() {
    let s = start().await;
    let mut raw = Raw::connect(s.addr()).await;
    let cases: &[(&[u8], &[u8])] = &[
        (b"SET a b\r\n", b"+OK\r\n"),
        (b"GET a\r\n", b"$1\r\nb\r\n"),
        (b"PING\n", b"+PONG\r\n"),
        (b"\r\n\r\n  \r\nPING\r\n", b"+PONG\r\n"),
        (b"*0\r\n*-1\r\nPING\r\n", b"+PONG\r\n"),
        (b"set  k   \"hello world\\x41\\n\"\r\n", b"+OK\r\n"),
        (b"GET k\r\n", b"$13\r\nhello worldA\n\r\n"),
        (b"SET k 'it\\'s \"quoted\"'\r\n", b"+OK\r\n"),
        (b"GET k\r\n", b"$13\r\nit's \"quoted\"\r\n"),
        (b"SET e \"\"\r\n", b"+OK\r\n"),
        (b"STRLEN e\r\n", b":0\r\n"),
        (
            b"foo bar baz\r\n",
            b"-ERR unknown command 'foo', with args beginning with: 'bar' 'baz' \r\n",
        ),
        (
            b"GET\r\n",
            b"-ERR wrong number of arguments for 'get' command\r\n",
        ),
    ];
    for (req, want) in cases {
        raw.send(req).await;
        raw.expect(want).await;
    }
    s.shutdown().await;
}

/// Sends `req` on a fresh connection and expects exactly `want`, then the close.
async fn expect_protocol_error(addr: std::net::SocketAddr, req: &[u8], want: &str) {
    let mut raw = Raw::connect(addr).await;
    raw.send(req).await;
    let got = raw.expect_closed().await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        want,
        "reply to {:?}",
        String::from_utf8_lossy(&req[..req.len().min(40)])
    );
}

#[tokio::test]
async fn malformed_requests_get_a_protocol_error_and_close() {
    let s = start().await;
    let a = s.addr();
    let e = |m: &str| format!("-ERR Protocol error: {m}\r\n");
    expect_protocol_error(a, b"*abc\r\n", &e("invalid multibulk length")).await;
    expect_protocol_error(a, b"*3000000000\r\n", &e("invalid multibulk length")).await;
    expect_protocol_error(a, b"*1\r\n$-5\r\n", &e("invalid bulk length")).await;
    expect_protocol_error(a, b"*1\r\n$abc\r\n", &e("invalid bulk length")).await;
    expect_protocol_error(a, b"*1\r\nx3\r\n", &e("expected '$', got 'x'")).await;
    expect_protocol_error(a, b"*2\r\n$3\r\nGET\r\n:1\r\n", &e("expected '$', got ':'")).await;
    expect_protocol_error(a, b"SET k \"abc\r\n", &e("unbalanced quotes in request")).await;
    expect_protocol_error(a, b"set \"a\"b c\r\n", &e("unbalanced quotes in request")).await;
    expect_protocol_error(a, b"set 'a c\r\n", &e("unbalanced quotes in request")).await;
    let mut big = vec![b'a'; 70 * 1024];
    expect_protocol_error(a, &big, &e("too big inline request")).await;
    big[0] = b'*';
    big[1..].fill(b'1');
    expect_protocol_error(a, &big, &e("too big mbulk count string")).await;
    let mut bulk = b"*1\r\n$".to_vec();
    bulk.extend(std::iter::repeat_n(b'1', 70 * 1024));
    expect_protocol_error(a, &bulk, &e("too big bulk count string")).await;
    // Commands before the bad one in the same write are answered first.
    expect_protocol_error(
        a,
        b"PING\r\nSET x 1\r\n*1\r\n$-5\r\nGET x\r\n",
        &format!("+PONG\r\n+OK\r\n{}", e("invalid bulk length")),
    )
    .await;
    // The server is fine afterwards.
    let mut c = common::client(a).await;
    let v: String = q!(c, "GET", "x").unwrap();
    assert_eq!(v, "1");
    s.shutdown().await;
}

#[tokio::test]
async fn bulk_over_proto_max_bulk_len_is_rejected_at_the_header() {
    let s = start_with(&[("proto-max-bulk-len", "1mb")]).await;
    let limit = 1024 * 1024;
    // Over the limit: refused as soon as the header arrives, without waiting for the body.
    let mut raw = Raw::connect(s.addr()).await;
    raw.send(format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${}\r\n", limit + 1).as_bytes())
        .await;
    let got = raw.expect_closed().await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR Protocol error: invalid bulk length\r\n"
    );
    // Exactly at the limit: accepted.
    let mut raw = Raw::connect(s.addr()).await;
    let body = vec![b'z'; limit];
    raw.cmd(&[b"SET", b"k", &body]).await;
    raw.expect(b"+OK\r\n").await;
    raw.cmd(&[b"STRLEN", b"k"]).await;
    raw.expect(format!(":{limit}\r\n").as_bytes()).await;
    s.shutdown().await;
}

#[tokio::test]
async fn huge_headers_neither_allocate_nor_block_others() {
    let s = start().await;
    let mut c = common::client(s.addr()).await;
    let info: String = q!(c, "INFO", "memory").unwrap();
    let before = info_used_memory(&info);
    // A 500 MB bulk (under the default 512 MB limit) and a 2^31-1 element multibulk, neither
    // followed by its body.
    let mut bulk = Raw::connect(s.addr()).await;
    bulk.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$524288000\r\nabc")
        .await;
    let mut multi = Raw::connect(s.addr()).await;
    multi.send(b"*2147483647\r\n$4\r\nPING\r\n").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Other clients are served, and memory did not follow the headers.
    let pong: String = q!(c, "PING").unwrap();
    assert_eq!(pong, "PONG");
    let info: String = q!(c, "INFO", "memory").unwrap();
    let after = info_used_memory(&info);
    assert!(
        after < before + 64 * 1024 * 1024,
        "used_memory {before} → {after} after huge headers"
    );
    // The half-sent commands are still pending, not answered.
    bulk.send(b"def").await;
    multi.send(b"$4\r\nPING\r\n").await;
    let mut probe = [0u8; 16];
    use tokio::io::AsyncReadExt;
    let r = tokio::time::timeout(Duration::from_millis(200), bulk.stream.read(&mut probe)).await;
    assert!(r.is_err(), "a partial bulk got a reply: {r:?}");
    s.shutdown().await;
}

#[tokio::test]
async fn query_buffer_limit_closes_the_connection() {
    let s = start_with(&[("client-query-buffer-limit", "1mb")]).await;
    let mut raw = Raw::connect(s.addr()).await;
    raw.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3000000\r\n")
        .await;
    let chunk = vec![b'q'; 64 * 1024];
    let mut closed = false;
    for _ in 0..40 {
        use tokio::io::AsyncWriteExt;
        if raw.stream.write_all(&chunk).await.is_err() {
            closed = true;
            break;
        }
    }
    if !closed {
        let _ = raw.expect_closed().await;
    }
    let mut c = common::client(s.addr()).await;
    let e: i64 = q!(c, "EXISTS", "k").unwrap();
    assert_eq!(e, 0);
    s.shutdown().await;
}

#[tokio::test]
async fn output_buffer_limit_closes_the_connection() {
    let s = start_with(&[("client-output-buffer-limit", "normal 1mb 0 0")]).await;
    let mut c = common::client(s.addr()).await;
    let big = vec![b'o'; 600 * 1024];
    let _: () = q!(c, "SET", "big", &big[..]).unwrap();
    // One reply under the limit is fine.
    let mut raw = Raw::connect(s.addr()).await;
    raw.cmd(&[b"STRLEN", b"big"]).await;
    raw.expect(b":614400\r\n").await;
    // Three copies in one batch exceed it: the connection is closed.
    raw.cmd(&[b"MGET", b"big", b"big", b"big"]).await;
    let got = raw.expect_closed().await;
    assert!(
        got.len() < 1024 * 1024,
        "{} bytes arrived before the close",
        got.len()
    );
    s.shutdown().await;
}

#[tokio::test]
async fn commands_split_across_many_small_writes() {
    let s = start().await;
    let mut raw = Raw::connect(s.addr()).await;
    let mut req = common::encode(&[b"SET", b"split", b"a value with spaces"]);
    req.extend(common::encode(&[b"GET", b"split"]));
    req.extend_from_slice(b"ECHO \"in line\"\r\n");
    req.extend(common::encode(&[b"INCRBY", b"n", b"42"]));
    for b in &req {
        raw.send(std::slice::from_ref(b)).await;
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    raw.expect(b"+OK\r\n$19\r\na value with spaces\r\n$7\r\nin line\r\n:42\r\n")
        .await;
    // Split at every awkward place of a bulk: inside "\r\n", the length, the body.
    let req = common::encode(&[b"SET", b"k2", b"0123456789"]);
    for cut in 1..req.len() {
        raw.send(&req[..cut]).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
        raw.send(&req[cut..]).await;
        raw.expect(b"+OK\r\n").await;
    }
    s.shutdown().await;
}

#[tokio::test]
async fn resp3_encodings_after_hello_3() {
    let s = start().await;
    let mut raw = Raw::connect(s.addr()).await;
    raw.cmd(&[b"HELLO", b"3"]).await;
    let hello = raw.read_reply().await;
    assert!(
        hello.starts_with(b"%7\r\n"),
        "{:?}",
        String::from_utf8_lossy(&hello)
    );
    let cases: &[(&[&[u8]], &[u8])] = &[
        (&[b"GET", b"missing"], b"_\r\n"),
        (&[b"SET", b"k", b"v", b"NX", b"GET"], b"_\r\n"),
        (&[b"SET", b"k", b"v", b"NX"], b"_\r\n"),
        (&[b"MGET", b"k", b"missing"], b"*2\r\n$1\r\nv\r\n_\r\n"),
        (
            &[b"CONFIG", b"GET", b"maxclients"],
            b"%1\r\n$10\r\nmaxclients\r\n$5\r\n10000\r\n",
        ),
        (&[b"INCRBYFLOAT", b"f", b"0.5"], b"$3\r\n0.5\r\n"),
        (&[b"MERIDIAN", b"EXPLAIN", b"missing"], b"_\r\n"),
        (&[b"COMMAND", b"INFO", b"missing"], b"*1\r\n_\r\n"),
        (&[b"PING"], b"+PONG\r\n"),
    ];
    for (args, want) in cases {
        raw.cmd(args).await;
        let got = raw.read_reply().await;
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(want),
            "RESP3 reply to {args:?}"
        );
    }
    // Maps, booleans and doubles inside a nested reply.
    raw.cmd(&[b"MERIDIAN", b"EXPLAIN", b"f"]).await;
    let e = String::from_utf8_lossy(&raw.read_reply().await).into_owned();
    assert!(
        e.starts_with("%6\r\n$5\r\nvalue\r\n$3\r\n0.5\r\n$4\r\nlive\r\n#t\r\n"),
        "{e:?}"
    );
    assert!(e.contains("$9\r\nfloat_inc\r\n,0.5\r\n"), "{e:?}");
    // Verbatim strings for INFO and CLIENT INFO.
    raw.cmd(&[b"INFO", b"server"]).await;
    let info = String::from_utf8_lossy(&raw.read_reply().await).into_owned();
    assert!(
        info.starts_with('=') && info.contains("\r\ntxt:# Server\r\n"),
        "{info:?}"
    );
    raw.cmd(&[b"CLIENT", b"INFO"]).await;
    let ci = String::from_utf8_lossy(&raw.read_reply().await).into_owned();
    assert!(ci.starts_with('=') && ci.contains("txt:id="), "{ci:?}");
    // A WATCH-aborted EXEC is a RESP3 null.
    let mut other = common::client(s.addr()).await;
    raw.cmd(&[b"WATCH", b"k"]).await;
    raw.expect(b"+OK\r\n").await;
    let _: () = q!(other, "SET", "k", "changed").unwrap();
    raw.send(
        &[
            common::encode(&[b"MULTI"]),
            common::encode(&[b"GET", b"k"]),
            common::encode(&[b"EXEC"]),
        ]
        .concat(),
    )
    .await;
    raw.expect(b"+OK\r\n+QUEUED\r\n_\r\n").await;
    // HELLO 2 switches back.
    raw.cmd(&[b"HELLO", b"2"]).await;
    let _ = raw.read_reply().await;
    raw.cmd(&[b"GET", b"missing"]).await;
    raw.expect(b"$-1\r\n").await;
    s.shutdown().await;
}

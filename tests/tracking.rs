//! Client-side caching (CLIENT TRACKING) as a caching client sees it, byte for byte against
//! what redis-server 7 sends (every expected frame below was captured from redis-server 7.0
//! with the same command sequence):
//!
//! - default mode: the `>2 invalidate *1 key` push, to an idle connection, once per read;
//!   a client's own write (pushed after its reply) and NOLOOP;
//! - BCAST with PREFIX (one message per prefix per write, overlap errors), OPTIN/OPTOUT with
//!   CLIENT CACHING (also across MULTI/EXEC);
//! - RESP2 through REDIRECT to a connection subscribed to `__redis__:invalidate`, a broken
//!   redirect, FLUSHALL's null invalidation;
//! - CLIENT TRACKINGINFO / GETREDIR and the error texts;
//! - the bounded table (`tracking-table-max-keys`), INFO counters, expiry and eviction, and a
//!   client that stops reading.
//!
//! Cluster, cross-region and redis-py tests are in `tests/tracking_regions.rs`.
//!
//! "Nothing was sent" is never checked by sleeping: a later event whose push must be the very
//! next bytes on the connection proves that nothing came before it.

mod common;
#[path = "common/tracking.rs"]
mod tracking_helpers;

use common::{call, expect_all, info_field, start, start_with, Raw};
use std::time::Duration;
use tracking_helpers::{expect_str, message, push, resp3};

#[tokio::test]
async fn default_mode_pushes_exact_frames_to_idle_and_writing_clients() {
    let s = start().await;
    let mut a = resp3(s.addr()).await;
    let mut b = Raw::connect(s.addr()).await;
    expect_all(
        &mut a,
        &[
            (&["CLIENT", "TRACKING", "on"], "+OK\r\n"),
            (&["GET", "k"], "_\r\n"),
        ],
    )
    .await;
    // `a` sits idle (no command in flight) and still gets the push at once.
    assert_eq!(call(&mut b, &["SET", "k", "v"]).await, "+OK\r\n");
    expect_str(&mut a, &push(&["k"])).await;
    // One read, one invalidation: the second write is not announced, the next tracked one is.
    assert_eq!(call(&mut a, &["GET", "k2"]).await, "_\r\n");
    assert_eq!(call(&mut b, &["SET", "k", "w"]).await, "+OK\r\n");
    assert_eq!(call(&mut b, &["SET", "k2", "w"]).await, "+OK\r\n");
    expect_str(&mut a, &push(&["k2"])).await;
    // MGET tracks every key; MSET announces each key in its own push, in key order.
    assert_eq!(
        call(&mut a, &["MGET", "k", "k2"]).await,
        "*2\r\n$1\r\nw\r\n$1\r\nw\r\n"
    );
    assert_eq!(
        call(&mut b, &["MSET", "k", "1", "k2", "2"]).await,
        "+OK\r\n"
    );
    expect_str(&mut a, &(push(&["k"]) + &push(&["k2"]))).await;
    // The client's own write: the push follows the write's reply (Redis 7 defers it).
    a.send(
        &[
            common::encode(&[b"GET", b"pk"]),
            common::encode(&[b"SET", b"pk", b"1"]),
        ]
        .concat(),
    )
    .await;
    expect_str(&mut a, &format!("_\r\n+OK\r\n{}", push(&["pk"]))).await;
    // DEL and EXPIRE are writes too.
    assert_eq!(call(&mut a, &["GET", "k"]).await, "$1\r\n1\r\n");
    assert_eq!(call(&mut b, &["EXPIRE", "k", "100"]).await, ":1\r\n");
    expect_str(&mut a, &push(&["k"])).await;
    assert_eq!(call(&mut a, &["GET", "k"]).await, "$1\r\n1\r\n");
    assert_eq!(call(&mut b, &["DEL", "k"]).await, ":1\r\n");
    expect_str(&mut a, &push(&["k"])).await;
    // After OFF nothing more is announced (the next event on `a` is its own reply).
    assert_eq!(call(&mut a, &["GET", "k2"]).await, "$1\r\n2\r\n");
    assert_eq!(
        call(&mut a, &["CLIENT", "TRACKING", "off"]).await,
        "+OK\r\n"
    );
    assert_eq!(call(&mut b, &["SET", "k2", "3"]).await, "+OK\r\n");
    assert_eq!(call(&mut a, &["PING"]).await, "+PONG\r\n");
    s.shutdown().await;
}

#[tokio::test]
async fn noloop_skips_own_writes_only() {
    let s = start().await;
    let mut a = resp3(s.addr()).await;
    let mut b = Raw::connect(s.addr()).await;
    expect_all(
        &mut a,
        &[
            (&["CLIENT", "TRACKING", "on", "NOLOOP"], "+OK\r\n"),
            (&["GET", "n1"], "_\r\n"),
            (&["SET", "n1", "x"], "+OK\r\n"),
            (&["GET", "n2"], "_\r\n"),
        ],
    )
    .await;
    assert_eq!(call(&mut b, &["SET", "n2", "y"]).await, "+OK\r\n");
    // The first bytes after our own write are the other client's invalidation.
    expect_str(&mut a, &push(&["n2"])).await;
    s.shutdown().await;
}

#[tokio::test]
async fn bcast_prefixes_announce_matching_writes_per_prefix() {
    let s = start().await;
    let mut a = resp3(s.addr()).await;
    let mut b = Raw::connect(s.addr()).await;
    let tracking_on = "CLIENT TRACKING on BCAST PREFIX a PREFIX b";
    let args: Vec<&str> = tracking_on.split(' ').collect();
    assert_eq!(call(&mut a, &args).await, "+OK\r\n");
    // No read needed; one message per prefix with that prefix's keys of the write.
    assert_eq!(
        call(
            &mut b,
            &["MSET", "a1", "x", "a2", "y", "b1", "z", "c1", "w"]
        )
        .await,
        "+OK\r\n"
    );
    expect_str(&mut a, &(push(&["a1", "a2"]) + &push(&["b1"]))).await;
    assert_eq!(call(&mut b, &["SET", "c2", "x"]).await, "+OK\r\n");
    assert_eq!(call(&mut b, &["SET", "b2", "x"]).await, "+OK\r\n");
    expect_str(&mut a, &push(&["b2"])).await;
    expect_all(
        &mut a,
        &[
            (
                &["CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "ax"],
                "-ERR Prefix 'ax' overlaps with an existing prefix 'a'. Prefixes for a single client must not overlap.\r\n",
            ),
            (
                &["CLIENT", "TRACKINGINFO"],
                "%3\r\n$5\r\nflags\r\n~2\r\n$2\r\non\r\n$5\r\nbcast\r\n$8\r\nredirect\r\n:0\r\n$8\r\nprefixes\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n",
            ),
            (&["CLIENT", "TRACKING", "off"], "+OK\r\n"),
            (
                &["CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "ab", "PREFIX", "a"],
                "-ERR Prefix 'ab' overlaps with another provided prefix 'a'. Prefixes for a single client must not overlap.\r\n",
            ),
            (&["CLIENT", "TRACKING", "on", "BCAST", "NOLOOP"], "+OK\r\n"),
            (&["SET", "mine", "1"], "+OK\r\n"),
        ],
    )
    .await;
    // BCAST without PREFIX covers every key; NOLOOP hides our own write above.
    assert_eq!(call(&mut b, &["SET", "theirs", "1"]).await, "+OK\r\n");
    expect_str(&mut a, &push(&["theirs"])).await;
    s.shutdown().await;
}

#[tokio::test]
async fn optin_and_optout_follow_client_caching() {
    let s = start().await;
    let mut a = resp3(s.addr()).await;
    let mut b = Raw::connect(s.addr()).await;
    expect_all(
        &mut a,
        &[
            (
                &["CLIENT", "CACHING", "yes"],
                "-ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled\r\n",
            ),
            (&["CLIENT", "TRACKING", "on", "OPTIN"], "+OK\r\n"),
            (
                &["CLIENT", "CACHING", "no"],
                "-ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.\r\n",
            ),
            (&["GET", "o1"], "_\r\n"),
            (&["CLIENT", "CACHING", "yes"], "+OK\r\n"),
            (
                &["CLIENT", "TRACKINGINFO"],
                "%3\r\n$5\r\nflags\r\n~3\r\n$2\r\non\r\n$5\r\noptin\r\n$11\r\ncaching-yes\r\n$8\r\nredirect\r\n:0\r\n$8\r\nprefixes\r\n*0\r\n",
            ),
            (&["GET", "o2"], "_\r\n"),
            (&["GET", "o3"], "_\r\n"),
        ],
    )
    .await;
    for k in ["o1", "o3", "o2"] {
        assert_eq!(call(&mut b, &["SET", k, "x"]).await, "+OK\r\n");
    }
    // Only o2 was read right after CLIENT CACHING yes.
    expect_str(&mut a, &push(&["o2"])).await;
    // CACHING yes covers a whole MULTI/EXEC.
    expect_all(
        &mut a,
        &[
            (&["CLIENT", "CACHING", "yes"], "+OK\r\n"),
            (&["MULTI"], "+OK\r\n"),
            (&["GET", "t1"], "+QUEUED\r\n"),
            (&["GET", "t2"], "+QUEUED\r\n"),
            (&["EXEC"], "*2\r\n_\r\n_\r\n"),
        ],
    )
    .await;
    assert_eq!(
        call(&mut b, &["MSET", "t1", "1", "t2", "2"]).await,
        "+OK\r\n"
    );
    expect_str(&mut a, &(push(&["t1"]) + &push(&["t2"]))).await;
    // OPTOUT: everything is tracked except the read after CLIENT CACHING no.
    expect_all(
        &mut a,
        &[
            (
                &["CLIENT", "TRACKING", "on", "OPTOUT"],
                "-ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode.\r\n",
            ),
            (&["CLIENT", "TRACKING", "off"], "+OK\r\n"),
            (&["CLIENT", "TRACKING", "on", "OPTOUT"], "+OK\r\n"),
            (&["CLIENT", "CACHING", "no"], "+OK\r\n"),
            (&["GET", "p1"], "_\r\n"),
            (&["GET", "p2"], "_\r\n"),
        ],
    )
    .await;
    assert_eq!(
        call(&mut b, &["MSET", "p1", "x", "p2", "y"]).await,
        "+OK\r\n"
    );
    expect_str(&mut a, &push(&["p2"])).await;
    // RESET turns tracking off (and the connection back to RESP2).
    expect_all(
        &mut a,
        &[
            (&["GET", "p3"], "_\r\n"),
            (&["RESET"], "+RESET\r\n"),
            (
                &["CLIENT", "TRACKINGINFO"],
                "*6\r\n$5\r\nflags\r\n*1\r\n$3\r\noff\r\n$8\r\nredirect\r\n:-1\r\n$8\r\nprefixes\r\n*0\r\n",
            ),
        ],
    )
    .await;
    assert_eq!(call(&mut b, &["SET", "p3", "x"]).await, "+OK\r\n");
    assert_eq!(call(&mut a, &["PING"]).await, "+PONG\r\n");
    s.shutdown().await;
}

#[tokio::test]
async fn resp2_redirect_delivers_on_the_invalidate_channel() {
    let s = start().await;
    let mut sub = Raw::connect(s.addr()).await;
    let mut d = Raw::connect(s.addr()).await;
    let mut w = Raw::connect(s.addr()).await;
    let id = call(&mut sub, &["CLIENT", "ID"]).await;
    let id = id.trim_start_matches(':').trim_end().to_string();
    expect_all(
        &mut sub,
        &[
            (
                &["SUBSCRIBE", "__redis__:invalidate"],
                "*3\r\n$9\r\nsubscribe\r\n$20\r\n__redis__:invalidate\r\n:1\r\n",
            ),
            (
                &["GET", "x"],
                "-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n",
            ),
            (&["PING"], "*2\r\n$4\r\npong\r\n$0\r\n\r\n"),
        ],
    )
    .await;
    expect_all(
        &mut d,
        &[
            (&["CLIENT", "TRACKING", "on", "REDIRECT", &id], "+OK\r\n"),
            (&["CLIENT", "GETREDIR"], &format!(":{id}\r\n")),
            (
                &["CLIENT", "TRACKINGINFO"],
                &format!("*6\r\n$5\r\nflags\r\n*1\r\n$2\r\non\r\n$8\r\nredirect\r\n:{id}\r\n$8\r\nprefixes\r\n*0\r\n"),
            ),
            (&["GET", "r1"], "$-1\r\n"),
        ],
    )
    .await;
    // CLIENT LIST shows the subscriber (`P`, sub=1) and the tracking client (`t`, redir=).
    let list = call(&mut w, &["CLIENT", "LIST"]).await;
    let line = |id: &str| {
        list.lines()
            .find(|l| l.contains(&format!("id={id} ")))
            .unwrap_or_else(|| panic!("client {id} in {list}"))
            .to_string()
    };
    assert!(line(&id).contains(" flags=P db=0 sub=1 "), "{}", line(&id));
    let d_id = call(&mut d, &["CLIENT", "ID"]).await;
    let d_line = line(d_id.trim_start_matches(':').trim_end());
    assert!(d_line.contains(" flags=t db=0 sub=0 "), "{d_line}");
    assert!(d_line.contains(&format!(" redir={id} ")), "{d_line}");
    assert_eq!(call(&mut w, &["SET", "r1", "x"]).await, "+OK\r\n");
    expect_str(&mut sub, &message(&["r1"])).await;
    // FLUSHALL: one null for everything (the tracking client's RESP2 null).
    assert_eq!(call(&mut w, &["FLUSHALL"]).await, "+OK\r\n");
    expect_str(
        &mut sub,
        "*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n$-1\r\n",
    )
    .await;
    expect_all(
        &mut sub,
        &[
            (
                &["UNSUBSCRIBE"],
                "*3\r\n$11\r\nunsubscribe\r\n$20\r\n__redis__:invalidate\r\n:0\r\n",
            ),
            (
                &["UNSUBSCRIBE"],
                "*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n",
            ),
            (&["QUIT"], "+OK\r\n"),
        ],
    )
    .await;
    sub.expect_closed().await;
    // The target is gone: a RESP3 tracking client is told, and TRACKINGINFO says so.
    let mut d3 = resp3(s.addr()).await;
    let mut gone = Raw::connect(s.addr()).await;
    let gone_id = call(&mut gone, &["CLIENT", "ID"]).await;
    let gone_id = gone_id.trim_start_matches(':').trim_end().to_string();
    assert_eq!(
        call(&mut d3, &["CLIENT", "TRACKING", "on", "REDIRECT", &gone_id]).await,
        "+OK\r\n"
    );
    assert_eq!(call(&mut gone, &["QUIT"]).await, "+OK\r\n");
    gone.expect_closed().await;
    assert_eq!(call(&mut d3, &["GET", "r2"]).await, "_\r\n");
    // Bounded wait for the server to notice the closed connection.
    assert!(
        common::eventually(Duration::from_secs(5), || {
            let node = s.node.clone();
            let id: u64 = gone_id.parse().unwrap();
            async move { node.clients.get(id).is_none() }
        })
        .await
    );
    assert_eq!(call(&mut w, &["SET", "r2", "x"]).await, "+OK\r\n");
    expect_str(
        &mut d3,
        &format!(">2\r\n$21\r\ntracking-redir-broken\r\n:{gone_id}\r\n"),
    )
    .await;
    assert_eq!(
        call(&mut d3, &["CLIENT", "TRACKINGINFO"]).await,
        format!("%3\r\n$5\r\nflags\r\n~2\r\n$2\r\non\r\n$15\r\nbroken_redirect\r\n$8\r\nredirect\r\n:{gone_id}\r\n$8\r\nprefixes\r\n*0\r\n")
    );
    let info = call(&mut d3, &["CLIENT", "INFO"]).await;
    assert!(info.contains(" flags=tR "), "{info}");
    assert!(info.contains(&format!(" redir={gone_id} ")), "{info}");
    s.shutdown().await;
}

#[tokio::test]
async fn flushall_sends_one_null_and_errors_match_redis() {
    let s = start().await;
    let mut a = resp3(s.addr()).await;
    let mut b = Raw::connect(s.addr()).await;
    assert_eq!(
        call(&mut b, &["MSET", "f1", "1", "f2", "2"]).await,
        "+OK\r\n"
    );
    expect_all(
        &mut a,
        &[
            (&["CLIENT", "TRACKING", "on"], "+OK\r\n"),
            (&["MGET", "f1", "f2"], "*2\r\n$1\r\n1\r\n$1\r\n2\r\n"),
        ],
    )
    .await;
    assert_eq!(call(&mut b, &["FLUSHALL"]).await, "+OK\r\n");
    expect_str(&mut a, ">2\r\n$10\r\ninvalidate\r\n_\r\n").await;
    // The table was emptied: writing the old keys announces nothing (next push is f3's).
    assert_eq!(call(&mut a, &["GET", "f3"]).await, "_\r\n");
    assert_eq!(
        call(&mut b, &["MSET", "f1", "1", "f3", "3"]).await,
        "+OK\r\n"
    );
    expect_str(&mut a, &push(&["f3"])).await;
    let errors: &[(&[&str], &str)] = &[
        (&["CLIENT", "TRACKING", "on", "PREFIX", "a"], "-ERR PREFIX option requires BCAST mode to be enabled\r\n"),
        (&["CLIENT", "TRACKING", "on", "BCAST"], "-ERR You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode.\r\n"),
        (&["CLIENT", "TRACKING", "on", "OPTIN", "OPTOUT"], "-ERR You can't specify both OPTIN mode and OPTOUT mode\r\n"),
        (&["CLIENT", "TRACKING", "on", "REDIRECT", "99999"], "-ERR The client ID you want redirect to does not exist\r\n"),
        (&["CLIENT", "TRACKING", "on", "REDIRECT", "abc"], "-ERR value is not an integer or out of range\r\n"),
        (&["CLIENT", "TRACKING", "on", "REDIRECT", "1", "REDIRECT", "1"], "-ERR A client can only redirect to a single other client\r\n"),
        (&["CLIENT", "TRACKING", "on", "foo"], "-ERR syntax error\r\n"),
        (&["CLIENT", "TRACKING", "maybe"], "-ERR syntax error\r\n"),
        (&["CLIENT", "TRACKING"], "-ERR wrong number of arguments for 'client|tracking' command\r\n"),
        (&["CLIENT", "CACHING", "maybe"], "-ERR syntax error\r\n"),
        (&["CLIENT", "GETREDIR"], ":0\r\n"),
        (&["CLIENT", "TRACKING", "off"], "+OK\r\n"),
        (&["CLIENT", "GETREDIR"], ":-1\r\n"),
        (&["CLIENT", "TRACKINGINFO"], "%3\r\n$5\r\nflags\r\n~1\r\n$3\r\noff\r\n$8\r\nredirect\r\n:-1\r\n$8\r\nprefixes\r\n*0\r\n"),
        (&["CLIENT", "TRACKING", "on", "BCAST", "OPTIN"], "-ERR OPTIN and OPTOUT are not compatible with BCAST\r\n"),
    ];
    expect_all(&mut a, errors).await;
    s.shutdown().await;
}

#[tokio::test]
async fn table_is_bounded_and_counted_in_info() {
    let s = start_with(&[("tracking-table-max-keys", "2")]).await;
    let mut a = resp3(s.addr()).await;
    let mut b = Raw::connect(s.addr()).await;
    assert_eq!(
        call(&mut b, &["CONFIG", "GET", "tracking-table-max-keys"]).await,
        "*2\r\n$23\r\ntracking-table-max-keys\r\n$1\r\n2\r\n"
    );
    assert_eq!(call(&mut a, &["CLIENT", "TRACKING", "on"]).await, "+OK\r\n");
    assert_eq!(call(&mut a, &["GET", "m1"]).await, "_\r\n");
    assert_eq!(call(&mut a, &["GET", "m2"]).await, "_\r\n");
    // The third key puts the table over its limit: a random tracked key is invalidated.
    assert_eq!(call(&mut a, &["GET", "m3"]).await, "_\r\n");
    let evicted = String::from_utf8(a.read_reply().await).unwrap();
    let victim = ["m1", "m2", "m3"]
        .into_iter()
        .find(|k| evicted == push(&[k]))
        .unwrap_or_else(|| panic!("not an invalidation of a tracked key: {evicted:?}"));
    let info = call(&mut b, &["INFO"]).await;
    assert_eq!(info_field(&info, "tracking_clients").as_deref(), Some("1"));
    assert_eq!(
        info_field(&info, "tracking_total_keys").as_deref(),
        Some("2")
    );
    assert_eq!(
        info_field(&info, "tracking_total_items").as_deref(),
        Some("2")
    );
    assert_eq!(
        info_field(&info, "tracking_total_prefixes").as_deref(),
        Some("0")
    );
    // The evicted key is no longer tracked; the others still are.
    let kept: Vec<&str> = ["m1", "m2", "m3"]
        .into_iter()
        .filter(|k| *k != victim)
        .collect();
    assert_eq!(call(&mut b, &["SET", victim, "x"]).await, "+OK\r\n");
    assert_eq!(call(&mut b, &["SET", kept[0], "x"]).await, "+OK\r\n");
    expect_str(&mut a, &push(&[kept[0]])).await;
    assert_eq!(
        call(&mut b, &["CONFIG", "SET", "tracking-table-max-keys", "-1"]).await,
        "-ERR CONFIG SET failed (possibly related to argument 'tracking-table-max-keys') - argument must be between 0 and 9223372036854775807 inclusive\r\n"
    );
    let mut c = resp3(s.addr()).await;
    assert_eq!(
        call(
            &mut c,
            &["CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "x", "PREFIX", "y"]
        )
        .await,
        "+OK\r\n"
    );
    let info = call(&mut b, &["INFO", "stats"]).await;
    assert_eq!(
        info_field(&info, "tracking_total_prefixes").as_deref(),
        Some("2")
    );
    s.shutdown().await;
}

#[tokio::test]
async fn expiry_and_eviction_invalidate() {
    let s = start_with(&[("hz", "50")]).await;
    let mut a = resp3(s.addr()).await;
    let mut b = Raw::connect(s.addr()).await;
    assert_eq!(call(&mut a, &["CLIENT", "TRACKING", "on"]).await, "+OK\r\n");
    assert_eq!(
        call(&mut b, &["SET", "x1", "v", "PX", "1500"]).await,
        "+OK\r\n"
    );
    assert_eq!(call(&mut a, &["GET", "x1"]).await, "$1\r\nv\r\n");
    // Active expiry finds it (within the 5 s read timeout) and the cache is told.
    expect_str(&mut a, &push(&["x1"])).await;
    // Eviction: a key dropped for memory is dropped from client caches too.
    assert_eq!(call(&mut b, &["SET", "ev", "v"]).await, "+OK\r\n");
    assert_eq!(call(&mut a, &["GET", "ev"]).await, "$1\r\nv\r\n");
    expect_all(
        &mut b,
        &[
            (
                &["CONFIG", "SET", "maxmemory-policy", "allkeys-random"],
                "+OK\r\n",
            ),
            (&["CONFIG", "SET", "maxmemory", "1"], "+OK\r\n"),
        ],
    )
    .await;
    // A write makes room first (Redis's processCommand order): `ev` goes.
    let _ = call(&mut b, &["SET", "other", "1"]).await;
    expect_str(&mut a, &push(&["ev"])).await;
    s.shutdown().await;
}

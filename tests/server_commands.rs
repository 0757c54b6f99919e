//! Server commands as a client sees them: INFO sections (server clients memory stats keyspace
//! replication crdt; used_memory grows with the data), CONFIG GET (glob) / SET (applied at once,
//! e.g. maxclients; all-or-nothing) / RESETSTAT and their errors, COMMAND COUNT/INFO/DOCS/
//! GETKEYS/LIST (key positions for MSET, RENAME...), TIME, DEBUG SLEEP, and `MERIDIAN EXPLAIN`
//! (register stamp and origin, contributions after INCR, the expiry deadline, tombstones).

mod common;

use common::{call, expect_all, info_field, start, Raw};
use redis::Value;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[tokio::test]
async fn info_sections() {
    let s = start().await;
    let mut c = common::client(s.addr()).await;
    let all: String = q!(c, "INFO").unwrap();
    for section in [
        "# Server",
        "# Clients",
        "# Memory",
        "# Stats",
        "# Replication",
        "# CRDT",
        "# Keyspace",
    ] {
        assert!(all.contains(section), "INFO lacks {section}");
    }
    assert_eq!(info_field(&all, "redis_version").as_deref(), Some("7.4.0"));
    assert_eq!(
        info_field(&all, "tcp_port"),
        Some(s.addr().port().to_string())
    );
    let only: String = q!(c, "INFO", "clients").unwrap();
    assert!(only.starts_with("# Clients"), "{only}");
    assert!(!only.contains("# Server"));
    let n: u64 = info_field(&only, "connected_clients")
        .unwrap()
        .parse()
        .unwrap();
    assert!(n >= 1);
    let two: String = q!(c, "INFO", "SERVER", "replication").unwrap();
    assert!(two.contains("# Server") && two.contains("role:master") && !two.contains("# Memory"));
    let crdt: String = q!(c, "INFO", "crdt").unwrap();
    for f in [
        "crdt_node_id",
        "crdt_clock",
        "crdt_max_clock_drift_ms",
        "crdt_skew_alarms",
    ] {
        assert!(info_field(&crdt, f).is_some(), "INFO crdt lacks {f}");
    }
    let ks: String = q!(c, "INFO", "keyspace").unwrap();
    assert!(!ks.contains("db0:"), "an empty keyspace lists no db: {ks}");
    let _: () = q!(c, "SET", "a", 1).unwrap();
    let _: () = q!(c, "SET", "b", 1, "EX", 100).unwrap();
    let ks: String = q!(c, "INFO", "keyspace").unwrap();
    assert!(ks.contains("db0:keys=2,expires=1,"), "{ks}");
    // used_memory grows when 100k keys are written.
    let mem: String = q!(c, "INFO", "memory").unwrap();
    let before: u64 = info_field(&mem, "used_memory").unwrap().parse().unwrap();
    for chunk in 0..20 {
        let mut mset = redis::cmd("MSET");
        for i in 0..5000 {
            mset.arg(format!("mem:{chunk}:{i}"))
                .arg("some value of a few bytes");
        }
        let _: () = mset.query_async(&mut c).await.unwrap();
    }
    let mem: String = q!(c, "INFO", "memory").unwrap();
    let after: u64 = info_field(&mem, "used_memory").unwrap().parse().unwrap();
    assert!(
        after > before + 2_000_000,
        "used_memory {before} → {after} after 100k keys"
    );
    assert!(info_field(&mem, "used_memory_human").is_some());
    let n: i64 = q!(c, "DBSIZE").unwrap();
    assert_eq!(n, 100_002);
    s.shutdown().await;
}

#[tokio::test]
async fn config_get_set_resetstat() {
    let s = start().await;
    let mut c = common::client(s.addr()).await;
    let v: Vec<String> = q!(c, "CONFIG", "GET", "maxclients").unwrap();
    assert_eq!(v, vec!["maxclients", "10000"]);
    let v: Vec<String> = q!(c, "CONFIG", "GET", "MAX*").unwrap();
    assert!(v.chunks(2).any(|p| p[0] == "maxclients"), "{v:?}");
    assert!(v.chunks(2).all(|p| p[0].starts_with("max")), "{v:?}");
    let v: Vec<String> = q!(c, "CONFIG", "GET", "timeout", "hz").unwrap();
    assert_eq!(v.len(), 4);
    let v: Vec<String> = q!(c, "CONFIG", "GET", "nomatch*").unwrap();
    assert!(v.is_empty());
    let _: () = q!(c, "CONFIG", "SET", "hz", "20", "timeout", "300").unwrap();
    let v: Vec<String> = q!(c, "CONFIG", "GET", "timeout").unwrap();
    assert_eq!(v, vec!["timeout", "300"]);
    let mut raw = Raw::connect(s.addr()).await;
    expect_all(
        &mut raw,
        &[
            (&["CONFIG", "SET", "foo", "bar"], "-ERR Unknown option or number of arguments for CONFIG SET - 'foo'\r\n"),
            (&["CONFIG", "SET", "maxclients"], "-ERR wrong number of arguments for 'config|set' command\r\n"),
            (&["CONFIG", "SET", "maxclients", "1", "hz"], "-ERR wrong number of arguments for 'config|set' command\r\n"),
            (
                &["CONFIG", "SET", "maxclients", "abc"],
                "-ERR CONFIG SET failed (possibly related to argument 'maxclients') - argument couldn't be parsed into an integer\r\n",
            ),
            (
                &["CONFIG", "SET", "port", "1"],
                "-ERR CONFIG SET failed (possibly related to argument 'port') - can't set immutable config\r\n",
            ),
            // All or nothing: one bad value applies none.
            (&["CONFIG", "SET", "timeout", "5", "hz", "abc"], "-ERR CONFIG SET failed (possibly related to argument 'hz') - argument couldn't be parsed into an integer\r\n"),
            (&["CONFIG", "GET", "timeout"], "*2\r\n$7\r\ntimeout\r\n$3\r\n300\r\n"),
            (&["CONFIG", "GET"], "-ERR wrong number of arguments for 'config|get' command\r\n"),
            (&["CONFIG", "RESETSTAT", "x"], "-ERR wrong number of arguments for 'config|resetstat' command\r\n"),
        ],
    )
    .await;
    // RESETSTAT zeroes the counters.
    for _ in 0..50 {
        let _: () = q!(c, "PING").unwrap();
    }
    let _: () = q!(c, "CONFIG", "RESETSTAT").unwrap();
    let st: String = q!(c, "INFO", "stats").unwrap();
    let n: u64 = info_field(&st, "total_commands_processed")
        .unwrap()
        .parse()
        .unwrap();
    assert!(n < 5, "total_commands_processed after RESETSTAT: {n}");
    // CONFIG SET maxclients applies to new connections at once.
    let _: () = q!(c, "CONFIG", "SET", "maxclients", "2").unwrap();
    let mut extra = Raw::connect(s.addr()).await;
    let got = extra.expect_closed().await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR max number of clients reached\r\n"
    );
    let _: () = q!(c, "CONFIG", "SET", "maxclients", "100").unwrap();
    let mut ok = Raw::connect(s.addr()).await;
    expect_all(&mut ok, &[(&["PING"], "+PONG\r\n")]).await;
    s.shutdown().await;
}

#[tokio::test]
async fn command_introspection() {
    let s = start().await;
    let mut c = common::client(s.addr()).await;
    let count: i64 = q!(c, "COMMAND", "COUNT").unwrap();
    let list: Vec<String> = q!(c, "COMMAND", "LIST").unwrap();
    assert_eq!(count as usize, list.len());
    let all: Vec<Value> = q!(c, "COMMAND").unwrap();
    assert_eq!(all.len(), list.len());
    for name in [
        "get",
        "set",
        "incrbyfloat",
        "multi",
        "client",
        "config",
        "meridian",
    ] {
        assert!(list.iter().any(|n| n == name), "COMMAND LIST lacks {name}");
    }
    let mut gets: Vec<String> = q!(c, "COMMAND", "LIST", "FILTERBY", "PATTERN", "get*").unwrap();
    gets.sort();
    assert_eq!(
        gets,
        vec!["get", "getbit", "getdel", "getex", "getrange", "getset"]
    );
    // Key positions, as cluster clients read them.
    for (cmd, want) in [
        (
            vec!["MSET", "a", "1", "b", "2", "c", "3"],
            vec!["a", "b", "c"],
        ),
        (vec!["MGET", "a", "b"], vec!["a", "b"]),
        (vec!["RENAME", "src", "dst"], vec!["src", "dst"]),
        (vec!["COPY", "src", "dst", "REPLACE"], vec!["src", "dst"]),
        (vec!["SET", "k", "v", "EX", "10"], vec!["k"]),
        (vec!["DEL", "a", "b", "c"], vec!["a", "b", "c"]),
        (vec!["EXPIRE", "k", "10"], vec!["k"]),
        (vec!["WATCH", "x", "y"], vec!["x", "y"]),
    ] {
        let mut q = redis::cmd("COMMAND");
        q.arg("GETKEYS").arg(&cmd);
        let keys: Vec<String> = q.query_async(&mut c).await.unwrap();
        assert_eq!(keys, want, "COMMAND GETKEYS {cmd:?}");
    }
    let mut raw = Raw::connect(s.addr()).await;
    expect_all(
        &mut raw,
        &[
            (
                &["COMMAND", "GETKEYS", "nosuch", "a"],
                "-ERR Invalid command specified\r\n",
            ),
            (
                &["COMMAND", "GETKEYS", "GET", "a", "b"],
                "-ERR Invalid number of arguments specified for command\r\n",
            ),
            (
                &["COMMAND", "GETKEYS", "PING", "x"],
                "-ERR The command has no key arguments\r\n",
            ),
            (
                &["COMMAND", "GETKEYS", "TIME", "x"],
                "-ERR The command has no key arguments\r\n",
            ),
            (
                &["COMMAND", "GETKEYS", "GET"],
                "-ERR wrong number of arguments for 'command|getkeys' command\r\n",
            ),
            (&["COMMAND", "INFO", "nosuch"], "*1\r\n$-1\r\n"),
            (
                &["COMMAND", "foo"],
                "-ERR unknown subcommand 'foo'. Try COMMAND HELP.\r\n",
            ),
        ],
    )
    .await;
    let info = call(&mut raw, &["COMMAND", "INFO", "get"]).await;
    assert!(
        info.starts_with("*1\r\n*10\r\n$3\r\nget\r\n:2\r\n*2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n*3\r\n+@read\r\n+@string\r\n+@fast\r\n*0\r\n"),
        "{info:?}"
    );
    assert!(
        info.contains("*2\r\n+RO\r\n+access\r\n"),
        "key spec flags: {info:?}"
    );
    let info = call(&mut raw, &["COMMAND", "INFO", "mset"]).await;
    assert!(
        info.starts_with("*1\r\n*10\r\n$4\r\nmset\r\n:-3\r\n"),
        "{info:?}"
    );
    assert!(
        info.contains("\r\n:1\r\n:-1\r\n:2\r\n"),
        "MSET first/last/step: {info:?}"
    );
    assert!(
        info.contains("$7\r\nlastkey\r\n:-1\r\n$7\r\nkeystep\r\n:2\r\n"),
        "{info:?}"
    );
    let info = call(&mut raw, &["COMMAND", "INFO", "rename"]).await;
    assert!(info.contains("$6\r\nrename\r\n:3\r\n"), "{info:?}");
    assert!(
        info.contains("\r\n:1\r\n:2\r\n:1\r\n"),
        "RENAME first/last/step: {info:?}"
    );
    let docs: Value = q!(c, "COMMAND", "DOCS", "get").unwrap();
    let text = format!("{docs:?}");
    assert!(text.contains("summary") && text.contains("Returns the string value of a key."));
    s.shutdown().await;
}

#[tokio::test]
async fn time_and_debug_sleep() {
    let s = start().await;
    let mut c = common::client(s.addr()).await;
    let (secs, micros): (String, String) = q!(c, "TIME").unwrap();
    let secs: u64 = secs.parse().unwrap();
    let micros: u64 = micros.parse().unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(secs.abs_diff(now) <= 2, "TIME {secs} vs {now}");
    assert!(micros < 1_000_000);
    let t = Instant::now();
    let ok: String = q!(c, "DEBUG", "SLEEP", "0.3").unwrap();
    assert_eq!(ok, "OK");
    assert!(
        t.elapsed() >= Duration::from_millis(290),
        "{:?}",
        t.elapsed()
    );
    let ok: String = q!(c, "DEBUG", "SLEEP", "0").unwrap();
    assert_eq!(ok, "OK");
    let mut raw = Raw::connect(s.addr()).await;
    expect_all(
        &mut raw,
        &[
            (
                &["TIME", "x"],
                "-ERR wrong number of arguments for 'time' command\r\n",
            ),
            (
                &["DEBUG", "SLEEP"],
                "-ERR wrong number of arguments for 'debug|sleep' command\r\n",
            ),
        ],
    )
    .await;
    s.shutdown().await;
}

/// Looks a field up in a map reply (RESP3 map or RESP2 flat array).
fn field<'a>(v: &'a Value, name: &str) -> &'a Value {
    let pairs: Vec<(&Value, &Value)> = match v {
        Value::Map(m) => m.iter().map(|(k, v)| (k, v)).collect(),
        Value::Array(a) => a.chunks(2).map(|p| (&p[0], &p[1])).collect(),
        other => panic!("not a map: {other:?}"),
    };
    pairs
        .into_iter()
        .find(|(k, _)| matches!(k, Value::BulkString(b) if b == name.as_bytes()))
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no field {name} in {v:?}"))
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

#[tokio::test]
async fn meridian_explain_shows_why_a_key_has_its_value() {
    let s = start().await;
    let mut c = common::client3(s.addr()).await;
    let missing: Value = q!(c, "MERIDIAN", "EXPLAIN", "nope").unwrap();
    assert_eq!(missing, Value::Nil);
    let _: () = q!(c, "SET", "k", "10").unwrap();
    let e: Value = q!(c, "MERIDIAN", "EXPLAIN", "k").unwrap();
    assert_eq!(text(field(&e, "value")), "10");
    assert_eq!(field(&e, "live"), &Value::Boolean(true));
    let reg = field(&e, "register");
    assert_eq!(text(field(reg, "value")), "10");
    assert_eq!(field(reg, "tombstone"), &Value::Boolean(false));
    let stamp = field(reg, "stamp");
    let node = text(field(stamp, "node"));
    let info: String = q!(c, "INFO", "crdt").unwrap();
    assert_eq!(
        info_field(&info, "crdt_node_id"),
        Some(node.clone()),
        "origin is this node"
    );
    let ms: i64 = text(field(stamp, "unix_ms")).parse().unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!((now - ms).abs() < 5_000, "stamp time {ms} vs now {now}");
    assert!(!text(field(stamp, "hlc")).is_empty());
    assert_eq!(field(&e, "contributions"), &Value::Array(vec![]));
    // After INCR: this node's contribution, not yet observed by the register.
    let _: i64 = q!(c, "INCRBY", "k", 5).unwrap();
    let e: Value = q!(c, "MERIDIAN", "EXPLAIN", "k").unwrap();
    assert_eq!(text(field(&e, "value")), "15");
    assert_eq!(text(field(field(&e, "register"), "value")), "10");
    let Value::Array(contrib) = field(&e, "contributions") else {
        panic!("contributions: {e:?}")
    };
    assert_eq!(contrib.len(), 1);
    assert_eq!(text(field(&contrib[0], "actor")), node);
    assert_eq!(text(field(&contrib[0], "int_inc")), "5");
    assert_eq!(text(field(&contrib[0], "int_dec")), "0");
    // The epoch the totals count in: opened by this INCR, the node's first on the key.
    let epoch = field(&contrib[0], "epoch");
    assert_eq!(text(field(epoch, "node")), node);
    let epoch_ms: i64 = text(field(epoch, "unix_ms")).parse().unwrap();
    assert!(epoch_ms >= ms && (now - epoch_ms).abs() < 5_000);
    // A later SET observes the increment; the register stamp moves forward.
    let _: () = q!(c, "SET", "k", "1").unwrap();
    let e2: Value = q!(c, "MERIDIAN", "EXPLAIN", "k").unwrap();
    let ms2: i64 = text(field(field(field(&e2, "register"), "stamp"), "unix_ms"))
        .parse()
        .unwrap();
    assert!(ms2 >= ms);
    let Value::Array(observed) = field(&e2, "observed") else {
        panic!("{e2:?}")
    };
    assert_eq!(text(field(&observed[0], "int_inc")), "5");
    assert_eq!(field(&observed[0], "epoch"), epoch);
    assert_eq!(text(field(&e2, "value")), "1");
    // Expiry: the deadline PEXPIRETIME reports.
    assert_eq!(field(field(&e2, "expiry"), "deadline_ms"), &Value::Nil);
    let _: i64 = q!(c, "EXPIRE", "k", 100).unwrap();
    let at: i64 = q!(c, "PEXPIRETIME", "k").unwrap();
    let e3: Value = q!(c, "MERIDIAN", "EXPLAIN", "k").unwrap();
    assert_eq!(field(field(&e3, "expiry"), "deadline_ms"), &Value::Int(at));
    // DEL leaves a tombstone the operator can see.
    let _: i64 = q!(c, "DEL", "k").unwrap();
    let e4: Value = q!(c, "MERIDIAN", "EXPLAIN", "k").unwrap();
    assert_eq!(field(&e4, "live"), &Value::Boolean(false));
    assert_eq!(
        field(field(&e4, "register"), "tombstone"),
        &Value::Boolean(true)
    );
    let mut raw = Raw::connect(s.addr()).await;
    expect_all(
        &mut raw,
        &[
            (
                &["MERIDIAN", "EXPLAIN"],
                "-ERR wrong number of arguments for 'meridian|explain' command\r\n",
            ),
            (
                &["MERIDIAN", "FOO", "k"],
                "-ERR unknown subcommand 'FOO'. Try MERIDIAN HELP.\r\n",
            ),
        ],
    )
    .await;
    s.shutdown().await;
}

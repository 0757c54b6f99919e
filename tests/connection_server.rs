//! Connection commands as a client sees them: PING ECHO QUIT RESET SELECT, AUTH with
//! requirepass (NOAUTH, WRONGPASS, the unauthenticated request limits), HELLO 2/3 with AUTH and
//! SETNAME (RESP3 map reply), CLIENT ID SETNAME GETNAME SETINFO LIST INFO KILL NO-EVICT NO-TOUCH,
//! the unknown-command, unknown-subcommand and arity error texts byte for byte, maxclients and
//! the idle timeout. Server-wide commands (INFO, CONFIG, COMMAND, ...) are in
//! `server_commands.rs`.

mod common;

use common::{call, eventually, expect_all, info_field, start, start_with, Raw};
use redis::Value;
use std::time::{Duration, Instant};

#[tokio::test]
async fn ping_echo_select_quit_and_error_texts() {
    let s = start().await;
    let mut raw = Raw::connect(s.addr()).await;
    let long = "x".repeat(200);
    let long_reply = format!(
        "-ERR unknown command 'nosuch', with args beginning with: '{}' \r\n",
        "x".repeat(128)
    );
    expect_all(
        &mut raw,
        &[
            (&["PING"], "+PONG\r\n"),
            (&["ping", "hi"], "$2\r\nhi\r\n"),
            (
                &["PING", "a", "b"],
                "-ERR wrong number of arguments for 'ping' command\r\n",
            ),
            (&["ECHO", "hello"], "$5\r\nhello\r\n"),
            (
                &["ECHO"],
                "-ERR wrong number of arguments for 'echo' command\r\n",
            ),
            (&["SELECT", "0"], "+OK\r\n"),
            (
                &["SELECT", "1"],
                "-ERR SELECT is not allowed in cluster mode\r\n",
            ),
            (
                &["SELECT", "abc"],
                "-ERR value is not an integer or out of range\r\n",
            ),
            (
                &["nosuch"],
                "-ERR unknown command 'nosuch', with args beginning with: \r\n",
            ),
            (
                &["nosuch", "a", "b"],
                "-ERR unknown command 'nosuch', with args beginning with: 'a' 'b' \r\n",
            ),
            (&["nosuch", &long, "b"], &long_reply),
            (
                &["GET"],
                "-ERR wrong number of arguments for 'get' command\r\n",
            ),
            (
                &["gEt", "a", "b"],
                "-ERR wrong number of arguments for 'get' command\r\n",
            ),
            (
                &["CLIENT"],
                "-ERR wrong number of arguments for 'client' command\r\n",
            ),
            (
                &["CLIENT", "foo"],
                "-ERR unknown subcommand 'foo'. Try CLIENT HELP.\r\n",
            ),
            (
                &["config", "foo"],
                "-ERR unknown subcommand 'foo'. Try CONFIG HELP.\r\n",
            ),
            (
                &["CLIENT", "GETNAME", "x"],
                "-ERR wrong number of arguments for 'client|getname' command\r\n",
            ),
            (&["QUIT"], "+OK\r\n"),
        ],
    )
    .await;
    let rest = raw.expect_closed().await;
    assert!(rest.is_empty(), "bytes after QUIT: {rest:?}");
    s.shutdown().await;
}

#[tokio::test]
async fn auth_with_requirepass() {
    let s = start_with(&[("requirepass", "s3cret")]).await;
    let mut raw = Raw::connect(s.addr()).await;
    let noauth = "-NOAUTH Authentication required.\r\n";
    let wrongpass = "-WRONGPASS invalid username-password pair or user is disabled.\r\n";
    expect_all(
        &mut raw,
        &[
            (&["GET", "k"], noauth),
            (&["SET", "k", "v"], noauth),
            (&["CLIENT", "ID"], noauth),
            (&["AUTH", "nope"], wrongpass),
            (&["AUTH", "default", "nope"], wrongpass),
            (&["AUTH", "other", "s3cret"], wrongpass),
            (&["AUTH", "a", "b", "c"], "-ERR syntax error\r\n"),
            (&["GET", "k"], noauth),
            (&["AUTH", "s3cret"], "+OK\r\n"),
            (&["SET", "k", "v"], "+OK\r\n"),
            (&["AUTH", "default", "s3cret"], "+OK\r\n"),
            // RESET forgets the authentication.
            (&["RESET"], "+RESET\r\n"),
            (&["GET", "k"], noauth),
        ],
    )
    .await;
    // Before AUTH, a large multibulk is refused outright, as Redis does.
    raw.send(b"*20\r\n").await;
    let got = raw.expect_closed().await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR Protocol error: unauthenticated multibulk length\r\n"
    );
    // A real client with the password in the URL, RESP2 and RESP3.
    for url in [
        format!("redis://:s3cret@{}", s.addr()),
        format!("redis://default:s3cret@{}/?protocol=resp3", s.addr()),
    ] {
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let v: String = q!(c, "GET", "k").unwrap();
        assert_eq!(v, "v", "via {url}");
    }
    let bad = redis::Client::open(format!("redis://:wrong@{}", s.addr())).unwrap();
    assert!(bad.get_multiplexed_async_connection().await.is_err());
    // Without requirepass, AUTH <password> is an error and AUTH default <any> is accepted.
    let open = start().await;
    let mut raw = Raw::connect(open.addr()).await;
    expect_all(
        &mut raw,
        &[
            (
                &["AUTH", "x"],
                "-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?\r\n",
            ),
            (&["AUTH", "default", "anything"], "+OK\r\n"),
        ],
    )
    .await;
    open.shutdown().await;
    s.shutdown().await;
}

#[tokio::test]
async fn hello_switches_protocol_and_authenticates() {
    let s = start_with(&[("requirepass", "pw")]).await;
    let mut raw = Raw::connect(s.addr()).await;
    let needs = "-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n";
    expect_all(
        &mut raw,
        &[
            (&["HELLO", "3"], needs),
            (&["HELLO", "4"], "-NOPROTO unsupported protocol version\r\n"),
            (
                &["HELLO", "abc"],
                "-ERR Protocol version is not an integer or out of range\r\n",
            ),
            (
                &["HELLO", "3", "foo"],
                "-ERR Syntax error in HELLO option 'foo'\r\n",
            ),
            (
                &["HELLO", "3", "AUTH", "default"],
                "-ERR Syntax error in HELLO option 'AUTH'\r\n",
            ),
            (
                &["HELLO", "3", "AUTH", "default", "bad"],
                "-WRONGPASS invalid username-password pair or user is disabled.\r\n",
            ),
            (&["PING"], "-NOAUTH Authentication required.\r\n"),
        ],
    )
    .await;
    raw.cmd(&[
        b"HELLO", b"3", b"AUTH", b"default", b"pw", b"SETNAME", b"app1",
    ])
    .await;
    let hello = String::from_utf8_lossy(&raw.read_reply().await).into_owned();
    assert!(
        hello.starts_with("%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n"),
        "HELLO 3 is a RESP3 map: {hello:?}"
    );
    assert!(
        hello.contains("$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:"),
        "{hello:?}"
    );
    assert!(hello.ends_with("$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n"));
    let id = call(&mut raw, &["CLIENT", "ID"]).await;
    assert!(
        hello.contains(&format!("$2\r\nid\r\n{id}")),
        "HELLO id is CLIENT ID"
    );
    expect_all(
        &mut raw,
        &[
            (&["CLIENT", "GETNAME"], "$4\r\napp1\r\n"),
            (&["GET", "nope"], "_\r\n"),
        ],
    )
    .await;
    let hello2 = call(&mut raw, &["HELLO", "2"]).await;
    assert!(
        hello2.starts_with("*14\r\n$6\r\nserver\r\n"),
        "HELLO 2 is a flat array: {hello2:?}"
    );
    assert!(hello2.contains("$5\r\nproto\r\n:2\r\n"));
    expect_all(&mut raw, &[(&["GET", "nope"], "$-1\r\n")]).await;
    // HELLO with no version only reports; RESET goes back to RESP2 and drops the name.
    let _ = call(&mut raw, &["HELLO", "3"]).await;
    expect_all(
        &mut raw,
        &[
            (&["RESET"], "+RESET\r\n"),
            (&["AUTH", "pw"], "+OK\r\n"),
            (&["GET", "nope"], "$-1\r\n"),
            (&["CLIENT", "GETNAME"], "$-1\r\n"),
        ],
    )
    .await;
    // The redis crate's RESP3 handshake works and sees RESP3 types.
    let url = format!("redis://:pw@{}/?protocol=resp3", s.addr());
    let mut c = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = q!(c, "SET", "k", "v").unwrap();
    let v: Value = q!(c, "CONFIG", "GET", "maxclients").unwrap();
    assert!(
        matches!(v, Value::Map(_)),
        "CONFIG GET in RESP3 is a map: {v:?}"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn client_subcommands() {
    let s = start().await;
    let mut a = Raw::connect(s.addr()).await;
    let mut b = Raw::connect(s.addr()).await;
    let id_a: u64 = call(&mut a, &["CLIENT", "ID"]).await[1..]
        .trim()
        .parse()
        .unwrap();
    let id_b: u64 = call(&mut b, &["CLIENT", "ID"]).await[1..]
        .trim()
        .parse()
        .unwrap();
    assert_ne!(id_a, id_b);
    let bad_name = "-ERR Client names cannot contain spaces, newlines or special characters.\r\n";
    expect_all(
        &mut a,
        &[
            (&["CLIENT", "GETNAME"], "$-1\r\n"),
            (&["CLIENT", "SETNAME", "worker-1"], "+OK\r\n"),
            (&["CLIENT", "GETNAME"], "$8\r\nworker-1\r\n"),
            (&["CLIENT", "SETNAME", "a b"], bad_name),
            (&["CLIENT", "SETNAME", "a\nb"], bad_name),
            (&["CLIENT", "GETNAME"], "$8\r\nworker-1\r\n"),
            (&["CLIENT", "SETINFO", "lib-name", "mylib"], "+OK\r\n"),
            (&["CLIENT", "SETINFO", "LIB-VER", "1.2.3"], "+OK\r\n"),
            (
                &["CLIENT", "SETINFO", "lib-name", "a b"],
                "-ERR lib-name cannot contain spaces, newlines or special characters.\r\n",
            ),
            (
                &["CLIENT", "SETINFO", "foo", "bar"],
                "-ERR Unrecognized option 'foo'\r\n",
            ),
            (
                &["CLIENT", "SETINFO", "foo", "a b"],
                "-ERR Unrecognized option 'foo'\r\n",
            ),
            (&["CLIENT", "NO-EVICT", "on"], "+OK\r\n"),
            (&["CLIENT", "NO-TOUCH", "ON"], "+OK\r\n"),
            (&["CLIENT", "NO-EVICT", "maybe"], "-ERR syntax error\r\n"),
            (&["CLIENT", "NO-TOUCH", "maybe"], "-ERR syntax error\r\n"),
            (
                &["CLIENT", "LIST", "ID", "abc"],
                "-ERR Invalid client ID\r\n",
            ),
            (
                &["CLIENT", "LIST", "TYPE", "foo"],
                "-ERR Unknown client type 'foo'\r\n",
            ),
            (&["CLIENT", "KILL", "1.2.3.4:5"], "-ERR No such client\r\n"),
            (
                &["CLIENT", "KILL", "ID", "abc"],
                "-ERR client-id should be greater than 0\r\n",
            ),
            (&["CLIENT", "KILL", "ID", "999999"], ":0\r\n"),
        ],
    )
    .await;
    let info = call(&mut a, &["CLIENT", "INFO"]).await;
    let line = info.lines().nth(1).unwrap_or("").to_string();
    for field in [
        format!("id={id_a} "),
        " name=worker-1 ".to_string(),
        " lib-name=mylib".to_string(),
        " lib-ver=1.2.3".to_string(),
        " resp=2".to_string(),
        " db=0 ".to_string(),
    ] {
        assert!(line.contains(&field), "CLIENT INFO lacks {field:?}: {line}");
    }
    let flags = line.split(' ').find(|f| f.starts_with("flags=")).unwrap();
    assert!(flags.contains('e') && flags.contains('T'), "{flags}");
    let list = call(&mut a, &["CLIENT", "LIST"]).await;
    assert!(list.contains(&format!("id={id_a} ")) && list.contains(&format!("id={id_b} ")));
    let one = call(&mut a, &["CLIENT", "LIST", "ID", &id_b.to_string()]).await;
    assert_eq!(one.matches("id=").count(), 1, "{one}");
    // `cmd=` names the other client's last command, as the command table spells it.
    let b_cmd = one.split(' ').find(|f| f.starts_with("cmd=")).unwrap();
    assert_ne!(b_cmd, "cmd=NULL", "{one}");
    assert!(one.contains(&format!("id={id_b} ")));
    // CLIENT KILL ID closes the other connection.
    expect_all(
        &mut a,
        &[(&["CLIENT", "KILL", "ID", &id_b.to_string()], ":1\r\n")],
    )
    .await;
    let _ = b.expect_closed().await;
    // Old form by address.
    let mut c = Raw::connect(s.addr()).await;
    expect_all(&mut c, &[(&["PING"], "+PONG\r\n")]).await;
    let addr = c.stream.local_addr().unwrap().to_string();
    expect_all(&mut a, &[(&["CLIENT", "KILL", &addr], "+OK\r\n")]).await;
    let _ = c.expect_closed().await;
    // SKIPME no lets a client kill itself (after the reply).
    expect_all(
        &mut a,
        &[(
            &["CLIENT", "KILL", "ID", &id_a.to_string(), "SKIPME", "no"],
            ":1\r\n",
        )],
    )
    .await;
    let _ = a.expect_closed().await;
    s.shutdown().await;
}

#[tokio::test]
async fn maxclients_and_idle_timeout() {
    let s = start_with(&[("maxclients", "2"), ("timeout", "1")]).await;
    let mut a = Raw::connect(s.addr()).await;
    let mut b = Raw::connect(s.addr()).await;
    expect_all(&mut a, &[(&["PING"], "+PONG\r\n")]).await;
    expect_all(&mut b, &[(&["PING"], "+PONG\r\n")]).await;
    let mut c = Raw::connect(s.addr()).await;
    let got = c.expect_closed().await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR max number of clients reached\r\n"
    );
    let st: String = {
        let r = call(&mut a, &["INFO", "stats"]).await;
        r
    };
    assert_eq!(
        info_field(&st, "rejected_connections").as_deref(),
        Some("1")
    );
    // b stays busy; a goes idle and is closed after ~1 s.
    let started = Instant::now();
    let busy = tokio::spawn(async move {
        for _ in 0..12 {
            expect_all(&mut b, &[(&["PING"], "+PONG\r\n")]).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        b
    });
    let _ = a.expect_closed().await;
    let idle = started.elapsed();
    assert!(
        idle >= Duration::from_millis(900),
        "closed too early: {idle:?}"
    );
    let b = busy.await.unwrap();
    drop(b);
    // Freed slots take new clients again.
    let ok = eventually(Duration::from_secs(3), || async {
        let mut r = Raw::connect(s.addr()).await;
        r.cmd(&[b"PING"]).await;
        let mut buf = [0u8; 64];
        use tokio::io::AsyncReadExt;
        matches!(
            tokio::time::timeout(Duration::from_secs(1), r.stream.read(&mut buf)).await,
            Ok(Ok(n)) if &buf[..n] == b"+PONG\r\n"
        )
    })
    .await;
    assert!(ok, "a new client is accepted once others left");
    s.shutdown().await;
}

//! Shared helpers for the integration tests: start an in-process Meridian node on
//! 127.0.0.1:0, connect a real `redis` client to it, and speak raw RESP bytes where the exact
//! wire form is the point. Every wait is bounded: a hung server fails the test, never hangs it.
#![allow(dead_code)]

use meridian::cluster::Cluster;
use meridian::cmd::Node;
use meridian::config::Config;
use meridian::server::{spawn_with, Running};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any single read waits before the test fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A node running on its own thread and tokio runtime, so that even a deadlocked server
/// cannot stall the test's runtime: the test's timeouts still fire and the test fails.
pub struct Server {
    addr: SocketAddr,
    pub node: Arc<Node>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the node and waits (bounded) for its thread to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let joined = tokio::time::timeout(
                Duration::from_secs(10),
                tokio::task::spawn_blocking(move || t.join()),
            )
            .await;
            assert!(joined.is_ok(), "server did not shut down within 10 s");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Dropping `stop` tells the server thread to shut down; it is not joined here.
        self.stop.take();
    }
}

/// Starts a node with redis.conf-style overrides (port 0 is always added).
pub async fn start_with(overrides: &[(&str, &str)]) -> Server {
    start_with_cluster(overrides, None).await
}

/// [`start_with`] for a cluster node: `cluster` is installed before the first client connects
/// (its map can be completed afterwards through `Cluster::update`, once every port is known).
pub async fn start_with_cluster(
    overrides: &[(&str, &str)],
    cluster: Option<Arc<Cluster>>,
) -> Server {
    let mut o: Vec<(String, String)> = vec![("port".into(), "0".into())];
    o.extend(
        overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let config = Config::layered(None, false, &o).expect("valid test config");
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("server runtime");
        rt.block_on(async move {
            let running: Running = spawn_with(config, cluster).await.expect("server starts");
            let _ = ready_tx.send((running.addr(), running.node.clone()));
            let _ = stop_rx.await;
            running.shutdown().await;
        });
    });
    let (addr, node) = tokio::time::timeout(IO_TIMEOUT, ready_rx)
        .await
        .expect("server start timed out")
        .expect("server thread died while starting");
    Server {
        addr,
        node,
        stop: Some(stop),
        thread: Some(thread),
    }
}

/// Starts a node with default settings.
pub async fn start() -> Server {
    start_with(&[]).await
}

/// A multiplexed `redis` connection (RESP2).
pub async fn client(addr: SocketAddr) -> redis::aio::MultiplexedConnection {
    let c = redis::Client::open(format!("redis://{addr}")).expect("client url");
    tokio::time::timeout(IO_TIMEOUT, c.get_multiplexed_async_connection())
        .await
        .expect("connect timed out")
        .expect("connect")
}

/// A multiplexed `redis` connection speaking RESP3.
pub async fn client3(addr: SocketAddr) -> redis::aio::MultiplexedConnection {
    let c = redis::Client::open(format!("redis://{addr}/?protocol=resp3")).expect("client url");
    tokio::time::timeout(IO_TIMEOUT, c.get_multiplexed_async_connection())
        .await
        .expect("connect timed out")
        .expect("connect")
}

/// Runs a command built from string-ish args and returns the typed result.
#[macro_export]
macro_rules! q {
    ($con:expr, $name:expr $(, $arg:expr)* $(,)?) => {{
        #[allow(unused_mut)]
        let mut c = redis::cmd($name);
        $( c.arg($arg); )*
        tokio::time::timeout($crate::common::IO_TIMEOUT, c.query_async(&mut $con))
            .await
            .expect("command timed out")
    }};
}

/// Runs a command expected to fail and returns the server's full error text
/// (`CODE detail`), e.g. `ERR syntax error`.
pub async fn err(con: &mut redis::aio::MultiplexedConnection, args: &[&str]) -> String {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    let r: redis::RedisResult<redis::Value> = tokio::time::timeout(IO_TIMEOUT, c.query_async(con))
        .await
        .expect("command timed out");
    match r {
        Ok(v) => panic!("{args:?}: expected an error, got {v:?}"),
        Err(e) => error_text(&e),
    }
}

/// The server's error line from a `RedisError` (code and detail, as on the wire after '-').
pub fn error_text(e: &redis::RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_string(),
        _ => e.to_string(),
    }
}

/// A raw RESP connection.
pub struct Raw {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        let stream = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        stream.set_nodelay(true).unwrap();
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Sends a command as a RESP multibulk.
    pub async fn cmd(&mut self, args: &[&[u8]]) {
        self.send(&encode(args)).await;
    }

    /// Reads until exactly `expected.len()` bytes arrived (or times out) and returns them.
    pub async fn read_exact_len(&mut self, n: usize) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + IO_TIMEOUT;
        while self.buf.len() < n {
            let mut chunk = [0u8; 65536];
            let r = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "timed out waiting for {n} bytes, have {:?}",
                        String::from_utf8_lossy(&self.buf)
                    )
                })
                .expect("read");
            if r == 0 {
                panic!(
                    "connection closed after {:?}, wanted {n} bytes",
                    String::from_utf8_lossy(&self.buf)
                );
            }
            self.buf.extend_from_slice(&chunk[..r]);
        }
        self.buf.drain(..n).collect()
    }

    /// Reads exactly the bytes of `expected` and asserts they match.
    pub async fn expect(&mut self, expected: &[u8]) {
        let got = self.read_exact_len(expected.len()).await;
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expected),
            "reply bytes differ"
        );
    }

    /// Sends a command and asserts the exact reply bytes.
    pub async fn roundtrip(&mut self, args: &[&[u8]], expected: &[u8]) {
        self.cmd(args).await;
        self.expect(expected).await;
    }

    /// Reads one complete reply line-by-line (simple types, bulk, aggregates) and returns its
    /// raw bytes. Good enough for the shapes the tests read this way.
    pub async fn read_reply(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.read_value(&mut out).await;
        out
    }

    async fn read_line(&mut self) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + IO_TIMEOUT;
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                return self.buf.drain(..i + 2).collect();
            }
            let mut chunk = [0u8; 65536];
            let r = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .expect("timed out reading a reply line")
                .expect("read");
            assert!(r > 0, "connection closed mid-reply");
            self.buf.extend_from_slice(&chunk[..r]);
        }
    }

    fn read_value<'a>(
        &'a mut self,
        out: &'a mut Vec<u8>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let line = self.read_line().await;
            out.extend_from_slice(&line);
            let n: i64 = std::str::from_utf8(&line[1..line.len() - 2])
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            match line[0] {
                b'$' | b'=' | b'!' if n >= 0 => {
                    let body = self.read_exact_len(n as usize + 2).await;
                    out.extend_from_slice(&body);
                }
                b'*' | b'~' | b'>' => {
                    for _ in 0..n.max(0) {
                        self.read_value(out).await;
                    }
                }
                b'%' | b'|' => {
                    for _ in 0..2 * n.max(0) {
                        self.read_value(out).await;
                    }
                }
                _ => {}
            }
        })
    }

    /// Waits for the server to close the connection (EOF or reset) within the timeout;
    /// any bytes that arrive first are returned.
    pub async fn expect_closed(&mut self) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + IO_TIMEOUT;
        loop {
            let mut chunk = [0u8; 65536];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => panic!(
                    "connection still open; pending {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                Ok(Ok(0)) | Ok(Err(_)) => return std::mem::take(&mut self.buf),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// Sends each command on a raw socket and checks the exact reply bytes.
pub async fn expect_all(raw: &mut Raw, cases: &[(&[&str], &str)]) {
    for (args, want) in cases {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        raw.cmd(&a).await;
        let got = raw.read_reply().await;
        assert_eq!(String::from_utf8_lossy(&got), *want, "reply to {args:?}");
    }
}

/// Sends one command on a raw socket and returns its whole reply as text.
pub async fn call(raw: &mut Raw, args: &[&str]) -> String {
    let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
    raw.cmd(&a).await;
    String::from_utf8_lossy(&raw.read_reply().await).into_owned()
}

/// A field of an INFO text (`name:value` line).
pub fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_string())
}

/// Field `f` of the `peer_region_<region>` line of an INFO regions text.
pub fn peer_field(info: &str, region: &str, f: &str) -> Option<String> {
    let line = info_field(info, &format!("peer_region_{region}"))?;
    line.split(',')
        .find_map(|kv| kv.strip_prefix(&format!("{f}=")).map(str::to_string))
}

/// RESP multibulk encoding of a command.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        v.extend_from_slice(a);
        v.extend_from_slice(b"\r\n");
    }
    v
}

/// Polls `f` every 20 ms until it returns true or `limit` passes; returns the last result.
pub async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
pub mod cluster;
pub mod ports;
pub mod world;

//! `meridian demo`: a local topology on loopback, one OS process per node, so any node can be
//! killed like a real server.
//!
//! Steps:
//! 1. a dev CA and a node certificate in a temporary directory (mutual TLS as in production);
//! 2. per region, `--nodes` processes on consecutive ports from `--base-port` (region r uses
//!    `base + 100·r`; mesh ports are RESP + 10000), all given the same `cluster-nodes` list, so
//!    they compute the same layout (`--replicas` per primary);
//!    Each node gets `region-peers` = the mesh address of the first node of every other region,
//!    so the regions find each other and replicate active-active;
//! 3. wait until every node answers `CLUSTER INFO` with `cluster_state:ok` (bounded);
//! 4. print `node <region> <node-id> <pid> <resp> <mesh> <primary|replica>` per node, then
//!    `admin <region> <resp> <dashboard URL>` per node that opened an admin port (`admin-port
//!    auto`: RESP + 1000; read back from `INFO server`), then `ready`; Ctrl-C (or SIGTERM) stops
//!    every node and removes the directory.

use super::AdminError;
use crate::cluster::layout;
use crate::cluster::{node_name, Role};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct DemoOptions {
    pub regions: usize,
    pub nodes: usize,
    pub replicas: usize,
    pub base_port: u16,
    /// Extra `--name value` flags given to every node.
    pub node_args: Vec<String>,
}

struct Proc {
    region: String,
    seat: layout::Seat,
    child: Child,
}

/// Runs the demo until `stop` resolves; every node is stopped on the way out.
pub async fn run(
    opts: DemoOptions,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), AdminError> {
    let dir = std::env::temp_dir().join(format!("meridian-demo-{}", std::process::id()));
    let io = |what: &str| {
        let what = what.to_string();
        move |source| AdminError::Io { what, source }
    };
    std::fs::create_dir_all(&dir).map_err(io("creating the demo directory"))?;
    let mut procs = Vec::new();
    let result = start(&opts, &dir, &mut procs).await;
    if result.is_ok() {
        for p in &procs {
            let role = match p.seat.role {
                Role::Primary => "primary",
                Role::Replica { .. } => "replica",
            };
            println!(
                "node {} {} {} {} {} {}",
                p.region,
                node_name(p.seat.id),
                p.child.id(),
                p.seat.resp,
                p.seat.mesh,
                role
            );
        }
        for p in &procs {
            if let Some(port) = admin_port(p.seat.resp) {
                println!(
                    "admin {} {} http://{}:{port}/",
                    p.region,
                    p.seat.resp,
                    p.seat.resp.ip()
                );
            }
        }
        println!("ready");
        let _ = std::io::stdout().flush();
        eprintln!(
            "logs and certificates in {}; Ctrl-C stops every node",
            dir.display()
        );
        stop.await;
    }
    for p in &mut procs {
        // SIGTERM first: nodes leave the cluster gracefully; then make sure.
        let _ = Command::new("kill").arg(p.child.id().to_string()).status();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for p in &mut procs {
        while Instant::now() < deadline && matches!(p.child.try_wait(), Ok(None)) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = p.child.kill();
        let _ = p.child.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn start(opts: &DemoOptions, dir: &Path, procs: &mut Vec<Proc>) -> Result<(), AdminError> {
    let tls = dir.join("tls");
    super::certs(&tls, &["127.0.0.1".into(), "localhost".into()])?;
    let exe = std::env::current_exe().map_err(|source| AdminError::Io {
        what: "locating the meridian binary".into(),
        source,
    })?;
    let first_port = |r: usize| opts.base_port as usize + 100 * r;
    if first_port(opts.regions) + 10000 > 65535 {
        return Err(AdminError::Demo(
            "--base-port too high for the mesh ports (+10000)".into(),
        ));
    }
    for r in 0..opts.regions {
        let region = format!("region-{}", r + 1);
        let first = first_port(r);
        let peers: Vec<String> = (0..opts.regions)
            .filter(|&o| o != r)
            .map(|o| format!("127.0.0.1:{}", first_port(o) + 10000))
            .collect();
        let list: Vec<String> = (0..opts.nodes)
            .map(|i| format!("127.0.0.1:{}", first + i))
            .collect();
        let seats = layout::seats(&region, &list, opts.replicas, "auto")
            .map_err(|e| AdminError::Demo(e.to_string()))?;
        for seat in seats {
            let log = std::fs::File::create(dir.join(format!("{region}-{}.log", seat.resp.port())))
                .map_err(|source| AdminError::Io {
                    what: "creating a node log".into(),
                    source,
                })?;
            let mut cmd = Command::new(&exe);
            cmd.arg("serve")
                .args(["--port", &seat.resp.port().to_string()])
                .args(["--region", &region])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-nodes", &list.join(" ")])
                .args(["--cluster-replicas", &opts.replicas.to_string()])
                .args(["--cluster-tls-dir", &tls.to_string_lossy()]);
            // Only with other regions: an empty argument would not survive a copy of the
            // command line (tests restart nodes from /proc/<pid>/cmdline).
            if !peers.is_empty() {
                cmd.args(["--region-peers", &peers.join(" ")]);
            }
            let child = cmd
                .args(&opts.node_args)
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(|source| AdminError::Io {
                    what: "node log".into(),
                    source,
                })?)
                .stderr(log)
                .spawn()
                .map_err(|source| AdminError::Io {
                    what: "starting a node".into(),
                    source,
                })?;
            procs.push(Proc {
                region: region.clone(),
                seat,
                child,
            });
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for p in procs.iter_mut() {
        loop {
            if let Ok(Some(status)) = p.child.try_wait() {
                return Err(AdminError::Demo(format!(
                    "node {} exited ({status}); see its log in {}",
                    p.seat.resp,
                    dir.display()
                )));
            }
            if node_ready(p.seat.resp, opts.regions) {
                break;
            }
            if Instant::now() > deadline {
                return Err(AdminError::Demo(format!(
                    "node {} not ready after 30 s; see its log in {}",
                    p.seat.resp,
                    dir.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// True when the node answers `CLUSTER INFO` with `cluster_state:ok` and, with several
/// regions, sees every other region up (`INFO regions`).
fn node_ready(addr: SocketAddr, regions: usize) -> bool {
    let cluster = bulk_reply(addr, b"CLUSTER INFO\r\n");
    if !cluster.contains("cluster_state:ok") {
        return false;
    }
    if regions <= 1 {
        return true;
    }
    let info = bulk_reply(addr, b"INFO regions\r\n");
    info.contains(&format!("peer_regions:{}\r\n", regions - 1))
        && info.matches("state=up").count() == regions - 1
}

/// The admin port a node reports in `INFO server` (`None`: it has none).
fn admin_port(addr: SocketAddr) -> Option<u16> {
    bulk_reply(addr, b"INFO server\r\n")
        .split("\r\n")
        .find_map(|l| l.strip_prefix("admin_port:"))
        .and_then(|p| p.trim().parse().ok())
        .filter(|&p| p != 0)
}

/// Sends one inline command and returns its bulk reply's text (empty on any failure).
fn bulk_reply(addr: SocketAddr, cmd: &[u8]) -> String {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(cmd).is_err() {
        return String::new();
    }
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        // `$<len>\r\n<len bytes>\r\n` (or `=<len>\r\ntxt:...` in RESP3): stop once complete.
        if let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") {
            let len: usize = std::str::from_utf8(&buf[1..eol])
                .ok()
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            if buf.len() >= eol + 2 + len + 2 || buf[0] != b'$' {
                break;
            }
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

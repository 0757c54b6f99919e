//! `meridian demo` as the process tests drive it: pick free ports, start the demo, read the
//! `node …` / `admin …` / `ready` lines it prints, and SIGKILL every process it started when the
//! test ends (also on panic). Also the bounded runner for the Python client scripts in
//! `tests/py` that those tests point at the demo's nodes.
//!
//! Included with `#[path = "common/demo.rs"] mod demo;` by the test binaries that start OS
//! processes (it needs nothing from `common/mod.rs`). Every wait is bounded: a demo that never
//! becomes ready or a script that hangs fails the test, never hangs it.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the demo may take to print `ready` (debug-build nodes on a loaded 2-core host).
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// How many times [`Demo::start`] tries (each on fresh ports) before the test fails: a port
/// found free can be taken by another process before the demo's node binds it.
const START_ATTEMPTS: usize = 3;

/// Where a test binary looks for its demo's base port: `first + 10·k` for `k` in `0..slots`.
/// Test binaries that may run at the same time use different ranges. Region `r` of a demo
/// listens on `base + 100·r` onwards, so the range must leave room for every region.
#[derive(Clone, Copy, Debug)]
pub struct PortRange {
    pub first: u16,
    pub slots: u16,
}

/// What to start: `meridian demo --regions R --nodes N --replicas K --base-port B -- ARGS`.
#[derive(Clone, Copy, Debug)]
pub struct Spec<'a> {
    pub regions: u16,
    /// Nodes per region.
    pub nodes: u16,
    /// Replicas per primary.
    pub replicas: u16,
    /// Ports after each region's nodes that must be free too, for nodes the test adds itself
    /// ([`Demo::spawn_node`]): region 1's extra nodes listen on `base + nodes + i`.
    pub spare: u16,
    /// Flags given to every node (after `--`).
    pub node_args: &'a [&'a str],
    pub ports: PortRange,
}

impl Spec<'_> {
    /// One node and no flags in each of `regions` regions.
    pub fn regions(regions: u16, ports: PortRange) -> Spec<'static> {
        Spec {
            regions,
            nodes: 1,
            replicas: 0,
            spare: 0,
            node_args: &[],
            ports,
        }
    }
}

/// One `node <region> <node-id> <pid> <resp> <mesh> <primary|replica>` line of the demo.
#[derive(Clone, Debug)]
pub struct Node {
    /// `region-1`, `region-2`, …
    pub region: String,
    /// The cluster node ID (40 hex digits).
    pub id: String,
    pub pid: u32,
    /// The RESP port (127.0.0.1).
    pub port: u16,
    pub primary: bool,
}

/// A running `meridian demo` plus any node processes the test started itself.
///
/// Drop SIGKILLs all of them: the demo's nodes first (a killed node stays a zombie of the demo
/// until the demo dies, so its pid cannot have been reused by then), then the test's own, then
/// the demo. The demo's directory (certificates, one log per node) is removed, except when the
/// test panics: then it is kept and its path printed.
pub struct Demo {
    demo: Child,
    /// The demo's nodes, in the order of its `node` lines (region by region).
    pub nodes: Vec<Node>,
    /// `(region, dashboard URL)` of each `admin` line, in node order.
    pub admins: Vec<(String, String)>,
    /// Node processes started by the test ([`Demo::spawn_node`]).
    extra: Vec<Child>,
    /// `meridian-demo-<demo pid>` in the temp directory, where the demo keeps its files.
    pub dir: PathBuf,
    /// Region 1's first RESP port (`--base-port`).
    pub base: u16,
}

impl Demo {
    /// Starts the demo on free ports and waits (bounded) for `ready`; retries on fresh ports
    /// when the demo fails to get there, and panics after [`START_ATTEMPTS`] failures.
    pub fn start(spec: &Spec) -> Demo {
        let mut last_err = String::new();
        for _attempt in 0..START_ATTEMPTS {
            let base = free_base(spec);
            match Demo::try_start(spec, base) {
                Ok(demo) => return demo,
                Err(e) => last_err = e,
            }
        }
        panic!("meridian demo did not start three times; last: {last_err}");
    }

    /// One attempt on `base`: `Err` (with the demo's stderr) when it exits or is not ready
    /// within [`READY_TIMEOUT`]; the processes of a failed attempt are killed.
    pub fn try_start(spec: &Spec, base: u16) -> Result<Demo, String> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_meridian"));
        cmd.args(["demo", "--regions", &spec.regions.to_string()])
            .args(["--nodes", &spec.nodes.to_string()])
            .args(["--replicas", &spec.replicas.to_string()])
            .args(["--base-port", &base.to_string()])
            .arg("--")
            .args(spec.node_args);
        let mut demo = spawn_piped(&mut cmd);
        let lines = read_lines(demo.stdout.take().unwrap());
        // Drained so the demo never blocks on it; kept for the error message.
        let stderr = drain(demo.stderr.take().unwrap());
        let mut started = Demo {
            dir: std::env::temp_dir().join(format!("meridian-demo-{}", demo.id())),
            demo,
            nodes: Vec::new(),
            admins: Vec::new(),
            extra: Vec::new(),
            base,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) if line == "ready" => return Ok(started),
                Ok(line) => started.record(&line),
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(_) => {
                    // Let the stderr thread catch up with the demo's last words.
                    std::thread::sleep(Duration::from_millis(100));
                    let err = stderr.lock().unwrap().clone();
                    return Err(format!("demo on base port {base} not ready: {err}"));
                }
            }
        }
    }

    /// Notes a `node` or `admin` line; other lines are ignored.
    fn record(&mut self, line: &str) {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["node", region, id, pid, resp, _mesh, role] => {
                let resp: SocketAddr = resp.parse().expect("resp address");
                self.nodes.push(Node {
                    region: region.to_string(),
                    id: id.to_string(),
                    pid: pid.parse().expect("pid"),
                    port: resp.port(),
                    primary: *role == "primary",
                });
            }
            ["admin", region, _resp, url] => {
                self.admins.push((region.to_string(), url.to_string()));
            }
            _ => {}
        }
    }

    /// The nodes' RESP ports, in node order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    pub fn node_by_port(&self, port: u16) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .expect("known port")
    }

    /// The demo's nodes that are no longer running (a zombie: the demo reaps its nodes only
    /// when it stops), with the line of their log about a signal. Used in failure messages to
    /// tell a node that was stopped from outside from a Meridian bug.
    pub fn gone(&self) -> String {
        let mut out = Vec::new();
        for n in &self.nodes {
            let state = std::fs::read_to_string(format!("/proc/{}/stat", n.pid))
                .ok()
                .and_then(|s| {
                    s.rsplit(')')
                        .next()
                        .and_then(|r| r.split_whitespace().next())
                        .map(str::to_string)
                })
                .unwrap_or_else(|| "gone".into());
            if state == "Z" || state == "gone" {
                let log = self.dir.join(format!("{}-{}.log", n.region, n.port));
                let log = std::fs::read_to_string(log).unwrap_or_default();
                let signal = log
                    .lines()
                    .find(|l| l.contains("signal received"))
                    .unwrap_or("")
                    .to_string();
                out.push(format!(
                    "node {} (pid {}) not running; {signal}",
                    n.port, n.pid
                ));
            }
        }
        if out.is_empty() {
            "all demo nodes running".into()
        } else {
            out.join("; ")
        }
    }

    /// Starts a node process with `argv` (argv[0] is the binary); its output goes to a log in
    /// the demo directory. The process is killed when the demo is dropped.
    pub fn spawn_node(&mut self, argv: &[String], port: u16) {
        let log = std::fs::File::create(self.dir.join(format!("test-started-{port}.log"))).unwrap();
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start a node");
        self.extra.push(child);
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        for n in &self.nodes {
            sigkill(n.pid);
        }
        for c in &mut self.extra {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.demo.kill();
        let _ = self.demo.wait();
        if std::thread::panicking() {
            eprintln!(
                "node logs kept in {} (base port {})",
                self.dir.display(),
                self.base
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// SIGKILL to a process that is not our child (a demo's node); errors are ignored.
pub fn sigkill(pid: u32) {
    let _ = Command::new("kill")
        .args(["-s", "KILL", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// A base port in `spec.ports` where every port the demo will use is free: per region `r`
/// and node or spare seat `i`, RESP `p = base + 100·r + i` (TCP), its admin port `p + 1000`
/// (TCP, `admin-port auto`) and its mesh port `p + 10000` (UDP).
///
/// The search starts at an offset derived from the pid, so concurrent runs of a test binary
/// start apart, and moves on with each call, so the demos one binary starts in turn do not
/// reuse ports still in TIME_WAIT.
pub fn free_base(spec: &Spec) -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let PortRange { first, slots } = spec.ports;
    let offset = (std::process::id() as u16).wrapping_mul(7919) % slots;
    let free = |p: u16| {
        TcpListener::bind(("0.0.0.0", p)).is_ok()
            && TcpListener::bind(("0.0.0.0", p + 1000)).is_ok()
            && UdpSocket::bind(("0.0.0.0", p + 10000)).is_ok()
    };
    for _ in 0..slots {
        let k = (offset + NEXT.fetch_add(1, Ordering::Relaxed)) % slots;
        let base = first + k * 10;
        let all_free = (0..spec.regions).all(|r| {
            let region_base = base + 100 * r;
            (region_base..region_base + spec.nodes + spec.spare).all(free)
        });
        if all_free {
            return base;
        }
    }
    panic!(
        "no free ports for the demo ({spec:?}) in {first}..{}",
        first + 10 * slots
    );
}

/// Starts `cmd` with stdin empty and stdout and stderr piped (the caller must read both).
fn spawn_piped(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {:?}: {e}", cmd.get_program()))
}

/// Sends each line of `out` down the returned channel (closed when `out` ends).
fn read_lines(out: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Reads `from` to its end on a thread; the text read so far is in the returned string.
fn drain(mut from: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    text
}

/// What a command run by [`run_bounded`] printed, and how it ended.
pub struct Finished {
    /// `None`: still running at the deadline, so it was killed.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` (stdin empty, both outputs captured) for at most `timeout`, then kills it.
/// Both pipes are read while it runs, so a chatty command cannot block on a full pipe.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Finished {
    let mut child = spawn_piped(cmd);
    let read_all = |mut from: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = from.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().unwrap()));
    let stderr = read_all(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Finished {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Panics unless `python3` can `import <module>`; `what` names the package in the message.
pub fn require_python(module: &str, what: &str) {
    let have = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        have,
        "python3 with {what} is required: run .ci/run (or `pip install redis`)"
    );
}

/// Runs `python3 -u tests/py/<script> <args>` for at most `timeout`; prints its stdout and
/// returns it. Panics, with both outputs, when the script fails or does not finish in time.
pub fn run_python(script: &str, args: &[impl AsRef<OsStr>], timeout: Duration) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(script);
    let run = run_bounded(
        Command::new("python3").arg("-u").arg(&path).args(args),
        timeout,
    );
    let (out, err) = (run.stdout, run.stderr);
    let Some(status) = run.status else {
        panic!(
            "{script} did not finish within {} s:\n{out}\n{err}",
            timeout.as_secs()
        );
    };
    println!("{out}");
    assert!(
        status.success(),
        "{script} failed ({status}):\n{out}\n{err}"
    );
    out
}

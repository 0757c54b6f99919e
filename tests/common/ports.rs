//! Ports for test nodes that stay free until the node binds them.
//!
//! A port found by binding port 0 and letting go can be taken before the node binds it, in two
//! ways, and CI has seen the second ("Address already in use" while a region was starting):
//!
//! 1. another test process does the same and gets the same port;
//! 2. a node already running makes an outgoing connection (cluster bus, a client), and the
//!    kernel draws its local port from the same ephemeral range that port 0 comes from.
//!
//! So ports here come from [`RANGE`], below the ephemeral range (no outgoing connection is ever
//! given one) and below the demo tests' fixed ranges (20000 and up). A port is claimed across
//! processes by an advisory lock on a file named after it, held until the test process exits,
//! and is handed out only if TCP and UDP both bind to it at that moment.
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

/// Where claimed ports come from: under the demo tests' ranges (20000 and up) and the
/// kernel's ephemeral range (32768 and up by default; a machine whose range reaches lower is
/// told so at first use).
const RANGE: std::ops::Range<u32> = 10_000..20_000;

/// Locks held for the life of the process: dropping one would let another process claim
/// a port a node of this one may still rebind (a restart reuses its port).
static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// Next candidate, as an offset into [`RANGE`]; starts at a point drawn from the process id so
/// that test processes started together rarely probe the same ports first.
fn next_offset() -> u32 {
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let next = NEXT.get_or_init(|| {
        let low = ephemeral_low();
        if low < RANGE.end {
            // Still usable: the lock files keep test processes apart, and a port taken by an
            // outgoing connection fails the bind check; only the rare race remains.
            eprintln!("the ephemeral port range starts at {low}, inside test ports {RANGE:?}");
        }
        AtomicU32::new(std::process::id().wrapping_mul(2_654_435_761) % RANGE.len() as u32)
    });
    next.fetch_add(1, Ordering::Relaxed) % RANGE.len() as u32
}

fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

fn lock_dir() -> PathBuf {
    let d = std::env::temp_dir().join("meridian-test-ports");
    std::fs::create_dir_all(&d).expect("port lock directory");
    d
}

/// Claims one port that TCP and UDP on 127.0.0.1 can both bind now, or panics after trying
/// the whole range.
pub fn claim() -> u16 {
    let dir = lock_dir();
    for _ in 0..RANGE.len() {
        let port = (RANGE.start + next_offset()) as u16;
        let Ok(file) = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{port}.lock")))
        else {
            continue;
        };
        if file.try_lock().is_err() {
            continue; // another process (or this one) holds it
        }
        let tcp = TcpListener::bind(("127.0.0.1", port));
        let udp = UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            HELD.lock().unwrap().push(file);
            return port;
        }
    }
    panic!("no free test port in {RANGE:?}");
}

/// `n` distinct claimed ports.
pub fn claim_n(n: usize) -> Vec<u16> {
    (0..n).map(|_| claim()).collect()
}

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
//! and is handed out only if TCP and UDP both bind to it at that moment. The admin port a node
//! on it would open (RESP + 1000) is claimed with it.
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

/// Where claimed ports come from. With their admin ports ([`ADMIN_OFFSET`] above them) they stay
/// under the demo tests' ranges (20000 and up) and the kernel's ephemeral range (32768 and up
/// by default; a machine whose range reaches lower is told so at first use).
const RANGE: std::ops::Range<u32> = 10_000..19_000;

/// A node's default admin port is its RESP port + this (`admin-port auto`).
const ADMIN_OFFSET: u32 = 1000;

/// Locks held for the life of the process: dropping one would let another process claim
/// a port a node of this one may still rebind (a restart reuses its port).
static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// Next candidate, as an offset into [`RANGE`]; starts at a point drawn from the process id so
/// that test processes started together rarely probe the same ports first.
fn next_offset() -> u32 {
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let next = NEXT.get_or_init(|| {
        let low = ephemeral_low();
        if low < RANGE.end + ADMIN_OFFSET {
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

/// Claims one port that TCP and UDP on 127.0.0.1 can both bind now, together with the admin
/// port a node listening on it opens by default (`admin-port auto`: the RESP port + 1000 when
/// it is below 31768, docs/observability.md), so no other claim hands that one out either.
/// Panics after trying the whole range.
pub fn claim() -> u16 {
    let dir = lock_dir();
    let lock = |port: u32| {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{port}.lock")))
            .ok()?;
        // Fails when another process (or this one) holds it.
        file.try_lock().ok().map(|()| file)
    };
    for _ in 0..RANGE.len() {
        let port = RANGE.start + next_offset();
        let admin = port + ADMIN_OFFSET;
        let (Some(file), Some(admin_file)) = (lock(port), lock(admin)) else {
            continue;
        };
        let free = TcpListener::bind(("127.0.0.1", port as u16)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port as u16)).is_ok()
            && TcpListener::bind(("127.0.0.1", admin as u16)).is_ok();
        if free {
            HELD.lock().unwrap().extend([file, admin_file]);
            return port as u16;
        }
    }
    panic!("no free test port in {RANGE:?}");
}

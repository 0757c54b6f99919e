//! The per-peer connection cache and traffic counters.
//!
//! Owns: which established connections serve which peer address, the per-peer dial lock that
//! makes concurrent senders share one handshake, and the counters behind [`MeshStats`].
//!
//! Invariants:
//! - only connections whose handshake completed (so whose certificate verified) enter the table;
//! - a peer may have several live connections at once (one it dialled, one it accepted, e.g. when
//!   two nodes dial each other at the same moment); all are served, and sends use the newest;
//! - closed connections are pruned lazily on lookup and eagerly by their serving task;
//! - at most one dial per peer is in flight: dialers hold [`Peer::dial`] while connecting, and the
//!   fire-and-forget background dial for datagrams is further limited by [`Peer::claim_bg_dial`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use quinn::Connection;

/// Traffic counters of one peer; monotonic for the life of the mesh.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub frames_sent: AtomicU64,
    pub frames_received: AtomicU64,
    pub datagrams_sent: AtomicU64,
    pub datagrams_received: AtomicU64,
    pub requests_sent: AtomicU64,
    pub requests_received: AtomicU64,
    pub send_errors: AtomicU64,
    pub dials: AtomicU64,
    pub accepts: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Mesh-wide counters (not attributable to an authenticated peer).
#[derive(Debug, Default)]
pub(crate) struct GlobalCounters {
    /// Datagrams received while the inbound channel was full.
    pub inbound_datagrams_dropped: AtomicU64,
    /// Datagrams not sent because the peer had no connection yet (or it was lost).
    pub outbound_datagrams_dropped: AtomicU64,
    /// Inbound handshakes that failed (bad or missing certificate, protocol error, timeout).
    pub handshakes_failed: AtomicU64,
    /// Streams dropped for malformed framing.
    pub malformed_streams: AtomicU64,
}

/// One peer address and what serves it.
#[derive(Debug)]
pub(crate) struct Peer {
    pub addr: SocketAddr,
    /// Established connections, oldest first.
    conns: Mutex<Vec<Connection>>,
    /// Held by whoever is dialling this peer; see the module invariants.
    pub dial: tokio::sync::Mutex<()>,
    /// Set while a task holding `dial` is connecting (for [`PeerState::Connecting`]).
    pub dialing: AtomicBool,
    /// Set while a background dial task (spawned for a datagram) exists.
    bg_dial: AtomicBool,
    /// Number of dials completed (either way), and why the last one failed, if it did: lets
    /// callers that queued behind a failing dial share its outcome instead of dialling again.
    dial_gen: AtomicU64,
    last_dial_error: Mutex<Option<String>>,
    pub counters: Counters,
}

impl Peer {
    fn new(addr: SocketAddr) -> Self {
        Peer {
            addr,
            conns: Mutex::new(Vec::new()),
            dial: tokio::sync::Mutex::new(()),
            dialing: AtomicBool::new(false),
            bg_dial: AtomicBool::new(false),
            dial_gen: AtomicU64::new(0),
            last_dial_error: Mutex::new(None),
            counters: Counters::default(),
        }
    }

    /// The newest live connection, pruning closed ones.
    pub fn live(&self) -> Option<Connection> {
        let mut conns = self.conns.lock();
        conns.retain(|c| c.close_reason().is_none());
        conns.last().cloned()
    }

    /// Adds an established connection; it becomes the one sends use.
    pub fn add(&self, conn: Connection) {
        let mut conns = self.conns.lock();
        conns.retain(|c| c.close_reason().is_none() && c.stable_id() != conn.stable_id());
        conns.push(conn);
    }

    /// Removes a connection (closed, or failed a send).
    pub fn remove(&self, conn: &Connection) {
        self.conns
            .lock()
            .retain(|c| c.stable_id() != conn.stable_id());
    }

    /// The number of dials completed so far; read before queueing on [`Peer::dial`].
    pub fn dial_generation(&self) -> u64 {
        self.dial_gen.load(Ordering::Acquire)
    }

    /// Records the outcome of a dial (called with [`Peer::dial`] held).
    pub fn record_dial(&self, error: Option<String>) {
        *self.last_dial_error.lock() = error;
        self.dial_gen.fetch_add(1, Ordering::AcqRel);
    }

    /// If a dial completed after generation `seen` and failed, why (called with [`Peer::dial`]
    /// held, so no dial is in progress).
    pub fn failed_since(&self, seen: u64) -> Option<String> {
        if self.dial_gen.load(Ordering::Acquire) == seen {
            return None;
        }
        self.last_dial_error.lock().clone()
    }

    /// Claims the right to spawn the background dial; `None` if one is already running.
    pub fn claim_bg_dial(self: &Arc<Self>) -> Option<BgDialClaim> {
        self.bg_dial
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| BgDialClaim(self.clone()))
    }

    fn stats(&self) -> PeerStats {
        let live = {
            let mut conns = self.conns.lock();
            conns.retain(|c| c.close_reason().is_none());
            conns.clone()
        };
        let state = if !live.is_empty() {
            PeerState::Connected
        } else if self.dialing.load(Ordering::Relaxed) {
            PeerState::Connecting
        } else {
            PeerState::Disconnected
        };
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PeerStats {
            addr: self.addr,
            state,
            connections: live.len(),
            rtt: live.last().map(|c| c.rtt()),
            bytes_sent: get(&c.bytes_sent),
            bytes_received: get(&c.bytes_received),
            frames_sent: get(&c.frames_sent),
            frames_received: get(&c.frames_received),
            datagrams_sent: get(&c.datagrams_sent),
            datagrams_received: get(&c.datagrams_received),
            requests_sent: get(&c.requests_sent),
            requests_received: get(&c.requests_received),
            send_errors: get(&c.send_errors),
            dials: get(&c.dials),
            accepts: get(&c.accepts),
        }
    }
}

/// Releases the background-dial claim when the task ends (however it ends).
pub(crate) struct BgDialClaim(Arc<Peer>);

impl Drop for BgDialClaim {
    fn drop(&mut self) {
        self.0.bg_dial.store(false, Ordering::Release);
    }
}

/// Clears [`Peer::dialing`] when the dial ends, including when the dialer is cancelled.
pub(crate) struct DialingFlag<'a>(&'a Peer);

impl<'a> DialingFlag<'a> {
    pub fn set(peer: &'a Peer) -> Self {
        peer.dialing.store(true, Ordering::Relaxed);
        DialingFlag(peer)
    }
}

impl Drop for DialingFlag<'_> {
    fn drop(&mut self) {
        self.0.dialing.store(false, Ordering::Relaxed);
    }
}

/// Every peer this node has exchanged traffic with, by mesh address.
///
/// Entries are never removed while the mesh runs (their counters feed INFO); the table is bounded
/// by the number of distinct authenticated peer addresses plus addresses dialled by upper layers.
#[derive(Debug, Default)]
pub(crate) struct PeerTable {
    peers: Mutex<HashMap<SocketAddr, Arc<Peer>>>,
}

impl PeerTable {
    pub fn get_or_insert(&self, addr: SocketAddr) -> Arc<Peer> {
        self.peers
            .lock()
            .entry(addr)
            .or_insert_with(|| Arc::new(Peer::new(addr)))
            .clone()
    }

    pub fn get(&self, addr: SocketAddr) -> Option<Arc<Peer>> {
        self.peers.lock().get(&addr).cloned()
    }

    /// Drops every cached connection (at shutdown, after the endpoint was closed).
    pub fn clear_connections(&self) {
        for peer in self.peers.lock().values() {
            peer.conns.lock().clear();
        }
    }

    pub fn stats(&self) -> Vec<PeerStats> {
        let peers: Vec<Arc<Peer>> = self.peers.lock().values().cloned().collect();
        let mut out: Vec<PeerStats> = peers.iter().map(|p| p.stats()).collect();
        out.sort_by_key(|s| s.addr);
        out
    }
}

/// Connection state of one peer, as INFO shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// At least one established connection.
    Connected,
    /// No connection; a dial is in progress.
    Connecting,
    /// No connection and no dial in progress.
    Disconnected,
}

impl PeerState {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Connected => "connected",
            PeerState::Connecting => "connecting",
            PeerState::Disconnected => "disconnected",
        }
    }
}

/// Counters and state of one peer. Byte counts are payload bytes (frame length prefixes and
/// QUIC overhead excluded).
#[derive(Debug, Clone)]
pub struct PeerStats {
    pub addr: SocketAddr,
    pub state: PeerState,
    /// Live connections to the peer (normally 1; 2 after a simultaneous dial).
    pub connections: usize,
    /// Smoothed RTT of the connection sends use.
    pub rtt: Option<Duration>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub frames_sent: u64,
    pub frames_received: u64,
    pub datagrams_sent: u64,
    pub datagrams_received: u64,
    pub requests_sent: u64,
    pub requests_received: u64,
    pub send_errors: u64,
    /// Successful outgoing handshakes.
    pub dials: u64,
    /// Successful incoming handshakes.
    pub accepts: u64,
}

/// A snapshot of the mesh for INFO and metrics.
#[derive(Debug, Clone)]
pub struct MeshStats {
    pub local_addr: std::net::SocketAddr,
    /// Sorted by address.
    pub peers: Vec<PeerStats>,
    pub inbound_datagrams_dropped: u64,
    pub outbound_datagrams_dropped: u64,
    pub handshakes_failed: u64,
    pub malformed_streams: u64,
}

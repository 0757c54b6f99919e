//! The mesh: the one QUIC endpoint per node that carries every node-to-node byte.
//!
//! The mesh owns transport only. It knows nothing of commands, slots or CRDTs: it moves opaque
//! [`Bytes`] between nodes, each identified by its mesh [`SocketAddr`] (the address its single
//! endpoint is bound to, which is also the source address of every connection it dials).
//!
//! Three kinds of traffic, one per QUIC primitive:
//! - **datagrams** ([`Mesh::send_datagram`] → [`Inbound::Datagram`]): unreliable, unordered, must
//!   fit the connection's `max_datagram_size` (about 1.1 KiB on a plain path). Membership traffic.
//! - **frames** ([`Mesh::send_frame`] → [`Inbound::Frame`]): one whole message on a uni stream of
//!   its own, so a large frame never blocks a small one. Replication batches, gossip.
//! - **requests** ([`Mesh::request`] → [`Inbound::Request`]): one frame out and one frame back on a
//!   bi stream. Acks, digests, anti-entropy.
//!
//! Wire format of frames and requests (see [`frame`]): a `u32` big-endian length, then that many
//! payload bytes, then the end of the stream. Frames larger than [`MeshConfig::max_frame_len`]
//! (default [`DEFAULT_MAX_FRAME_LEN`], 64 MiB) are refused on both sides. **The first byte of each
//! payload is reserved for the upper layers' payload version**: the mesh never reads it, and
//! every upper layer must start its payloads with a version byte so formats can evolve.
//!
//! Security: mutual TLS 1.3 against one deployment CA (see [`certs`] and [`TlsMaterial`]). Every
//! node certificate carries the DNS name `"meridian"`, and every client dials with that server
//! name, so a valid certificate proves membership of the deployment, not which node a peer is.
//!
//! Submodules: [`tls`] builds the rustls/quinn configuration, [`certs`] the development PKI,
//! [`frame`] the framing, `peers` the per-peer connection cache and counters, `node` the
//! [`Mesh`] handle and its sending side, `serve` the accepting and receiving tasks.

pub mod certs;
pub mod frame;
mod node;
mod peers;
mod serve;
pub mod tls;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

pub use node::Mesh;
pub use peers::{MeshStats, PeerState, PeerStats};
pub use tls::TlsMaterial;

/// Largest frame (payload bytes, without the 4-byte length prefix) accepted by default.
pub const DEFAULT_MAX_FRAME_LEN: usize = 64 * 1024 * 1024;
/// Default capacity of the inbound channel handed out by [`Mesh::bind`].
pub const DEFAULT_INBOUND_CAPACITY: usize = 4096;
/// The TLS server name every node presents and every client verifies.
pub const SERVER_NAME: &str = "meridian";

/// Everything that can go wrong at the mesh boundary.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// Reading or writing certificate files, or binding the UDP socket.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// Certificates or keys that cannot be parsed, generated or used.
    #[error("tls: {0}")]
    Tls(String),
    /// A configuration value out of range (e.g. keep-alive not below the idle timeout).
    #[error("mesh config: {0}")]
    Config(String),
    /// The handshake with a peer failed (unreachable, refused, or certificate rejected).
    #[error("connect to {peer}: {reason}")]
    Connect { peer: SocketAddr, reason: String },
    /// An established connection failed while sending or receiving.
    #[error("connection to {peer} lost: {reason}")]
    ConnectionLost { peer: SocketAddr, reason: String },
    /// A frame larger than the configured maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge { len: usize, max: usize },
    /// A datagram larger than the connection can carry.
    #[error("datagram of {len} bytes exceeds the path maximum of {max}")]
    DatagramTooLarge { len: usize, max: usize },
    /// The peer does not accept datagrams.
    #[error("peer {0} does not accept datagrams")]
    DatagramsUnsupported(SocketAddr),
    /// The peer reset the stream, dropped the request, or sent a malformed response.
    #[error("request to {peer} failed: {reason}")]
    Request { peer: SocketAddr, reason: String },
    /// A request got no response within its timeout.
    #[error("request to {0} timed out")]
    Timeout(SocketAddr),
    /// The mesh has been shut down (or its last handle dropped).
    #[error("mesh is shut down")]
    ShutDown,
}

impl MeshError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        MeshError::Io {
            what: what.into(),
            source,
        }
    }
}

/// How to run a node's mesh endpoint.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// UDP address of the endpoint; port 0 picks a free one (see [`Mesh::local_addr`]).
    pub bind: SocketAddr,
    /// This node's certificate, key and the deployment CA.
    pub tls: TlsMaterial,
    /// A connection with no traffic for this long is dead (default 10 s). Both peers' values
    /// apply: the smaller wins.
    pub idle_timeout: Duration,
    /// Ping interval on idle connections (default 2 s). Invariant: below `idle_timeout`.
    pub keep_alive: Duration,
    /// Largest frame payload sent or accepted (default [`DEFAULT_MAX_FRAME_LEN`]).
    pub max_frame_len: usize,
    /// Capacity of the inbound channel (default [`DEFAULT_INBOUND_CAPACITY`]).
    pub inbound_capacity: usize,
}

impl MeshConfig {
    /// A configuration with the defaults for every tunable.
    pub fn new(bind: SocketAddr, tls: TlsMaterial) -> Self {
        MeshConfig {
            bind,
            tls,
            idle_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(2),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            inbound_capacity: DEFAULT_INBOUND_CAPACITY,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), MeshError> {
        if self.keep_alive.is_zero() || self.keep_alive >= self.idle_timeout {
            return Err(MeshError::Config(format!(
                "keep_alive ({:?}) must be non-zero and below idle_timeout ({:?})",
                self.keep_alive, self.idle_timeout
            )));
        }
        if self.max_frame_len > u32::MAX as usize {
            return Err(MeshError::Config(format!(
                "max_frame_len {} does not fit the u32 length prefix",
                self.max_frame_len
            )));
        }
        if self.inbound_capacity == 0 {
            return Err(MeshError::Config(
                "inbound_capacity must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Something a peer sent to this node, in the order the mesh received it.
#[derive(Debug)]
pub enum Inbound {
    /// An unreliable, unordered message (membership traffic). Must fit max_datagram_size.
    Datagram { from: SocketAddr, bytes: Bytes },
    /// One whole frame that arrived on its own uni stream (replication batches, gossip).
    Frame { from: SocketAddr, bytes: Bytes },
    /// A request on a bi stream; send the response through `reply` (dropping it resets the stream).
    Request {
        from: SocketAddr,
        bytes: Bytes,
        reply: tokio::sync::oneshot::Sender<Bytes>,
    },
}

impl Inbound {
    /// The mesh address of the peer that sent it.
    pub fn from(&self) -> SocketAddr {
        match self {
            Inbound::Datagram { from, .. }
            | Inbound::Frame { from, .. }
            | Inbound::Request { from, .. } => *from,
        }
    }
}

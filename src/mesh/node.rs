//! The [`Mesh`] handle: binding the endpoint, the sending side, stats and shutdown.
//!
//! Owns the node's single quinn endpoint (server and client at once, so every outgoing
//! connection leaves from the node's own mesh port) and the state every task shares.
//!
//! Invariants:
//! - every background task is spawned through [`Shared::spawn`]: named by a tracing span, tracked
//!   by one `TaskTracker`, and stopped by one `CancellationToken`; [`Mesh::shutdown`] cancels,
//!   closes the endpoint and waits for all of them;
//! - the endpoint and the inbound sender live in `Option`s that shutdown takes, so after
//!   [`Mesh::shutdown`] returns the UDP port is free and the inbound receiver sees the end of the
//!   channel, even while clones of the [`Mesh`] handle still exist;
//! - dropping the last [`Mesh`] handle starts the same shutdown without waiting for it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use quinn::{Connection, Endpoint};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use super::dial::{connect, dial_in_background, send_datagram_on};
use super::frame::{self, code};
use super::peers::{Counters, GlobalCounters, Peer, PeerTable};
use super::{serve, Inbound, MeshConfig, MeshError, MeshStats};

/// Requested kernel buffer for the UDP socket; the kernel caps it at `net.core.[rw]mem_max`.
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;
/// How long shutdown waits for closing connections to drain. Draining takes 3 × PTO: ~0.1 s on
/// a LAN, about a second on a WAN path, and about 3 s for a handshake abandoned before any RTT
/// sample (quinn's initial RTT estimate is 333 ms), e.g. a dial to a dead peer that just timed
/// out.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// State shared by the handle and every task.
pub(crate) struct Shared {
    pub local_addr: SocketAddr,
    endpoint: Mutex<Option<Endpoint>>,
    inbound: Mutex<Option<mpsc::Sender<Inbound>>>,
    pub peers: PeerTable,
    pub global: GlobalCounters,
    pub cancel: CancellationToken,
    tracker: TaskTracker,
    runtime: tokio::runtime::Handle,
    pub max_frame_len: usize,
    /// Upper bound of one handshake (quinn also bounds it by the idle timeout).
    pub connect_timeout: Duration,
}

impl Shared {
    pub fn endpoint(&self) -> Result<Endpoint, MeshError> {
        self.endpoint.lock().clone().ok_or(MeshError::ShutDown)
    }

    pub fn inbound(&self) -> Option<mpsc::Sender<Inbound>> {
        self.inbound.lock().clone()
    }

    /// Spawns a tracked task that runs inside `span`.
    pub fn spawn<F>(&self, span: tracing::Span, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn_on(fut.instrument(span), &self.runtime);
    }

    /// Cancels every task, closes the endpoint and drops what keeps the port and the inbound
    /// channel open. Synchronous and idempotent; returns the endpoint if this call took it.
    fn begin_shutdown(&self) -> Option<Endpoint> {
        // Close first: a task that sees the cancellation drops its connection handle, and a
        // connection whose last handle drops closes with code 0 instead of SHUTDOWN.
        let endpoint = self.endpoint.lock().take();
        if let Some(ep) = &endpoint {
            ep.close(code::SHUTDOWN, b"shutdown");
        }
        self.cancel.cancel();
        self.tracker.close();
        self.inbound.lock().take();
        self.peers.clear_connections();
        endpoint
    }
}

/// Starts shutdown when the last [`Mesh`] handle goes away (tasks hold `Shared`, never this).
struct CloseOnDrop(Arc<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.begin_shutdown();
    }
}

/// A node's mesh endpoint. Cheap to clone; all clones share one endpoint.
#[derive(Clone)]
pub struct Mesh {
    shared: Arc<Shared>,
    _close: Arc<CloseOnDrop>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("local_addr", &self.shared.local_addr)
            .finish()
    }
}

impl Mesh {
    /// Binds the endpoint and starts accepting peers. Must be called inside a tokio runtime;
    /// every task runs on that runtime. Everything peers send arrives on the returned receiver.
    pub async fn bind(cfg: MeshConfig) -> Result<(Mesh, mpsc::Receiver<Inbound>), MeshError> {
        cfg.validate()?;
        let server_config = cfg.tls.quic_server_config(&cfg)?;
        let client_config = cfg.tls.quic_client_config(&cfg)?;
        let socket = bind_socket(cfg.bind)?;
        let mut endpoint = Endpoint::new(
            cfg.tls.endpoint_config(),
            Some(server_config),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|e| MeshError::io(format!("starting the endpoint on {}", cfg.bind), e))?;
        endpoint.set_default_client_config(client_config);
        let local_addr = endpoint
            .local_addr()
            .map_err(|e| MeshError::io("reading the endpoint address", e))?;

        let (tx, rx) = mpsc::channel(cfg.inbound_capacity);
        let shared = Arc::new(Shared {
            local_addr,
            endpoint: Mutex::new(Some(endpoint.clone())),
            inbound: Mutex::new(Some(tx)),
            peers: PeerTable::default(),
            global: GlobalCounters::default(),
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            runtime: tokio::runtime::Handle::current(),
            max_frame_len: cfg.max_frame_len,
            connect_timeout: cfg.idle_timeout,
        });
        shared.spawn(
            tracing::info_span!("mesh.accept", local = %local_addr),
            serve::accept_loop(shared.clone(), endpoint),
        );
        info!(local = %local_addr, "mesh: endpoint bound");
        let mesh = Mesh {
            _close: Arc::new(CloseOnDrop(shared.clone())),
            shared,
        };
        Ok((mesh, rx))
    }

    /// The address peers dial to reach this node (the bound address, with port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Sends one unreliable datagram. Never blocks.
    ///
    /// With a live connection the datagram is queued in quinn at once (it may still be lost).
    /// Without one, a background dial starts and carries this datagram once connected; datagrams
    /// sent while that dial runs are dropped (counted in `outbound_datagrams_dropped`), since
    /// membership traffic is periodic and tolerates loss. Errors: too large for the connection's
    /// path, datagrams unsupported, or the mesh shut down.
    pub fn send_datagram(&self, to: SocketAddr, bytes: Bytes) -> Result<(), MeshError> {
        if self.shared.cancel.is_cancelled() {
            return Err(MeshError::ShutDown);
        }
        let to = canonical(to);
        let peer = self.shared.peers.get_or_insert(to);
        let Some(conn) = peer.live() else {
            dial_in_background(&self.shared, &peer, bytes);
            return Ok(());
        };
        send_datagram_on(&peer, &conn, bytes.clone()).or_else(|e| match e {
            MeshError::ConnectionLost { .. } => {
                peer.remove(&conn);
                dial_in_background(&self.shared, &peer, bytes);
                Ok(())
            }
            other => Err(other),
        })
    }

    /// Sends one frame on a uni stream of its own. Returns once quinn has taken every byte (not
    /// when the peer has them). Connects first if needed; if the connection turns out to be dead,
    /// reconnects once, then gives up with an error.
    pub async fn send_frame(&self, to: SocketAddr, bytes: Bytes) -> Result<(), MeshError> {
        self.check_len(bytes.len())?;
        let peer = self.shared.peers.get_or_insert(canonical(to));
        let len = bytes.len();
        let mut retried = false;
        loop {
            let conn = connect(&self.shared, &peer).await?;
            let sent = async {
                let mut send = conn.open_uni().await?;
                frame::write_frame(&mut send, bytes.clone()).await
            };
            match sent.await {
                Ok(()) => {
                    Counters::add(&peer.counters.frames_sent, 1);
                    Counters::add(&peer.counters.bytes_sent, len);
                    return Ok(());
                }
                Err(e) => {
                    Counters::add(&peer.counters.send_errors, 1);
                    if !self.retry_after(&peer, &conn, &e, &mut retried) {
                        return Err(write_error(peer.addr, e));
                    }
                }
            }
        }
    }

    /// Sends a request on a bi stream and waits for the response, at most `timeout` in all
    /// (connecting included). A lost connection before the request is written is retried once on
    /// a new connection; after that there is no retry, since the peer may have acted on it.
    pub async fn request(
        &self,
        to: SocketAddr,
        bytes: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, MeshError> {
        self.check_len(bytes.len())?;
        let to = canonical(to);
        match tokio::time::timeout(timeout, self.request_inner(to, bytes)).await {
            Ok(result) => result,
            Err(_) => Err(MeshError::Timeout(to)),
        }
    }

    async fn request_inner(&self, to: SocketAddr, bytes: Bytes) -> Result<Bytes, MeshError> {
        let peer = self.shared.peers.get_or_insert(to);
        let len = bytes.len();
        let mut retried = false;
        let mut recv = loop {
            let conn = connect(&self.shared, &peer).await?;
            let sent = async {
                let (mut send, recv) = conn.open_bi().await?;
                frame::write_frame(&mut send, bytes.clone()).await?;
                Ok::<_, quinn::WriteError>(recv)
            };
            match sent.await {
                Ok(recv) => break recv,
                Err(e) => {
                    Counters::add(&peer.counters.send_errors, 1);
                    if !self.retry_after(&peer, &conn, &e, &mut retried) {
                        return Err(write_error(to, e));
                    }
                }
            }
        };
        Counters::add(&peer.counters.requests_sent, 1);
        Counters::add(&peer.counters.bytes_sent, len);
        let response = frame::read_frame(&mut recv, self.shared.max_frame_len)
            .await
            .map_err(|e| MeshError::Request {
                peer: to,
                reason: e.to_string(),
            })?;
        Counters::add(&peer.counters.bytes_received, response.len());
        Ok(response)
    }

    /// After a failed write: drops a dead connection and says whether to try once more.
    fn retry_after(
        &self,
        peer: &Peer,
        conn: &Connection,
        e: &quinn::WriteError,
        retried: &mut bool,
    ) -> bool {
        if !matches!(e, quinn::WriteError::ConnectionLost(_)) {
            return false; // the stream failed (e.g. stopped by the peer), not the connection
        }
        peer.remove(conn);
        if *retried || self.shared.cancel.is_cancelled() {
            return false;
        }
        debug!(peer = %peer.addr, error = %e, "mesh: connection lost while sending, reconnecting once");
        *retried = true;
        true
    }

    fn check_len(&self, len: usize) -> Result<(), MeshError> {
        if len > self.shared.max_frame_len {
            return Err(MeshError::FrameTooLarge {
                len,
                max: self.shared.max_frame_len,
            });
        }
        Ok(())
    }

    /// Whether a live connection to `to` exists right now.
    pub fn is_connected(&self, to: SocketAddr) -> bool {
        self.shared
            .peers
            .get(canonical(to))
            .is_some_and(|p| p.live().is_some())
    }

    /// Per-peer counters and connection state, for INFO and metrics.
    pub fn stats(&self) -> MeshStats {
        let g = &self.shared.global;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        MeshStats {
            local_addr: self.shared.local_addr,
            peers: self.shared.peers.stats(),
            inbound_datagrams_dropped: get(&g.inbound_datagrams_dropped),
            outbound_datagrams_dropped: get(&g.outbound_datagrams_dropped),
            handshakes_failed: get(&g.handshakes_failed),
            malformed_streams: get(&g.malformed_streams),
        }
    }

    /// Closes every connection and the endpoint, stops every task and waits for them. When it
    /// returns, the UDP port is released (a new mesh may bind it) and the inbound receiver ends.
    /// Idempotent; afterwards every send fails with [`MeshError::ShutDown`].
    pub async fn shutdown(&self) {
        let endpoint = self.shared.begin_shutdown();
        self.shared.tracker.wait().await;
        let Some(endpoint) = endpoint else { return };
        // Let the closing connections drain (3 × PTO) so the CONNECTION_CLOSE frames reach the
        // peers, which then reconnect at once instead of waiting out their idle timeout. quinn's
        // driver owns the socket until the last connection has drained, so this wait is also
        // what frees the port.
        if tokio::time::timeout(DRAIN_TIMEOUT, endpoint.wait_idle())
            .await
            .is_err()
        {
            debug!("mesh: connections still draining at the shutdown deadline");
        }
        let local = self.shared.local_addr;
        drop(endpoint);
        wait_port_released(local).await;
        info!(local = %self.shared.local_addr, "mesh: shut down");
    }
}

fn write_error(peer: SocketAddr, e: quinn::WriteError) -> MeshError {
    match e {
        quinn::WriteError::Stopped(code) => MeshError::StreamRefused {
            peer,
            code: code.into_inner(),
        },
        other => MeshError::ConnectionLost {
            peer,
            reason: other.to_string(),
        },
    }
}

/// Peers are keyed by address; an IPv4 peer seen through a dual-stack socket is keyed by its
/// IPv4 form, so dialled and accepted connections to one node land on one key.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The UDP socket, with large kernel buffers (one socket carries every peer's traffic).
fn bind_socket(addr: SocketAddr) -> Result<std::net::UdpSocket, MeshError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let err = |e| MeshError::io(format!("binding the mesh socket on {addr}"), e);
    let socket =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    // Best effort: the kernel may cap these; quinn works with whatever it gets.
    if let Err(e) = socket.set_recv_buffer_size(SOCKET_BUFFER) {
        debug!(error = %e, "mesh: could not raise SO_RCVBUF");
    }
    if let Err(e) = socket.set_send_buffer_size(SOCKET_BUFFER) {
        debug!(error = %e, "mesh: could not raise SO_SNDBUF");
    }
    socket.bind(&addr.into()).map_err(err)?;
    Ok(socket.into())
}

/// quinn releases the UDP socket from its own driver task once the last endpoint handle and
/// connection are gone; wait (briefly) until the port can be bound again, so a caller may rebind
/// the same address as soon as [`Mesh::shutdown`] returns.
async fn wait_port_released(addr: SocketAddr) {
    for _ in 0..200 {
        if std::net::UdpSocket::bind(addr).is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    warn!(local = %addr, "mesh: the UDP port was still in use 2 s after shutdown");
}

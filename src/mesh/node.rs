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
use quinn::{Connection, ConnectionError, Endpoint};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use super::frame::{self, code};
use super::peers::{Counters, DialingFlag, GlobalCounters, Peer, PeerTable};
use super::{serve, Inbound, MeshConfig, MeshError, MeshStats, SERVER_NAME};

/// Requested kernel buffer for the UDP socket; the kernel caps it at `net.core.[rw]mem_max`.
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;
/// How long shutdown waits for closing connections to reach their peers.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

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
    connect_timeout: Duration,
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
        self.cancel.cancel();
        self.tracker.close();
        let endpoint = self.endpoint.lock().take();
        if let Some(ep) = &endpoint {
            ep.close(code::SHUTDOWN, b"shutdown");
        }
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
        // Give the CONNECTION_CLOSE frames a moment to reach the peers, so they reconnect at once
        // instead of waiting out their idle timeout.
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, endpoint.wait_idle()).await;
        drop(endpoint);
        wait_port_released(self.shared.local_addr).await;
        info!(local = %self.shared.local_addr, "mesh: shut down");
    }
}

/// Returns a live connection to `peer`, dialling if there is none.
///
/// Invariant: one dial per peer at a time. Callers queue on the peer's dial lock; whoever gets it
/// first dials, the others find its connection (or its error) when they get the lock in turn.
pub(crate) async fn connect(
    shared: &Arc<Shared>,
    peer: &Arc<Peer>,
) -> Result<Connection, MeshError> {
    if let Some(conn) = peer.live() {
        return Ok(conn);
    }
    let seen = peer.dial_generation();
    let _lock = tokio::select! {
        _ = shared.cancel.cancelled() => return Err(MeshError::ShutDown),
        lock = peer.dial.lock() => lock,
    };
    if let Some(conn) = peer.live() {
        return Ok(conn); // a dial we waited for, or an accepted connection, got there first
    }
    if let Some(reason) = peer.failed_since(seen) {
        return Err(MeshError::Connect {
            peer: peer.addr,
            reason,
        });
    }
    let endpoint = shared.endpoint()?;
    let _dialing = DialingFlag::set(peer);
    let outcome = async {
        let connecting = endpoint
            .connect(peer.addr, SERVER_NAME)
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(shared.connect_timeout, connecting).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(describe_handshake_error(&e)),
            Err(_) => Err("handshake timed out".to_string()),
        }
    };
    let outcome = tokio::select! {
        _ = shared.cancel.cancelled() => return Err(MeshError::ShutDown),
        outcome = outcome => outcome,
    };
    match outcome {
        Ok(conn) => {
            peer.record_dial(None);
            Counters::add(&peer.counters.dials, 1);
            info!(peer = %peer.addr, "mesh: connected to peer");
            serve::adopt(shared, peer, conn.clone(), "dialled");
            Ok(conn)
        }
        Err(reason) => {
            peer.record_dial(Some(reason.clone()));
            warn!(peer = %peer.addr, %reason, "mesh: could not connect to peer");
            Err(MeshError::Connect {
                peer: peer.addr,
                reason,
            })
        }
    }
}

/// Text for a failed handshake (a refused certificate shows up as a TLS alert here).
pub(crate) fn describe_handshake_error(e: &ConnectionError) -> String {
    format!("handshake failed: {e}")
}

/// Spawns the background dial that carries `first` once connected, unless one already runs.
fn dial_in_background(shared: &Arc<Shared>, peer: &Arc<Peer>, first: Bytes) {
    let Some(claim) = peer.claim_bg_dial() else {
        Counters::add(&shared.global.outbound_datagrams_dropped, 1);
        return;
    };
    let task_shared = shared.clone();
    let task_peer = peer.clone();
    shared.spawn(
        tracing::debug_span!("mesh.dial", peer = %peer.addr),
        async move {
            let _claim = claim;
            let sent = match connect(&task_shared, &task_peer).await {
                Ok(conn) => send_datagram_on(&task_peer, &conn, first),
                Err(e) => Err(e),
            };
            if let Err(e) = sent {
                Counters::add(&task_shared.global.outbound_datagrams_dropped, 1);
                debug!(error = %e, "mesh: datagram dropped");
            }
        },
    );
}

fn send_datagram_on(peer: &Peer, conn: &Connection, bytes: Bytes) -> Result<(), MeshError> {
    let len = bytes.len();
    match conn.max_datagram_size() {
        None => return Err(MeshError::DatagramsUnsupported(peer.addr)),
        Some(max) if len > max => return Err(MeshError::DatagramTooLarge { len, max }),
        Some(_) => {}
    }
    match conn.send_datagram(bytes) {
        Ok(()) => {
            Counters::add(&peer.counters.datagrams_sent, 1);
            Counters::add(&peer.counters.bytes_sent, len);
            Ok(())
        }
        Err(quinn::SendDatagramError::TooLarge) => Err(MeshError::DatagramTooLarge {
            len,
            max: conn.max_datagram_size().unwrap_or(0),
        }),
        Err(quinn::SendDatagramError::ConnectionLost(e)) => Err(MeshError::ConnectionLost {
            peer: peer.addr,
            reason: e.to_string(),
        }),
        Err(_) => Err(MeshError::DatagramsUnsupported(peer.addr)),
    }
}

fn write_error(peer: SocketAddr, e: quinn::WriteError) -> MeshError {
    match e {
        quinn::WriteError::Stopped(code) => MeshError::Request {
            peer,
            reason: format!("peer refused the stream (code {code})"),
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

//! The receiving side: accepting peers and turning their streams and datagrams into [`Inbound`].
//!
//! Task tree (all spawned through `Shared::spawn`, all stopped by the mesh's cancel token):
//! - `mesh.accept`: one per node; hands each incoming handshake to its own task;
//! - `mesh.handshake`: one per incoming connection attempt; a failed handshake (no, invalid or
//!   foreign certificate) is logged at WARN with the remote address and counted, nothing else;
//! - `mesh.conn`: one per established connection, dialled or accepted; accepts its streams and
//!   datagrams until the connection closes, then removes it from the peer table;
//! - `mesh.frame` / `mesh.request`: one per stream, so a slow or large stream never delays
//!   another.
//!
//! Back-pressure invariant: frames and requests *await* room in the bounded inbound channel, so
//! a slow consumer slows the stream readers and, through QUIC flow control, the senders.
//! Datagrams are never awaited: when the channel is full they are dropped and counted.

use std::sync::Arc;

use bytes::Bytes;
use quinn::{Connection, Endpoint, Incoming, RecvStream, SendStream};
use tokio::sync::{mpsc::error::TrySendError, oneshot};
use tracing::{debug, info, warn};

use super::frame::{self, code, FrameError};
use super::node::{canonical, describe_handshake_error, Shared};
use super::peers::{Counters, Peer};
use super::Inbound;

/// Accepts connection attempts until shutdown.
pub(crate) async fn accept_loop(shared: Arc<Shared>, endpoint: Endpoint) {
    loop {
        let incoming = tokio::select! {
            _ = shared.cancel.cancelled() => break,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break, // endpoint closed
            },
        };
        let remote = canonical(incoming.remote_address());
        shared.spawn(
            tracing::debug_span!("mesh.handshake", peer = %remote),
            handshake(shared.clone(), incoming),
        );
    }
    debug!("mesh: accept loop stopped");
}

/// Completes (or refuses) one incoming handshake; the TLS layer verifies the client certificate.
async fn handshake(shared: Arc<Shared>, incoming: Incoming) {
    let remote = canonical(incoming.remote_address());
    let connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(e) => {
            Counters::add(&shared.global.handshakes_failed, 1);
            warn!(peer = %remote, error = %e, "mesh: refused inbound connection");
            return;
        }
    };
    // quinn bounds the handshake by the idle timeout, so this cannot hang.
    let result = tokio::select! {
        _ = shared.cancel.cancelled() => return,
        result = connecting => result,
    };
    match result {
        Ok(conn) => {
            let peer = shared.peers.get_or_insert(remote);
            Counters::add(&peer.counters.accepts, 1);
            info!(peer = %remote, "mesh: accepted peer");
            adopt(&shared, &peer, conn, "accepted");
        }
        Err(e) => {
            Counters::add(&shared.global.handshakes_failed, 1);
            warn!(peer = %remote, reason = %describe_handshake_error(&e), "mesh: refused inbound connection");
        }
    }
}

/// Makes an established connection the one sends to `peer` use, and starts serving it.
pub(crate) fn adopt(shared: &Arc<Shared>, peer: &Arc<Peer>, conn: Connection, side: &'static str) {
    if shared.cancel.is_cancelled() {
        conn.close(code::SHUTDOWN, b"shutdown");
        return;
    }
    peer.add(conn.clone());
    shared.spawn(
        tracing::info_span!("mesh.conn", peer = %peer.addr, side, id = conn.stable_id()),
        serve_connection(shared.clone(), peer.clone(), conn),
    );
}

/// Serves one connection's incoming streams and datagrams until it closes or the mesh stops.
async fn serve_connection(shared: Arc<Shared>, peer: Arc<Peer>, conn: Connection) {
    // Each accept future only takes its item when it completes, so losing a select race drops
    // nothing.
    let reason = loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => break "mesh shut down".to_string(),
            uni = conn.accept_uni() => match uni {
                Ok(recv) => shared.spawn(
                    tracing::debug_span!("mesh.frame"),
                    read_uni(shared.clone(), peer.clone(), recv),
                ),
                Err(e) => break e.to_string(),
            },
            bi = conn.accept_bi() => match bi {
                Ok((send, recv)) => shared.spawn(
                    tracing::debug_span!("mesh.request"),
                    serve_request(shared.clone(), peer.clone(), send, recv),
                ),
                Err(e) => break e.to_string(),
            },
            datagram = conn.read_datagram() => match datagram {
                Ok(bytes) => deliver_datagram(&shared, &peer, bytes),
                Err(e) => break e.to_string(),
            },
        }
    };
    peer.remove(&conn);
    info!(%reason, "mesh: connection closed");
}

fn deliver_datagram(shared: &Shared, peer: &Peer, bytes: Bytes) {
    Counters::add(&peer.counters.datagrams_received, 1);
    Counters::add(&peer.counters.bytes_received, bytes.len());
    let Some(tx) = shared.inbound() else { return };
    match tx.try_send(Inbound::Datagram {
        from: peer.addr,
        bytes,
    }) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            Counters::add(&shared.global.inbound_datagrams_dropped, 1);
        }
        Err(TrySendError::Closed(_)) => debug!("mesh: inbound receiver gone, datagram dropped"),
    }
}

/// Hands a frame or request to the consumer, waiting for room; false if it cannot be delivered.
async fn deliver(shared: &Shared, msg: Inbound) -> bool {
    let Some(tx) = shared.inbound() else {
        return false;
    };
    tokio::select! {
        _ = shared.cancel.cancelled() => false,
        sent = tx.send(msg) => sent.is_ok(),
    }
}

/// Logs and counts a stream whose framing was refused, and stops it.
fn malformed(shared: &Shared, peer: &Peer, recv: &mut RecvStream, what: &str, e: &FrameError) {
    match e {
        FrameError::Stream(_) => {
            debug!(peer = %peer.addr, error = %e, "mesh: {what} stream failed")
        }
        _ => {
            Counters::add(&shared.global.malformed_streams, 1);
            warn!(peer = %peer.addr, error = %e, "mesh: dropped malformed {what}");
            frame::refuse(recv, code::MALFORMED);
        }
    }
}

/// Reads one frame from a uni stream and delivers it.
async fn read_uni(shared: Arc<Shared>, peer: Arc<Peer>, mut recv: RecvStream) {
    let result = tokio::select! {
        _ = shared.cancel.cancelled() => return,
        result = frame::read_frame(&mut recv, shared.max_frame_len) => result,
    };
    match result {
        Ok(bytes) => {
            Counters::add(&peer.counters.frames_received, 1);
            Counters::add(&peer.counters.bytes_received, bytes.len());
            deliver(
                &shared,
                Inbound::Frame {
                    from: peer.addr,
                    bytes,
                },
            )
            .await;
        }
        Err(e) => malformed(&shared, &peer, &mut recv, "frame", &e),
    }
}

/// Reads one request, hands it to the consumer and writes its reply.
///
/// The stream is reset with [`code::NO_REPLY`] if the consumer drops the reply sender, and
/// abandoned if the requester stops waiting (its timeout) or the mesh shuts down.
async fn serve_request(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    let result = tokio::select! {
        _ = shared.cancel.cancelled() => return,
        result = frame::read_frame(&mut recv, shared.max_frame_len) => result,
    };
    let bytes = match result {
        Ok(bytes) => bytes,
        Err(e) => {
            malformed(&shared, &peer, &mut recv, "request", &e);
            let _ = send.reset(code::MALFORMED);
            return;
        }
    };
    Counters::add(&peer.counters.requests_received, 1);
    Counters::add(&peer.counters.bytes_received, bytes.len());

    let (reply, response) = oneshot::channel();
    if !deliver(
        &shared,
        Inbound::Request {
            from: peer.addr,
            bytes,
            reply,
        },
    )
    .await
    {
        let _ = send.reset(code::SHUTDOWN);
        return;
    }
    let stopped = send.stopped();
    let response = tokio::select! {
        _ = shared.cancel.cancelled() => {
            let _ = send.reset(code::SHUTDOWN);
            return;
        }
        _ = stopped => {
            debug!(peer = %peer.addr, "mesh: requester stopped waiting");
            return;
        }
        response = response => response,
    };
    let Ok(response) = response else {
        let _ = send.reset(code::NO_REPLY);
        return;
    };
    if response.len() > shared.max_frame_len {
        warn!(peer = %peer.addr, len = response.len(), "mesh: response exceeds the frame maximum, request reset");
        let _ = send.reset(code::FRAME_TOO_LARGE);
        return;
    }
    let len = response.len();
    match frame::write_frame(&mut send, response).await {
        Ok(()) => Counters::add(&peer.counters.bytes_sent, len),
        Err(e) => debug!(peer = %peer.addr, error = %e, "mesh: could not write response"),
    }
}

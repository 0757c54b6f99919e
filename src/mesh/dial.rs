//! Dialling peers: the connection a send needs, made at most once at a time per peer.
//!
//! Owns the outgoing side of connection set-up: the shared dial (concurrent senders to a peer
//! that is not connected wait for one handshake and share its connection or its error), the
//! wait for the server's handshake confirmation (so a refused certificate fails the dial rather
//! than a later send), and the fire-and-forget background dial that datagram sends use, since
//! they never block.
//!
//! Invariant: a connection enters the peer table (and gets its serving task) only through
//! [`serve::adopt`], after its handshake was confirmed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::{Connection, ConnectionError};
use tracing::{debug, info, warn};

use super::node::Shared;
use super::peers::{Counters, DialingFlag, Peer};
use super::{serve, MeshError, SERVER_NAME};

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
        let handshake = async {
            let conn = connecting.await.map_err(|e| describe_handshake_error(&e))?;
            confirmed(&conn).await?;
            Ok(conn)
        };
        match tokio::time::timeout(shared.connect_timeout, handshake).await {
            Ok(result) => result,
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

/// Waits until the server has confirmed the handshake.
///
/// Invariant: a dialled connection is only used once the peer has accepted *our* certificate.
/// In TLS 1.3 the client completes its side of the handshake before the server has checked the
/// client certificate, so quinn hands out the connection one flight early; the server sends
/// HANDSHAKE_DONE only after accepting it. Without this wait, a node whose certificate the peer
/// refuses would see every send "succeed" on a connection that is about to be torn down.
async fn confirmed(conn: &Connection) -> Result<(), String> {
    let done = async {
        // quinn has no event for it; the frame counter is the one observable. The wait is about
        // one round trip, polled at the timer's 1 ms resolution, once per dial.
        while conn.stats().frame_rx.handshake_done == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::select! {
        reason = conn.closed() => Err(describe_handshake_error(&reason)),
        _ = done => Ok(()),
    }
}

/// Text for a failed handshake (a refused certificate shows up as a TLS alert here).
pub(crate) fn describe_handshake_error(e: &ConnectionError) -> String {
    format!("handshake failed: {e}")
}

/// Spawns the background dial that carries `first` once connected, unless one already runs.
pub(crate) fn dial_in_background(shared: &Arc<Shared>, peer: &Arc<Peer>, first: Bytes) {
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

pub(crate) fn send_datagram_on(
    peer: &Peer,
    conn: &Connection,
    bytes: Bytes,
) -> Result<(), MeshError> {
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

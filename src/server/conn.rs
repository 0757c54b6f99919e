//! One client connection: read a batch, run every complete command in it, write all replies
//! with one write.
//!
//! Limits enforced here (DESIGN.md standards, Redis semantics):
//! - malformed RESP → `-ERR Protocol error: ...`, then the connection closes;
//! - `client-query-buffer-limit`: unparsed input beyond it closes the connection;
//! - `client-output-buffer-limit` (normal class, hard): replies beyond it close the connection;
//! - `timeout`: an idle client is closed; `maxclients`: the excess client gets
//!   `-ERR max number of clients reached` and is closed.

use crate::cmd::{dispatch, lookup, ClientState, Ctx, Db, Node};
use crate::resp::{parse_command, Args, Limits, Out, Protocol};
use crate::store::PREFETCH_GROUP;
use bytes::{Buf, BytesMut};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Why a connection ended (read through `Debug` in the close log).
#[derive(Debug)]
#[allow(dead_code)]
enum Close {
    Eof,
    Quit,
    Killed,
    Shutdown,
    Idle,
    Protocol,
    QueryBuffer,
    OutputBuffer,
    Io(std::io::Error),
}

pub async fn serve(
    node: Arc<Node>,
    mut stream: TcpStream,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let laddr = stream.local_addr().unwrap_or(peer);
    let settings = node.config.settings();
    let Some(handle) = node.clients.register(peer, laddr, settings.maxclients) else {
        node.stats.rejected_connections.fetch_add(1, Relaxed);
        let _ = stream
            .write_all(b"-ERR max number of clients reached\r\n")
            .await;
        return;
    };
    let mut client = ClientState::new(handle.clone(), settings.requirepass.is_none());
    node.tracking.attach(client.track.mailbox.clone());
    let why = run(&node, &mut stream, &mut client, shutdown).await;
    tracing::debug!(client = handle.id, %peer, reason = ?why, "connection closed");
    // Forget this client's WATCHes and registration.
    for (key, _, _) in client.watched.drain(..) {
        node.keyspace.unwatch(&key);
    }
    node.leases.disconnected(handle.id);
    node.tracking.detach(handle.id);
    node.clients.unregister(handle.id);
}

async fn run(
    node: &Node,
    stream: &mut TcpStream,
    client: &mut ClientState,
    mut shutdown: watch::Receiver<bool>,
) -> Close {
    let mut inbuf = BytesMut::with_capacity(16 * 1024);
    let mut out = Out::new(Protocol::Resp2);
    let mut spans: Vec<(u32, u32)> = Vec::with_capacity(16);
    let mut ahead_spans: Vec<(u32, u32)> = Vec::with_capacity(16);
    let handle = client.handle.clone();
    // Invalidation pushes for this connection (client-side caching): drained after each
    // command's reply, and written at once when they arrive while the client is idle.
    let mailbox = client.track.mailbox.clone();
    // Settings are cached and refreshed only when CONFIG SET changed them.
    let mut s = node.config.settings();
    let mut version = node.config.version();
    // Futures that live across iterations are created once, not per read.
    let stop = async {
        tokio::select! {
            _ = handle.kill_signal.notified() => Close::Killed,
            _ = shutdown.changed() => Close::Shutdown,
        }
    };
    tokio::pin!(stop);
    let idle = tokio::time::sleep(Duration::from_secs(s.timeout_secs.max(1)));
    tokio::pin!(idle);
    loop {
        if node.config.version() != version {
            version = node.config.version();
            s = node.config.settings();
        }
        if s.timeout_secs > 0 {
            idle.as_mut()
                .reset(tokio::time::Instant::now() + Duration::from_secs(s.timeout_secs));
        }
        if inbuf.capacity() - inbuf.len() < 4096 {
            inbuf.reserve(16 * 1024);
        }
        let n = tokio::select! {
            biased;
            r = stream.read_buf(&mut inbuf) => match r {
                Ok(0) => return Close::Eof,
                Ok(n) => n,
                Err(e) => return Close::Io(e),
            },
            why = &mut stop => return why,
            _ = mailbox.notify.notified() => 0,
            _ = &mut idle, if s.timeout_secs > 0 => return Close::Idle,
        };
        if n == 0 {
            // Woken for pushes only: nothing new to parse.
            if mailbox.drain_into(&mut out.buf) {
                if let Err(e) = write_out(node, stream, &mut out.buf).await {
                    return Close::Io(e);
                }
            }
            continue;
        }
        node.stats.net_input_bytes.fetch_add(n as u64, Relaxed);
        if handle.killed.load(Relaxed) {
            return Close::Killed;
        }
        // Run every complete command in the buffer.
        let limits = Limits {
            max_bulk_len: s.proto_max_bulk_len,
            max_multibulk_len: i32::MAX as usize,
            authenticated: client.authenticated,
        };
        let mut pos = 0;
        let mut failed = None;
        // The read's writes reach replication together (`store::held`); never across an await.
        let mut held = Some(node.keyspace.hold_publish());
        // Commands before this position had their keys warmed in the caches.
        let mut warmed = 0;
        while pos < inbuf.len() {
            let parsed = match parse_command(&inbuf[pos..], &limits, &mut spans) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    out.error(&format!("ERR {e}"));
                    failed = Some(Close::Protocol);
                    break;
                }
            };
            // Worth it when more commands follow, or for one command that may name several
            // keys (more than `CMD key value`).
            let more = pos + parsed.consumed < inbuf.len() || spans.len() > 3;
            if pos >= warmed && more && limits.authenticated {
                warmed = warm_keys(node, &inbuf, pos, &limits, &mut ahead_spans);
            }
            {
                let mut ctx = Ctx {
                    node,
                    client: &mut *client,
                    out: &mut out,
                    db: Db { node, exec: None },
                };
                match &parsed.owned {
                    Some(owned) => dispatch(&mut ctx, owned.args()),
                    None => dispatch(&mut ctx, Args::new(&inbuf[pos..], &spans)),
                }
            }
            pos += parsed.consumed;
            if let Some(wait) = client.blocked.take() {
                node.tracking.end_batch(handle.id);
                drop(held.take());
                let reply = wait.await;
                reply(&mut out);
                held = Some(node.keyspace.hold_publish());
            }
            mailbox.drain_into(&mut out.buf);
            if client.close_after_reply {
                failed = Some(Close::Quit);
                break;
            }
            if s.output_hard_limit > 0 && out.len() > s.output_hard_limit {
                tracing::warn!(
                    client = handle.id,
                    bytes = out.len(),
                    "client output buffer over the hard limit: closing"
                );
                return Close::OutputBuffer;
            }
        }
        drop(held);
        inbuf.advance(pos);
        // BCAST announcements of this batch's writes, grouped (our own come after our replies).
        node.tracking.end_batch(handle.id);
        mailbox.drain_into(&mut out.buf);
        // `appendfsync always`: the batch's writes reach the disk before any reply says so.
        if let Some(p) = &node.persist {
            p.sync_before_reply().await;
        }
        *handle.last_cmd.lock() = client.last_cmd;
        handle
            .last_active_ms
            .store(handle.created.elapsed().as_millis() as u64, Relaxed);
        handle.in_multi.store(client.multi.is_some(), Relaxed);
        handle.resp.store(if out.resp3() { 3 } else { 2 }, Relaxed);
        if !out.is_empty() {
            if let Err(e) = write_out(node, stream, &mut out.buf).await {
                return Close::Io(e);
            }
            // Give back the memory of a huge reply.
            if out.buf.capacity() > 1024 * 1024 {
                out.buf = BytesMut::with_capacity(16 * 1024);
            }
        }
        if let Some(why) = failed {
            return why;
        }
        if inbuf.len() > s.client_query_buffer_limit {
            tracing::warn!(
                client = handle.id,
                bytes = inbuf.len(),
                "client query buffer over the limit: closing"
            );
            return Close::QueryBuffer;
        }
    }
}

/// A pipeline: parses commands of `buf` from `pos` until they name `PREFETCH_GROUP` keys and
/// warms the caches for those keys together (`store::prefetch`) before the commands run one at
/// a time; returns where the last command parsed ends. Why: a pipelined writer spent a quarter
/// of its cycles waiting on its keys' memory, one key after the other. Only a hint: a command
/// that does not parse here is left for the loop to report.
fn warm_keys(
    node: &Node,
    buf: &[u8],
    mut pos: usize,
    limits: &Limits,
    spans: &mut Vec<(u32, u32)>,
) -> usize {
    let mut keys: smallvec::SmallVec<[&[u8]; PREFETCH_GROUP]> = smallvec::SmallVec::new();
    // Bounded by commands too: a run of keyless commands is not parsed to its end.
    for _ in 0..PREFETCH_GROUP {
        let Ok(Some(parsed)) = parse_command(&buf[pos..], limits, spans) else {
            break;
        };
        let args = Args::new(&buf[pos..], spans);
        let spec = (parsed.owned.is_none() && !args.is_empty())
            .then(|| lookup(args.get(0)))
            .flatten();
        let room = PREFETCH_GROUP - keys.len();
        for i in spec
            .into_iter()
            .flat_map(|s| s.key_positions_iter(args.len()))
            .take(room)
        {
            let (start, end) = spans[i];
            keys.push(&buf[pos + start as usize..pos + end as usize]);
        }
        pos += parsed.consumed;
        if keys.len() >= PREFETCH_GROUP {
            break;
        }
    }
    node.keyspace.prefetch(keys);
    pos
}

/// Writes everything buffered for the client in one call, counts it, and empties the buffer.
async fn write_out(
    node: &Node,
    stream: &mut TcpStream,
    buf: &mut bytes::BytesMut,
) -> std::io::Result<()> {
    node.stats
        .net_output_bytes
        .fetch_add(buf.len() as u64, Relaxed);
    stream.write_all(buf).await?;
    buf.clear();
    Ok(())
}

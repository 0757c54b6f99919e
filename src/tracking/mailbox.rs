//! One connection's inbox of out-of-band frames (invalidation pushes, Pub/Sub messages) and the
//! wire forms of those frames.
//!
//! The tracker appends frames from whatever thread published the change; the connection task
//! drains them after each command's reply and whenever it is woken while idle (it selects on
//! [`Mailbox::notify`]), so a client waiting on a read still gets its invalidation at once.
//!
//! The inbox is bounded: past [`PENDING_CAP`] bytes not yet handed to the socket, everything
//! pending is replaced by one "invalidate everything" frame (the null payload FLUSHALL sends),
//! and further frames are dropped until the connection drains it. A client that cannot keep
//! up thus flushes its whole cache instead of making the server buffer without limit — still
//! correct, since a flushed cache can serve nothing stale.

use bytes::BytesMut;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU8, Ordering::Relaxed};
use tokio::sync::Notify;

/// [`Mailbox::list_flags`] bits.
pub const TRACKING: u8 = 1;
pub const BROKEN_REDIR: u8 = 2;
pub const BCAST: u8 = 4;

/// Bytes of frames a connection may have pending before they are coalesced into one flush.
pub const PENDING_CAP: usize = 1024 * 1024;

/// What an invalidation says: these keys changed, or everything did (FLUSHALL, overflow).
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    Keys(&'a [&'a [u8]]),
    /// Redis sends the tracking client's own null: `_` in RESP3, `$-1` in RESP2.
    All {
        resp3: bool,
    },
}

#[derive(Default)]
struct Pending {
    buf: BytesMut,
    overflowed: bool,
}

/// A connection's inbox plus what the tracker must know of it to encode frames.
pub struct Mailbox {
    pub id: u64,
    resp3: AtomicBool,
    /// Subscribed to at least one channel (Redis's `CLIENT_PUBSUB`): a RESP2 redirect target
    /// then receives invalidations as `__redis__:invalidate` messages.
    pubsub: AtomicBool,
    has_pending: AtomicBool,
    pending: Mutex<Pending>,
    /// What CLIENT LIST shows: tracking flags ([`TRACKING`], [`BCAST`], [`BROKEN_REDIR`]),
    /// the redirect (-1 while not tracking) and the number of subscribed channels.
    flags: AtomicU8,
    redirect: AtomicI64,
    subs: AtomicU32,
    /// Woken when a frame is appended.
    pub notify: Notify,
}

impl Mailbox {
    pub fn new(id: u64) -> Self {
        Mailbox {
            id,
            resp3: AtomicBool::new(false),
            pubsub: AtomicBool::new(false),
            has_pending: AtomicBool::new(false),
            pending: Mutex::new(Pending::default()),
            flags: AtomicU8::new(0),
            redirect: AtomicI64::new(-1),
            subs: AtomicU32::new(0),
            notify: Notify::new(),
        }
    }

    pub fn resp3(&self) -> bool {
        self.resp3.load(Relaxed)
    }

    pub fn set_resp3(&self, v: bool) {
        if self.resp3.load(Relaxed) != v {
            self.resp3.store(v, Relaxed);
        }
    }

    pub fn pubsub(&self) -> bool {
        self.pubsub.load(Relaxed)
    }

    /// The number of subscribed channels (Pub/Sub mode while non-zero).
    pub fn set_subscriptions(&self, n: usize) {
        self.subs.store(n as u32, Relaxed);
        self.pubsub.store(n > 0, Relaxed);
    }

    pub fn subscriptions(&self) -> u32 {
        self.subs.load(Relaxed)
    }

    pub(super) fn set_mode(&self, flags: u8, redirect: i64) {
        self.flags.store(flags, Relaxed);
        self.redirect.store(redirect, Relaxed);
    }

    pub(super) fn mark_broken(&self) {
        self.flags.fetch_or(BROKEN_REDIR, Relaxed);
    }

    /// CLIENT LIST's tracking letters, in Redis's order: `t` tracking, `R` broken redirect,
    /// `B` BCAST.
    pub fn list_flags(&self) -> &'static str {
        const LETTERS: [&str; 8] = ["", "t", "R", "tR", "B", "tB", "RB", "tRB"];
        LETTERS[(self.flags.load(Relaxed) & 7) as usize]
    }

    /// CLIENT LIST's `redir=`: the redirect target, 0 without one, -1 while not tracking.
    pub fn list_redirect(&self) -> i64 {
        self.redirect.load(Relaxed)
    }

    /// Moves every pending frame to the end of `out` (the connection's output buffer).
    #[inline]
    pub fn drain_into(&self, out: &mut BytesMut) -> bool {
        if !self.has_pending.load(Relaxed) {
            return false;
        }
        let mut p = self.pending.lock();
        self.has_pending.store(false, Relaxed);
        p.overflowed = false;
        if p.buf.is_empty() {
            return false;
        }
        out.extend_from_slice(&p.buf);
        p.buf.clear();
        if p.buf.capacity() > 64 * 1024 {
            p.buf = BytesMut::new();
        }
        true
    }

    /// Appends one frame written by `write`, unless the inbox has overflowed.
    pub(super) fn post(&self, write: impl FnOnce(&mut BytesMut)) {
        let mut p = self.pending.lock();
        if p.overflowed {
            return;
        }
        write(&mut p.buf);
        if p.buf.len() > PENDING_CAP {
            p.buf.clear();
            p.overflowed = true;
            let resp3 = self.resp3();
            if resp3 {
                invalidate_push(&mut p.buf, Payload::All { resp3 });
            } else {
                // Only a subscribed RESP2 target gets frames at all (see `Tracker::deliver`).
                invalidate_message(&mut p.buf, Payload::All { resp3 });
            }
            tracing::warn!(
                client = self.id,
                "invalidation backlog over {PENDING_CAP} bytes: coalesced into one flush"
            );
        }
        drop(p);
        self.has_pending.store(true, Relaxed);
        self.notify.notify_one();
    }
}

fn header(buf: &mut BytesMut, tag: u8, n: usize) {
    buf.extend_from_slice(&[tag]);
    buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    buf.extend_from_slice(b"\r\n");
}

fn bulk(buf: &mut BytesMut, b: &[u8]) {
    header(buf, b'$', b.len());
    buf.extend_from_slice(b);
    buf.extend_from_slice(b"\r\n");
}

fn payload(buf: &mut BytesMut, p: Payload<'_>) {
    match p {
        Payload::Keys(keys) => {
            header(buf, b'*', keys.len());
            for k in keys {
                bulk(buf, k);
            }
        }
        Payload::All { resp3: true } => buf.extend_from_slice(b"_\r\n"),
        Payload::All { resp3: false } => buf.extend_from_slice(b"$-1\r\n"),
    }
}

/// RESP3: `>2 $10 invalidate <payload>`.
pub fn invalidate_push(buf: &mut BytesMut, p: Payload<'_>) {
    buf.extend_from_slice(b">2\r\n$10\r\ninvalidate\r\n");
    payload(buf, p);
}

/// RESP2 Pub/Sub: `*3 $7 message $20 __redis__:invalidate <payload>`.
pub fn invalidate_message(buf: &mut BytesMut, p: Payload<'_>) {
    buf.extend_from_slice(b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n");
    payload(buf, p);
}

/// RESP3: `>2 $21 tracking-redir-broken :<id>`, to a client whose redirect target is gone.
pub fn redir_broken_push(buf: &mut BytesMut, id: u64) {
    buf.extend_from_slice(b">2\r\n$21\r\ntracking-redir-broken\r\n");
    header(buf, b':', id as usize);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_match_redis() {
        let mut b = BytesMut::new();
        invalidate_push(&mut b, Payload::Keys(&[b"k"]));
        assert_eq!(&b[..], b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n");
        b.clear();
        invalidate_message(&mut b, Payload::All { resp3: false });
        assert_eq!(
            &b[..],
            b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n$-1\r\n"
        );
    }

    #[test]
    fn backlog_is_bounded_and_coalesced() {
        let m = Mailbox::new(1);
        m.set_resp3(true);
        let key = vec![b'x'; 1000];
        for _ in 0..3000 {
            m.post(|b| invalidate_push(b, Payload::Keys(&[&key])));
        }
        let mut out = BytesMut::new();
        assert!(m.drain_into(&mut out));
        assert_eq!(&out[..], b">2\r\n$10\r\ninvalidate\r\n_\r\n");
        // After the drain the inbox takes frames again.
        m.post(|b| invalidate_push(b, Payload::Keys(&[b"k"])));
        out.clear();
        assert!(m.drain_into(&mut out));
        assert!(out.ends_with(b"$1\r\nk\r\n"));
    }
}

//! Building one batch of a link (the sender's steps 1-3): re-queue what timed out, take the
//! queued changes and the next full slots of a repair, and decide what the batch may claim.
//!
//! Invariants:
//! - A batch claims an offset (`upto`) only if nothing published before it is left behind: no
//!   queued change (its own, or its fan-out group's, or a group batch ready for it), no full
//!   slot pending, no repair round in progress.
//! - The delivery promise is read under the outbox lock together with the session and the
//!   reset counter; a batch built across a reset (new session, gained slots) promises nothing.

use super::*;
use crate::crdt::{compact, EntryDelta};

impl Link {
    /// Builds the next frame, or `None` when there is nothing to say; with whether it is a
    /// batch built once for the link's fan-out group (`batches_shared`).
    pub(super) fn next_batch(&self, ks: &Keyspace, from: u64) -> Option<(bytes::Bytes, bool)> {
        if let Some(question) = self.repair_frame(ks, from) {
            return Some((question, false));
        }
        let fanout = self.fanout();
        let mut o = self.outbox.lock();
        // 1. Batches unacknowledged for too long: their keys go back to the queue.
        let mut timed_out = false;
        while o.inflight.front().is_some_and(|b| o.rtt.lost(b.sent)) {
            let b = o.inflight.pop_front().expect("checked");
            // Batches sent into a dead connection are not evidence of a slow peer.
            timed_out |= o.rtt.lost_before.is_none_or(|t| b.sent >= t);
            for &s in &b.synced {
                o.resync_slots.insert(s);
            }
            o.resync = o.resync_slots.first().map(usize::from);
            b.keys.requeue(&mut o.changes);
            // Later batches claimed offsets that assumed this one would arrive: void the
            // claims; the batch that carries the re-queued keys makes its own.
            for later in o.inflight.iter_mut() {
                later.upto = 0;
            }
        }
        if timed_out {
            o.rtt.timed_out();
        }
        if o.inflight.len() >= WINDOW {
            return None;
        }
        // 2. In step with its fan-out group (nothing of its own queued): the group's next
        //    batch, built once for every member (`fanout`).
        if let Some(group) = &fanout {
            if o.changes.is_empty() && o.resync.is_none() {
                if o.ready.is_empty() {
                    drop(o);
                    group.build(ks);
                    o = self.outbox.lock();
                }
                if let Some(shared) = o.ready.pop_front() {
                    return self.send_shared(o, shared, from).map(|f| (f, true));
                }
            }
        }
        // 2b. Its own changed keys first, then the next slots of a full sync, within the budget.
        let keys = o.changes.pop_batch(BATCH_KEYS);
        let seen = o.seen;
        // Read after `seen`: every change published before this instant is at or below it.
        let covers = covered_now();
        // What the peer already acknowledged, read with the session and the slots it holds.
        let (promise, resets) = (self.promise(&o), o.resets);
        // Full slots only once the changed keys are drained (see `repair::slots_now`).
        let resync_from = if crate::repl::repair::slots_now(&mut o, keys.len()) {
            o.resync
        } else {
            None
        };
        let session = o.session;
        let fresh = o.fresh;
        o.urgent = false;
        drop(o);
        let mut body = Body::new(self, Vec::with_capacity(keys.len() * 64));
        for c in &keys {
            body.change(ks, c);
        }
        let mut synced = Vec::new();
        let keyed_bytes = body.len();
        if let Some(mut slot) = resync_from {
            let slots = self.outbox.lock().resync_slots.clone();
            let mut n = keys.len();
            while slot < SLOTS && body.len() < BATCH_BYTES && n < BATCH_KEYS * 4 {
                if slots.contains(slot as u16) {
                    for (k, e) in ks.slot_entries(slot as u16) {
                        body.entry(&k, e);
                        n += 1;
                    }
                    synced.push(slot as u16);
                }
                slot += 1;
            }
        }
        // The group first (lock order): its queue must be idle for this batch to claim.
        let group = fanout.as_ref().map(|g| g.idle());
        let mut o = self.outbox.lock();
        let group_idle = group.as_ref().is_none_or(|g| g.is_idle()) && o.ready.is_empty();
        drop(group);
        if o.session != session {
            // A new session started while we read: this batch belongs to the old one.
            o.changes.requeue(keys);
            return None;
        }
        let promise = if o.resets == resets { promise } else { 0 };
        for &s in &synced {
            o.resync_slots.remove(s);
        }
        if !synced.is_empty() {
            let synced_bytes = body.len() - keyed_bytes;
            crate::repl::repair::after_sync(&mut o, synced.len(), synced_bytes);
        }
        o.resync = o.resync_slots.first().map(usize::from);
        // 3. The batch completes everything published up to `seen` only if nothing is left.
        let complete =
            o.changes.is_empty() && group_idle && o.resync.is_none() && !o.repair.holds_claims();
        let upto = if complete { seen } else { 0 };
        let recent = self.last_batch.lock().elapsed() < KEEPALIVE;
        // An empty batch is worth sending for a new claim or the keep-alive only.
        let claimed = upto == 0
            || upto <= self.acked.load(Relaxed)
            || o.inflight.iter().any(|b| b.upto >= upto);
        if body.is_empty() && !fresh && recent && claimed {
            return None;
        }
        *self.last_batch.lock() = Instant::now();
        let repairing = !synced.is_empty();
        let head = o.dispatch(from, upto, Carried::Own(keys), synced, covers);
        drop(o);
        self.invalidations_sent
            .fetch_add(body.invalidations.len() as u64, Relaxed);
        let entries = wire::Packer::default().pack_entries(body.count, &body.bytes);
        match wire::encode_shared(head, &entries, promise, body.invalidations) {
            Ok(frame) => {
                if repairing {
                    self.outbox.lock().repair.counts.bytes += frame.len() as u64;
                }
                Some((frame, false))
            }
            Err(e) => {
                tracing::error!(error = %e, peer = self.peer, "cannot encode a replication batch");
                None
            }
        }
    }
}

/// The entries of one batch being encoded (`crdt::compact`, packed by `wire::Packer`): a
/// change's delta is encoded straight into the body, a change without one is read from the
/// keyspace, and under a `repl-scope hot` rule every key is read and a cold one becomes an
/// invalidation (`repl::scope`).
pub(super) struct Body {
    /// The scope, on a region link whose rules are not all `all` (only then is the choice
    /// made per key).
    scope: Option<Arc<ScopeState>>,
    /// The encoded entries, concatenated.
    pub(super) bytes: Vec<u8>,
    pub(super) count: usize,
    pub(super) invalidations: Vec<Invalidation>,
    /// Bytes the invalidations take.
    inv_bytes: usize,
    writer: compact::Writer,
}

impl Body {
    /// A body encoded into `bytes` (emptied first), whose allocation a caller may keep from
    /// one batch to the next.
    pub(super) fn new(link: &Link, mut bytes: Vec<u8>) -> Self {
        bytes.clear();
        Body {
            scope: link.region_scope().filter(|s| !s.rules.all()),
            bytes,
            count: 0,
            invalidations: Vec::new(),
            inv_bytes: 0,
            writer: compact::Writer::default(),
        }
    }

    /// Appends one entry.
    fn put(&mut self, key: &[u8], delta: &EntryDelta) {
        self.writer.entry(key, delta, &mut self.bytes);
        self.count += 1;
    }

    /// Adds a queued change: the store's delta, encoded straight into the batch (no second
    /// lookup or copy), or the key's current entry.
    pub(super) fn change(&mut self, ks: &Keyspace, c: &Change) {
        // Under a `hot` scope the choice needs the whole entry.
        match c.delta().filter(|_| self.scope.is_none()) {
            Some(delta) => self.put(c.key(), delta),
            None => {
                if let Some(e) = ks.entry(c.key()) {
                    self.entry(c.key(), e);
                }
            }
        }
    }

    /// Adds a key's full state, or under `repl-scope hot` a cold key's invalidation.
    pub(super) fn entry(&mut self, key: &[u8], e: crate::crdt::Entry) {
        match self.scope.as_ref().map(|s| s.ship(key, &e)) {
            Some(Ship::Invalidate(stamp)) => {
                self.inv_bytes += key.len() + 24;
                self.invalidations.push(Invalidation {
                    key: Box::from(key),
                    stamp,
                });
            }
            _ => self.put(key, &e.to_delta()),
        }
    }

    /// Bytes of entries and invalidations.
    pub(super) fn len(&self) -> usize {
        self.bytes.len() + self.inv_bytes
    }

    pub(super) fn is_empty(&self) -> bool {
        self.bytes.is_empty() && self.invalidations.is_empty()
    }
}

/// The stamp time a batch built now may claim to cover: every change stamped at or below it
/// was published before this instant (stamping precedes publishing by well under the margin).
pub(in crate::repl) fn covered_now() -> u64 {
    crate::crdt::Stamp::ntp64_from_unix_ms(
        crate::clock::unix_ms().saturating_sub(WATERMARK_MARGIN_MS),
    )
}

//! Building one batch of a link (the sender's steps 1-3): re-queue what timed out, take the
//! queued changes and the next full slots of a repair, and decide what the batch may claim.
//!
//! Invariants:
//! - A batch claims an offset (`upto`) only if nothing published before it is left behind: no
//!   queued change, no full slot pending, no repair round in progress.
//! - The delivery promise is read under the outbox lock together with the session and the
//!   reset counter; a batch built across a reset (new session, gained slots) promises nothing.

use super::*;

impl Link {
    /// Builds the next batch, or `None` when there is nothing to say.
    pub(super) fn next_batch(&self, ks: &Keyspace, from: u64) -> Option<bytes::Bytes> {
        if let Some(question) = self.repair_frame(ks, from) {
            return Some(question);
        }
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
            o.changes.requeue(b.keys);
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
        // 2. Changed keys first, then the next slots of a full sync, within the budget.
        let mut keys = Vec::new();
        while keys.len() < BATCH_KEYS {
            let Some(c) = o.changes.pop() else { break };
            keys.push(c);
        }
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
        // Only a `hot` rule makes the choice per key; under `all` every key ships in full.
        let scope = self.region_scope().filter(|s| !s.rules.all());
        // Bytes the batch's invalidations take (the entries' are `body.len()`).
        let mut inv_bytes = 0;
        // The batch's entries, encoded (`wire::splice`): a shared delta's encoding is made
        // once for every link that ships it.
        let mut body: Vec<u8> = Vec::with_capacity(keys.len() * 96);
        let mut count = 0;
        let mut invalidations: Vec<Invalidation> = Vec::new();
        // Full state, or under `repl-scope hot` a cold key's invalidation (`repl::scope`).
        let mut add =
            |key: &[u8], e: crate::crdt::Entry, inv_bytes: &mut usize, body: &mut Vec<u8>| {
                match scope.as_ref().map(|s| s.ship(key, &e)) {
                    Some(Ship::Invalidate(stamp)) => {
                        *inv_bytes += key.len() + 24;
                        invalidations.push(Invalidation {
                            key: Box::from(key),
                            stamp,
                        });
                        0
                    }
                    _ => {
                        wire::entry_bytes(key, &e.to_delta(), body);
                        1
                    }
                }
            };
        for c in &keys {
            // The store's delta, shared with the other links: no second lookup or copy.
            // Under a `hot` scope the choice needs the whole entry.
            let wire = if scope.is_none() { c.wire() } else { None };
            count += match wire {
                Some(w) => {
                    body.extend_from_slice(w);
                    1
                }
                None => match ks.entry(c.key()) {
                    Some(e) => add(c.key(), e, &mut inv_bytes, &mut body),
                    None => 0,
                },
            };
        }
        let mut synced = Vec::new();
        let keyed_bytes = body.len() + inv_bytes;
        if let Some(mut slot) = resync_from {
            let slots = self.outbox.lock().resync_slots.clone();
            let mut n = keys.len();
            while slot < SLOTS && body.len() + inv_bytes < BATCH_BYTES && n < BATCH_KEYS * 4 {
                if slots.contains(slot as u16) {
                    for (k, e) in ks.slot_entries(slot as u16) {
                        count += add(&k, e, &mut inv_bytes, &mut body);
                        n += 1;
                    }
                    synced.push(slot as u16);
                }
                slot += 1;
            }
        }
        let mut o = self.outbox.lock();
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
            let synced_bytes = body.len() + inv_bytes - keyed_bytes;
            crate::repl::repair::after_sync(&mut o, synced.len(), synced_bytes);
        }
        o.resync = o.resync_slots.first().map(usize::from);
        // 3. The batch completes everything published up to `seen` only if nothing is left.
        let complete = o.changes.is_empty() && o.resync.is_none() && !o.repair.holds_claims();
        let upto = if complete { seen } else { 0 };
        let recent = self.last_batch.lock().elapsed() < KEEPALIVE;
        // An empty batch is worth sending for a new claim or the keep-alive only.
        let claimed = upto == 0
            || upto <= self.acked.load(Relaxed)
            || o.inflight.iter().any(|b| b.upto >= upto);
        if body.is_empty() && invalidations.is_empty() && !fresh && recent && claimed {
            return None;
        }
        *self.last_batch.lock() = Instant::now();
        let repairing = !synced.is_empty();
        let batch = o.next_batch;
        o.next_batch += 1;
        o.fresh = false;
        o.inflight.push_back(InFlight {
            batch,
            sent: Instant::now(),
            upto,
            acked: false,
            keys,
            synced,
            covers,
        });
        drop(o);
        let msg = ReplMsg::Batch {
            from,
            session,
            fresh,
            batch,
            upto,
            entries: Vec::new(),
        };
        self.invalidations_sent
            .fetch_add(invalidations.len() as u64, Relaxed);
        match wire::encode_batch(msg, count, &body, promise, invalidations) {
            Ok(frame) => {
                if repairing {
                    self.outbox.lock().repair.counts.bytes += frame.len() as u64;
                }
                Some(frame)
            }
            Err(e) => {
                tracing::error!(error = %e, peer = self.peer, "cannot encode a replication batch");
                None
            }
        }
    }
}

/// The stamp time a batch built now may claim to cover: every change stamped at or below it
/// was published before this instant (stamping precedes publishing by well under the margin).
pub(in crate::repl) fn covered_now() -> u64 {
    crate::crdt::Stamp::ntp64_from_unix_ms(
        crate::clock::unix_ms().saturating_sub(WATERMARK_MARGIN_MS),
    )
}

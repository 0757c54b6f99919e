//! Fan-out groups: region links that carry the same slots share one queue, and each batch is
//! encoded and compressed once for all of them.
//!
//! Why: a writer replicating to two regions queued, popped, encoded, compressed and freed every
//! change once per link, and those per-link costs were most of what replication added to a
//! write (`docs/benchmarks.md`). The links of one group carry exactly the same changes (same
//! slots, and region links all refuse the same origins: `Replicator::publish`), so one queue and
//! one batch serve them all; each link only frames the batch with its own session, number,
//! claim and promise (`wire::encode_shared`).
//!
//! Protocol:
//! 1. A publish pushes each change once into the group's queue and notes the offset in every
//!    member's outbox (`Outbox::note`: `seen`, lag marks, the hold of old stamps).
//! 2. A member with nothing of its own queued and no batch ready builds the next batch for the
//!    group ([`Fanout::build`]): it pops up to `BATCH_KEYS` changes, encodes and packs them,
//!    then hands the batch to every member in step (own queue empty, window not full) and the
//!    batch's changes to every other member's own queue, where they coalesce as on an ungrouped
//!    link. So a slow or unreachable peer never holds up the others, and its memory stays bounded
//!    by the keyspace.
//!    The batch keeps only its packed entries, decoded again if a member loses it.
//! 3. A member sends its ready batches in order; on a lost batch it re-queues the changes in
//!    its own queue, as an ungrouped link does.
//!
//! Invariants:
//! - One build at a time (`building`), so ready batches reach every member in the order their
//!   changes left the queue: a batch that drained the queue may claim the group's offset.
//! - A batch claims an offset for a member only if nothing published before it is left behind
//!   for that member: the group queue was drained by the batch, and the member has nothing of
//!   its own queued, no batch ready before it, no full slot pending and no repair holding
//!   claims. A member's own batch additionally needs the group queue empty and idle.
//! - Lock order: group state, then a member's `fanout`, then its outbox; a build locks every
//!   member's outbox at once, in member order.
//! - A dissolved group (the links or their slots changed) gives its queue to every member's own
//!   queue; a build in progress gives its changes back the same way.

use super::*;
use crate::cluster::SlotSet;

/// Region links with the same slots, sharing one queue (see the module doc).
pub struct Fanout {
    pub(in crate::repl) members: Vec<Arc<Link>>,
    pub(in crate::repl) slots: SlotSet,
    state: Mutex<State>,
    /// Buffers one build leaves to the next; only the member building (`building`) locks it.
    scratch: Mutex<Scratch>,
}

/// A build's buffers, kept with their allocations (batches of tens of kilobytes).
#[derive(Default)]
struct Scratch {
    keys: Vec<Change>,
    body: Vec<u8>,
    packer: wire::Packer,
}

struct State {
    changes: Changes,
    /// Offset of the last publish recorded here.
    seen: u64,
    /// A member has popped changes and not handed the batch out yet.
    building: bool,
    /// A hot key's change is queued (at the front).
    urgent: bool,
    dissolved: bool,
}

/// One batch built for every member of a group.
pub struct Shared {
    /// The entries array, packed (`wire::pack_entries`); decoded again by a member that loses
    /// the batch ([`Shared::requeue`]).
    entries: bytes::Bytes,
    /// How many entries `entries` holds.
    count: usize,
    invalidations: Vec<Invalidation>,
    /// The group offset it completes when nothing of a member is left behind (0: the batch
    /// did not drain the group queue).
    seen: u64,
    /// Stamp time below which every change published before `seen` was recorded.
    covers: u64,
}

impl Fanout {
    /// Groups `members` (region links whose slots are `slots`) and tells each of them.
    pub(in crate::repl) fn new(members: Vec<Arc<Link>>, slots: SlotSet) -> Arc<Fanout> {
        let group = Arc::new(Fanout {
            members,
            slots,
            state: Mutex::new(State {
                changes: Changes::default(),
                seen: 0,
                building: false,
                urgent: false,
                dissolved: false,
            }),
            scratch: Mutex::default(),
        });
        for m in &group.members {
            *m.fanout.lock() = Some(group.clone());
        }
        group
    }

    /// Step 1: queues published changes once for every member (see [`Link::record`] for the
    /// arguments), notes the offset in every member and wakes them when the queue was empty or
    /// a hot key arrived.
    pub(in crate::repl) fn record(
        &self,
        changes: impl Iterator<Item = (Change, bool)>,
        offset: u64,
        oldest: u64,
        clocks: (Instant, u64),
    ) {
        let mut s = self.state.lock();
        let was_empty = s.changes.is_empty();
        let (mut any, mut urgent) = (false, false);
        for (c, hot) in changes {
            any = true;
            urgent |= s.changes.push(c, hot) && hot;
        }
        s.urgent |= urgent;
        s.seen = s.seen.max(offset);
        drop(s);
        for m in &self.members {
            m.outbox.lock().note(any, offset, oldest, clocks);
        }
        if any && (was_empty || urgent) {
            for m in &self.members {
                m.wake.notify_one();
            }
        }
    }

    /// Step 2: builds the group's next batch and hands it out (see the module doc). Does
    /// nothing when the queue is empty or another member is building.
    pub(super) fn build(&self, ks: &Keyspace) {
        // Held by a build in progress: `building` is set, and this one would return below.
        let Some(mut scratch) = self.scratch.try_lock() else {
            return;
        };
        let Scratch { keys, body, packer } = &mut *scratch;
        let (seen, covers) = {
            let mut s = self.state.lock();
            if s.building || s.dissolved || s.changes.is_empty() {
                return;
            }
            let seen = s.seen;
            // Read after `seen`: every change published before this instant is at or below it.
            let covers = covered_now();
            s.changes.pop_batch_into(BATCH_KEYS, keys);
            s.building = true;
            s.urgent = false;
            (if s.changes.is_empty() { seen } else { 0 }, covers)
        };
        let mut batch = Body::new(&self.members[0], std::mem::take(body));
        for c in keys.iter() {
            batch.change(ks, c);
        }
        let entries = packer.pack_entries(batch.count, &batch.bytes);
        // Every member's outbox at once (in member order; nothing else holds two), so the
        // changes are cloned only for the members out of step. The batch keeps only its
        // packed entries: the changes are freed here, while still in the CPU caches.
        let mut s = self.state.lock();
        s.building = false;
        let mut outboxes: Vec<_> = self.members.iter().map(|m| m.outbox.lock()).collect();
        let in_step: Vec<bool> = outboxes
            .iter()
            .map(|o| {
                !s.dissolved && o.changes.is_empty() && o.inflight.len() + o.ready.len() < WINDOW
            })
            .collect();
        for (o, _) in outboxes.iter_mut().zip(&in_step).filter(|(_, i)| !**i) {
            o.changes.requeue(keys.clone());
        }
        if in_step.contains(&true) {
            let shared = Arc::new(Shared {
                entries,
                count: batch.count,
                invalidations: batch.invalidations,
                seen,
                covers,
            });
            for (o, _) in outboxes.iter_mut().zip(in_step).filter(|(_, i)| *i) {
                o.ready.push_back(shared.clone());
            }
        }
        drop(outboxes);
        drop(s);
        keys.clear();
        *body = batch.bytes;
        drop(scratch);
        for m in &self.members {
            m.wake.notify_one();
        }
    }

    /// Keys queued, and whether a hot one is among them (the link task's sending delay).
    pub(super) fn queued(&self) -> (usize, bool) {
        let s = self.state.lock();
        (s.changes.len(), s.urgent)
    }

    /// Nothing queued and no batch being built: with nothing of its own left behind, a member's
    /// batch may claim what it has seen. Called with the member's outbox unlocked (lock order).
    pub(super) fn idle(&self) -> GroupIdle<'_> {
        GroupIdle(self.state.lock())
    }

    /// Ends the group: every member takes the queued changes into its own queue.
    pub(in crate::repl) fn dissolve(&self) {
        let mut s = self.state.lock();
        s.dissolved = true;
        let queued = s.changes.pop_batch(usize::MAX);
        for m in &self.members {
            *m.fanout.lock() = None;
            m.outbox.lock().changes.requeue(queued.clone());
            m.wake.notify_one();
        }
    }
}

impl Shared {
    /// Keys the batch carries: entries and invalidations.
    pub(super) fn len(&self) -> usize {
        self.count + self.invalidations.len()
    }

    /// Queues the batch's changes again (a member lost it, or its session reset): each entry
    /// with the delta it carried, decoded from the batch, so a key evicted since (eviction is
    /// local) still reaches the peer; each invalidated key to be read again at batch time, as
    /// the scope decides afresh for it.
    pub(super) fn requeue(&self, changes: &mut Changes) {
        match wire::unpack_entries(&self.entries) {
            Ok(entries) => {
                for e in entries {
                    changes.push(Change::new(&e.key, Some(e.entry)), false);
                }
            }
            // The bytes were packed by this process a moment ago: only a bug gets here.
            Err(e) => {
                tracing::error!(error = %e, "cannot decode a batch built for a fan-out group")
            }
        }
        for inv in &self.invalidations {
            changes.push(Change::new(&inv.key, None), false);
        }
    }
}

/// The group's state held while a member decides whether its own batch may claim (see
/// [`Fanout::idle`]): the member's outbox is locked after it, and the answer stays true until
/// the guard is dropped.
pub(super) struct GroupIdle<'a>(parking_lot::MutexGuard<'a, State>);

impl GroupIdle<'_> {
    pub(super) fn is_idle(&self) -> bool {
        self.0.changes.is_empty() && !self.0.building
    }
}

impl Link {
    /// The link's fan-out group, if it is in one.
    pub(super) fn fanout(&self) -> Option<Arc<Fanout>> {
        self.fanout.lock().clone()
    }

    /// Step 3: frames a batch built for the group as this link's next batch.
    pub(super) fn send_shared(
        &self,
        mut o: parking_lot::MutexGuard<'_, Outbox>,
        s: Arc<Shared>,
        from: u64,
    ) -> Option<bytes::Bytes> {
        let complete = s.seen > 0
            && o.changes.is_empty()
            && o.ready.is_empty()
            && o.resync.is_none()
            && !o.repair.holds_claims();
        let upto = if complete { s.seen } else { 0 };
        let promise = self.promise(&o);
        let head = o.dispatch(from, upto, Carried::Shared(s.clone()), Vec::new(), s.covers);
        drop(o);
        *self.last_batch.lock() = Instant::now();
        self.invalidations_sent
            .fetch_add(s.invalidations.len() as u64, Relaxed);
        match wire::encode_shared(head, &s.entries, promise, s.invalidations.clone()) {
            Ok(frame) => Some(frame),
            Err(e) => {
                tracing::error!(error = %e, peer = self.peer, "cannot encode a replication batch");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::{Entry, EntryDelta, Stamp};

    /// A member that loses a group batch queues again what the batch carried: every entry's
    /// delta, decoded from the packed bytes (compressed: the batch is large), joined with what
    /// was queued since; and every invalidated key, to be read again at batch time.
    #[test]
    fn a_lost_group_batch_requeues_the_deltas_it_carried() {
        let stamp = |t: u64| Stamp { time: t, node: 1 };
        let mut entries: Vec<(Vec<u8>, Entry, EntryDelta)> = (0..1000)
            .map(|i| {
                let mut e = Entry::empty();
                let value = format!("value-{i}-{}", "x".repeat(24));
                let d = e.write_register(Some(value.as_bytes()), stamp(100 + i));
                (format!("key:{i}").into_bytes(), e, d)
            })
            .collect();
        let (mut body, mut writer) = (Vec::new(), crate::crdt::compact::Writer::default());
        for (key, _, d) in &entries {
            writer.entry(key, d, &mut body);
        }
        let packed = wire::Packer::default().pack_entries(entries.len(), &body);
        assert_ne!(
            packed[0],
            wire::CLASS_REPL,
            "the test's batch is compressed"
        );
        let shared = Shared {
            entries: packed,
            count: entries.len(),
            invalidations: vec![Invalidation {
                key: Box::from(&b"cold"[..]),
                stamp: stamp(5),
            }],
            seen: 0,
            covers: 0,
        };
        assert_eq!(shared.len(), 1001);
        // Key 0 was counted since the batch left: its queued increment joins the lost write.
        let mut q = Changes::default();
        let incr = entries[0].1.add_int(7, 3, stamp(2000));
        q.push(Change::new(b"key:0", Some(Arc::new(incr))), false);
        shared.requeue(&mut q);
        assert_eq!(q.len(), 1001, "each key once");
        let mut cold = 0;
        for c in q.pop_batch(usize::MAX) {
            if c.key() == b"cold" {
                assert!(c.delta().is_none(), "an invalidated key is read again");
                cold += 1;
                continue;
            }
            let i: usize = std::str::from_utf8(&c.key()[4..]).unwrap().parse().unwrap();
            let mut got = Entry::empty();
            got.merge(c.delta().expect("a delta"));
            assert_eq!(got.to_delta(), entries[i].1.to_delta(), "key {i}");
        }
        assert_eq!(cold, 1);
    }
}

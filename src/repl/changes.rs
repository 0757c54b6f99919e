//! The coalescing queue of one link's outbox (or of a fan-out group's, shared by its links:
//! `repl::link::fanout`): each changed key once, in order, with the delta the store built for
//! it while the link keeps up.
//!
//! Why carry deltas: a batch used to re-read every queued key from the keyspace, once per link,
//! by which time the key had usually left the CPU caches; on a writer replicating to two
//! regions that lookup was the largest single cost of replication. The store already built a
//! delta under the slot lock, so [`Replicator::publish`](super::Replicator) pairs it with its
//! key in a [`Change`], and every queue the change goes to holds the same delta.
//!
//! Why a change is held by value: every reference count taken or dropped is an atomic
//! instruction, which waits for the core's pending stores, and every record allocated is freed
//! later, out of the CPU caches. A change is its key (inline when short), its hash and a
//! handle to the store's delta; a queue holds it by value (the index holds positions, not
//! references), and each further queue it goes to takes a copy and one count of the delta.
//! On a writer replicating to two regions the region links share one queue (a fan-out group),
//! so a change is usually queued once, with no allocation of its own.
//!
//! Invariants:
//! - A key is queued at most once (`index` holds exactly the positions of the keys in
//!   `queue`): memory is bounded by the keyspace, not by the write rate.
//! - A queued delta is the join of every change of its key recorded since it was queued (and
//!   of the deltas of a lost batch put back), so sending it loses nothing the peer lacks: the
//!   peer acknowledged everything before. `None` means "read the key's entry at batch time",
//!   which is always at least as much; a join with `None` is `None`.
//! - Deltas are kept for at most [`DELTAS_MAX`] queued keys. Past that (a peer away or far
//!   behind), new keys queue without their delta, so the outbox never holds a second copy of
//!   the values of the whole keyspace.

use crate::crdt::EntryDelta;
use hashbrown::hash_table::Entry;
use hashbrown::HashTable;
use std::collections::VecDeque;
use std::sync::{Arc, LazyLock};

/// Queued keys beyond which changes are queued without their delta (read at batch time).
pub const DELTAS_MAX: usize = 64 * 1024;

/// Capacity an emptied queue keeps: a link that keeps up queues a millisecond of writes.
const KEEP_CAPACITY: usize = 4096;

/// One changed key, as published to the links and as carried by a batch in flight.
#[derive(Clone, Debug)]
pub struct Change {
    /// The key, inline when short (most keys).
    key: Key,
    /// The key's hash, made once when the change is published: every queue indexes the key by
    /// it (hashing it per link, on push and again on pop, was a quarter of the queues' cost).
    hash: u64,
    /// The store's delta of the change; `None`: the batch reads the key's current entry.
    delta: Option<Arc<EntryDelta>>,
}

/// A queued key: inline up to 32 bytes.
type Key = smallvec::SmallVec<[u8; 32]>;

/// The hasher of a change's key hash, the same for every link of the process.
static HASHER: LazyLock<ahash::RandomState> = LazyLock::new(ahash::RandomState::new);

impl Change {
    pub fn new(key: &[u8], delta: Option<Arc<EntryDelta>>) -> Self {
        Change {
            key: Key::from_slice(key),
            hash: HASHER.hash_one(key),
            delta,
        }
    }

    pub fn key(&self) -> &[u8] {
        &self.key
    }

    pub fn delta(&self) -> Option<&Arc<EntryDelta>> {
        self.delta.as_ref()
    }
}

/// Queued changes in order, each key once. Positions are absolute (`head` is the position of
/// the front), so a key's index entry stays valid while changes are pushed at either end and
/// popped at the front.
pub struct Changes {
    queue: VecDeque<Change>,
    /// Position of `queue[0]`; changes pushed to the front take the positions below it.
    head: u64,
    /// (position, hash) of each queued key, by the key's hash.
    index: HashTable<(u64, u64)>,
}

impl Default for Changes {
    fn default() -> Self {
        Changes {
            queue: VecDeque::new(),
            // Room below for any number of pushes to the front.
            head: u64::MAX / 2,
            index: HashTable::new(),
        }
    }
}

impl Changes {
    /// Queues a change (at the front for the priority lane). Returns whether the key was new to
    /// the queue; a key already queued keeps its place and joins the delta. Takes the change
    /// so that the last queue a change is published to takes the publisher's own count of the
    /// delta instead of a new one.
    pub fn push(&mut self, mut c: Change, front: bool) -> bool {
        let (queue, head, hash) = (&mut self.queue, self.head, c.hash);
        // One probe per link and change (this runs for every write), by the published hash.
        let at = |pos: u64| (pos - head) as usize;
        let found = self.index.entry(
            hash,
            |&(pos, h)| h == hash && queue[at(pos)].key == c.key,
            |&(_, h)| h,
        );
        let slot = match found {
            Entry::Occupied(queued) => {
                let i = at(queued.get().0);
                join_into(&mut queue[i], c);
                return false;
            }
            Entry::Vacant(slot) => slot,
        };
        if queue.len() >= DELTAS_MAX {
            c.delta = None;
        }
        if front {
            self.head -= 1;
            slot.insert((self.head, hash));
            queue.push_front(c);
        } else {
            slot.insert((head + queue.len() as u64, hash));
            queue.push_back(c);
        }
        true
    }

    /// The oldest queued change.
    pub fn pop(&mut self) -> Option<Change> {
        let c = self.queue.pop_front()?;
        let pos = self.head;
        self.head += 1;
        if let Ok(queued) = self.index.find_entry(c.hash, |&(p, _)| p == pos) {
            queued.remove();
        }
        if self.queue.is_empty() && self.index.capacity() > KEEP_CAPACITY {
            // A backlog (a partition, a burst) grew the table; sparse, every probe of it
            // would miss the CPU caches from then on.
            self.index.shrink_to(KEEP_CAPACITY, |&(_, h)| h);
            self.queue.shrink_to(KEEP_CAPACITY);
        }
        Some(c)
    }

    /// Pops up to `max` of the oldest changes (a batch). A batch that takes the whole queue,
    /// the usual case on a link that keeps up, empties the index in one sweep instead of one
    /// removal per key (which left a deleted marker per key for the next pushes to skip and a
    /// rehash to clear).
    pub fn pop_batch(&mut self, max: usize) -> Vec<Change> {
        let mut batch = Vec::new();
        self.pop_batch_into(max, &mut batch);
        batch
    }

    /// [`Changes::pop_batch`] into `batch` (emptied first), whose allocation a caller keeps
    /// from one batch to the next.
    pub fn pop_batch_into(&mut self, max: usize, batch: &mut Vec<Change>) {
        batch.clear();
        if self.queue.len() > max {
            batch.extend(std::iter::from_fn(|| self.pop()).take(max));
            return;
        }
        self.head += self.queue.len() as u64;
        batch.extend(self.queue.drain(..));
        self.index.clear();
        // As in `pop`: a backlog's grown table would stay sparse.
        self.index.shrink_to(KEEP_CAPACITY, |&(_, h)| h);
        self.queue.shrink_to(KEEP_CAPACITY);
    }

    /// Puts back changes that did not go out (a dissolved group's queue, a batch built across
    /// a new session, a group batch a member could not take), at the back: order between keys
    /// does not matter, and a key queued again since joins the two deltas.
    pub fn requeue(&mut self, changes: Vec<Change>) {
        for c in changes {
            self.push(c, false);
        }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The queued keys in order (tests).
    #[cfg(test)]
    pub fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.queue.iter().map(|c| &c.key[..])
    }
}

/// `queued ⊔= new`, where `None` (read the entry) absorbs everything. A newer delta that
/// covers every part of the queued one replaces it without a copy (the common cases: a key
/// written again with SET, or counted again by the same actor).
fn join_into(queued: &mut Change, new: Change) {
    let Some(q) = queued.delta() else {
        return;
    };
    let Some(n) = new.delta() else {
        *queued = new;
        return;
    };
    if covers(n, q) {
        *queued = new;
    } else {
        let mut joined = q.clone();
        Arc::make_mut(&mut joined).join(n);
        queued.delta = Some(joined);
    }
}

/// Whether `n ⊔ q = n`: every part of `q` is in `n` with a stamp at least as new.
fn covers(n: &EntryDelta, q: &EntryDelta) -> bool {
    let register = match (&q.register, &n.register) {
        (None, _) => true,
        (Some(q), Some(n)) => n.stamp >= q.stamp,
        (Some(_), None) => false,
    };
    let expiry = match (&q.expiry, &n.expiry) {
        (None, _) => true,
        (Some(q), Some(n)) => n.stamp >= q.stamp,
        (Some(_), None) => false,
    };
    // Counters: every actor's contribution in `q` is reached by `n`'s (an INCR again).
    let counters = n.contrib_stamp >= q.contrib_stamp
        && q.contrib
            .iter()
            .all(|qc| n.contrib.get(qc.actor).is_some_and(|nc| nc.covers(qc)));
    // A tombstone that `n`'s newer register replaces settles in the join (`crdt::entry` floors),
    // and what `q` settled must be in `n`: otherwise `n` alone would lose it.
    let settles = match (&q.register, &n.register) {
        (Some(q), Some(n)) => n.stamp > q.stamp && q.value.is_none() && !q.observed.is_empty(),
        _ => false,
    };
    register && expiry && counters && !settles && n.settled.covers(&q.settled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::{Entry, Stamp};

    fn stamp(t: u64) -> Stamp {
        Stamp { time: t, node: 1 }
    }

    /// A popped change as (key, its register's stamp time).
    fn seen(c: &Change) -> (Vec<u8>, u64) {
        let stamp = c.delta().unwrap().register.as_ref().unwrap().stamp.time;
        (c.key().to_vec(), stamp)
    }

    fn change(key: &[u8], d: EntryDelta) -> Change {
        Change::new(key, Some(Arc::new(d)))
    }

    #[test]
    fn a_lost_batch_puts_its_deltas_back_and_they_join_newer_ones() {
        let mut e = Entry::empty();
        let set = e.write_register(Some(&b"v1"[..]), stamp(10));
        let incr = e.add_int(7, 5, stamp(11));
        let mut q = Changes::default();
        q.push(change(b"k", set), false);
        let sent: Vec<Change> = q.pop_batch(16);
        assert!(q.is_empty());
        // An increment queued since, then the batch is lost: the key ships once, with both
        // (the register may not be read again: the key may be evicted by then).
        q.push(change(b"k", incr), false);
        q.requeue(sent.clone());
        q.requeue(sent);
        assert_eq!(q.len(), 1);
        let mut got = Entry::empty();
        got.merge(q.pop().unwrap().delta().unwrap());
        assert_eq!(got.to_delta(), e.to_delta());
    }

    #[test]
    fn a_key_is_queued_once_and_its_deltas_join() {
        let mut e = Entry::empty();
        let set = e.write_register(Some(&b"v1"[..]), stamp(10));
        let incr = e.add_int(7, 5, stamp(11));
        let set2 = e.write_register(Some(&b"v2"[..]), stamp(12));
        let mut q = Changes::default();
        assert!(q.push(change(b"k", set), false));
        assert!(!q.push(change(b"k", incr), false));
        assert!(!q.push(change(b"k", set2), false));
        assert_eq!(q.len(), 1);
        let got = q.pop().unwrap();
        // The join carries what the full entry would: the last register and the counter.
        let mut from_deltas = Entry::empty();
        from_deltas.merge(got.delta().unwrap());
        assert_eq!(from_deltas.to_delta(), e.to_delta());
        assert!(q.pop().is_none());
    }

    #[test]
    fn a_covering_delta_replaces_the_queued_one_without_a_copy() {
        let mut e = Entry::empty();
        let first = change(b"n", e.add_int(7, 1, stamp(10)));
        let second = change(b"n", e.add_int(7, 1, stamp(11)));
        let other_link = first.delta().unwrap().clone();
        let mut q = Changes::default();
        q.push(first.clone(), false);
        q.push(second.clone(), false);
        let got = q.pop().unwrap();
        assert!(
            Arc::ptr_eq(got.delta().unwrap(), second.delta().unwrap()),
            "the very delta, not a copy"
        );
        assert_eq!(
            *other_link,
            **first.delta().unwrap(),
            "the other link's delta is untouched"
        );
        // Another actor's count is not covered: the queued delta is joined (copied).
        let third = change(b"n", e.add_int(8, 1, stamp(12)));
        q.push(second.clone(), false);
        q.push(third.clone(), false);
        let joined = q.pop().unwrap();
        assert!(!Arc::ptr_eq(
            joined.delta().unwrap(),
            third.delta().unwrap()
        ));
        assert_eq!(joined.delta().unwrap().contrib.len(), 2);
        assert_eq!(
            second.delta().unwrap().contrib.len(),
            1,
            "what others queued is untouched"
        );
    }

    #[test]
    fn none_absorbs_and_a_long_queue_stops_keeping_deltas() {
        let mut q = Changes::default();
        let d = Entry::empty().write_register(Some(&b"v"[..]), stamp(1));
        q.push(change(b"k", d.clone()), false);
        q.push(Change::new(b"k", None), false);
        assert!(q.pop().unwrap().delta().is_none());
        for i in 0..DELTAS_MAX + 1 {
            q.push(change(format!("k{i}").as_bytes(), d.clone()), false);
        }
        let kept = std::iter::from_fn(|| q.pop())
            .filter(|c| c.delta().is_some())
            .count();
        assert_eq!(kept, DELTAS_MAX);
    }

    proptest::proptest! {
        /// The queue against a model (a list of distinct keys): pushes at either end, pops,
        /// keys pushed again while queued and after they left. Every key comes out once, in the model's order, with its latest delta.
        #[test]
        fn the_queue_keeps_each_key_once_in_order_through_pops_and_batches(
            ops in proptest::collection::vec((0u8..4, 0u16..40), 0..400),
        ) {
            let mut q = Changes::default();
            let mut model: VecDeque<(u16, u64)> = VecDeque::new();
            for (n, (op, k)) in ops.into_iter().enumerate() {
                let t = n as u64 + 1;
                let key = format!("k{k}").into_bytes();
                let d = Entry::empty().write_register(Some(&b"v"[..]), stamp(t));
                match op {
                    0 | 1 => {
                        let front = op == 1;
                        let new = q.push(change(&key, d), front);
                        match model.iter_mut().find(|m| m.0 == k) {
                            Some(m) => {
                                proptest::prop_assert!(!new);
                                m.1 = t;
                            }
                            None => {
                                proptest::prop_assert!(new);
                                if front { model.push_front((k, t)) } else { model.push_back((k, t)) }
                            }
                        }
                    }
                    2 => {
                        let got = q.pop().map(|c| seen(&c));
                        let want = model.pop_front().map(|(k, t)| (format!("k{k}").into_bytes(), t));
                        proptest::prop_assert_eq!(got, want);
                    }
                    _ => {
                        // A batch of up to `k` (the whole queue when it holds no more).
                        let max = k as usize;
                        let got: Vec<_> = q.pop_batch(max).iter().map(seen).collect();
                        let n = max.min(model.len());
                        let want: Vec<_> = model
                            .drain(..n)
                            .map(|(k, t)| (format!("k{k}").into_bytes(), t))
                            .collect();
                        proptest::prop_assert_eq!(got, want);
                    }
                }
                proptest::prop_assert_eq!(q.len(), model.len());
                proptest::prop_assert_eq!(q.index.len(), model.len());
            }
        }
    }
}

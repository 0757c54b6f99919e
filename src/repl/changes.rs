//! The coalescing queue of one link's outbox: each changed key once, in order, with the delta
//! the store built for it while the link keeps up.
//!
//! Why carry deltas: a batch used to re-read every queued key from the keyspace, once per link,
//! by which time the key had usually left the CPU caches; on a writer replicating to two
//! regions that lookup was the largest single cost of replication. The store already built a
//! delta under the slot lock, so [`Replicator::publish`](super::Replicator) wraps it in an
//! `Arc` once and every link queues the same allocation.
//!
//! Invariants:
//! - A key is queued at most once (`queued` holds exactly the keys in `queue`): memory is
//!   bounded by the keyspace, not by the write rate.
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
use std::sync::{Arc, LazyLock, OnceLock};

/// Queued keys beyond which changes are queued without their delta (read at batch time).
pub const DELTAS_MAX: usize = 64 * 1024;

/// Capacity an emptied queue keeps: a link that keeps up queues a millisecond of writes.
const KEEP_CAPACITY: usize = 4096;

/// One changed key, as published to the links and as carried by a batch in flight.
#[derive(Clone, Debug)]
pub struct Change {
    pub key: Arc<[u8]>,
    /// The key's hash, made once when the change is published: every link's queue indexes
    /// the key by it (hashing it per link, on push and again on pop, was a quarter of the
    /// queues' cost).
    hash: u64,
    /// The store's delta of the change; `None`: the batch reads the key's current entry.
    pub delta: Option<Arc<Shared>>,
}

/// The hasher of [`Change::hash`], the same for every link of the process.
static HASHER: LazyLock<ahash::RandomState> = LazyLock::new(ahash::RandomState::new);

impl Change {
    pub fn new(key: Arc<[u8]>, delta: Option<Arc<Shared>>) -> Self {
        Change {
            hash: HASHER.hash_one(&key[..]),
            key,
            delta,
        }
    }
}

/// A delta as all links share it, with its wire encoding (`wire::entry_bytes`), made by the
/// first batch that carries it and copied by the others. A join makes a new `Shared`, so an
/// encoding always belongs to the delta beside it.
#[derive(Debug)]
pub struct Shared {
    pub delta: Arc<EntryDelta>,
    wire: OnceLock<Box<[u8]>>,
}

impl Shared {
    pub fn new(delta: Arc<EntryDelta>) -> Arc<Self> {
        Arc::new(Shared {
            delta,
            wire: OnceLock::new(),
        })
    }

    /// The encoding of this delta as `key`'s batch entry (always the same key: the change's).
    pub fn wire(&self, key: &[u8]) -> Result<&[u8], super::wire::WireError> {
        if let Some(w) = self.wire.get() {
            return Ok(w);
        }
        let mut out = Vec::with_capacity(key.len() + 64);
        super::wire::entry_bytes(key, &self.delta, &mut out)?;
        Ok(self.wire.get_or_init(|| out.into_boxed_slice()))
    }
}

/// A queued key with its (joined) delta.
struct Queued {
    hash: u64,
    key: Arc<[u8]>,
    delta: Option<Arc<Shared>>,
}

#[derive(Default)]
pub struct Changes {
    queue: VecDeque<(u64, Arc<[u8]>)>,
    queued: HashTable<Queued>,
}

impl Changes {
    /// Queues a change (at the front for the priority lane). Returns whether the key was new to
    /// the queue; a key already queued keeps its place and joins the delta.
    pub fn push(&mut self, c: &Change, front: bool) -> bool {
        // One probe per link and change (this runs for every write), by the published hash.
        match self.queued.entry(c.hash, |q| q.key == c.key, |q| q.hash) {
            Entry::Occupied(mut queued) => {
                join_into(&mut queued.get_mut().delta, c.delta.as_ref());
                return false;
            }
            Entry::Vacant(slot) => {
                slot.insert(Queued {
                    hash: c.hash,
                    key: c.key.clone(),
                    delta: c.delta.clone().filter(|_| self.queue.len() < DELTAS_MAX),
                });
            }
        }
        if front {
            self.queue.push_front((c.hash, c.key.clone()));
        } else {
            self.queue.push_back((c.hash, c.key.clone()));
        }
        true
    }

    /// The oldest queued change.
    pub fn pop(&mut self) -> Option<Change> {
        let (hash, key) = self.queue.pop_front()?;
        let delta = match self.queued.find_entry(hash, |q| Arc::ptr_eq(&q.key, &key)) {
            Ok(queued) => queued.remove().0.delta,
            Err(_) => None,
        };
        if self.queue.is_empty() && self.queued.capacity() > KEEP_CAPACITY {
            // A backlog (a partition, a burst) grew the table; sparse, every probe of it
            // would miss the CPU caches from then on.
            self.queued.shrink_to(KEEP_CAPACITY, |q| q.hash);
            self.queue.shrink_to(KEEP_CAPACITY);
        }
        Some(Change { key, hash, delta })
    }

    /// Puts back the changes of a batch that was not acknowledged, at the back (order between
    /// keys does not matter; a key queued again since joins the two deltas).
    pub fn requeue(&mut self, changes: Vec<Change>) {
        for c in changes {
            self.push(&c, false);
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
        self.queue.iter().map(|k| &k.1[..])
    }
}

/// `queued ⊔= new`, where `None` (read the entry) absorbs everything. A newer delta that
/// covers every part of the queued one replaces it without a copy (the common cases: a key
/// written again with SET, or counted again by the same actor).
fn join_into(queued: &mut Option<Arc<Shared>>, new: Option<&Arc<Shared>>) {
    let (Some(q), Some(n)) = (queued.as_mut(), new) else {
        *queued = None;
        return;
    };
    if covers(&n.delta, &q.delta) {
        *q = n.clone();
    } else {
        let mut joined = q.delta.clone();
        Arc::make_mut(&mut joined).join(&n.delta);
        *q = Shared::new(joined);
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

    fn change(key: &[u8], d: EntryDelta) -> Change {
        Change::new(key.into(), Some(Shared::new(Arc::new(d))))
    }

    #[test]
    fn a_key_is_queued_once_and_its_deltas_join() {
        let mut e = Entry::empty();
        let set = e.write_register(Some(b"v1"[..].into()), stamp(10));
        let incr = e.add_int(7, 5, stamp(11));
        let set2 = e.write_register(Some(b"v2"[..].into()), stamp(12));
        let mut q = Changes::default();
        assert!(q.push(&change(b"k", set), false));
        assert!(!q.push(&change(b"k", incr), false));
        assert!(!q.push(&change(b"k", set2), false));
        assert_eq!(q.len(), 1);
        let got = q.pop().unwrap().delta.unwrap();
        // The join carries what the full entry would: the last register and the counter.
        let mut from_deltas = Entry::empty();
        from_deltas.merge(&got.delta);
        assert_eq!(from_deltas.to_delta(), e.to_delta());
        assert!(q.pop().is_none());
    }

    #[test]
    fn a_covering_delta_replaces_the_queued_one_without_a_copy() {
        let mut e = Entry::empty();
        let first = Shared::new(Arc::new(e.add_int(7, 1, stamp(10))));
        let second = Shared::new(Arc::new(e.add_int(7, 1, stamp(11))));
        let other_link = first.clone();
        let mut q = Changes::default();
        let c = |d: &Arc<Shared>| Change::new(b"n"[..].into(), Some(d.clone()));
        q.push(&c(&first), false);
        q.push(&c(&second), false);
        let got = q.pop().unwrap().delta.unwrap();
        assert!(Arc::ptr_eq(&got, &second));
        assert_eq!(
            *other_link.delta, *first.delta,
            "the other link's delta is untouched"
        );
        // Another actor's count is not covered: the queued delta is joined (copied).
        let third = Shared::new(Arc::new(e.add_int(8, 1, stamp(12))));
        q.push(&c(&second), false);
        q.push(&c(&third), false);
        let joined = q.pop().unwrap().delta.unwrap();
        assert!(!Arc::ptr_eq(&joined, &third));
        assert_eq!(joined.delta.contrib.len(), 2);
    }

    #[test]
    fn none_absorbs_and_a_long_queue_stops_keeping_deltas() {
        let mut q = Changes::default();
        let d = Entry::empty().write_register(Some(b"v"[..].into()), stamp(1));
        q.push(&change(b"k", d.clone()), false);
        q.push(&Change::new(b"k"[..].into(), None), false);
        assert!(q.pop().unwrap().delta.is_none());
        for i in 0..DELTAS_MAX + 1 {
            q.push(&change(format!("k{i}").as_bytes(), d.clone()), false);
        }
        let kept = std::iter::from_fn(|| q.pop())
            .filter(|c| c.delta.is_some())
            .count();
        assert_eq!(kept, DELTAS_MAX);
    }
}

//! The per-key entry: register + counter contributions + expiry, and its deltas.
//!
//! Value of a key (DESIGN.md §2): the register bytes; or, when some actor has contributions the
//! register write did not observe and the register is numeric (or absent), the register plus the
//! unobserved sums. Merge: larger stamp for the register (with its observed totals) and for the
//! expiry; per actor, the later (epoch, totals) for contributions (`crdt::counter`).
//!
//! Invariant kept by every constructor, mutator and merge: for every actor, the contributions
//! cover the register's observed totals (a register write ships the contributions it observed in
//! the same delta), so "unobserved" is never negative.
//!
//! A register write may carry a *floor* (an NTP64 time, 0 for none): it also observed what
//! every tombstone stamped at or below the floor observed. The entry remembers what replaced
//! tombstones observed ([`Settled`]) so it can read such writes; see `entry/floor.rs`.
//!
//! This file holds the entry, its register and expiry, and merging; the counter side
//! (contributions, increments, the value a reader sees) is in `entry/counting.rs`, floors and
//! settled totals in `entry/floor.rs`.

mod counting;
mod floor;

use super::counter::Contributions;
use super::settled::Settled;
use super::stamp::Stamp;
use counting::Counters;
use serde::{Deserialize, Serialize};

/// A last-writer-wins register: bytes or a tombstone, the write's stamp, and the counter totals
/// the write observed (and therefore overrides).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Register {
    #[serde(with = "serde_bytes")]
    pub value: Option<Box<[u8]>>,
    pub stamp: Stamp,
    pub observed: Contributions,
    /// The write also observed what every tombstone stamped at or below this NTP64 time
    /// observed (0: nothing more). Last, and left out when 0: an ordinary write encodes
    /// exactly as before floors existed.
    #[serde(default, skip_serializing_if = "floor::is_zero")]
    pub floor: u64,
}

/// A last-writer-wins expiry: an absolute deadline in UNIX milliseconds (or none) and the stamp
/// of the command that set it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expiry {
    pub deadline_ms: Option<u64>,
    pub stamp: Stamp,
}

/// Kinds of concurrent state a merge resolved (see [`Entry::conflicts`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conflicts {
    pub register: bool,
    pub counter: bool,
    pub expiry: bool,
}

/// What one op (or a join of ops) changed: the unit shipped between replicas and regions.
/// Each part is optional; an entry's full state is also a valid delta ([`Entry::to_delta`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EntryDelta {
    pub register: Option<Register>,
    pub contrib: Contributions,
    /// Largest stamp of the ops behind `contrib` (ZERO when there are none).
    pub contrib_stamp: Stamp,
    pub expiry: Option<Expiry>,
    /// What tombstones this delta's register replaced observed (only in full states and joins
    /// of deltas; a single op never carries any). Last, and left out when empty.
    #[serde(default, skip_serializing_if = "Settled::is_empty")]
    pub settled: Settled,
}

impl EntryDelta {
    /// Carries nothing (the default): field by field, without building a default to compare.
    pub fn is_empty(&self) -> bool {
        self.register.is_none()
            && self.contrib.is_empty()
            && self.contrib_stamp == Stamp::ZERO
            && self.expiry.is_none()
            && self.settled.is_empty()
    }

    /// Joins another delta of the same key into this one (deltas form a semilattice too).
    pub fn join(&mut self, o: &EntryDelta) {
        // The losing register settles (if a tombstone that observed something), as in merge.
        match (&mut self.register, &o.register) {
            (Some(mine), Some(theirs)) if theirs.stamp > mine.stamp => {
                floor::settle(&mut self.settled, mine);
                *mine = theirs.clone();
            }
            (Some(mine), Some(theirs)) if theirs.stamp < mine.stamp => {
                floor::settle(&mut self.settled, theirs)
            }
            (None, Some(theirs)) => self.register = Some(theirs.clone()),
            _ => {}
        }
        self.settled.join(&o.settled);
        if let Some(r) = &self.register {
            floor::prune(&mut self.settled, r);
        }
        self.contrib.join(&o.contrib);
        self.contrib_stamp = self.contrib_stamp.max(o.contrib_stamp);
        match (&mut self.expiry, &o.expiry) {
            (Some(mine), Some(theirs)) if theirs.stamp > mine.stamp => *mine = *theirs,
            (None, Some(theirs)) => self.expiry = Some(*theirs),
            _ => {}
        }
    }

    /// The largest stamp anywhere in the delta.
    pub fn max_stamp(&self) -> Stamp {
        let r = self.register.as_ref().map_or(Stamp::ZERO, |r| r.stamp);
        let e = self.expiry.map_or(Stamp::ZERO, |e| e.stamp);
        r.max(e).max(self.contrib_stamp)
    }
}

/// Register bytes up to this size are stored inside the entry (no allocation, no extra cache
/// miss on read); larger values spill to the heap.
pub const INLINE_VALUE: usize = 32;
type ValueBytes = smallvec::SmallVec<[u8; INLINE_VALUE]>;

/// The state of one key. 96 bytes inline; counters live behind a pointer.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Register bytes; empty when `tombstone` (so equal states compare equal).
    value: ValueBytes,
    /// The register holds a tombstone (a DEL or "never written"), not bytes.
    tombstone: bool,
    stamp: Stamp,
    /// Expiry deadline in UNIX ms; 0 means none.
    deadline_ms: u64,
    /// The expiry's stamp when it differs from the register's. A SET writes both with one
    /// stamp, so most keys keep none (8 bytes instead of 16: room for longer inline keys).
    /// Normal form: `None` exactly when the two stamps are equal.
    expiry_stamp: Option<Box<Stamp>>,
    counters: Option<Box<Counters>>,
}

impl Default for Entry {
    fn default() -> Self {
        Entry::empty()
    }
}

impl Entry {
    /// "Never written": a tombstone at the bottom stamp with no expiry.
    pub fn empty() -> Self {
        Entry {
            value: ValueBytes::new(),
            tombstone: true,
            stamp: Stamp::ZERO,
            deadline_ms: 0,
            expiry_stamp: None,
            counters: None,
        }
    }

    /// An entry built from a delta (a key seen for the first time through replication).
    pub fn from_delta(d: &EntryDelta) -> Self {
        let mut e = Entry::empty();
        e.merge(d);
        e
    }

    // ----- reading -----

    /// The register bytes (None for a tombstone), ignoring counters and expiry.
    pub fn register_value(&self) -> Option<&[u8]> {
        (!self.tombstone).then_some(&self.value[..])
    }

    pub fn register_stamp(&self) -> Stamp {
        self.stamp
    }

    pub fn expiry(&self) -> Expiry {
        Expiry {
            deadline_ms: self.deadline(),
            stamp: self.expiry_stamp(),
        }
    }

    /// The stamp of the command that set the expiry.
    pub fn expiry_stamp(&self) -> Stamp {
        self.expiry_stamp.as_deref().copied().unwrap_or(self.stamp)
    }

    fn set_expiry_stamp(&mut self, s: Stamp) {
        self.expiry_stamp = (s != self.stamp).then(|| Box::new(s));
    }

    /// Changes the register stamp, keeping the expiry stamp (and the normal form).
    fn set_register_stamp(&mut self, s: Stamp) {
        let expiry = self.expiry_stamp();
        self.stamp = s;
        self.set_expiry_stamp(expiry);
    }

    pub fn deadline(&self) -> Option<u64> {
        (self.deadline_ms != 0).then_some(self.deadline_ms)
    }

    /// True once the deadline has passed (Redis: `now > when`).
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.deadline_ms != 0 && now_ms > self.deadline_ms
    }

    /// The largest stamp of any part: nothing older than this can change the entry.
    pub fn max_stamp(&self) -> Stamp {
        let c = self.counters.as_ref().map_or(Stamp::ZERO, |c| c.stamp);
        self.stamp.max(self.expiry_stamp()).max(c)
    }

    /// Calls `part` with the address and size of each boxed part of the entry that a merge
    /// reads (an expiry stamp of its own, the counters), so `store::prefetch` can warm them
    /// before the merge. Reads nothing behind the boxes. The value's bytes are left out: a
    /// merge compares stamps and replaces them without reading them.
    pub fn boxed_parts(&self, mut part: impl FnMut(*const u8, usize)) {
        if let Some(s) = &self.expiry_stamp {
            part((&**s as *const Stamp).cast(), size_of::<Stamp>());
        }
        if let Some(c) = &self.counters {
            part((&**c as *const Counters).cast(), size_of::<Counters>());
        }
    }

    /// True when the key has a value now.
    pub fn is_live(&self, now_ms: u64) -> bool {
        if self.is_expired(now_ms) {
            return false;
        }
        !self.tombstone || (self.counters.is_some() && self.unobserved().any)
    }

    // ----- mutators: each returns the delta it produced -----

    /// A register write (SET, DEL, APPEND...): the new bytes (None = tombstone) at `stamp`,
    /// observing every contribution so far.
    pub fn write_register(&mut self, value: Option<&[u8]>, stamp: Stamp) -> EntryDelta {
        self.write_register_floored(value, stamp, 0)
    }

    /// [`Entry::write_register`] with a floor: the NTP64 time of the newest stamp of an entry
    /// this node collected for the key (0: none). See `entry/floor.rs`.
    pub fn write_register_floored(
        &mut self,
        value: Option<&[u8]>,
        stamp: Stamp,
        floor: u64,
    ) -> EntryDelta {
        self.apply_register_floored(value, stamp, floor);
        self.register_delta()
    }

    /// [`Entry::write_register`] without building the delta: the hot path of a node that has
    /// nobody to ship deltas to. The state change is identical.
    #[inline]
    pub fn apply_register(&mut self, value: Option<&[u8]>, stamp: Stamp) {
        self.apply_register_floored(value, stamp, 0)
    }

    /// [`Entry::write_register_floored`] without building the delta.
    #[inline]
    pub fn apply_register_floored(&mut self, value: Option<&[u8]>, stamp: Stamp, floor: u64) {
        debug_assert!(stamp > self.stamp, "a local write must carry a newer stamp");
        let floor = floor.max(self.inherited_floor(stamp));
        debug_assert!(
            floor < stamp.time,
            "a floor lies below the write's own stamp"
        );
        self.settle_register();
        self.set_value(value);
        self.set_register_stamp(stamp);
        if floor != 0 {
            self.counters_mut().floor = floor;
        }
        if let Some(c) = &mut self.counters {
            c.observed = c.contrib.clone();
            c.floor = floor;
        }
        self.prune_settled();
    }

    fn set_value(&mut self, value: Option<&[u8]>) {
        self.value.clear();
        match value {
            Some(v) => {
                if v.len() > INLINE_VALUE || self.value.spilled() {
                    // Exact size: no slack kept from a previous, larger value.
                    self.value = ValueBytes::from_slice(v);
                } else {
                    self.value.extend_from_slice(v);
                }
                self.tombstone = false;
            }
            None => {
                if self.value.spilled() {
                    self.value = ValueBytes::new();
                }
                self.tombstone = true;
            }
        }
    }

    /// The delta of the last register write: the register and the contributions it observed.
    fn register_delta(&self) -> EntryDelta {
        let mut delta = EntryDelta::default();
        if let Some(c) = &self.counters {
            delta.contrib = c.contrib.clone();
            delta.contrib_stamp = c.stamp;
        }
        delta.register = Some(self.register());
        delta
    }

    /// Sets or clears the expiry at `stamp`.
    pub fn write_expiry(&mut self, deadline_ms: Option<u64>, stamp: Stamp) -> EntryDelta {
        EntryDelta {
            expiry: Some(self.set_expiry(deadline_ms, stamp)),
            ..Default::default()
        }
    }

    /// [`Entry::write_expiry`], returning the expiry part alone: a register write's delta (which
    /// has none) takes it as it is, instead of joining a second, expiry-only delta.
    pub fn set_expiry(&mut self, deadline_ms: Option<u64>, stamp: Stamp) -> Expiry {
        self.deadline_ms = deadline_ms.map_or(0, |d| d.max(1));
        self.set_expiry_stamp(stamp);
        self.expiry()
    }

    fn register(&self) -> Register {
        Register {
            value: self.register_value().map(Box::from),
            stamp: self.stamp,
            observed: self
                .counters
                .as_ref()
                .map(|c| c.observed.clone())
                .unwrap_or_default(),
            floor: self.floor(),
        }
    }

    // ----- merging -----

    /// The concurrent state in `d` that merging it into this entry resolves (counted per kind
    /// for operators): an incoming register or expiry that loses to a later stamp here, or
    /// counter contributions where each side holds increments the other has not seen.
    pub fn conflicts(&self, d: &EntryDelta) -> Conflicts {
        let register = d
            .register
            .as_ref()
            .is_some_and(|r| !self.stamp.is_zero() && r.stamp < self.stamp);
        let counter = match &self.counters {
            Some(c) if !d.contrib.is_empty() && !c.contrib.is_empty() => {
                !c.contrib.covers(&d.contrib) && !d.contrib.covers(&c.contrib)
            }
            _ => false,
        };
        let own_expiry = |e: &Expiry| d.register.as_ref().is_none_or(|r| r.stamp != e.stamp);
        let expiry = d
            .expiry
            .as_ref()
            .is_some_and(|e| own_expiry(e) && e.stamp < self.expiry_stamp());
        Conflicts {
            register,
            counter,
            expiry,
        }
    }

    /// Joins a delta (or another entry's full state) into this entry. Returns true if the entry
    /// changed. Commutative, associative and idempotent.
    pub fn merge(&mut self, d: &EntryDelta) -> bool {
        let mut changed = false;
        if let Some(c) = (!d.contrib.is_empty()).then_some(&d.contrib) {
            let mine = self.counters_mut();
            changed |= mine.contrib.join(c);
            mine.stamp = mine.stamp.max(d.contrib_stamp);
        }
        let before = self.settles(d).then(|| self.settled().clone());
        if let Some(r) = &d.register {
            if r.stamp > self.stamp {
                self.settle_register();
                self.set_register_stamp(r.stamp);
                self.set_value(r.value.as_deref());
                if !r.observed.is_empty() || r.floor != 0 || self.counters.is_some() {
                    let c = self.counters_mut();
                    c.observed = r.observed.clone();
                    c.floor = r.floor;
                }
                changed = true;
            } else if r.stamp < self.stamp && floor::settles(r) {
                self.counters_mut()
                    .settled
                    .add_tombstone(&r.observed, r.stamp);
            }
        }
        if let Some(before) = before {
            if !d.settled.is_empty() {
                self.counters_mut().settled.join(&d.settled);
            }
            self.prune_settled();
            changed |= before != *self.settled();
        }
        if let Some(e) = &d.expiry {
            if e.stamp > self.expiry_stamp() {
                self.deadline_ms = e.deadline_ms.map_or(0, |d| d.max(1));
                self.set_expiry_stamp(e.stamp);
                changed = true;
            }
        }
        // Normal form: no empty counter box, so equal states compare equal.
        if self.counters.as_ref().is_some_and(|c| {
            c.contrib.is_empty() && c.observed.is_empty() && c.settled.is_empty() && c.floor == 0
        }) {
            self.counters = None;
        }
        changed
    }

    /// A fingerprint of the whole replicated state (register bytes and stamp, observed and
    /// contributed totals, expiry), equal on every node that holds an equal entry: what repair
    /// compares (see `crdt::digest`). Local bookkeeping (access times, counts) is not part of
    /// an entry, so it cannot make equal states differ.
    pub fn digest(&self) -> u64 {
        let mut m = super::digest::Mix::default();
        let stamp = |m: &mut super::digest::Mix, s: Stamp| {
            m.word(s.time);
            m.word(s.node);
        };
        stamp(&mut m, self.stamp);
        m.word(self.tombstone as u64);
        m.bytes(&self.value);
        m.word(self.deadline_ms);
        stamp(&mut m, self.expiry_stamp());
        if let Some(c) = &self.counters {
            stamp(&mut m, c.stamp);
            for (list, tag) in [(&c.contrib, 1), (&c.observed, 2)] {
                m.word(tag);
                for c in list.iter() {
                    let t = &c.totals;
                    m.word(c.actor);
                    m.word(c.epoch);
                    for v in [t.int_inc, t.int_dec] {
                        m.word(v as u64);
                        m.word((v >> 64) as u64);
                    }
                    m.word(t.float_inc.to_bits());
                    m.word(t.float_dec.to_bits());
                }
            }
            // Only when present, so entries without them digest as before floors existed.
            if c.floor != 0 {
                m.word(3);
                m.word(c.floor);
            }
            for p in c.settled.iter() {
                m.word(4);
                m.word(p.seen.actor);
                m.word(p.seen.epoch);
                stamp(&mut m, p.at);
                let t = &p.seen.totals;
                for v in [t.int_inc, t.int_dec] {
                    m.word(v as u64);
                    m.word((v >> 64) as u64);
                }
                m.word(t.float_inc.to_bits());
                m.word(t.float_dec.to_bits());
            }
        }
        m.finish()
    }

    /// The full state as a delta.
    pub fn to_delta(&self) -> EntryDelta {
        let (contrib, contrib_stamp) = self
            .counters
            .as_ref()
            .map_or((Contributions::new(), Stamp::ZERO), |c| {
                (c.contrib.clone(), c.stamp)
            });
        EntryDelta {
            register: Some(self.register()),
            contrib,
            contrib_stamp,
            expiry: Some(self.expiry()),
            settled: self.settled().clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: u64, n: u64) -> Stamp {
        Stamp::new(t, n)
    }

    #[test]
    fn a_delta_is_empty_only_when_it_carries_nothing() {
        assert!(EntryDelta::default().is_empty());
        let mut e = Entry::empty();
        assert!(!e.write_register(None, s(1, 1)).is_empty());
        assert!(!e.write_expiry(Some(5), s(2, 1)).is_empty());
        assert!(!e.add_int(7, 1, s(3, 1)).is_empty());
        let stamp_only = EntryDelta {
            contrib_stamp: s(4, 1),
            ..Default::default()
        };
        assert!(!stamp_only.is_empty());
    }

    #[test]
    fn expiry_is_last_writer_wins() {
        let mut e = Entry::empty();
        e.write_register(Some(&b"v"[..]), s(1, 1));
        let late = Entry::empty().write_expiry(Some(100), s(5, 2));
        let early = Entry::empty().write_expiry(None, s(4, 1));
        e.merge(&late);
        e.merge(&early);
        assert_eq!(e.deadline(), Some(100));
        assert!(e.is_expired(101) && !e.is_expired(100));
    }

    #[test]
    fn boxed_parts_are_the_counters_a_merge_reads_and_nothing_for_a_plain_register() {
        let parts = |e: &Entry| {
            let mut at = Vec::new();
            e.boxed_parts(|p, len| at.push((p as usize, len)));
            at
        };
        // A SET: register and expiry under one stamp, so no box.
        let mut e = Entry::empty();
        e.write_register(Some(&b"v"[..]), s(1, 1));
        e.write_expiry(None, s(1, 1));
        assert!(parts(&e).is_empty());
        e.add_int(7, 1, s(2, 7));
        let c = e.counters.as_deref().unwrap() as *const Counters as usize;
        assert_eq!(parts(&e), vec![(c, size_of::<Counters>())]);
    }
}

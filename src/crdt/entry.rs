//! The per-key entry: register + counter contributions + expiry, and its deltas.
//!
//! Value of a key (DESIGN.md §2): the register bytes; or, when some actor has contributions the
//! register write did not observe and the register is numeric (or absent), the register plus the
//! unobserved sums. Merge: larger stamp for the register (with its observed totals) and for the
//! expiry; per-actor max for contributions.
//!
//! Invariant kept by every constructor, mutator and merge: for every actor, the contributions
//! cover the register's observed totals (a register write ships the contributions it observed in
//! the same delta), so "unobserved" is never negative.

use super::counter::{Contributions, Totals, Unobserved};
use super::number::{format_float, format_i128, parse_f64, parse_i64};
use super::stamp::{NodeId, Stamp};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// A last-writer-wins register: bytes or a tombstone, the write's stamp, and the counter totals
/// the write observed (and therefore overrides).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Register {
    #[serde(with = "serde_bytes")]
    pub value: Option<Box<[u8]>>,
    pub stamp: Stamp,
    pub observed: Contributions,
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
}

impl EntryDelta {
    /// Joins another delta of the same key into this one (deltas form a semilattice too).
    pub fn join(&mut self, o: &EntryDelta) {
        match (&mut self.register, &o.register) {
            (Some(mine), Some(theirs)) if theirs.stamp > mine.stamp => *mine = theirs.clone(),
            (None, Some(theirs)) => self.register = Some(theirs.clone()),
            _ => {}
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

/// Counter state, boxed because most keys never see an INCR.
#[derive(Clone, Debug, PartialEq)]
struct Counters {
    contrib: Contributions,
    /// Totals observed by the current register write (part of the register).
    observed: Contributions,
    stamp: Stamp,
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

    pub fn contributions(&self) -> Option<(&Contributions, &Contributions, Stamp)> {
        self.counters
            .as_ref()
            .map(|c| (&c.contrib, &c.observed, c.stamp))
    }

    /// The largest stamp of any part: nothing older than this can change the entry.
    pub fn max_stamp(&self) -> Stamp {
        let c = self.counters.as_ref().map_or(Stamp::ZERO, |c| c.stamp);
        self.stamp.max(self.expiry_stamp()).max(c)
    }

    fn unobserved(&self) -> Unobserved {
        match &self.counters {
            Some(c) => c.contrib.unobserved(&c.observed),
            None => Unobserved::default(),
        }
    }

    /// The value a reader sees, ignoring expiry (see the module doc). `None` = no value.
    pub fn value(&self) -> Option<Cow<'_, [u8]>> {
        let base = self.register_value();
        if self.counters.is_none() {
            return base.map(Cow::Borrowed);
        }
        let u = self.unobserved();
        if !u.any {
            return base.map(Cow::Borrowed);
        }
        if !u.has_float {
            let b = match base {
                None => 0i128,
                Some(b) => match parse_i64(b) {
                    Some(v) => v as i128,
                    None => return Some(Cow::Borrowed(b)),
                },
            };
            return Some(Cow::Owned(
                format_i128(b.saturating_add(u.int)).into_bytes(),
            ));
        }
        let b = match base {
            None => 0.0,
            Some(b) => match parse_f64(b) {
                Some(v) => v,
                None => return Some(Cow::Borrowed(b)),
            },
        };
        Some(Cow::Owned(
            format_float(b + u.int as f64 + u.float).into_bytes(),
        ))
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
    pub fn write_register(&mut self, value: Option<Box<[u8]>>, stamp: Stamp) -> EntryDelta {
        self.apply_register(value.as_deref(), stamp);
        self.register_delta()
    }

    /// [`Entry::write_register`] without building the delta: the hot path of a node that has
    /// nobody to ship deltas to. The state change is identical.
    #[inline]
    pub fn apply_register(&mut self, value: Option<&[u8]>, stamp: Stamp) {
        debug_assert!(stamp > self.stamp, "a local write must carry a newer stamp");
        self.set_value(value);
        self.set_register_stamp(stamp);
        if let Some(c) = &mut self.counters {
            c.observed = c.contrib.clone();
        }
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
        self.deadline_ms = deadline_ms.map_or(0, |d| d.max(1));
        self.set_expiry_stamp(stamp);
        EntryDelta {
            expiry: Some(self.expiry()),
            ..Default::default()
        }
    }

    /// Adds an integer (negative = decrement) to `actor`'s contributions.
    /// Adding zero changes nothing and produces an empty delta (see [`Contributions::add_int`]).
    pub fn add_int(&mut self, actor: NodeId, by: i64, stamp: Stamp) -> EntryDelta {
        self.apply_int(actor, by, stamp)
            .map_or_else(EntryDelta::default, |t| self.contrib_delta(actor, t))
    }

    /// Adds a finite float to `actor`'s contributions.
    /// Adding zero (or -0.0) changes nothing and produces an empty delta.
    pub fn add_float(&mut self, actor: NodeId, by: f64, stamp: Stamp) -> EntryDelta {
        self.apply_float(actor, by, stamp)
            .map_or_else(EntryDelta::default, |t| self.contrib_delta(actor, t))
    }

    /// [`Entry::add_int`] without building the delta; returns the actor's new totals.
    pub fn apply_int(&mut self, actor: NodeId, by: i64, stamp: Stamp) -> Option<Totals> {
        (by != 0).then(|| self.bump(stamp, |c| c.add_int(actor, by)))
    }

    /// [`Entry::add_float`] without building the delta; returns the actor's new totals.
    pub fn apply_float(&mut self, actor: NodeId, by: f64, stamp: Stamp) -> Option<Totals> {
        (by != 0.0).then(|| self.bump(stamp, |c| c.add_float(actor, by)))
    }

    fn bump(&mut self, stamp: Stamp, op: impl FnOnce(&mut Contributions) -> Totals) -> Totals {
        let c = self.counters_mut();
        let t = op(&mut c.contrib);
        c.stamp = c.stamp.max(stamp);
        t
    }

    fn contrib_delta(&self, actor: NodeId, t: Totals) -> EntryDelta {
        EntryDelta {
            contrib: Contributions::from_one(actor, t),
            contrib_stamp: self.counters.as_ref().map_or(Stamp::ZERO, |c| c.stamp),
            ..Default::default()
        }
    }

    /// The value as a Redis integer without formatting it (INCR's hot path): `Ok(None)` when
    /// there is no value, `Err(())` when the value is not an integer in i64 range. Always the
    /// same answer as parsing [`Entry::value`].
    #[allow(clippy::result_unit_err)]
    pub fn integer(&self) -> Result<Option<i64>, ()> {
        let u = self.unobserved();
        if u.has_float {
            return self.value().map(|v| parse_i64(&v).ok_or(())).transpose();
        }
        let base = match self.register_value() {
            None => None,
            Some(b) => Some(parse_i64(b).ok_or(())?),
        };
        if !u.any {
            return Ok(base);
        }
        let sum = (base.unwrap_or(0) as i128).saturating_add(u.int);
        i64::try_from(sum).map(Some).map_err(|_| ())
    }

    fn counters_mut(&mut self) -> &mut Counters {
        self.counters.get_or_insert_with(|| {
            Box::new(Counters {
                contrib: Contributions::new(),
                observed: Contributions::new(),
                stamp: Stamp::ZERO,
            })
        })
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
        if let Some(r) = &d.register {
            if r.stamp > self.stamp {
                self.set_register_stamp(r.stamp);
                self.set_value(r.value.as_deref());
                if !r.observed.is_empty() || self.counters.is_some() {
                    self.counters_mut().observed = r.observed.clone();
                }
                changed = true;
            }
        }
        if let Some(e) = &d.expiry {
            if e.stamp > self.expiry_stamp() {
                self.deadline_ms = e.deadline_ms.map_or(0, |d| d.max(1));
                self.set_expiry_stamp(e.stamp);
                changed = true;
            }
        }
        // Normal form: no empty counter box, so equal states compare equal.
        if self
            .counters
            .as_ref()
            .is_some_and(|c| c.contrib.is_empty() && c.observed.is_empty())
        {
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
                for (actor, t) in list.iter() {
                    m.word(*actor);
                    for v in [t.int_inc, t.int_dec] {
                        m.word(v as u64);
                        m.word((v >> 64) as u64);
                    }
                    m.word(t.float_inc.to_bits());
                    m.word(t.float_dec.to_bits());
                }
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
    fn set_then_incr_reads_sum() {
        let mut e = Entry::empty();
        e.write_register(Some(b"10".to_vec().into()), s(1, 1));
        e.add_int(1, 5, s(2, 1));
        assert_eq!(e.value().unwrap().as_ref(), b"15");
        e.write_register(Some(b"x".to_vec().into()), s(3, 1));
        assert_eq!(
            e.value().unwrap().as_ref(),
            b"x",
            "a SET observes every increment"
        );
    }

    #[test]
    fn delete_then_concurrent_incr_keeps_increment() {
        let mut a = Entry::empty();
        let d0 = a.add_int(1, 3, s(1, 1));
        let mut b = Entry::from_delta(&d0);
        let del = a.write_register(None, s(2, 1));
        let inc = b.add_int(2, 4, s(2, 2));
        a.merge(&inc);
        b.merge(&del);
        assert_eq!(a, b);
        assert_eq!(a.value().unwrap().as_ref(), b"4");
    }

    #[test]
    fn non_integer_register_hides_increments() {
        let mut e = Entry::empty();
        e.write_register(Some(b"abc".to_vec().into()), s(1, 1));
        let mut other = Entry::empty();
        let inc = other.add_int(2, 1, s(1, 2));
        e.merge(&inc);
        assert_eq!(e.value().unwrap().as_ref(), b"abc");
    }

    #[test]
    fn adding_zero_changes_nothing() {
        let mut e = Entry::empty();
        assert_eq!(e.add_int(1, 0, s(1, 1)), EntryDelta::default());
        assert_eq!(e.add_float(1, -0.0, s(2, 1)), EntryDelta::default());
        assert_eq!(e, Entry::empty());
        e.add_int(1, 2, s(3, 1));
        let before = e.clone();
        e.add_int(2, 0, s(4, 1));
        assert_eq!(
            e, before,
            "a zero increment leaves no all-zero actor behind"
        );
    }

    #[test]
    fn expiry_is_last_writer_wins() {
        let mut e = Entry::empty();
        e.write_register(Some(b"v".to_vec().into()), s(1, 1));
        let late = Entry::empty().write_expiry(Some(100), s(5, 2));
        let early = Entry::empty().write_expiry(None, s(4, 1));
        e.merge(&late);
        e.merge(&early);
        assert_eq!(e.deadline(), Some(100));
        assert!(e.is_expired(101) && !e.is_expired(100));
    }

    use proptest::prelude::*;

    proptest::proptest! {
        /// INCR's fast path agrees with parsing the formatted value, whatever the state.
        #[test]
        fn integer_agrees_with_value(
            reg in proptest::option::of(proptest::prop_oneof![
                (-1000i64..1000).prop_map(|n| n.to_string()),
                proptest::strategy::Just(i64::MAX.to_string()),
                proptest::strategy::Just("abc".to_string()),
                proptest::strategy::Just("1.5".to_string()),
            ]),
            ops in proptest::collection::vec((1u64..4, -1_000_000i64..1_000_000, proptest::bool::ANY), 0..6),
            big in proptest::bool::ANY,
        ) {
            let mut e = Entry::empty();
            let mut t = 1;
            for (actor, by, float) in &ops {
                t += 1;
                if *float { e.add_float(*actor, *by as f64 / 8.0, s(t, *actor)); } else { e.add_int(*actor, *by, s(t, *actor)); }
            }
            t += 1;
            e.write_register(reg.map(|r| r.into_bytes().into_boxed_slice()), s(t, 9));
            for (actor, by, _) in &ops {
                t += 1;
                e.add_int(*actor, if big { i64::MAX } else { *by }, s(t, *actor));
            }
            let expected = e.value().map(|v| crate::crdt::number::parse_i64(&v).ok_or(())).transpose();
            prop_assert_eq!(e.integer(), expected);
        }
    }
}

//! The counter side of an [`Entry`]: per-actor contributions, the totals the register write
//! observed, the increments that grow them, and the value a reader sees from both.
//!
//! An increment by an actor that holds no contribution of its own in the entry opens a new
//! epoch for that actor at the op's stamp (see `crdt::counter`): the key is new here, or this
//! node collected its entry, or never held it. A node that evicted a key it counted in merges
//! its totals back from the eviction floor before it writes again (`store::evict`), so eviction
//! never opens an epoch.

use super::{Entry, EntryDelta};
use crate::crdt::counter::{Contribution, Contributions, Unobserved};
use crate::crdt::number::{format_float, format_i128, parse_f64, parse_i64};
use crate::crdt::settled::Settled;
use crate::crdt::stamp::{NodeId, Stamp};
use std::borrow::Cow;

/// Counter state, boxed because most keys never see an INCR.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Counters {
    pub(super) contrib: Contributions,
    /// Totals observed by the current register write (part of the register).
    pub(super) observed: Contributions,
    /// Largest stamp of the ops behind `contrib`.
    pub(super) stamp: Stamp,
    /// The current register's floor (part of the register; see `entry/floor.rs`).
    pub(super) floor: u64,
    /// What replaced tombstones observed (see `entry/floor.rs`).
    pub(super) settled: Settled,
}

impl Entry {
    /// (contributions, totals the register write observed, largest stamp of the contributions).
    pub fn contributions(&self) -> Option<(&Contributions, &Contributions, Stamp)> {
        self.counters
            .as_ref()
            .map(|c| (&c.contrib, &c.observed, c.stamp))
    }

    pub(super) fn unobserved(&self) -> Unobserved {
        match &self.counters {
            Some(c) if c.floor == 0 => c.contrib.unobserved(&c.observed),
            Some(c) => c.contrib.unobserved(&self.observed_now()),
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

    /// Adds an integer (negative = decrement) to `actor`'s contributions.
    /// Adding zero changes nothing and produces an empty delta (see [`Contributions::add_int`]).
    pub fn add_int(&mut self, actor: NodeId, by: i64, stamp: Stamp) -> EntryDelta {
        self.apply_int(actor, by, stamp)
            .map_or_else(EntryDelta::default, |c| self.contrib_delta(c))
    }

    /// Adds a finite float to `actor`'s contributions.
    /// Adding zero (or -0.0) changes nothing and produces an empty delta.
    pub fn add_float(&mut self, actor: NodeId, by: f64, stamp: Stamp) -> EntryDelta {
        self.apply_float(actor, by, stamp)
            .map_or_else(EntryDelta::default, |c| self.contrib_delta(c))
    }

    /// [`Entry::add_int`] without building the delta; returns the actor's new contribution.
    pub fn apply_int(&mut self, actor: NodeId, by: i64, stamp: Stamp) -> Option<Contribution> {
        if by == 0 {
            return None;
        }
        self.bump(stamp, |c| c.add_int(actor, by, stamp.time))
    }

    /// [`Entry::add_float`] without building the delta; returns the actor's new contribution.
    pub fn apply_float(&mut self, actor: NodeId, by: f64, stamp: Stamp) -> Option<Contribution> {
        if by == 0.0 {
            return None;
        }
        self.bump(stamp, |c| c.add_float(actor, by, stamp.time))
    }

    /// Before an increment by `actor` on a key its node collected (the collected entry's newest
    /// stamp time `collected`): forgets the actor's contribution if its epoch is at or below
    /// that time, so the increment opens a new epoch, as it would have with nothing held. Such a
    /// contribution came back with a late duplicate; continuing it would count from totals the
    /// other replicas exceed, and the increment would vanish under theirs. Must be followed by a
    /// non-zero increment by `actor` in the same op: the new epoch replaces the old one in every
    /// replica (and in the state before the op), so the op's delta still replays it.
    pub fn retire_epoch(&mut self, actor: NodeId, collected: u64) {
        if let Some(c) = &mut self.counters {
            c.contrib.retire(actor, collected);
        }
    }

    /// Runs a non-zero contribution op, which opens an epoch at the op's stamp time if the actor
    /// has no contribution here, and records the op's stamp.
    fn bump(
        &mut self,
        stamp: Stamp,
        op: impl FnOnce(&mut Contributions) -> Option<Contribution>,
    ) -> Option<Contribution> {
        let c = self.counters_mut();
        let mine = op(&mut c.contrib);
        c.stamp = c.stamp.max(stamp);
        mine
    }

    /// The delta of a contribution op: the actor's whole contribution (epoch and totals).
    fn contrib_delta(&self, c: Contribution) -> EntryDelta {
        EntryDelta {
            contrib: Contributions::from_one(c),
            contrib_stamp: self.counters.as_ref().map_or(Stamp::ZERO, |c| c.stamp),
            ..Default::default()
        }
    }

    pub(super) fn counters_mut(&mut self) -> &mut Counters {
        self.counters.get_or_insert_with(|| {
            Box::new(Counters {
                contrib: Contributions::new(),
                observed: Contributions::new(),
                stamp: Stamp::ZERO,
                floor: 0,
                settled: Settled::default(),
            })
        })
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
        e.write_register(Some(&b"10"[..]), s(1, 1));
        e.add_int(1, 5, s(2, 1));
        assert_eq!(e.value().unwrap().as_ref(), b"15");
        e.write_register(Some(&b"x"[..]), s(3, 1));
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
        e.write_register(Some(&b"abc"[..]), s(1, 1));
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

    /// The demo's bug (docs/operations.md, "Found by the demo"): actor 1 counted 1, a DEL
    /// observed it, actor 1's node collected the tombstone and counted again. A replica still
    /// holding the tombstone must show the new increment.
    #[test]
    fn an_increment_after_collection_is_unobserved_by_the_old_tombstone() {
        let mut a = Entry::empty();
        let first = a.add_int(1, 1, s(1, 1));
        let mut b = Entry::from_delta(&first);
        let del = b.write_register(None, s(2, 2));
        a.merge(&del);
        assert_eq!(a.value(), None);
        // Actor 1's node collects its entry; its next INCR opens a new epoch.
        let mut a = Entry::empty();
        let again = a.add_int(1, 1, s(3, 1));
        assert_eq!(a.value().unwrap().as_ref(), b"1");
        b.merge(&again);
        assert_eq!(b.value().unwrap().as_ref(), b"1", "{b:?}");
        let (c, _, _) = b.contributions().unwrap();
        assert_eq!(c.get(1).map(|c| (c.epoch, c.totals.int_inc)), Some((3, 1)));
        // Holding a contribution of its own again, actor 1 continues that epoch.
        let more = a.add_int(1, 2, s(4, 1));
        let (c, _, _) = a.contributions().unwrap();
        assert_eq!(c.get(1).map(|c| (c.epoch, c.totals.int_inc)), Some((3, 3)));
        b.merge(&more);
        assert_eq!(b.value().unwrap().as_ref(), b"3");
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
            e.write_register(reg.as_deref().map(str::as_bytes), s(t, 9));
            for (actor, by, _) in &ops {
                t += 1;
                e.add_int(*actor, if big { i64::MAX } else { *by }, s(t, *actor));
            }
            let expected = e.value().map(|v| crate::crdt::number::parse_i64(&v).ok_or(())).transpose();
            prop_assert_eq!(e.integer(), expected);
        }
    }
}

//! Counter contributions: per-actor monotonic totals (a PN-counter split by integer and float),
//! each counted within an *epoch*.
//!
//! An actor opens an epoch when it contributes to a key holding no contribution of its own
//! there: a fresh key, or one whose entry this node collected (a tombstone removed once every
//! peer had it) or never held. The epoch is the NTP64 time of that op's stamp, so it is later
//! than every stamp the actor's node had seen, in particular than every tombstone it collected.
//! Without epochs the actor's totals would restart at zero there, and a region still holding
//! the old tombstone would take the new totals for ones its tombstone already observed.
//!
//! Invariants:
//! - an actor's contribution is ordered by (epoch, totals): a later epoch replaces an earlier
//!   one whole, and within an epoch every field of [`Totals`] only grows (increments and
//!   decrements are kept apart, as magnitudes). One actor's history is a chain in that order, so
//!   the join of two contribution sets is the per-actor lexicographic max: a semilattice;
//! - a register that observed an actor's (epoch, totals) has seen none of a later epoch, the
//!   difference within the same epoch, and all of an earlier one ([`Contributions::unobserved`]);
//! - the list is sorted by actor ID and holds no all-zero totals, so equal states compare equal
//!   and every region adds floats in the same order (identical bytes everywhere);
//! - epoch 0 is the epoch of state written before epochs existed (older logs, frames and DUMP
//!   payloads decode with it): below every real epoch, and continued like any other.

use super::stamp::NodeId;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// One actor's monotonic totals within an epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub int_inc: u128,
    pub int_dec: u128,
    /// Sum of positive float increments (never NaN, never negative).
    pub float_inc: f64,
    /// Sum of float decrement magnitudes (never NaN, never negative).
    pub float_dec: f64,
}

impl Totals {
    pub fn join(&mut self, o: &Totals) {
        self.int_inc = self.int_inc.max(o.int_inc);
        self.int_dec = self.int_dec.max(o.int_dec);
        self.float_inc = self.float_inc.max(o.float_inc);
        self.float_dec = self.float_dec.max(o.float_dec);
    }

    /// True when `self` is at least `o` in every field.
    pub fn covers(&self, o: &Totals) -> bool {
        self.int_inc >= o.int_inc
            && self.int_dec >= o.int_dec
            && self.float_inc >= o.float_inc
            && self.float_dec >= o.float_dec
    }

    pub fn is_zero(&self) -> bool {
        *self == Totals::default()
    }
}

/// One actor's contribution: its totals within the epoch it is counting in.
///
/// Serialized (msgpack, compact) as `[actor, totals, epoch]`; the epoch is last and defaults to
/// 0, so the `[actor, totals]` pairs written before epochs existed still decode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    pub actor: NodeId,
    pub totals: Totals,
    /// NTP64 time of the stamp of the op that opened the epoch (0: written before epochs).
    #[serde(default)]
    pub epoch: u64,
}

impl Contribution {
    /// Lexicographic join: a later epoch replaces, the same epoch takes the per-field max.
    /// Returns true if anything grew.
    pub(crate) fn join(&mut self, o: &Contribution) -> bool {
        match o.epoch.cmp(&self.epoch) {
            Ordering::Greater => {
                self.epoch = o.epoch;
                self.totals = o.totals;
                true
            }
            Ordering::Equal if !self.totals.covers(&o.totals) => {
                self.totals.join(&o.totals);
                true
            }
            _ => false,
        }
    }

    /// True when `self` is at least `o` in the (epoch, totals) order.
    pub fn covers(&self, o: &Contribution) -> bool {
        self.epoch > o.epoch || (self.epoch == o.epoch && self.totals.covers(&o.totals))
    }

    /// The totals a register that observed `seen` (this actor's contribution then, if any) has
    /// not seen: all of them from a later epoch, the growth since within the same epoch.
    fn beyond(&self, seen: Option<&Contribution>) -> Totals {
        let base = match seen {
            Some(o) if o.epoch == self.epoch => o.totals,
            // Cannot happen while contributions cover the observed totals; counts nothing.
            Some(o) if o.epoch > self.epoch => self.totals,
            _ => Totals::default(),
        };
        let less = |a: u128, b: u128| a - b.min(a);
        let lessf = |a: f64, b: f64| a - b.min(a);
        Totals {
            int_inc: less(self.totals.int_inc, base.int_inc),
            int_dec: less(self.totals.int_dec, base.int_dec),
            float_inc: lessf(self.totals.float_inc, base.float_inc),
            float_dec: lessf(self.totals.float_dec, base.float_dec),
        }
    }
}

/// Per-actor contributions, sorted by actor. One actor (a region's own node) is the common case
/// and is stored inline: a counter key costs one allocation, not three. 64 bytes an actor.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Contributions(smallvec::SmallVec<[Contribution; 1]>);

impl Contributions {
    pub fn new() -> Self {
        Contributions(smallvec::SmallVec::new())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Contribution> {
        self.0.iter()
    }

    pub fn get(&self, actor: NodeId) -> Option<&Contribution> {
        self.find(actor).ok().map(|i| &self.0[i])
    }

    fn find(&self, actor: NodeId) -> Result<usize, usize> {
        self.0.binary_search_by_key(&actor, |c| c.actor)
    }

    /// Drops `actor`'s contribution if its epoch is at or below `epoch`, so the actor's next
    /// increment opens a new one (see `Entry::retire_epoch`). Returns true if it dropped one.
    pub fn retire(&mut self, actor: NodeId, epoch: u64) -> bool {
        match self.find(actor) {
            Ok(i) if self.0[i].epoch <= epoch => {
                self.0.remove(i);
                true
            }
            _ => false,
        }
    }

    /// The list as decoded, unchecked, as serde's derive takes it (`crdt::msgpack`).
    pub(super) fn decoded(list: smallvec::SmallVec<[Contribution; 1]>) -> Self {
        Contributions(list)
    }

    /// A single contribution (nothing if its totals are zero).
    pub fn from_one(c: Contribution) -> Self {
        if c.totals.is_zero() {
            Contributions::new()
        } else {
            Contributions(smallvec::smallvec![c])
        }
    }

    /// `actor`'s contribution, opening an epoch at `epoch` if it has none.
    fn slot(&mut self, actor: NodeId, epoch: u64) -> &mut Contribution {
        let i = match self.find(actor) {
            Ok(i) => i,
            Err(i) => {
                let fresh = Contribution {
                    actor,
                    epoch,
                    totals: Totals::default(),
                };
                self.0.insert(i, fresh);
                i
            }
        };
        &mut self.0[i]
    }

    /// Adds an integer increment (negative = decrement) to `actor`; returns its contribution.
    /// `epoch` opens a new epoch if the actor has no contribution here (the op's stamp time).
    /// Adding zero inserts nothing: the list never holds all-zero totals (a zero entry would be
    /// dropped by `join`, so replicas holding the same sums would compare unequal).
    pub fn add_int(&mut self, actor: NodeId, by: i64, epoch: u64) -> Option<Contribution> {
        if by == 0 {
            return None;
        }
        let c = self.slot(actor, epoch);
        if by >= 0 {
            c.totals.int_inc += by as u128;
        } else {
            c.totals.int_dec += by.unsigned_abs() as u128;
        }
        Some(*c)
    }

    /// Adds a finite float increment to `actor`; returns its contribution (see `add_int`).
    pub fn add_float(&mut self, actor: NodeId, by: f64, epoch: u64) -> Option<Contribution> {
        debug_assert!(by.is_finite());
        if by == 0.0 {
            return None;
        }
        let c = self.slot(actor, epoch);
        if by >= 0.0 {
            c.totals.float_inc += by;
        } else {
            c.totals.float_dec += -by;
        }
        Some(*c)
    }

    /// Per-actor lexicographic max. Returns true if anything grew.
    pub fn join(&mut self, other: &Contributions) -> bool {
        let mut changed = false;
        for c in &other.0 {
            if c.totals.is_zero() {
                continue;
            }
            match self.find(c.actor) {
                Ok(i) => changed |= self.0[i].join(c),
                Err(i) => {
                    self.0.insert(i, *c);
                    changed = true;
                }
            }
        }
        changed
    }

    /// True when every actor's contribution here is at least that in `o`.
    pub fn covers(&self, o: &Contributions) -> bool {
        o.0.iter()
            .all(|c| self.get(c.actor).is_some_and(|mine| mine.covers(c)))
    }

    /// What the contributions add beyond `observed`, as (integer sum, float sum, any float part,
    /// anything at all). Floats are added in actor order so every region gets the same bits.
    pub fn unobserved(&self, observed: &Contributions) -> Unobserved {
        let mut u = Unobserved::default();
        for c in &self.0 {
            let t = c.beyond(observed.get(c.actor));
            let di = t.int_inc as i128 - t.int_dec as i128;
            if t.int_inc != 0 || t.int_dec != 0 {
                u.any = true;
            }
            if t.float_inc != 0.0 || t.float_dec != 0.0 {
                u.any = true;
                u.has_float = true;
            }
            u.int = u.int.saturating_add(di);
            u.float += t.float_inc - t.float_dec;
        }
        u
    }
}

/// The part of the counter a register write has not observed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Unobserved {
    pub int: i128,
    pub float: f64,
    pub has_float: bool,
    pub any: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(c: &Contributions, actor: NodeId) -> Totals {
        c.get(actor).map(|c| c.totals).unwrap_or_default()
    }

    #[test]
    fn join_is_per_actor_max_and_sorted() {
        let mut a = Contributions::new();
        a.add_int(5, 3, 1);
        a.add_int(1, -2, 1);
        let mut b = Contributions::new();
        b.add_int(5, 7, 1);
        assert!(a.join(&b));
        assert_eq!(totals(&a, 5).int_inc, 7);
        assert_eq!(totals(&a, 1).int_dec, 2);
        assert!(!a.join(&b), "joining twice changes nothing");
        let actors: Vec<_> = a.iter().map(|c| c.actor).collect();
        assert_eq!(actors, vec![1, 5]);
    }

    #[test]
    fn unobserved_subtracts_observed() {
        let mut c = Contributions::new();
        c.add_int(1, 10, 1);
        let observed = c.clone();
        c.add_int(1, 5, 2);
        c.add_int(2, -3, 3);
        let u = c.unobserved(&observed);
        assert_eq!(u.int, 2);
        assert!(u.any && !u.has_float);
        assert!(!c.unobserved(&c).any);
    }

    #[test]
    fn a_later_epoch_replaces_an_earlier_one_whole() {
        // Epoch 10: the actor counted to 5, then its node collected the key; epoch 20 starts
        // over at 1.
        let mut old = Contributions::new();
        old.add_int(1, 5, 10);
        let mut new = Contributions::new();
        new.add_int(1, 1, 20);
        let mut a = old.clone();
        assert!(
            a.join(&new),
            "the later epoch wins although its totals are smaller"
        );
        assert_eq!(a, new);
        let mut b = new.clone();
        assert!(!b.join(&old), "an earlier epoch adds nothing");
        assert!(new.covers(&old) && !old.covers(&new));
        // Within the later epoch, totals grow as usual; the epoch an actor holds is kept.
        a.add_int(1, 2, 30);
        assert_eq!(a.get(1).map(|c| (c.epoch, c.totals.int_inc)), Some((20, 3)));
    }

    #[test]
    fn a_register_observed_none_of_a_later_epoch() {
        let mut c = Contributions::new();
        c.add_int(1, 5, 10);
        let observed = c.clone(); // a DEL observed (10, 5)
        let mut fresh = Contributions::new();
        fresh.add_int(1, 1, 20);
        c.join(&fresh);
        let u = c.unobserved(&observed);
        assert_eq!(
            (u.int, u.any),
            (1, true),
            "the new epoch is unobserved in full"
        );
    }

    #[test]
    fn an_epoch_costs_no_memory() {
        // It fills the padding between the actor ID and the 16-byte aligned totals.
        assert_eq!(std::mem::size_of::<Contribution>(), 64);
        assert_eq!(std::mem::size_of::<(NodeId, Totals)>(), 64);
    }

    #[test]
    fn totals_written_before_epochs_decode_with_epoch_zero() {
        let legacy: Vec<(NodeId, Totals)> = vec![(
            7,
            Totals {
                int_inc: 3,
                ..Totals::default()
            },
        )];
        let bytes = rmp_serde::to_vec(&legacy).unwrap();
        let c: Contributions = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(c.get(7).map(|c| (c.epoch, c.totals.int_inc)), Some((0, 3)));
        // A reader built before epochs refuses the new shape rather than misreading it.
        let now = rmp_serde::to_vec(&c).unwrap();
        assert!(rmp_serde::from_slice::<Vec<(NodeId, Totals)>>(&now).is_err());
    }
}

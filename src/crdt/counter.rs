//! Counter contributions: per-actor monotonic totals (a PN-counter split by integer and float).
//!
//! Invariants:
//! - every field of an actor's [`Totals`] only grows (increments and decrements are kept apart,
//!   as magnitudes), so the join of two contribution sets is the per-actor, per-field max;
//! - the list is sorted by actor ID and holds no all-zero totals, so equal states compare equal
//!   and every region adds floats in the same order (identical bytes everywhere).

use super::stamp::NodeId;
use serde::{Deserialize, Serialize};

/// One actor's monotonic totals.
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

/// Per-actor totals, sorted by actor. One actor (a region's own node) is the common case and
/// is stored inline: a counter key costs one allocation, not three.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Contributions(smallvec::SmallVec<[(NodeId, Totals); 1]>);

impl Contributions {
    pub fn new() -> Self {
        Contributions(smallvec::SmallVec::new())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &(NodeId, Totals)> {
        self.0.iter()
    }

    pub fn get(&self, actor: NodeId) -> Totals {
        match self.0.binary_search_by_key(&actor, |(a, _)| *a) {
            Ok(i) => self.0[i].1,
            Err(_) => Totals::default(),
        }
    }

    fn slot(&mut self, actor: NodeId) -> &mut Totals {
        let i = match self.0.binary_search_by_key(&actor, |(a, _)| *a) {
            Ok(i) => i,
            Err(i) => {
                self.0.insert(i, (actor, Totals::default()));
                i
            }
        };
        &mut self.0[i].1
    }

    /// Adds an integer increment (negative = decrement) to `actor`; returns its new totals.
    /// Adding zero inserts nothing: the list never holds all-zero totals (a zero entry would be
    /// dropped by `join`, so replicas holding the same sums would compare unequal).
    pub fn add_int(&mut self, actor: NodeId, by: i64) -> Totals {
        if by == 0 {
            return self.get(actor);
        }
        let t = self.slot(actor);
        if by >= 0 {
            t.int_inc += by as u128;
        } else {
            t.int_dec += by.unsigned_abs() as u128;
        }
        *t
    }

    /// Adds a finite float increment to `actor`; returns its new totals.
    pub fn add_float(&mut self, actor: NodeId, by: f64) -> Totals {
        debug_assert!(by.is_finite());
        if by == 0.0 {
            return self.get(actor);
        }
        let t = self.slot(actor);
        if by >= 0.0 {
            t.float_inc += by;
        } else {
            t.float_dec += -by;
        }
        *t
    }

    /// Per-actor max. Returns true if anything grew.
    pub fn join(&mut self, other: &Contributions) -> bool {
        let mut changed = false;
        for (actor, t) in &other.0 {
            if t.is_zero() {
                continue;
            }
            let mine = self.slot(*actor);
            if !mine.covers(t) {
                mine.join(t);
                changed = true;
            }
        }
        changed
    }

    /// True when every actor's totals here are at least those in `o`.
    pub fn covers(&self, o: &Contributions) -> bool {
        o.0.iter().all(|(a, t)| self.get(*a).covers(t))
    }

    /// What the contributions add beyond `observed`, as (integer sum, float sum, any float part,
    /// anything at all). Floats are added in actor order so every region gets the same bits.
    pub fn unobserved(&self, observed: &Contributions) -> Unobserved {
        let mut u = Unobserved::default();
        for (actor, t) in &self.0 {
            let o = observed.get(*actor);
            let di = (t.int_inc - o.int_inc.min(t.int_inc)) as i128
                - (t.int_dec - o.int_dec.min(t.int_dec)) as i128;
            let inc_f = t.float_inc - o.float_inc.min(t.float_inc);
            let dec_f = t.float_dec - o.float_dec.min(t.float_dec);
            if t.int_inc != o.int_inc || t.int_dec != o.int_dec {
                u.any = true;
            }
            if inc_f != 0.0 || dec_f != 0.0 {
                u.any = true;
                u.has_float = true;
            }
            u.int = u.int.saturating_add(di);
            u.float += inc_f - dec_f;
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

impl Contributions {
    /// A single actor's totals.
    pub fn from_one(actor: NodeId, t: Totals) -> Self {
        if t.is_zero() {
            Contributions::new()
        } else {
            Contributions(smallvec::smallvec![(actor, t)])
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_is_per_actor_max_and_sorted() {
        let mut a = Contributions::new();
        a.add_int(5, 3);
        a.add_int(1, -2);
        let mut b = Contributions::new();
        b.add_int(5, 7);
        assert!(a.join(&b));
        assert_eq!(a.get(5).int_inc, 7);
        assert_eq!(a.get(1).int_dec, 2);
        assert!(!a.join(&b), "joining twice changes nothing");
        let actors: Vec<_> = a.iter().map(|(x, _)| *x).collect();
        assert_eq!(actors, vec![1, 5]);
    }

    #[test]
    fn unobserved_subtracts_observed() {
        let mut c = Contributions::new();
        c.add_int(1, 10);
        let observed = c.clone();
        c.add_int(1, 5);
        c.add_int(2, -3);
        let u = c.unobserved(&observed);
        assert_eq!(u.int, 2);
        assert!(u.any && !u.has_float);
        assert!(!c.unobserved(&c).any);
    }
}

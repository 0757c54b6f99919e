//! Settled totals: what tombstones observed of each actor, kept after a later register write
//! replaced them, so that a register write carrying a *floor* observes it too (see
//! `crdt::entry`, docs/semantics.md "Floors").
//!
//! A node that collected a key's tombstone no longer knows what it observed; a register write
//! it makes on that key carries a floor instead: the newest stamp time of the entry it
//! collected. Every tombstone stamped at or below the floor had reached the writer before it
//! collected, so the writer had seen everything those tombstones observed; a replica reads the
//! write as observing it. The replica finds it here.
//!
//! Per actor, a [`Point`] is a level the actor's contribution reached (epoch and totals, as a
//! tombstone observed it) and the smallest stamp of a tombstone that observed that level. Join:
//! the higher level wins with its own stamp; the same level keeps the earlier stamp; two
//! incomparable levels (never produced by one actor's history, whose levels form a chain) take
//! the per-field join at the later stamp. Over one actor's chain this is the maximum in the
//! total order (level ascending, stamp descending), so the join of point sets is a semilattice.
//!
//! Invariants:
//! - the list is sorted by actor ID and holds no all-zero level, so equal states compare equal;
//! - a point's level was observed by tombstones stamped at or below its stamp (so reading it
//!   for a floor at or above that stamp claims only what the floor's writer had seen);
//! - an entry stores only points its current register (when a tombstone) does not dominate:
//!   [`Settled::prune`]; the register's own points are implied.

use super::counter::{Contribution, Contributions};
use super::stamp::Stamp;
use serde::{Deserialize, Serialize};

/// One actor's settled level and the earliest tombstone stamp that observed it.
///
/// Serialized (msgpack, compact) as `[contribution, stamp]`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub seen: Contribution,
    pub at: Stamp,
}

impl Point {
    /// Joins `o` (same actor) into `self`; returns true if `self` changed.
    fn join(&mut self, o: &Point) -> bool {
        let up = self.seen.covers(&o.seen);
        let down = o.seen.covers(&self.seen);
        match (up, down) {
            (true, true) if o.at < self.at => {
                self.at = o.at;
                true
            }
            (true, _) => false,
            (false, true) => {
                *self = *o;
                true
            }
            (false, false) => {
                self.seen.join(&o.seen);
                self.at = self.at.max(o.at);
                true
            }
        }
    }
}

/// Settled points, sorted by actor. Empty (no allocation) for almost every key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Settled(Vec<Point>);

impl Settled {
    /// No points (a constant, for entries without counters).
    pub const EMPTY: Settled = Settled(Vec::new());

    /// The points as decoded, unchecked, as serde's derive takes them (`crdt::msgpack`).
    pub(super) fn decoded(points: Vec<Point>) -> Self {
        Settled(points)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Point> {
        self.0.iter()
    }

    /// Joins one point; returns true if anything changed.
    fn add(&mut self, p: Point) -> bool {
        if p.seen.totals.is_zero() {
            return false;
        }
        match self.0.binary_search_by_key(&p.seen.actor, |q| q.seen.actor) {
            Ok(i) => self.0[i].join(&p),
            Err(i) => {
                self.0.insert(i, p);
                true
            }
        }
    }

    /// Joins what a tombstone stamped `at` observed; returns true if anything changed.
    pub fn add_tombstone(&mut self, observed: &Contributions, at: Stamp) -> bool {
        let mut changed = false;
        for c in observed.iter() {
            changed |= self.add(Point { seen: *c, at });
        }
        changed
    }

    /// Joins another point set; returns true if anything changed.
    pub fn join(&mut self, o: &Settled) -> bool {
        let mut changed = false;
        for p in &o.0 {
            changed |= self.add(*p);
        }
        changed
    }

    /// True when joining `o` would change nothing.
    pub fn covers(&self, o: &Settled) -> bool {
        let mut x = self.clone();
        !x.join(o)
    }

    /// Drops the points that the current register, a tombstone stamped `at` that observed
    /// `observed`, dominates (joining its point gives its point): they are implied by it.
    pub fn prune(&mut self, observed: &Contributions, at: Stamp) {
        self.0.retain(|p| {
            let Some(c) = observed.get(p.seen.actor) else {
                return true;
            };
            let mut reg = Point { seen: *c, at };
            reg.join(p)
        });
    }

    /// The levels settled by tombstones stamped at or below `floor` (an NTP64 time).
    pub fn below(&self, floor: u64) -> impl Iterator<Item = &Contribution> {
        self.0
            .iter()
            .filter(move |p| p.at.time <= floor)
            .map(|p| &p.seen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(actor: u64, n: i64, epoch: u64) -> Contributions {
        let mut c = Contributions::new();
        c.add_int(actor, n, epoch);
        c
    }

    fn s(t: u64) -> Stamp {
        Stamp::new(t, 1)
    }

    #[test]
    fn the_same_level_keeps_the_earliest_tombstone_and_a_higher_level_wins() {
        let mut a = Settled::default();
        assert!(a.add_tombstone(&obs(7, 3, 1), s(20)));
        assert!(
            a.add_tombstone(&obs(7, 3, 1), s(10)),
            "earlier stamp, same level"
        );
        assert!(!a.add_tombstone(&obs(7, 3, 1), s(15)));
        assert_eq!(a.below(10).count(), 1);
        assert!(a.add_tombstone(&obs(7, 4, 1), s(30)), "a higher level wins");
        assert_eq!(a.below(29).count(), 0);
        assert_eq!(a.below(30).map(|c| c.totals.int_inc).sum::<u128>(), 4);
        assert!(
            a.add_tombstone(&obs(7, 1, 50), s(40)),
            "a later epoch is higher"
        );
        assert_eq!(a.below(40).map(|c| c.epoch).next(), Some(50));
    }

    #[test]
    fn join_commutes_and_prune_drops_what_the_register_implies() {
        let mut a = Settled::default();
        a.add_tombstone(&obs(1, 3, 1), s(10));
        let mut b = Settled::default();
        b.add_tombstone(&obs(1, 3, 1), s(12));
        b.add_tombstone(&obs(2, 5, 1), s(12));
        let mut ab = a.clone();
        ab.join(&b);
        let mut ba = b.clone();
        ba.join(&a);
        assert_eq!(ab, ba);
        assert!(ab.covers(&a) && ab.covers(&b));
        // A current tombstone at 12 that observed both implies actor 2's point, not actor 1's
        // (which a tombstone at 10 observed already).
        let mut reg = obs(1, 3, 1);
        reg.join(&obs(2, 5, 1));
        ab.prune(&reg, s(12));
        assert_eq!(
            ab.iter().map(|p| (p.seen.actor, p.at)).collect::<Vec<_>>(),
            vec![(1, s(10))]
        );
    }
}

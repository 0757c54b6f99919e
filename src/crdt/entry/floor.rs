//! Floors and settled totals of an [`Entry`]: how a register write made on a key its node
//! collected still observes what the collected tombstone observed.
//!
//! The rule (docs/semantics.md, "Floors"): a register write with floor `F` observes, for every
//! actor, its own observed totals joined with the highest level that tombstones stamped at or
//! below `F` observed of that actor. A node that collected a key's entry writes with `F` = the
//! newest stamp time of that entry (`store::expire` keeps it as a *ghost*): every tombstone at or
//! below it reached the node before the collection, so the write claims only what its node had
//! seen, and the collected tombstone is among them.
//!
//! To read such a write, the entry keeps [`Settled`]: per actor, the highest level a tombstone
//! it ever held observed, with the earliest such tombstone's stamp. It is a join-semilattice
//! (see `crdt::settled`) grown by every tombstone the entry sees, whether the tombstone wins,
//! loses, or is replaced later, so it depends only on the set of writes merged, never on their
//! order. A replaced register's floor is not needed any more; the current register's is kept.
//!
//! Invariants:
//! - the stored points exclude those the current register, when a tombstone, dominates
//!   ([`Settled::prune`]): one normal form for one state;
//! - the effective observed totals ([`Entry::observed_now`]) cover the register's own, and
//!   contributions cover both (settled levels came with their tombstone's contributions);
//! - a write inherits the current register's floor (for [`FLOOR_SPAN`] past it): what the
//!   earlier write observed through it is what replicas read from *their* settled levels, which
//!   may exceed this node's (a node never knows it holds every tombstone at or below a floor),
//!   so observing it explicitly could observe less.

use super::{Entry, EntryDelta, Register};
use crate::crdt::counter::Contributions;
use crate::crdt::settled::Settled;
use crate::crdt::stamp::Stamp;
use std::borrow::Cow;

/// How long past a floor later writes of the key inherit it (one hour, in NTP64 units: the
/// stores keep a ghost that long, `store::expire`). Bounds the writes that carry a floor.
pub const FLOOR_SPAN: u64 = 3600 << 32;

pub(super) fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Whether a register, when replaced or losing, adds settled levels: a tombstone that
/// observed something.
pub(super) fn settles(r: &Register) -> bool {
    r.value.is_none() && !r.observed.is_empty()
}

/// Adds what `r` observed to `settled`, if it settles.
pub(super) fn settle(settled: &mut Settled, r: &Register) {
    if settles(r) {
        settled.add_tombstone(&r.observed, r.stamp);
    }
}

/// Drops the points the current register `r` implies (see [`Settled::prune`]).
pub(super) fn prune(settled: &mut Settled, r: &Register) {
    if r.value.is_none() {
        settled.prune(&r.observed, r.stamp);
    }
}

impl Entry {
    /// The current register's floor (0: none).
    pub fn floor(&self) -> u64 {
        self.counters.as_ref().map_or(0, |c| c.floor)
    }

    /// What replaced tombstones observed (empty for almost every key).
    pub fn settled(&self) -> &Settled {
        static EMPTY: Settled = Settled::EMPTY;
        self.counters.as_ref().map_or(&EMPTY, |c| &c.settled)
    }

    /// The totals the current register observed: its own, joined with the settled levels at or
    /// below its floor.
    pub fn observed_now(&self) -> Cow<'_, Contributions> {
        let Some(c) = &self.counters else {
            return Cow::Owned(Contributions::new());
        };
        let mut below = c.settled.below(c.floor).peekable();
        if c.floor == 0 || below.peek().is_none() {
            return Cow::Borrowed(&c.observed);
        }
        let mut all = c.observed.clone();
        for p in below {
            all.join(&Contributions::from_one(*p));
        }
        Cow::Owned(all)
    }

    /// The floor a new write stamped `stamp` inherits (see the module doc).
    pub(super) fn inherited_floor(&self, stamp: Stamp) -> u64 {
        match &self.counters {
            Some(c) if c.floor != 0 && stamp.time.saturating_sub(c.floor) <= FLOOR_SPAN => c.floor,
            _ => 0,
        }
    }

    /// Whether merging `d` may change the settled levels.
    pub(super) fn settles(&self, d: &EntryDelta) -> bool {
        !d.settled.is_empty()
            || d.register.as_ref().is_some_and(|r| {
                (r.stamp < self.stamp && settles(r))
                    || (r.stamp > self.stamp && (self.current_settles() || r.value.is_none()))
            })
    }

    /// Whether the current register is a tombstone that observed something.
    fn current_settles(&self) -> bool {
        self.tombstone
            && self
                .counters
                .as_ref()
                .is_some_and(|c| !c.observed.is_empty())
    }

    /// Before the current register is replaced: what it observed settles, if a tombstone.
    pub(super) fn settle_register(&mut self) {
        if self.current_settles() {
            let stamp = self.stamp;
            let c = self.counters_mut();
            let observed = std::mem::take(&mut c.observed);
            c.settled.add_tombstone(&observed, stamp);
            c.observed = observed;
        }
    }

    /// Restores the normal form of the settled levels against the current register.
    pub(super) fn prune_settled(&mut self) {
        let (tombstone, stamp) = (self.tombstone, self.stamp);
        if let Some(c) = &mut self.counters {
            if tombstone && !c.settled.is_empty() {
                c.settled.prune(&c.observed, stamp);
            }
        }
    }
}

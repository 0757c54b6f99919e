//! Replication scope and priority on region links (DESIGN.md §3, docs/regions.md "Replication
//! scope and hot keys").
//!
//! - Priority: a change of a hot key (this node's `hot::HotKeys` hot set) goes to the front of
//!   a region link's outbox and waits only for the rest of [`COLD_DELAY`] since the link's last
//!   batch; cold changes wait [`COLD_DELAY`] so a burst of them coalesces into one batch.
//! - Scope: for a key whose `repl-scope` rule says `hot`, a region link ships its full state
//!   only while the key is hot here. A cold key ships an [`Invalidation`] instead: the key and
//!   the newest stamp of our entry, no value. Counter entries (any contributions) always ship in
//!   full, since an increment must never be lost; so do keys whose rule is `all` (the default).
//! - The receiver of an invalidation drops its local copy when every stamp of that copy is older
//!   than the invalidation and the copy holds no counter contributions
//!   (`Keyspace::invalidate`, a local removal like eviction, never replicated back); it also
//!   remembers the stamp for [`GUARD_TTL`], so a full-state delta of the same key no newer than
//!   it, arriving late on another stream or from a third region, is not merged back.
//!
//! Links to replicas in the region are never scoped: a replica must hold everything its primary
//! holds, to take over.

use super::wire::Invalidation;
use crate::crdt::{Entry, Stamp};
use crate::hot::scope::{Scope, ScopeRules};
use crate::hot::HotKeys;
use hashbrown::HashMap;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a region link lets cold changes coalesce before sending (hot ones wait only the
/// rest of it since the last batch). 2 ms: at 10k writes/s, 1 ms left about 18 writes a batch,
/// too few for compression to pay for the frame (1.00-1.04× the payload); 2 ms ships 0.90×
/// for 0.2 ms more visibility lag (docs/benchmarks.md, run H).
pub const COLD_DELAY: Duration = Duration::from_millis(2);
/// How long a received invalidation keeps older full-state deltas of its key out.
pub const GUARD_TTL: Duration = Duration::from_secs(10);
/// Most invalidations remembered at once (older ones are forgotten first).
const GUARD_MAX: usize = 65_536;

/// The node's hot set and `repl-scope` rules, as the region links consult them.
pub struct ScopeState {
    pub hot: Arc<HotKeys>,
    pub rules: ScopeRules,
}

/// How a key's change travels on a region link.
pub enum Ship {
    Full,
    Invalidate(Stamp),
}

impl ScopeState {
    /// Which changes skip the cold delay and jump the queue: those of the keys this hot set
    /// holds (one snapshot for all the changes of a publish).
    pub fn urgent(&self) -> crate::hot::HotSet<'_> {
        self.hot.hot_set()
    }

    /// What a region link sends for `key` holding `entry` (see the module doc).
    pub fn ship(&self, key: &[u8], entry: &Entry) -> Ship {
        if self.rules.all()
            || entry.contributions().is_some()
            || self.rules.scope_of(key) == Scope::All
            || self.hot.is_hot(key)
        {
            Ship::Full
        } else {
            Ship::Invalidate(entry.max_stamp())
        }
    }
}

/// Invalidations received recently: key → (stamp, when).
#[derive(Default)]
pub struct Guard(Mutex<Remembered>);

type Remembered = HashMap<Box<[u8]>, (Stamp, Instant)>;

impl Guard {
    pub fn remember(&self, inv: &Invalidation) {
        let mut g = self.0.lock();
        if g.len() >= GUARD_MAX {
            let now = Instant::now();
            g.retain(|_, v| now.duration_since(v.1) < GUARD_TTL);
            if g.len() >= GUARD_MAX {
                g.clear();
            }
        }
        let e = g
            .entry(inv.key.clone())
            .or_insert((inv.stamp, Instant::now()));
        if inv.stamp >= e.0 {
            *e = (inv.stamp, Instant::now());
        }
    }

    /// Is a full-state delta of `key` whose newest stamp is `newest` already invalidated?
    pub fn blocks(&self, key: &[u8], newest: Stamp) -> bool {
        let g = self.0.lock();
        if g.is_empty() {
            return false;
        }
        g.get(key)
            .is_some_and(|(s, at)| newest <= *s && at.elapsed() < GUARD_TTL)
    }
}

impl super::Replicator {
    /// Installs the hot set and the `repl-scope` rules (at start and on CONFIG SET).
    pub fn set_scope(&self, hot: Arc<HotKeys>, rules: ScopeRules) {
        self.scope.store(Some(Arc::new(ScopeState { hot, rules })));
    }

    /// Is a received full-state entry older than an invalidation of its key we received?
    /// Counter contributions are never held back.
    pub(super) fn invalidated(&self, e: &super::wire::KeyEntry) -> bool {
        e.entry.contrib.is_empty() && self.guard.blocks(&e.key, e.entry.max_stamp())
    }

    /// Applies a batch's invalidations: drops older local copies, remembers the stamps.
    pub(super) fn apply_invalidations(&self, invalidations: &[Invalidation]) {
        if invalidations.is_empty() {
            return;
        }
        let ks = self.ks();
        for inv in invalidations {
            self.guard.remember(inv);
            if ks.invalidate(&inv.key, inv.stamp) {
                self.invalidations_applied
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        self.invalidations_received.fetch_add(
            invalidations.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Invalidations sent over every link so far.
    pub fn invalidations_sent(&self) -> u64 {
        self.links
            .read()
            .values()
            .map(|l| {
                l.invalidations_sent
                    .load(std::sync::atomic::Ordering::Relaxed)
            })
            .sum()
    }
}

//! Active expiry and tombstone collection: a bounded walk over the slots.
//!
//! Each cycle resumes where the previous one stopped and examines at most `budget` entries,
//! holding one slot's lock at a time, so client latency stays flat however many keys are
//! volatile. For each entry:
//! 1. a live-counted key whose deadline passed is uncounted (it reads as absent already);
//! 2. an entry without a value (tombstone or expired) is removed once its newest stamp is older
//!    than the grace period and than the peer watermark: every peer holds it (so nobody still
//!    needs it to learn of the delete), and every peer's deltas up to it have arrived here (so no
//!    concurrent older write can still come and find the key gone). A late *duplicate* of
//!    something already merged is recognised by the sender's delivery promise and dropped
//!    (`Keyspace::merge_from`), so collection never lets an old value come back.
//!
//! An entry collected while it held counter totals leaves a *ghost* in its shard: the newest
//! stamp time of the entry, under the key's hash. This node's next register write of the key
//! carries it as its floor (`crdt::entry` floors, docs/semantics.md): the write observes what
//! the collected tombstone observed, which regions still holding the tombstone know. And this
//! node's increments of the key open a new epoch unless its own contribution's epoch is newer
//! than the ghost: a late duplicate may bring back an old contribution of this node's actor,
//! which it must not continue (its totals would lag what the other regions hold, and the new
//! increments would vanish under them). A ghost costs 24 bytes and goes after
//! [`GHOST_KEEP_MS`].

use super::shard::Shard;
use super::{Keyspace, SLOTS};
use crate::clock::unix_ms;
use crate::crdt::Stamp;
use std::sync::atomic::Ordering::Relaxed;

/// How long a ghost is kept (wall time past its stamp). A region still holding the collected
/// tombstone after this long (a partition of over an hour) would again add back what it
/// observed when this node writes the key (docs/operations.md).
pub const GHOST_KEEP_MS: u64 = 3_600_000;

/// What one cycle did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CycleStats {
    pub examined: usize,
    pub expired: usize,
    pub collected: usize,
    /// Slots visited.
    pub slots: usize,
}

impl Keyspace {
    /// The stamp time at or below which dead entries may be collected now.
    fn collect_watermark(&self, now_ms: u64) -> u64 {
        let by_grace = Stamp::ntp64_from_unix_ms(now_ms.saturating_sub(self.tombstone_grace_ms()));
        by_grace.min(self.peer_watermark.load(Relaxed))
    }

    /// Runs one bounded cycle (see the module doc).
    pub fn expire_cycle(&self, budget: usize) -> CycleStats {
        let now = unix_ms();
        let watermark = self.collect_watermark(now);
        let ghost_horizon = Stamp::ntp64_from_unix_ms(now.saturating_sub(GHOST_KEEP_MS));
        let mut st = CycleStats::default();
        // Keys found expired, for the sinks (client-side caching); only while someone listens.
        let recording = self.recording();
        let mut gone: Vec<Box<[u8]>> = Vec::new();
        let mut cursor = self.expire_cursor.load(Relaxed);
        while st.examined < budget && st.slots < SLOTS {
            let slot = cursor % SLOTS;
            cursor = cursor.wrapping_add(1);
            st.slots += 1;
            let mut shard = self.shards[slot].lock();
            let dead = shard.table.len() - shard.live;
            if shard.volatile == 0 && dead == 0 && shard.ghosts.is_none() {
                continue;
            }
            shard.prune_ghosts(ghost_horizon);
            st.examined += shard.table.len();
            // One pass: uncount keys found expired, drop dead entries the watermark allows.
            let Shard {
                table,
                live,
                volatile,
                digest,
                ghosts,
                ..
            } = &mut *shard;
            let (mut expired, mut collected) = (0, 0);
            table.retain(|n| {
                let dead = !n.entry.is_live(now);
                if dead && n.entry.max_stamp().time <= watermark {
                    if n.entry.contributions().is_some() {
                        let time = n.entry.max_stamp().time;
                        let g = ghosts.get_or_insert_with(Default::default);
                        let g = g.entry(self.hash(&n.key)).or_default();
                        g.time = g.time.max(time);
                        g.floored = false;
                    }
                    *live -= n.counted as usize;
                    *volatile -= n.volatile as usize;
                    let was_expired = n.counted && n.entry.is_expired(now);
                    expired += was_expired as usize;
                    if recording && was_expired {
                        gone.push(Box::from(&n.key[..]));
                    }
                    collected += 1;
                    return false;
                }
                if n.counted && dead {
                    n.counted = false;
                    *live -= 1;
                    if n.volatile {
                        n.volatile = false;
                        *volatile -= 1;
                    }
                    expired += 1;
                    if recording {
                        gone.push(Box::from(&n.key[..]));
                    }
                }
                true
            });
            if collected > 0 {
                *digest = None;
            }
            st.expired += expired;
            st.collected += collected;
            drop(shard);
            self.publish_dropped(&gone);
            gone.clear();
        }
        self.expire_cursor.store(cursor % SLOTS, Relaxed);
        self.stats
            .expired_keys
            .fetch_add(st.expired as u64, Relaxed);
        self.stats
            .tombstones_collected
            .fetch_add(st.collected as u64, Relaxed);
        st
    }
}

//! Invalidations from other regions (`repl-scope hot`, see `repl::scope`): a peer reports that
//! a key changed there, by key and stamp, without the value.
//!
//! The rule keeps every CRDT guarantee of the keys that do replicate in full: the local copy is
//! dropped only when it is a live value whose every stamp is older than the invalidation and
//! which holds no counter contributions. Dropping is a local removal, like eviction — no
//! tombstone, no delta, nothing replicated back — so the next local read misses and the
//! application refills the key here (with a stamp newer than the invalidation, since the stamp
//! is observed on the HLC first). A copy with a newer or equal stamp is a write the sender has
//! not seen: it stays. Tombstones and counters stay: the collector and the counter merge own
//! them.

use super::{key_slot, unix_ms, Keyspace};
use crate::crdt::Stamp;

impl Keyspace {
    /// Drops the local copy of `key` if an invalidation stamped `stamp` supersedes it (see the
    /// module doc); returns whether it did.
    pub fn invalidate(&self, key: &[u8], stamp: Stamp) -> bool {
        // Causality: whatever is written here next must order after the remote change.
        let _ = self.clock.observe(stamp);
        let hash = self.hash(key);
        let mut shard = self.shards[key_slot(key) as usize].lock();
        let drop = shard.find(hash, key).is_some_and(|n| {
            n.entry.contributions().is_none()
                && n.entry.is_live(unix_ms())
                && n.entry.max_stamp() < stamp
        });
        if drop {
            shard.remove(hash, key);
            shard.touch(key);
        }
        drop
    }
}

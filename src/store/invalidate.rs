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
        std::mem::drop(shard);
        if drop {
            // Client-side caches of this node must let go of it too (`tracking`).
            self.publish_dropped(&[Box::from(key)]);
        }
        drop
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Hlc;
    use crate::store::Ttl;
    use std::sync::Arc;
    use std::time::Duration;

    fn keyspace() -> Keyspace {
        Keyspace::new(Arc::new(Hlc::new(1, Duration::from_millis(500))), None)
    }

    fn stamp_of(ks: &Keyspace, key: &[u8]) -> Stamp {
        ks.entry(key).expect("held").max_stamp()
    }

    #[test]
    fn only_an_older_plain_live_copy_is_dropped() {
        let ks = keyspace();
        ks.lock([b"k"]).key(b"k").set_bytes(b"v", Ttl::Clear);
        let s = stamp_of(&ks, b"k");
        let older = Stamp::new(s.time - 1, 9);
        let newer = Stamp::new(s.time + 1, 9);
        // Older or equal: the copy is a write the sender has not seen.
        assert!(!ks.invalidate(b"k", older));
        assert!(!ks.invalidate(b"k", s));
        assert!(ks.entry(b"k").is_some());
        // Newer: dropped locally, and the next local write orders after it.
        assert!(ks.invalidate(b"k", newer));
        assert!(ks.entry(b"k").is_none());
        assert_eq!(ks.dbsize(), 0);
        ks.lock([b"k"]).key(b"k").set_bytes(b"w", Ttl::Clear);
        assert!(stamp_of(&ks, b"k") > newer);
        // A key we do not hold: nothing to do.
        assert!(!ks.invalidate(b"absent", newer));
    }

    #[test]
    fn counters_and_tombstones_stay() {
        let ks = keyspace();
        ks.lock([b"c"]).key(b"c").add_int(5);
        let far = Stamp::new(stamp_of(&ks, b"c").time + (1 << 32), 9);
        assert!(!ks.invalidate(b"c", far));
        ks.lock([b"t"]).key(b"t").set_bytes(b"v", Ttl::Clear);
        ks.lock([b"t"]).key(b"t").delete();
        let far = Stamp::new(stamp_of(&ks, b"t").time + (1 << 32), 9);
        assert!(!ks.invalidate(b"t", far));
        assert!(ks.entry(b"t").is_some(), "the tombstone is the collector's");
    }
}

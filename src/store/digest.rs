//! Per-slot digests of the keyspace: what repair compares between two nodes so that only the
//! slots whose replicated state differs are shipped (see `repl::repair` and docs/regions.md).
//!
//! A slot's digest is the XOR, over every entry the slot holds (live keys, tombstones, expired
//! keys not yet collected), of `key_digest(key, entry.digest())`. XOR makes it independent of
//! table order and lets ranges of slots combine by XOR too.
//!
//! Kept current on write, lazily: every change of a slot passes through `Shard::touch` (or
//! `Shard::remove`, or the collector), which marks the slot's cached digest stale — one store
//! under the slot lock the write already holds, no hashing on the write path. A stale digest is
//! recomputed from the slot's entries the next time a repair asks for it, and cached until the
//! next change. A repair therefore pays for the slots changed since the last one, a write pays
//! nothing measurable.

use super::{Keyspace, SLOTS};
use crate::crdt::digest::key_digest;

impl Keyspace {
    /// The digest of one slot (0 for an empty slot).
    pub fn slot_digest(&self, slot: u16) -> u64 {
        let mut shard = self.shards[slot as usize].lock();
        if let Some(d) = shard.digest {
            return d;
        }
        let d = shard
            .table
            .iter()
            .fold(0, |acc, n| acc ^ key_digest(&n.key, n.entry.digest()));
        shard.digest = Some(d);
        d
    }

    /// The XOR of the digests of slots `first .. first + len` (clamped to the slot space).
    pub fn range_digest(&self, first: u16, len: u16) -> u64 {
        let end = (first as usize + len as usize).min(SLOTS);
        (first as usize..end).fold(0, |acc, s| acc ^ self.slot_digest(s as u16))
    }
}

#[cfg(test)]
mod tests {
    use crate::clock::Hlc;
    use crate::store::{key_slot, Keyspace, Ttl};
    use std::sync::Arc;

    fn ks() -> Keyspace {
        Keyspace::new(
            Arc::new(Hlc::new(1, std::time::Duration::from_millis(500))),
            None,
        )
    }

    #[test]
    fn equal_states_have_equal_digests_and_every_change_shows() {
        let (a, b) = (ks(), ks());
        let slot = key_slot(b"k1");
        assert_eq!(a.slot_digest(slot), 0);
        a.lock_key(b"k1").key(b"k1").set_bytes(b"v1", Ttl::Clear);
        let d1 = a.slot_digest(slot);
        assert_ne!(d1, 0);
        // The same entry merged into another keyspace digests the same.
        let e = a.entry(b"k1").unwrap().to_delta();
        b.merge(b"k1", &e);
        assert_eq!(b.slot_digest(slot), d1);
        // A write, an increment, a TTL change and a delete each change the cached digest.
        let mut seen = vec![d1];
        a.lock_key(b"k1").key(b"k1").set_bytes(b"v2", Ttl::Clear);
        seen.push(a.slot_digest(slot));
        a.lock_key(b"k1")
            .key(b"k1")
            .set_deadline(Some(u64::MAX / 4));
        seen.push(a.slot_digest(slot));
        a.lock_key(b"k1").key(b"k1").delete();
        seen.push(a.slot_digest(slot));
        a.lock_key(b"k1").key(b"k1").add_int(5);
        seen.push(a.slot_digest(slot));
        let mut uniq = seen.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), seen.len(), "{seen:?}");
        // Merging the newer state brings b back to a's digest; ranges combine by XOR.
        b.merge(b"k1", &a.entry(b"k1").unwrap().to_delta());
        assert_eq!(b.slot_digest(slot), a.slot_digest(slot));
        assert_eq!(a.range_digest(slot, 1), a.slot_digest(slot));
        assert_eq!(a.range_digest(0, 16384), a.slot_digest(slot));
    }
}

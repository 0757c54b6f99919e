//! Local removals in the log: a key that left this node without being deleted anywhere (the
//! source side of MIGRATE, or an entry of a slot this node's shard lost, removed by
//! `cluster::runtime::purge`) must not come back from the log or the snapshot after a restart.
//!
//! Why a record of its own: a migration is not a write, so it yields no delta (a tombstone
//! would be replicated and delete the key in every region). Without a record, replay merges the
//! key's old deltas back and the source holds a copy in a slot it no longer owns.
//!
//! Protocol ([`Persist::forget_moved`], called once the target confirmed the move):
//! 1. lock the key's slot, so no command changes the key while we record it;
//! 2. append a removal record, then, if the key is here again (a command re-created it since it
//!    was taken out), a record of its whole current entry;
//! 3. release the lock. A delta produced before step 1 is published before or after our
//!    records: before, the removal drops it and the full entry brings it back; after, merging
//!    it again is harmless (idempotent). A delta produced after step 3 follows our records.
//!
//! Replay applies a removal by dropping the key's entry (`log::replay`). Compaction needs
//! nothing more: the snapshot walks the keyspace, where the key no longer is, and a removal
//! written after the rotation lands in a segment the snapshot's base keeps.

use super::{record, Persist};
use std::sync::atomic::Ordering::Relaxed;

impl Persist {
    /// Records that `keys` moved away from this node (see the module doc): MIGRATE's source, or
    /// the removal of a slot this node's shard lost (`cluster::runtime::purge`). A no-op without
    /// a log: the next snapshot walks the keyspace, where the keys no longer are.
    pub fn forget_moved<K: AsRef<[u8]>>(&self, keys: &[K]) {
        let Some(ks) = self.keyspace.upgrade() else {
            return;
        };
        let guard = self.log.load();
        let Some(log) = guard.as_ref() else {
            self.dirty.fetch_add(keys.len() as u64, Relaxed);
            return;
        };
        let mut buf = Vec::new();
        for key in keys {
            let key = key.as_ref();
            buf.clear();
            let mut txn = ks.lock_key(key);
            let km = txn.key(key);
            record::encode_forget(&mut buf, key);
            if let Some(entry) = km.stored() {
                record::encode(&mut buf, key, &entry.to_delta());
            }
            let written = log.append(&buf);
            drop(km);
            drop(txn);
            self.note_write(written);
        }
        self.dirty.fetch_add(keys.len() as u64, Relaxed);
    }
}

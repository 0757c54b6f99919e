//! One hash slot's share of the keyspace: a hash table of boxed nodes plus the bookkeeping
//! (live-key and volatile-key counts, WATCH versions) that must change under the same lock.
//!
//! Invariants:
//! - `live` = number of nodes with `counted == true`; a node is counted when its entry has a
//!   value and it was not found expired; `volatile` counts counted nodes with a deadline.
//! - A node exists for every key whose entry is not `Entry::empty()`: tombstones stay until the
//!   garbage collector (store::expire) proves no late delta can need them.

use crate::crdt::Entry;
use hashbrown::HashMap;
use hashbrown::HashTable;

/// Keys up to this many bytes live inside the node (no allocation, one cache miss less).
pub const INLINE_KEY: usize = 24;
pub type KeyBytes = smallvec::SmallVec<[u8; INLINE_KEY]>;

/// A key and its CRDT entry: 128 bytes, one allocation for keys up to 24 bytes and values up
/// to 32 (jemalloc's 128-byte class).
pub struct Node {
    pub key: KeyBytes,
    pub entry: Entry,
    /// Counted in `Shard::live` (present and not known to be expired).
    pub counted: bool,
    /// Counted in `Shard::volatile`.
    pub volatile: bool,
}

/// key -> (version, number of watchers).
pub type Watches = HashMap<Box<[u8]>, (u64, u32)>;

#[derive(Default)]
pub struct Shard {
    pub table: HashTable<Box<Node>>,
    pub live: usize,
    pub volatile: usize,
    /// WATCHed keys of this slot. Absent until someone watches.
    pub watched: Option<Box<Watches>>,
}

impl Shard {
    pub fn find(&self, hash: u64, key: &[u8]) -> Option<&Node> {
        self.table.find(hash, |n| &*n.key == key).map(|b| &**b)
    }

    pub fn find_mut(&mut self, hash: u64, key: &[u8]) -> Option<&mut Node> {
        self.table
            .find_mut(hash, |n| &*n.key == key)
            .map(|b| &mut **b)
    }

    /// The node of `key`, inserting an empty one if absent: one probe either way.
    pub fn find_or_insert(
        &mut self,
        hash: u64,
        key: &[u8],
        hasher: impl Fn(&[u8]) -> u64,
    ) -> &mut Node {
        let entry = self
            .table
            .entry(hash, |n| &*n.key == key, |n| hasher(&n.key));
        let occupied = match entry {
            hashbrown::hash_table::Entry::Occupied(o) => o,
            hashbrown::hash_table::Entry::Vacant(v) => v.insert(Box::new(Node {
                key: KeyBytes::from_slice(key),
                entry: crate::crdt::Entry::empty(),
                counted: false,
                volatile: false,
            })),
        };
        occupied.into_mut()
    }

    /// Takes a node out of the table (a local removal, not a delete), keeping counts right.
    pub fn remove(&mut self, hash: u64, key: &[u8]) -> Option<Box<Node>> {
        let found = self.table.find_entry(hash, |n| &*n.key == key).ok()?;
        let (node, _) = found.remove();
        if node.counted {
            self.live -= 1;
        }
        if node.volatile {
            self.volatile -= 1;
        }
        Some(node)
    }

    pub fn insert(&mut self, hash: u64, node: Box<Node>, hasher: impl Fn(&[u8]) -> u64) {
        self.table.insert_unique(hash, node, |n| hasher(&n.key));
    }

    /// Re-derives a node's counted/volatile flags after its entry changed.
    pub fn recount(&mut self, hash: u64, key: &[u8], now_ms: u64) {
        let Some(node) = self.table.find_mut(hash, |n| &*n.key == key) else {
            return;
        };
        let counted = node.entry.is_live(now_ms);
        let volatile = counted && node.entry.deadline().is_some();
        match (node.counted, counted) {
            (false, true) => self.live += 1,
            (true, false) => self.live -= 1,
            _ => {}
        }
        match (node.volatile, volatile) {
            (false, true) => self.volatile += 1,
            (true, false) => self.volatile -= 1,
            _ => {}
        }
        node.counted = counted;
        node.volatile = volatile;
    }

    /// Marks a key modified for WATCH.
    pub fn touch(&mut self, key: &[u8]) {
        if let Some(w) = &mut self.watched {
            if let Some(v) = w.get_mut(key) {
                v.0 += 1;
            }
        }
    }

    /// Bumps every watched key (FLUSHALL).
    pub fn touch_all(&mut self) {
        if let Some(w) = &mut self.watched {
            for v in w.values_mut() {
                v.0 += 1;
            }
        }
    }

    pub fn watch(&mut self, key: &[u8]) -> u64 {
        let w = self.watched.get_or_insert_with(Default::default);
        let v = w.entry(key.into()).or_insert((0, 0));
        v.1 += 1;
        v.0
    }

    pub fn unwatch(&mut self, key: &[u8]) {
        if let Some(w) = &mut self.watched {
            if let Some(v) = w.get_mut(key) {
                v.1 -= 1;
                if v.1 == 0 {
                    w.remove(key);
                }
            }
            if w.is_empty() {
                self.watched = None;
            }
        }
    }

    pub fn watch_version(&self, key: &[u8]) -> u64 {
        self.watched
            .as_ref()
            .and_then(|w| w.get(key))
            .map_or(0, |v| v.0)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn node_fits_the_128_byte_class() {
        assert!(
            std::mem::size_of::<super::Node>() <= 128,
            "{}",
            std::mem::size_of::<super::Node>()
        );
    }
}

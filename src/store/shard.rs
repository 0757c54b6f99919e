//! One hash slot's share of the keyspace: a hash table of boxed nodes plus the bookkeeping
//! (live-key and volatile-key counts, WATCH versions, the SIEVE queue, the counter floors of
//! evicted keys and the ghosts of collected counter keys) that must change under the same lock.
//!
//! Invariants:
//! - `live` = number of nodes with `counted == true`; a node is counted when its entry has a
//!   value and it was not found expired; `volatile` counts counted nodes with a deadline.
//! - A node exists for every key whose entry is not `Entry::empty()`: tombstones stay until the
//!   garbage collector (store::expire) proves no late delta can need them.

use super::evict::Floors;
use super::sieve::Sieve;
use crate::crdt::Entry;
use hashbrown::HashMap;
use hashbrown::HashTable;

/// Keys up to this many bytes live inside the node (no allocation, one cache miss less).
pub const INLINE_KEY: usize = 24;
pub type KeyBytes = smallvec::SmallVec<[u8; INLINE_KEY]>;

/// What the collector leaves of a counter entry it removed (`store::expire`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Ghost {
    /// NTP64 time of the collected entry's newest stamp.
    pub time: u64,
    /// A register write of the key carried it as its floor already.
    pub floored: bool,
}

/// A key and its CRDT entry: 128 bytes, one allocation for keys up to 24 bytes and values up
/// to 32 (jemalloc's 128-byte class).
pub struct Node {
    pub key: KeyBytes,
    pub entry: Entry,
    /// Last access for eviction, in the padding the two flags leave: an LRU clock in
    /// milliseconds (wrapping) or, under LFU policies, Redis's 16-bit minutes + 8-bit log counter
    /// (see `store::access`).
    pub access: u32,
    /// Counted in `Shard::live` (present and not known to be expired).
    pub counted: bool,
    /// Counted in `Shard::volatile`.
    pub volatile: bool,
    /// SIEVE's visited bit: set by every access, cleared by the hand.
    pub visited: bool,
}

impl Node {
    /// A node for a key seen for the first time, last accessed at `access`.
    pub fn new(key: &[u8], entry: Entry, access: u32) -> Self {
        Node {
            key: KeyBytes::from_slice(key),
            entry,
            access,
            counted: false,
            volatile: false,
            visited: false,
        }
    }

    /// The node's address: the identity a SIEVE queue records (compared, never dereferenced).
    pub fn addr(&self) -> usize {
        self as *const Node as usize
    }
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
    /// Insertion order for the SIEVE policy. Absent until that policy first evicts here.
    pub sieve: Option<Box<Sieve>>,
    /// The counter totals of evicted keys. Absent until such a key is evicted.
    pub floors: Option<Box<Floors>>,
    /// Ghosts of collected keys that held counter totals, by key hash (`store::expire`).
    /// Absent until such a key is collected.
    pub ghosts: Option<Box<HashMap<u64, Ghost>>>,
    /// The slot's digest (XOR of `crdt::digest::key_digest` over every node), or `None` when
    /// something changed since it was last computed (see `store::digest`).
    pub digest: Option<u64>,
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

    /// The node of `key`, inserting an empty one (last accessed at `access`) if absent: one
    /// probe either way. A new node is adopted (see [`Shard::insert`]).
    pub fn find_or_insert(
        &mut self,
        hash: u64,
        key: &[u8],
        hasher: impl Fn(&[u8]) -> u64,
        access: u32,
        sieve_epoch: Option<u32>,
    ) -> &mut Node {
        let entry = self
            .table
            .entry(hash, |n| &*n.key == key, |n| hasher(&n.key));
        let occupied = match entry {
            hashbrown::hash_table::Entry::Occupied(o) => o,
            hashbrown::hash_table::Entry::Vacant(v) => {
                let mut o = v.insert(Box::new(Node::new(key, Entry::empty(), access)));
                adopt(
                    &mut self.sieve,
                    &mut self.floors,
                    hash,
                    o.get_mut(),
                    sieve_epoch,
                );
                o
            }
        };
        occupied.into_mut()
    }

    /// Takes a node out of the table (a local removal, not a delete), keeping counts right.
    pub fn remove(&mut self, hash: u64, key: &[u8]) -> Option<Box<Node>> {
        let found = self.table.find_entry(hash, |n| &*n.key == key).ok()?;
        self.digest = None;
        let (node, _) = found.remove();
        if node.counted {
            self.live -= 1;
        }
        if node.volatile {
            self.volatile -= 1;
        }
        Some(node)
    }

    /// Inserts a node for a key not in the table, adopting it: it joins the SIEVE queue (when
    /// that policy runs) and takes back this node's counter totals if the key was evicted.
    pub fn insert(
        &mut self,
        hash: u64,
        mut node: Box<Node>,
        hasher: impl Fn(&[u8]) -> u64,
        sieve_epoch: Option<u32>,
    ) {
        adopt(
            &mut self.sieve,
            &mut self.floors,
            hash,
            &mut node,
            sieve_epoch,
        );
        self.table.insert_unique(hash, node, |n| hasher(&n.key));
    }

    /// The floor of a register write of the key hashing to `hash` (0: none): its ghost's time,
    /// once (later writes inherit it while they need it: `crdt::entry` floors).
    pub fn ghost_floor(&mut self, hash: u64) -> u64 {
        match self.ghosts.as_mut().and_then(|g| g.get_mut(&hash)) {
            Some(g) if !g.floored => {
                g.floored = true;
                g.time
            }
            _ => 0,
        }
    }

    /// The time of the ghost of the key hashing to `hash` (0: none): this node's own counter
    /// epochs opened at or before it belong to the collected entry, and an increment opens a
    /// new one rather than continue one that a late duplicate brought back.
    pub fn ghost_time(&self, hash: u64) -> u64 {
        self.ghosts
            .as_ref()
            .and_then(|g| g.get(&hash))
            .map_or(0, |g| g.time)
    }

    /// Forgets ghosts whose time is at or below `time` (NTP64).
    pub fn prune_ghosts(&mut self, time: u64) {
        if let Some(g) = &mut self.ghosts {
            g.retain(|_, g| g.time > time);
            if g.is_empty() {
                self.ghosts = None;
            }
        }
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

    /// Marks a key modified for WATCH (and the slot's digest stale: every change of an entry
    /// passes here, which is what keeps the digest current).
    pub fn touch(&mut self, key: &[u8]) {
        self.digest = None;
        if let Some(w) = &mut self.watched {
            if let Some(v) = w.get_mut(key) {
                v.0 += 1;
            }
        }
    }

    /// Bumps every watched key (FLUSHALL).
    pub fn touch_all(&mut self) {
        self.digest = None;
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

/// A key (re)appears on this node: restore the counter floor an eviction left (so this actor's
/// totals stay monotonic) and queue it for SIEVE.
fn adopt(
    sieve: &mut Option<Box<Sieve>>,
    floors: &mut Option<Box<Floors>>,
    hash: u64,
    node: &mut Node,
    sieve_epoch: Option<u32>,
) {
    if let Some(f) = floors {
        if let Some(delta) = f.take(&node.key) {
            node.entry.merge(&delta);
        }
        if f.is_empty() {
            *floors = None;
        }
    }
    if let (Some(s), Some(epoch)) = (sieve, sieve_epoch) {
        s.admit(epoch, hash, node.addr());
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

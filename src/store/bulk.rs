//! Reads and removals over whole slots or the whole keyspace, and copies of single entries:
//! introspection (EXPLAIN, OBJECT), the full-state reads of replication repair, the local purge
//! of slots a node lost, DBSIZE/INFO counts, SCAN, RANDOMKEY and FLUSHALL. Kept apart from the
//! command path (`Txn`, `KeyMut`) because none of it runs per write.
//!
//! Invariant: everything here takes one slot lock at a time, never two, so it cannot deadlock
//! with a command holding several.

use super::*;

impl Keyspace {
    /// A copy of a key's entry (live or not), for introspection and full-state exchange.
    pub fn entry(&self, key: &[u8]) -> Option<Entry> {
        let shard = self.shards[key_slot(key) as usize].lock();
        shard.find(self.hash(key), key).map(|n| n.entry.clone())
    }

    /// A live key's access word and value, without touching it (OBJECT).
    pub fn peek(&self, key: &[u8]) -> Option<Peek> {
        let shard = self.shards[key_slot(key) as usize].lock();
        let n = shard.find(self.hash(key), key)?;
        let now = unix_ms();
        n.entry.is_live(now).then(|| Peek {
            access: n.access,
            value: n.entry.value().map(|v| Box::from(&*v)).unwrap_or_default(),
        })
    }

    /// Every key's full state in one slot (anti-entropy and tests).
    pub fn slot_entries(&self, slot: u16) -> Vec<(Box<[u8]>, Entry)> {
        let shard = self.shards[slot as usize].lock();
        shard
            .table
            .iter()
            .map(|n| (Box::from(&n.key[..]), n.entry.clone()))
            .collect()
    }

    /// Entries held in one slot, tombstones included (one lock, no walk).
    pub fn slot_len(&self, slot: u16) -> usize {
        self.shards[slot as usize].lock().table.len()
    }

    /// Stamp time (NTP64) up to which every peer has acknowledged this node's changes
    /// ([`Keyspace::STANDALONE`] without peers): eviction's bound, see `set_watermarks`.
    pub fn acked_watermark(&self) -> u64 {
        self.acked_watermark.load(Relaxed)
    }

    /// Takes up to `max` entries of `slot` out of this node, tombstones included, without
    /// deleting them anywhere else: the local removal of keys in a slot this node no longer
    /// serves (`cluster::runtime::purge`). Like eviction, only entries whose every stamp is at
    /// or below `watermark` go (every peer holds them); any entry when it is
    /// [`Keyspace::STANDALONE`]. No delta; WATCH and client-side caching see the keys change,
    /// as with MIGRATE. Returns the keys taken and the entries left in the slot.
    pub fn purge_slot(&self, slot: u16, max: usize, watermark: u64) -> (Vec<Box<[u8]>>, usize) {
        let mut txn = self.lock_slots(&[slot]);
        let keys: Vec<Box<[u8]>> = txn.guards[0]
            .1
            .table
            .iter()
            .filter(|n| watermark == Self::STANDALONE || n.entry.max_stamp().time <= watermark)
            .take(max)
            .map(|n| Box::from(&n.key[..]))
            .collect();
        for k in &keys {
            txn.key(k).take();
        }
        let left = txn.guards[0].1.table.len();
        (keys, left)
    }

    /// Number of keys with a value (like Redis, expired keys count until found expired).
    pub fn dbsize(&self) -> usize {
        self.shards.iter().map(|s| s.lock().live).sum()
    }

    /// (keys, keys with a TTL, entries held including tombstones).
    pub fn counts(&self) -> (usize, usize, usize) {
        self.shards.iter().fold((0, 0, 0), |(l, v, n), s| {
            let s = s.lock();
            (l + s.live, v + s.volatile, n + s.table.len())
        })
    }

    /// Visits the live keys of slots starting at `cursor` until at least `count` keys were
    /// visited or the slots ran out. Returns the next cursor (0 when done). Each slot is visited
    /// whole under its lock, so a key present for the whole scan is returned at least once.
    pub fn scan(
        &self,
        mut cursor: usize,
        count: usize,
        mut visit: impl FnMut(&[u8], &Entry),
    ) -> usize {
        let now = unix_ms();
        let mut seen = 0;
        while cursor < SLOTS && seen < count.max(1) {
            let shard = self.shards[cursor].lock();
            for n in shard.table.iter() {
                if n.entry.is_live(now) {
                    visit(&n.key, &n.entry);
                    seen += 1;
                }
            }
            cursor += 1;
        }
        if cursor >= SLOTS {
            0
        } else {
            cursor
        }
    }

    /// A random live key, if any.
    pub fn random_key(&self) -> Option<Box<[u8]>> {
        use rand::Rng;
        let now = unix_ms();
        let mut rng = rand::thread_rng();
        let start = rng.gen_range(0..SLOTS);
        for i in 0..SLOTS {
            let shard = self.shards[(start + i) % SLOTS].lock();
            if shard.live == 0 {
                continue;
            }
            let live: Vec<&Node> = shard
                .table
                .iter()
                .map(|b| &**b)
                .filter(|n| n.entry.is_live(now))
                .collect();
            if !live.is_empty() {
                return Some(live[rng.gen_range(0..live.len())].key[..].into());
            }
        }
        None
    }

    /// Deletes every live key: a tombstone per key, so the flush replicates like DELs would.
    pub fn flush(&self) -> usize {
        let mut deleted = 0;
        for slot in 0..SLOTS as u16 {
            let keys: Vec<Box<[u8]>> = {
                let shard = self.shards[slot as usize].lock();
                if shard.live == 0 && shard.watched.is_none() {
                    continue;
                }
                shard
                    .table
                    .iter()
                    .filter(|n| n.counted)
                    .map(|n| Box::<[u8]>::from(&n.key[..]))
                    .collect()
            };
            let mut txn = self.lock_slots(&[slot]);
            txn.guards[0].1.touch_all();
            for k in &keys {
                if txn.key(k).delete() {
                    deleted += 1;
                }
            }
        }
        deleted
    }
}

#[cfg(test)]
mod purge_tests {
    use super::*;
    use crate::clock::Hlc;
    use std::time::Duration;

    /// Counts what the keyspace publishes.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl DeltaSink for Count {
        fn publish(&self, deltas: Vec<Delta>, _origin: Origin) {
            self.0.fetch_add(deltas.len(), Relaxed);
        }
    }

    #[test]
    fn a_slot_purge_is_local_bounded_and_waits_for_the_watermark() {
        let sink = Arc::new(Count::default());
        let ks = Keyspace::new(Arc::new(Hlc::new(1, Duration::from_millis(500))), None);
        ks.add_sink(sink.clone());
        for k in [&b"{s}a"[..], b"{s}b", b"{s}c", b"elsewhere"] {
            ks.lock([k]).key(k).set_bytes(b"v", Ttl::Clear);
        }
        ks.lock([b"{s}c"]).key(b"{s}c").delete();
        let slot = key_slot(b"{s}");
        assert_ne!(slot, key_slot(b"elsewhere"));
        assert_eq!(
            (ks.slot_len(slot), ks.dbsize()),
            (3, 3),
            "a tombstone is held, not live"
        );
        let published = sink.0.load(Relaxed);
        let newest = ks
            .slot_entries(slot)
            .iter()
            .map(|(_, e)| e.max_stamp().time)
            .max()
            .unwrap();
        // Entries newer than what every peer acknowledged stay.
        assert_eq!(ks.purge_slot(slot, 10, newest - 1).0.len(), 2);
        assert_eq!(ks.slot_len(slot), 1);
        // Bounded: one per call here; tombstones go too.
        let (taken, left) = ks.purge_slot(slot, 1, newest);
        assert_eq!((taken.len(), left), (1, 0));
        assert_eq!(ks.purge_slot(slot, 1, Keyspace::STANDALONE), (vec![], 0));
        assert_eq!(ks.dbsize(), 1, "the other slot is untouched");
        assert!(ks.entry(b"elsewhere").is_some());
        assert_eq!(sink.0.load(Relaxed), published, "a purge is not a write");
    }
}

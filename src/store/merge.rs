//! Merging deltas received from other nodes (replicas, peer regions, migration imports) into
//! the keyspace, one at a time or a peer's batch at once.
//!
//! Steps of a merge (the order matters):
//! 1. Every stamp of the delta is observed by the HLC (rule 2 of `clock`), before the entry
//!    changes: a command that reads the merged value and writes after it stamps later.
//! 2. The delta is joined into the key's entry under its slot lock, or dropped as stale (see
//!    [`Keyspace::merge_from`]).
//! 3. A change is published with its origin after the lock is released, so replication sends
//!    it on to every other link but not back.
//!
//! A batch ([`Keyspace::merge_batch`]) does step 1 for all its entries with one reading of the
//! clock, and holds step 3's publication to replication until its last entry (`store::held`):
//! per entry that was two clock reads per stamp and a lock of every outbox, which made a
//! receiving node spend more per write than the node that took the write from its client.
//! It merges its entries in groups whose keys are first warmed in the caches together
//! (`store::prefetch`): a receiver's merges were mostly waiting on memory, one key at a time.

use super::shard::Node;
use super::{access, key_slot, unix_ms, Delta, Keyspace, MergeOutcome, Origin};
use crate::clock::SkewAlarm;
use crate::crdt::{Entry, EntryDelta};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

impl Keyspace {
    /// Merges a delta that came from no particular peer (a migration import, a replay); a
    /// change is published to every replication link. Never dropped as stale.
    pub fn merge(&self, key: &[u8], delta: &EntryDelta) -> (MergeOutcome, Option<SkewAlarm>) {
        self.merge_from(Origin::Local, key, delta, 0)
    }

    /// Merges a delta received from a replica or a peer region. A change is published to the
    /// sink tagged with its origin, so it travels on to every other link but not back.
    ///
    /// `delivered_below` is the sender's promise that every delta it would send us stamped at
    /// or below it has already reached us (0: no promise). A delta within the promise, for a
    /// key we no longer hold, is therefore a late duplicate of something we merged and then
    /// removed (a collected tombstone, an evicted or migrated key): it is dropped as stale, so
    /// a duplicated old value can never resurrect a collected key. Nothing else is dropped:
    /// a delta we have not seen before always lands, whatever its age.
    ///
    /// A register write with a floor that this node reads as observing settled totals the
    /// delta does not carry (`crdt::entry` floors: its writer collected the key) is published
    /// as this node's whole entry, to every link including the writer's: so the writer learns
    /// them too, and reads increments that reach it through them.
    pub fn merge_from(
        &self,
        origin: Origin,
        key: &[u8],
        delta: &EntryDelta,
        delivered_below: u64,
    ) -> (MergeOutcome, Option<SkewAlarm>) {
        // 1.
        let alarm = self.clock.observer().check(delta.max_stamp()).err();
        // 2. and 3. (the delta is copied only if it changed something)
        let share = || Arc::new(delta.clone());
        let outcome = self.merge_one(origin, key, delta, share, delivered_below, unix_ms());
        (outcome, alarm)
    }

    /// Merges a batch of deltas from `origin` (see [`Keyspace::merge_from`] for each one);
    /// returns how many entries carried a stamp that raised a skew alarm. Keys and deltas
    /// come as the wire decoded them: a change publishes the delta without a copy.
    pub fn merge_batch(
        &self,
        origin: Origin,
        entries: &[(&Arc<[u8]>, &Arc<EntryDelta>)],
        delivered_below: u64,
    ) -> u64 {
        // 1. Every stamp against one clock reading; the HLC moves when `observer` drops.
        let mut alarms = 0;
        {
            let mut observer = self.clock.observer();
            for (_, delta) in entries {
                alarms += observer.check(delta.max_stamp()).is_err() as u64;
            }
        }
        // 2. and 3., the batch's changes reaching replication together.
        let now = unix_ms();
        let _held = self.hold_publish_as(origin);
        for group in entries.chunks(super::prefetch::GROUP) {
            self.prefetch(group.iter().map(|(key, _)| &key[..]));
            for &(key, delta) in group {
                let share = || delta.clone();
                self.merge_one(origin, key, delta, share, delivered_below, now);
            }
        }
        alarms
    }

    /// Steps 2 and 3 of a merge. A change publishes the delta `share` gives (called only then:
    /// a merge that changes nothing costs no copy).
    fn merge_one(
        &self,
        origin: Origin,
        key: &[u8],
        delta: &EntryDelta,
        share: impl FnOnce() -> Arc<EntryDelta>,
        delivered_below: u64,
        now: u64,
    ) -> MergeOutcome {
        let slot = key_slot(key);
        let hash = self.hash(key);
        let mut shard = self.shards[slot as usize].lock();
        let mut whole = None;
        let outcome = match shard.find_mut(hash, key) {
            Some(node) => {
                let c = node.entry.conflicts(delta);
                for (hit, n) in [
                    (c.register, &self.stats.conflicts_register),
                    (c.counter, &self.stats.conflicts_counter),
                    (c.expiry, &self.stats.conflicts_expiry),
                ] {
                    if hit {
                        n.fetch_add(1, Relaxed);
                    }
                }
                let floor = delta
                    .register
                    .as_ref()
                    .filter(|r| r.floor != 0 && r.stamp > node.entry.register_stamp())
                    .map(|r| r.floor);
                if node.entry.merge(delta) {
                    let e = &node.entry;
                    whole = floor
                        .filter(|&f| e.settled().below(f).next().is_some())
                        .filter(|_| !delta.settled.covers(e.settled()))
                        .map(|_| e.to_delta());
                    MergeOutcome::Changed
                } else {
                    MergeOutcome::Unchanged
                }
            }
            None if delta.max_stamp().time <= delivered_below => MergeOutcome::Stale,
            None => {
                let access = access::fresh(self.evict.policy().is_lfu(), now);
                let node = Node::new(key, Entry::from_delta(delta), access);
                let epoch = self.evict.sieve_epoch();
                shard.insert(hash, Box::new(node), |k| self.hash(k), epoch);
                MergeOutcome::Changed
            }
        };
        match outcome {
            MergeOutcome::Changed => {
                shard.recount(hash, key, now);
                shard.touch(key);
                self.stats.merges_applied.fetch_add(1, Relaxed);
            }
            MergeOutcome::Unchanged => {
                self.stats.merges_noop.fetch_add(1, Relaxed);
            }
            MergeOutcome::Stale => {
                self.stats.merges_dropped_stale.fetch_add(1, Relaxed);
            }
        }
        drop(shard);
        if outcome == MergeOutcome::Changed && self.recording() {
            let (entry, origin) = match whole {
                Some(full) => (Arc::new(full), Origin::Local),
                None => (share(), origin),
            };
            let key = super::DeltaKey::from_slice(key);
            let delta = Delta { slot, key, entry };
            self.publish(smallvec::smallvec![delta], origin);
        }
        outcome
    }
}

//! [`KeyMut`]: everything a command may do to one key inside a locked slot.
//!
//! It turns Redis-level intents (set with a TTL rule, delete, increment, change the deadline)
//! into CRDT ops on the entry, stamps them with one fresh HLC stamp per key per command, keeps
//! the shard's counts and WATCH versions current, and records the delta on drop.
//!
//! Expiry is lazy here: a key whose deadline passed reads as absent, and the first write to it
//! first writes the tombstone that "expired" means (so increments made before the deadline are
//! observed and not resurrected), exactly what every other region computes from the same
//! replicated deadline.

use super::shard::Shard;
use super::{Delta, Deltas, Keyspace};
use crate::crdt::{Entry, EntryDelta, Stamp};
use std::borrow::Cow;
use std::sync::atomic::Ordering::Relaxed;

/// What a register write does to the key's time to live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// Keep the current deadline (SET KEEPTTL, APPEND, SETRANGE, INCR...).
    Keep,
    /// Remove any deadline (plain SET).
    Clear,
    /// Expire at this UNIX time in milliseconds.
    At(u64),
}

/// A counter increment.
#[derive(Clone, Copy)]
enum Bump {
    Int(i64),
    Float(f64),
}

pub struct KeyMut<'t> {
    ks: &'t Keyspace,
    shard: &'t mut Shard,
    slot: u16,
    key: &'t [u8],
    hash: u64,
    now_ms: u64,
    out: Option<&'t mut Deltas>,
    stamp: Option<Stamp>,
    /// The command's delta for this key, already in the allocation every sink shares (an
    /// `EntryDelta` is 300 bytes: moving it out again on drop was a copy per write).
    pending: Option<std::sync::Arc<EntryDelta>>,
    changed: bool,
}

impl<'t> KeyMut<'t> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        ks: &'t Keyspace,
        shard: &'t mut Shard,
        slot: u16,
        key: &'t [u8],
        hash: u64,
        now_ms: u64,
        out: Option<&'t mut Deltas>,
    ) -> Self {
        KeyMut {
            ks,
            shard,
            slot,
            key,
            hash,
            now_ms,
            out,
            stamp: None,
            pending: None,
            changed: false,
        }
    }

    pub fn key(&self) -> &[u8] {
        self.key
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The entry, if the key has a value now. Notes lazily found expirations.
    pub fn live(&mut self) -> Option<&Entry> {
        let (hash, key, now) = (self.hash, self.key, self.now_ms);
        let node = self.shard.find_mut(hash, key)?;
        if node.entry.is_live(now) {
            self.ks.evict.tracking().touch(node, now);
            return self.shard.find(hash, key).map(|n| &n.entry);
        }
        if node.counted && node.entry.is_expired(now) {
            self.shard.recount(hash, key, now);
            self.ks.stats.expired_keys.fetch_add(1, Relaxed);
            self.ks.publish_dropped(&[Box::from(key)]);
        }
        None
    }

    pub fn exists(&mut self) -> bool {
        self.live().is_some()
    }

    /// The value, if live. Commands that compute from the current value (every write that
    /// reads it) first take back this node's counter totals if the key was evicted here.
    pub fn value(&mut self) -> Option<Cow<'_, [u8]>> {
        self.resume_evicted();
        self.live().and_then(|e| e.value())
    }

    /// If the key was evicted from this node while holding counter totals, puts them back (see
    /// `store::evict`): a counter evicted at 10 answers INCR with 11, the value its replicas
    /// converge to, not 1 — which their larger totals would mask; and a SET observes them.
    fn resume_evicted(&mut self) {
        let absent = self
            .shard
            .floors
            .as_ref()
            .is_some_and(|f| f.holds(self.key))
            && self.shard.find(self.hash, self.key).is_none();
        if absent {
            self.entry_mut();
            self.changed = true;
        }
    }

    /// The value for a read command: counts keyspace hits and misses.
    pub fn read(&mut self) -> Option<Cow<'_, [u8]>> {
        if self.ks.evict.policy() == super::Policy::AllkeysTinyLfu {
            self.ks.evict.tinylfu.record(self.hash);
        }
        let stats = &self.ks.stats;
        let v = self.live().and_then(|e| e.value());
        if v.is_some() {
            &stats.hits
        } else {
            &stats.misses
        }
        .fetch_add(1, Relaxed);
        v
    }

    /// `None` if the key has no value; `Some(None)` if it has no deadline.
    pub fn deadline(&mut self) -> Option<Option<u64>> {
        self.live().map(|e| e.deadline())
    }

    // ----- writes -----

    fn stamp(&mut self) -> Stamp {
        let ks = self.ks;
        *self.stamp.get_or_insert_with(|| ks.clock.now())
    }

    fn entry_mut(&mut self) -> &mut Entry {
        let ks = self.ks;
        if ks.evict.policy() == super::Policy::AllkeysTinyLfu
            && self.shard.find(self.hash, self.key).is_none()
        {
            ks.evict.tinylfu.newcomer(self.slot, self.hash, self.key);
        }
        let access = super::access::fresh(ks.evict.policy().is_lfu(), self.now_ms);
        let epoch = ks.evict.sieve_epoch();
        &mut self
            .shard
            .find_or_insert(self.hash, self.key, |k| ks.hash(k), access, epoch)
            .entry
    }

    /// Writes the register (`Some(bytes or None for a tombstone)`) and/or the expiry
    /// (`Some(deadline or None)`) at this command's stamp, in one probe. The delta is built
    /// only when someone will receive it.
    ///
    /// A register write of a key whose counter entry this node collected carries the ghost's
    /// floor (`store::expire`): it observes what the collected tombstone observed.
    fn write(&mut self, register: Option<Option<&[u8]>>, expiry: Option<Option<u64>>) {
        let s = self.stamp();
        let recording = self.out.is_some();
        let floor = match register {
            Some(_) => self.shard.ghost_floor(self.hash).min(s.time - 1),
            None => 0,
        };
        let e = self.entry_mut();
        if recording {
            let mut d = match register {
                Some(v) => e.write_register_floored(v, s, floor),
                None => EntryDelta::default(),
            };
            if let Some(x) = expiry {
                // A register's delta carries no expiry: joining one is setting it.
                debug_assert!(d.expiry.is_none());
                d.expiry = Some(e.set_expiry(x, s));
            }
            self.record(d);
        } else {
            if let Some(v) = register {
                e.apply_register_floored(v, s, floor);
            }
            if let Some(x) = expiry {
                e.write_expiry(x, s);
            }
            self.changed = true;
        }
    }

    fn record(&mut self, d: EntryDelta) {
        if d.is_empty() {
            return;
        }
        self.changed = true;
        if self.out.is_some() {
            match &mut self.pending {
                Some(p) => std::sync::Arc::make_mut(p).join(&d),
                None => self.pending = Some(std::sync::Arc::new(d)),
            }
        }
    }

    /// Merges a received full entry or delta (RESTORE, a migration import): every stamp is
    /// observed by the clock, never re-stamped. Returns whether the key changed.
    pub fn merge(&mut self, d: &EntryDelta) -> bool {
        let ks = self.ks;
        for s in [
            d.register.as_ref().map(|r| r.stamp),
            d.expiry.map(|e| e.stamp),
        ]
        .into_iter()
        .flatten()
        .chain([d.contrib_stamp])
        .filter(|s| !s.is_zero())
        {
            let _ = ks.clock.observe(s);
        }
        let changed = self.entry_mut().merge(d);
        if changed {
            self.record(d.clone());
        }
        changed
    }

    /// The whole entry of a live key (DUMP).
    pub fn snapshot(&mut self) -> Option<Entry> {
        self.live().cloned()
    }

    /// The entry as stored, tombstones and passed deadlines included, without touching it
    /// (persistence copies it under the slot lock to record a local removal exactly).
    pub fn stored(&self) -> Option<&Entry> {
        self.shard.find(self.hash, self.key).map(|n| &n.entry)
    }

    /// Takes the key's entry out of this node without deleting it anywhere else (the source
    /// side of a migration: the entry moves, it is not deleted). Not a write: no delta.
    pub fn take(&mut self) -> Option<Entry> {
        let node = self.shard.remove(self.hash, self.key)?;
        self.shard.touch(self.key);
        self.changed = false;
        // Client-side caches of this node must let go of it: the new owner does not know them.
        self.ks.publish_dropped(&[Box::from(self.key)]);
        Some(node.entry)
    }

    /// Writes the register (SET and friends) and applies the TTL rule.
    pub fn set(&mut self, value: Box<[u8]>, ttl: Ttl) {
        self.set_bytes(&value, ttl)
    }

    /// [`KeyMut::set`] from borrowed bytes (no intermediate allocation).
    pub fn set_bytes(&mut self, value: &[u8], ttl: Ttl) {
        let was_live = self.exists();
        let expiry = match ttl {
            Ttl::Keep if was_live => None,
            Ttl::Keep | Ttl::Clear => Some(None),
            Ttl::At(ms) => Some(Some(ms)),
        };
        self.write(Some(Some(value)), expiry);
    }

    /// Deletes the key (a tombstone observing every increment). Returns whether it existed.
    pub fn delete(&mut self) -> bool {
        if !self.exists() {
            return false;
        }
        self.write(Some(None), Some(None));
        true
    }

    /// Before a contribution to a key without a value: make "absent" explicit so the key starts
    /// from nothing, with no deadline (an expired key is deleted first).
    fn reset_if_dead(&mut self) {
        let now = self.now_ms;
        let Some(node) = self.shard.find(self.hash, self.key) else {
            return;
        };
        if node.entry.is_live(now) {
            return;
        }
        let expired = node.entry.is_expired(now);
        let has_deadline = node.entry.deadline().is_some();
        if expired || has_deadline {
            self.write(expired.then_some(None), has_deadline.then_some(None));
        }
    }

    /// Adding zero changes no contribution; on a key without a value it creates "0", as Redis's
    /// `INCRBY k 0` does (a register write, so it also races like a SET of "0").
    fn add_zero(&mut self) {
        if !self.exists() {
            self.set_bytes(b"0", Ttl::Clear);
        }
    }

    /// Adds to this node's integer contribution (the caller checked type and overflow).
    pub fn add_int(&mut self, by: i64) {
        self.contribute(Bump::Int(by));
    }

    /// Adds to this node's float contribution (the caller checked type and finiteness).
    pub fn add_float(&mut self, by: f64) {
        self.contribute(Bump::Float(by));
    }

    /// The live value as an integer (see [`Entry::integer`]).
    #[allow(clippy::result_unit_err)]
    pub fn integer(&mut self) -> Result<Option<i64>, ()> {
        self.resume_evicted();
        self.live().map_or(Ok(None), |e| e.integer())
    }

    /// One contribution op on the entry, after making a dead key explicitly absent.
    fn contribute(&mut self, by: Bump) {
        if matches!(by, Bump::Int(0)) || matches!(by, Bump::Float(f) if f == 0.0) {
            return self.add_zero();
        }
        self.reset_if_dead();
        let s = self.stamp();
        let actor = self.ks.clock.node();
        let recording = self.out.is_some();
        let collected = self.shard.ghost_time(self.hash);
        let e = self.entry_mut();
        if collected != 0 {
            e.retire_epoch(actor, collected);
        }
        match (by, recording) {
            (Bump::Int(n), true) => {
                let d = e.add_int(actor, n, s);
                let d = whole_after_delete(e, d);
                self.record(d)
            }
            (Bump::Float(f), true) => {
                let d = e.add_float(actor, f, s);
                let d = whole_after_delete(e, d);
                self.record(d)
            }
            (Bump::Int(n), false) => {
                e.apply_int(actor, n, s);
                self.changed = true;
            }
            (Bump::Float(f), false) => {
                e.apply_float(actor, f, s);
                self.changed = true;
            }
        }
    }

    /// Sets (or clears, with None) the deadline of a live key.
    pub fn set_deadline(&mut self, deadline_ms: Option<u64>) {
        debug_assert!(self.exists());
        self.write(None, Some(deadline_ms));
    }
}

/// The delta an increment ships: the actor's contribution, or the whole entry when the key's
/// register is a tombstone that observed totals (a counter deleted, then counted again).
/// A region that collected that tombstone holds nothing of the key: given the contribution
/// alone it would count all of it as unobserved (4 where the regions holding the tombstone
/// read 1) until a repair; the whole entry brings the tombstone back with it. Costs bytes on
/// increments of deleted-then-recounted keys only (docs/semantics.md).
fn whole_after_delete(e: &Entry, d: EntryDelta) -> EntryDelta {
    let observed = e
        .contributions()
        .is_some_and(|(_, seen, _)| !seen.is_empty());
    if observed && e.register_value().is_none() {
        e.to_delta()
    } else {
        d
    }
}

impl Drop for KeyMut<'_> {
    fn drop(&mut self) {
        if !self.changed {
            return;
        }
        self.shard.recount(self.hash, self.key, self.now_ms);
        self.shard.touch(self.key);
        if let (Some(out), Some(entry)) = (self.out.as_mut(), self.pending.take()) {
            out.push(Delta {
                slot: self.slot,
                key: super::DeltaKey::from_slice(self.key),
                entry,
            });
        }
    }
}

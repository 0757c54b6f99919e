//! Stale slots: entries held in slots this node's shard no longer owns are removed locally, a
//! bounded batch per pass of the control loop ([`Control::purge_stale`]).
//!
//! **Why entries stay behind.** When a slot leaves a shard (MIGRATE then `SETSLOT NODE`, a
//! failover, any claim with a larger epoch), the old primary can still hold entries of it:
//! deltas the other regions kept sending until they learned the new owner, merges in flight,
//! tombstones (MIGRATE moves live keys only), keys an operator reassigned without migrating.
//! Its replicas hold *every* entry of the slot, since a migration takes keys out without a
//! delta. None of them is ever served (the node answers MOVED), but they use memory, count in
//! DBSIZE, `INFO keyspace`, SCAN and maxmemory, and the log replays them after a restart.
//!
//! **What.** Redis deletes the keys of a slot its shard lost (`delKeysInSlot` from
//! `clusterUpdateSlotsConfigWith`). Here the removal is local, like eviction or the source side
//! of MIGRATE: no delta, no tombstone, nothing replicated — the data lives on at the new owner
//! and in the other regions. The log records each removal (`Persist::forget_moved`), so a
//! restart does not bring the entries back.
//!
//! **When.** An entry of slot `s` is removed once all of these hold:
//! 1. the owner of `s` in this node's map is not this node's shard (itself, or the primary it
//!    follows), and not nobody: a slot without an owner is in limbo and keeps its data. And `s`
//!    *was* the shard's: its owner at some pass since this node started (the layout read at
//!    start counts), not counting passes while this node was importing `s`. Redis too deletes
//!    only the keys of slots that were the node's. Keys in a slot that never was are left
//!    alone: an aborted import (`SETSLOT STABLE` after MIGRATE took keys out of the source)
//!    leaves the only copy of those keys on the importing node, for `redis-cli --cluster fix`
//!    to move to the owner;
//! 2. that owner is a primary whose own published record claims `s` (not a `SETSLOT NODE` hint,
//!    not a placeholder from the layout) and that this node sees online: while the owner is
//!    failed and no replica took over, an operator may still give the slot back;
//! 3. this node has no open `MIGRATING` or `IMPORTING` for `s`;
//! 4. 1-3 held, with the same owner, for [`Control::purge_grace`]: max(2 × node timeout, 3 s)
//!    since this node first saw `s` foreign while holding entries of it. Gossip settles in that
//!    time (records go out every 500 ms, to this region and to the others), so the other regions
//!    have moved their links to the new owner; a replica following a new primary has switched;
//!    a node that just started has replaced the map it read from its layout with the published
//!    records;
//! 5. every stamp of the entry is at or below the acknowledged watermark: every peer of this
//!    node (its replicas, the owners of its slots in the other regions) has acknowledged it —
//!    eviction's rule. A link keeps shipping the keys it had queued for a slot it lost, so a
//!    write accepted here just before the move waits until it reached the other regions.
//!
//! At most [`PURGE_BATCH`] entries go per pass (one slot lock per slot and pass); passes run
//! every [`SCAN_EVERY`], or at the next tick while the budget ran out. A delta arriving after
//! the purge (a region that has not learned the new owner yet) re-creates its key; the next
//! pass removes it again.
//!
//! **Why no cross-region data is lost.** What another region sent us, its slot owner wrote or
//! merged first and still holds. When it learns the new owner, its link to the new owner gains
//! `s` and repairs `s` from its keyspace (`repl::link::Link::set_slots`: digests compared, the
//! slot sent in full if it differs); a change it
//! makes after that is recorded for the link that carries `s` then, the new owner's. So the new
//! owner receives everything each other region holds, whatever our copy. Within the region the
//! new owner got what the shard held through MIGRATE (whole entries, merged), or, after a
//! failover, through the old primary's link to it when that primary steps down (rule 2 of
//! `failover`); a node that steps down to a replica of the new owner purges nothing, since
//! the slots are its primary's.
//!
//! A copy here can still be the last one in *this region* in three cases, all older than this
//! purge (the copy was never served here either) and listed in docs/regions.md:
//! - the region that sent it evicted the key after we acknowledged it (eviction waits for the
//!   acks): a cache miss there too; its own counter totals are kept there as a floor;
//! - a write accepted here while we owned `s` that MIGRATE did not move (a key a merge created
//!   after the last `GETKEYSINSLOT`, then written by a client before `SETSLOT NODE` reached this
//!   node) and that reached the other regions only after their repair of the new owner.
//!   Regions do not relay, so the new owner gets it when the key is written again. Rule 5 makes
//!   sure the other regions hold it before we drop it.
//! - an operator gave the slot away without migrating its keys, and no other region holds
//!   them: the keys are gone, as in Redis (they were already out of every client's reach).
//!
//! A purged key's counter totals of this node are not kept as a floor (unlike eviction): they
//! live on in the entry at the new owner and come back with it if the slot returns here.

use super::Control;
use crate::cluster::node_name;
use crate::cluster::topology::{Health, Role, SlotSet, Topology};
use crate::store::SLOTS;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// Entries removed per pass at most (the control loop must stay responsive: failover timing
/// depends on it).
pub(super) const PURGE_BATCH: usize = 1000;
/// How often the stale slots are looked for when no purge is under way.
pub(super) const SCAN_EVERY: Duration = Duration::from_secs(1);
/// The grace is at least this long, whatever the node timeout.
const MIN_GRACE: Duration = Duration::from_secs(3);

/// The purge's state; only the control loop touches it.
#[derive(Default)]
pub(super) struct Purge {
    /// Slots holding entries that belong to another shard: the owner seen, since when, and how
    /// many entries were removed so far.
    stale: BTreeMap<u16, Stale>,
    /// Slots this node's shard owned at some pass, outside an import by this node (condition 1).
    owned: SlotSet,
    last_scan: Option<Instant>,
    /// The last pass used its whole budget: run again at the next tick.
    busy: bool,
}

#[derive(Clone, Copy)]
struct Stale {
    owner: u64,
    since: Instant,
    purged: u64,
}

impl Purge {
    /// Every pass: remembers the slots this node's shard owns, and forgets those this node is
    /// importing (condition 1).
    fn note_owned(&mut self, t: &Topology) {
        let Some(shard) = my_shard(t) else {
            return;
        };
        for slot in t.owned_by(shard).iter() {
            self.owned.insert(slot);
        }
        for &slot in t.importing.keys() {
            self.owned.remove(slot);
        }
    }
}

/// The primary of this node's shard: itself, or the primary it follows (`None` while that
/// primary is unknown).
fn my_shard(t: &Topology) -> Option<u64> {
    match t.me().role {
        Role::Primary => Some(t.myself),
        Role::Replica { of } => t.node(of).map(|_| of),
    }
}

/// Conditions 1-3 of the module doc for `slot`: the node this node's shard lost it to.
fn lost_to(t: &Topology, shard: u64, slot: u16) -> Option<u64> {
    if t.migrating.contains_key(&slot) || t.importing.contains_key(&slot) {
        return None;
    }
    let owner = t.owner_id(slot);
    if owner == 0 || owner == shard {
        return None;
    }
    let v = t.node(owner)?;
    let claims = v.info.version > 0 && v.info.role == Role::Primary && v.info.slots.contains(slot);
    (claims && v.health == Health::Online).then_some(owner)
}

impl Control {
    /// How long a slot must stay lost before its entries go (condition 4).
    pub(super) fn purge_grace(&self) -> Duration {
        (self.node_timeout * 2).max(MIN_GRACE)
    }

    /// One pass: find the slots this node's shard lost that still hold entries, and remove up
    /// to [`PURGE_BATCH`] entries of those lost for longer than the grace.
    pub(super) fn purge_stale(&mut self) {
        self.purge.note_owned(&self.cluster.topology());
        let now = Instant::now();
        let due = self.purge.busy
            || self
                .purge
                .last_scan
                .is_none_or(|at| now.duration_since(at) >= SCAN_EVERY);
        if !due {
            return;
        }
        self.purge.last_scan = Some(now);
        let mut stale = BTreeMap::new();
        let mut held = 0u64;
        {
            let t = self.cluster.topology();
            if let Some(shard) = my_shard(&t) {
                for slot in 0..SLOTS as u16 {
                    if !self.purge.owned.contains(slot) {
                        continue;
                    }
                    let n = self.keyspace.slot_len(slot);
                    if n == 0 {
                        continue;
                    }
                    let Some(owner) = lost_to(&t, shard, slot) else {
                        continue;
                    };
                    held += n as u64;
                    let seen = match self.purge.stale.get(&slot) {
                        Some(s) if s.owner == owner => *s,
                        _ => Stale {
                            owner,
                            since: now,
                            purged: 0,
                        },
                    };
                    stale.insert(slot, seen);
                }
            }
        }
        let grace = self.purge_grace();
        let watermark = self.keyspace.acked_watermark();
        let mut budget = PURGE_BATCH;
        for (&slot, s) in stale.iter_mut() {
            if budget == 0 {
                break;
            }
            if now.duration_since(s.since) < grace {
                continue;
            }
            let (keys, left) = self.keyspace.purge_slot(slot, budget, watermark);
            if keys.is_empty() {
                continue;
            }
            budget -= keys.len();
            held -= keys.len() as u64;
            s.purged += keys.len() as u64;
            if let Some(p) = &self.persist {
                p.forget_moved(&keys);
            }
            self.cluster
                .stale_keys_purged
                .fetch_add(keys.len() as u64, Relaxed);
            if left == 0 {
                tracing::info!(
                    slot,
                    keys = s.purged,
                    owner = %node_name(s.owner),
                    "removed the entries of a slot this node's shard no longer owns"
                );
                s.purged = 0;
            } else {
                tracing::debug!(
                    slot,
                    keys = keys.len(),
                    left,
                    "removing the entries of a lost slot"
                );
            }
        }
        self.purge.busy = budget == 0;
        self.purge.stale = stale;
        self.cluster.stale_keys.store(held, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::topology::NodeInfo;

    fn info(id: u64, version: u64, epoch: u64, role: Role, ranges: &[(u16, u16)]) -> NodeInfo {
        NodeInfo {
            id,
            version,
            region: "r".into(),
            resp: "127.0.0.1:1".parse().unwrap(),
            mesh: "127.0.0.1:2".parse().unwrap(),
            role,
            config_epoch: epoch,
            slots: SlotSet::from_ranges(ranges),
            repl_offset: 0,
            wan: None,
        }
    }

    #[test]
    fn a_slot_is_lost_to_a_live_primary_that_claims_it() {
        // Node 1 owned 0-99 and gave 50-99 to node 2 (epoch 1); node 3 replicates node 1.
        let mut t = Topology::new(info(1, 5, 0, Role::Primary, &[(0, 49)]), 0);
        t.upsert(info(2, 5, 1, Role::Primary, &[(50, 149)]), 0);
        t.upsert(info(3, 5, 0, Role::Replica { of: 1 }, &[]), 0);
        assert_eq!(my_shard(&t), Some(1));
        assert_eq!(lost_to(&t, 1, 10), None, "still ours");
        assert_eq!(lost_to(&t, 1, 60), Some(2));
        assert_eq!(lost_to(&t, 1, 200), None, "nobody owns it");
        // A replica judges by its primary's slots.
        let mut r = Topology::new(info(3, 5, 0, Role::Replica { of: 1 }, &[]), 0);
        assert_eq!(my_shard(&r), None, "its primary is unknown yet");
        r.upsert(info(1, 5, 0, Role::Primary, &[(0, 49)]), 0);
        r.upsert(info(2, 5, 1, Role::Primary, &[(50, 149)]), 0);
        assert_eq!(my_shard(&r), Some(1));
        assert_eq!(lost_to(&r, 1, 60), Some(2));
        assert_eq!(lost_to(&r, 1, 10), None);
        // An open migration keeps the slot, either way.
        t.migrating.insert(60, 2);
        t.importing.insert(61, 2);
        assert_eq!((lost_to(&t, 1, 60), lost_to(&t, 1, 61)), (None, None));
        // A failed owner, a hint, a placeholder from the layout: not yet.
        t.set_health(2, Health::Fail);
        assert_eq!(lost_to(&t, 1, 62), None);
        t.set_health(2, Health::Online);
        assert_eq!(lost_to(&t, 1, 62), Some(2));
        t.hint_owner(300, 2);
        assert_eq!(t.owner_id(300), 2);
        assert_eq!(lost_to(&t, 1, 300), None, "a hint is not a claim");
        t.upsert(info(4, 0, 0, Role::Primary, &[(400, 499)]), 0);
        // Only slots that were the shard's count, and not those this node imported.
        let mut p = Purge::default();
        let mut t = Topology::new(info(1, 5, 0, Role::Primary, &[(0, 99)]), 0);
        p.note_owned(&t);
        t.importing.insert(500, 2);
        t.update_me(9, |m| m.slots.remove(60));
        t.upsert(info(2, 5, 1, Role::Primary, &[(60, 60), (500, 500)]), 0);
        p.note_owned(&t);
        assert!(p.owned.contains(60) && p.owned.contains(10));
        assert!(!p.owned.contains(500), "importing, never ours");
        t.importing.remove(&500);
        t.update_me(10, |m| m.slots.insert(500));
        t.update_me(11, |m| m.config_epoch = 2);
        p.note_owned(&t);
        assert!(p.owned.contains(500));
        t.importing.insert(500, 2);
        p.note_owned(&t);
        assert!(
            !p.owned.contains(500),
            "an import makes a slot not ours again"
        );
        assert_eq!(
            lost_to(&t, 1, 450),
            None,
            "a layout placeholder is not a claim"
        );
    }
}

//! The region's slot map as this node sees it: who is in the region, who is primary or replica,
//! and which primary owns each of the 16384 hash slots. Pure data, no I/O.
//!
//! Invariants (the same rule as Redis Cluster's config epochs):
//! 1. Every node publishes a [`NodeInfo`] about itself only; a newer `version` replaces an older
//!    one, so each node's record converges everywhere.
//! 2. A primary *claims* slots with its `config_epoch`. The owner of a slot is the claimant with
//!    the largest `(config_epoch, lower id wins ties)`. Resolution depends only on the set of
//!    records, so every node that holds the same records computes the same owner for every slot.
//! 3. A node only ever moves to a larger epoch (promotion and `SETSLOT NODE` take
//!    `current_epoch + 1`), so a stale node's old claims lose as soon as the new record arrives,
//!    and a node never serves a slot whose owner it is not.
//!
//! The record a node publishes ([`NodeInfo`]) and the values it is made of live in `record`;
//! this module holds what a node derives from the records it has: each node's liveness and
//! each slot's owner.

mod record;

pub use record::{even_split, node_name, NodeInfo, Role, SlotSet};

use crate::store::SLOTS;
use std::collections::BTreeMap;

/// Liveness as this node's failure detector sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Online,
    /// Reported down by the failure detector.
    Fail,
}

/// A known node: its latest record and its liveness.
#[derive(Clone, Debug)]
pub struct NodeView {
    pub info: NodeInfo,
    pub health: Health,
    /// Unix ms of the last record or liveness signal received (CLUSTER NODES pong-recv).
    pub seen_ms: u64,
}

/// The region as this node sees it.
#[derive(Clone, Debug)]
pub struct Topology {
    pub myself: u64,
    pub nodes: BTreeMap<u64, NodeView>,
    /// Owner of each slot (0 = unowned), recomputed by [`Topology::resolve`].
    owner: Vec<u64>,
    /// Largest config epoch seen.
    pub current_epoch: u64,
    /// This node's open migrations: slot → destination node.
    pub migrating: BTreeMap<u16, u64>,
    /// This node's open imports: slot → source node.
    pub importing: BTreeMap<u16, u64>,
    /// Owners told by `SETSLOT NODE` whose own record has not arrived yet: used only while
    /// the slot has no claimant, so a real claim always takes over.
    hints: BTreeMap<u16, u64>,
    /// Every slot has an owner that is online (CLUSTER INFO `cluster_state:ok`); kept current
    /// by `resolve` and `set_health`, read on every routed command.
    ok: bool,
    /// This node just started and does not serve yet (the state is `fail` whatever `ok` says),
    /// until the runtime has heard its region (`runtime::failover`, rule 0).
    closed: bool,
}

impl Topology {
    pub fn new(me: NodeInfo, now_ms: u64) -> Self {
        let mut t = Topology {
            myself: me.id,
            nodes: BTreeMap::new(),
            owner: vec![0; SLOTS],
            current_epoch: 0,
            migrating: BTreeMap::new(),
            importing: BTreeMap::new(),
            hints: BTreeMap::new(),
            ok: false,
            closed: false,
        };
        t.upsert(me, now_ms);
        t
    }

    pub fn me(&self) -> &NodeInfo {
        &self.nodes[&self.myself].info
    }

    pub fn node(&self, id: u64) -> Option<&NodeView> {
        self.nodes.get(&id)
    }

    /// Takes a record if it is newer than the one held (invariant 1); re-resolves when claims
    /// changed. Returns whether anything but the replication offset changed (what the runtime
    /// must react to; a record that only reports progress is taken quietly).
    pub fn upsert(&mut self, info: NodeInfo, now_ms: u64) -> bool {
        let changed = match self.nodes.get_mut(&info.id) {
            Some(v) if v.info.version >= info.version => {
                v.seen_ms = now_ms;
                false
            }
            Some(v) => {
                let same = v.info.role == info.role
                    && v.info.config_epoch == info.config_epoch
                    && v.info.slots == info.slots
                    && v.info.resp == info.resp
                    && v.info.mesh == info.mesh
                    && v.info.wan == info.wan;
                v.info = info;
                v.seen_ms = now_ms;
                !same
            }
            None => {
                self.nodes.insert(
                    info.id,
                    NodeView {
                        info,
                        health: Health::Online,
                        seen_ms: now_ms,
                    },
                );
                true
            }
        };
        if changed {
            self.resolve();
        }
        changed
    }

    /// Marks a node's liveness; returns whether it changed.
    pub fn set_health(&mut self, id: u64, health: Health) -> bool {
        match self.nodes.get_mut(&id) {
            Some(v) if v.health != health && id != self.myself => {
                v.health = health;
                self.ok = self.coverage() == (SLOTS, SLOTS);
                true
            }
            _ => false,
        }
    }

    /// Changes this node's own record through `f`, bumping its version. Returns the new record.
    pub fn update_me(&mut self, now_ms: u64, f: impl FnOnce(&mut NodeInfo)) -> NodeInfo {
        let mut info = self.me().clone();
        f(&mut info);
        info.version = now_ms.max(info.version + 1);
        self.upsert(info.clone(), now_ms);
        info
    }

    /// Recomputes every slot's owner (invariant 2) and the current epoch.
    pub fn resolve(&mut self) {
        let mut best: Vec<(u64, u64)> = vec![(0, 0); SLOTS]; // (epoch, id) of the winner
        self.current_epoch = 0;
        for v in self.nodes.values() {
            let i = &v.info;
            self.current_epoch = self.current_epoch.max(i.config_epoch);
            if i.role != Role::Primary {
                continue;
            }
            for s in i.slots.iter() {
                let b = &mut best[s as usize];
                if b.1 == 0 || i.config_epoch > b.0 || (i.config_epoch == b.0 && i.id < b.1) {
                    *b = (i.config_epoch, i.id);
                }
            }
        }
        for (o, b) in self.owner.iter_mut().zip(best) {
            *o = b.1;
        }
        let owner = &self.owner;
        self.hints.retain(|&s, _| owner[s as usize] == 0);
        for (&s, &id) in &self.hints {
            self.owner[s as usize] = id;
        }
        self.ok = self.coverage() == (SLOTS, SLOTS);
    }

    /// Whether the cluster is in state `ok` (Redis's default `cluster-require-full-coverage`),
    /// and this node serves.
    pub fn state_ok(&self) -> bool {
        self.ok && !self.closed
    }

    /// Keeps the state `fail` until [`Topology::open`] (a node starting among others).
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// Serves again (rule 0 of `runtime::failover` is satisfied).
    pub fn open(&mut self) {
        self.closed = false;
    }

    /// Whether this node still waits to hear its region before it serves.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Records that `id` owns `slot` (SETSLOT NODE on a node that gave the slot away).
    pub fn hint_owner(&mut self, slot: u16, id: u64) {
        self.hints.insert(slot, id);
        self.resolve();
    }

    /// The node that owns `slot`, if any.
    pub fn owner(&self, slot: u16) -> Option<&NodeView> {
        match self.owner[slot as usize] {
            0 => None,
            id => self.nodes.get(&id),
        }
    }

    pub fn owner_id(&self, slot: u16) -> u64 {
        self.owner[slot as usize]
    }

    /// Slots `id` owns after resolution.
    pub fn owned_by(&self, id: u64) -> SlotSet {
        let mut s = SlotSet::default();
        for (slot, &o) in self.owner.iter().enumerate() {
            if o == id {
                s.insert(slot as u16);
            }
        }
        s
    }

    /// Slots `id` claims but another node owns: it lost them to a larger epoch.
    pub fn superseded(&self, id: u64) -> Vec<u16> {
        self.nodes.get(&id).map_or(Vec::new(), |v| {
            v.info
                .slots
                .iter()
                .filter(|&s| self.owner[s as usize] != id)
                .collect()
        })
    }

    /// Contiguous ranges with a single owner: `(start, end, owner)`, ascending.
    pub fn ranges(&self) -> Vec<(u16, u16, u64)> {
        let mut out: Vec<(u16, u16, u64)> = Vec::new();
        for (slot, &o) in self.owner.iter().enumerate() {
            if o == 0 {
                continue;
            }
            let slot = slot as u16;
            match out.last_mut() {
                Some((_, end, owner)) if *owner == o && *end + 1 == slot => *end = slot,
                _ => out.push((slot, slot, o)),
            }
        }
        out
    }

    /// Replicas (of any health) that follow `primary`, by ID.
    pub fn replicas_of(&self, primary: u64) -> Vec<&NodeView> {
        self.nodes
            .values()
            .filter(|v| v.info.role == Role::Replica { of: primary })
            .collect()
    }

    /// Number of slots with an owner, and with an owner that is not failed.
    pub fn coverage(&self) -> (usize, usize) {
        let mut assigned = 0;
        let mut ok = 0;
        for &o in &self.owner {
            if o != 0 {
                assigned += 1;
                if self
                    .nodes
                    .get(&o)
                    .is_some_and(|v| v.health == Health::Online)
                {
                    ok += 1;
                }
            }
        }
        (assigned, ok)
    }

    /// Primaries that own at least one slot (CLUSTER INFO `cluster_size`).
    pub fn size(&self) -> usize {
        let mut owners: Vec<u64> = self.owner.iter().copied().filter(|&o| o != 0).collect();
        owners.sort_unstable();
        owners.dedup();
        owners.len()
    }

    /// The primary of `id`'s shard: itself when primary, whom it follows when a replica.
    pub fn shard_primary(&self, id: u64) -> u64 {
        match self.nodes.get(&id).map(|v| v.info.role) {
            Some(Role::Replica { of }) => of,
            _ => id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: u64, epoch: u64, role: Role, ranges: &[(u16, u16)]) -> NodeInfo {
        NodeInfo {
            id,
            version: 1,
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
    fn larger_epoch_wins_a_slot_and_ties_go_to_the_lower_id() {
        let mut t = Topology::new(info(1, 0, Role::Primary, &[(0, 99)]), 0);
        t.upsert(info(2, 0, Role::Primary, &[(50, 149)]), 0);
        assert_eq!(t.owner_id(60), 1, "tie → lower id");
        t.upsert(
            NodeInfo {
                version: 2,
                ..info(2, 3, Role::Primary, &[(50, 149)])
            },
            0,
        );
        assert_eq!(t.owner_id(60), 2);
        assert_eq!(t.owner_id(10), 1);
        assert_eq!(t.superseded(1), (50..100).collect::<Vec<_>>());
        assert_eq!(t.current_epoch, 3);
        assert_eq!(t.ranges(), vec![(0, 49, 1), (50, 149, 2)]);
    }

    #[test]
    fn an_older_record_never_replaces_a_newer_one() {
        let mut t = Topology::new(info(1, 0, Role::Primary, &[]), 0);
        t.upsert(
            NodeInfo {
                version: 5,
                ..info(2, 1, Role::Primary, &[(0, 9)])
            },
            0,
        );
        assert!(!t.upsert(
            NodeInfo {
                version: 4,
                ..info(2, 0, Role::Primary, &[])
            },
            0
        ));
        assert_eq!(t.owner_id(3), 2);
    }

    #[test]
    fn replicas_claim_nothing() {
        let mut t = Topology::new(info(1, 0, Role::Primary, &[(0, 9)]), 0);
        t.upsert(info(2, 9, Role::Replica { of: 1 }, &[(0, 9)]), 0);
        assert_eq!(t.owner_id(0), 1);
        assert_eq!(t.replicas_of(1).len(), 1);
        assert_eq!(t.shard_primary(2), 1);
    }
}

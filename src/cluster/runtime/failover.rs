//! Failure detection and failover, evaluated by every node about itself on each tick of the
//! control loop ([`Control::run`]).
//!
//! Liveness: membership (SWIM) reports members up and down; a member still down after
//! [`DOWN_CONFIRM`] is marked [`Health::Fail`] in the slot map, and a node of the configured
//! layout that never showed up counts as failed after three node timeouts.
//!
//! Failover rules (each converges because records only move to larger versions and claims to
//! larger epochs, see `topology`):
//! 0. A node starting as a primary among others serves nothing until it has heard them
//!    ([`Control::open_when_heard`]): its layout may name it primary of slots a replica has
//!    since taken over.
//! 1. A replica whose primary is down while owning slots waits `rank × RANK_DELAY` (rank 0 = the
//!    online replica with the largest replication offset, ties to the lower ID), then claims the
//!    primary's slots with `current_epoch + 1` and becomes primary.
//! 2. A primary that claims slots another node owns (it lost them to a larger epoch) stops
//!    claiming them; if it has none left it becomes a replica of their new owner, and its
//!    replication link merges what only it held into the new primary.
//! 3. A replica follows its primary's shard: if the primary became a replica of Q, or owns nothing
//!    while its claimed slots belong to Q, it follows Q.

use super::Control;
use crate::clock::unix_ms;
use crate::cluster::membership::MemberEvent;
use crate::cluster::topology::{Health, Role};
use crate::cluster::{node_name, FailoverMode};
use std::time::{Duration, Instant};

/// The delay per rank before a replica claims its failed primary's slots (rule 1), so the
/// best-placed replica claims first and the others normally see its claim before their turn.
const RANK_DELAY: Duration = Duration::from_millis(500);
/// How long a member must stay down before it is marked failed (see `Control::pending_down`).
const DOWN_CONFIRM: Duration = Duration::from_millis(400);
/// Longest a starting primary waits to hear its region before it serves (rule 0; Redis's
/// `CLUSTER_WRITABLE_DELAY` is the same 2 s).
const WRITABLE_DELAY: Duration = Duration::from_secs(2);

impl Control {
    /// A membership event: "up" marks the member online at once; "down" only starts its
    /// confirmation clock (see [`DOWN_CONFIRM`]).
    pub(super) fn on_member(&mut self, ev: MemberEvent) {
        match ev {
            MemberEvent::Up(m) => {
                self.members.insert(m.id, m.addr);
                self.pending_down.remove(&m.id);
                self.set_health(m.id, Health::Online);
            }
            MemberEvent::Down(m) => {
                self.pending_down.entry(m.id).or_insert_with(Instant::now);
            }
        }
    }

    /// Members down for longer than [`DOWN_CONFIRM`] (and not back) are marked failed.
    pub(super) fn confirm_downs(&mut self) {
        let confirmed: Vec<u64> = self
            .pending_down
            .iter()
            .filter(|(_, since)| since.elapsed() >= DOWN_CONFIRM)
            .map(|(&id, _)| id)
            .collect();
        for id in confirmed {
            self.pending_down.remove(&id);
            if !self.membership.is_alive(id) {
                self.set_health(id, Health::Fail);
            }
        }
    }

    fn set_health(&mut self, id: u64, health: Health) {
        if self.cluster.update(|t| t.set_health(id, health)) {
            tracing::info!(node = %node_name(id), ?health, "node liveness changed");
            self.cluster.changed.notify_one();
        }
    }

    /// Rule 0 (Redis's writable delay). A node starts with the roles and slots its layout
    /// gives, which may be stale: after a failover the layout still names the old primary.
    /// So a node starting as a primary serves nothing (state `fail`, keyed commands answer
    /// CLUSTERDOWN) until every other node of its layout has sent its record (a promoted
    /// replica's larger claim then takes the slots at once), or for at most
    /// [`WRITABLE_DELAY`]. Without it a restarted old primary took writes for slots it had
    /// lost until the new primary's record reached it: nothing was lost (its link merged them
    /// into the new primary), but meanwhile a client did not read its own acknowledged write.
    pub(super) fn open_when_heard(&mut self) {
        let t = self.cluster.topology();
        if !t.is_closed() {
            return;
        }
        let heard_all = t.nodes.values().all(|v| v.info.version != 0);
        let primary = t.me().role == Role::Primary;
        if primary && !heard_all && self.started.elapsed() < WRITABLE_DELAY {
            return;
        }
        drop(t);
        self.cluster.update(|t| t.open());
        tracing::info!(heard_all, "serving: the region's records are in");
    }

    /// Nodes of the configured layout that never showed up count as failed after a while.
    pub(super) fn health_of_silent_nodes(&mut self) {
        if self.started.elapsed() < self.node_timeout * 3 {
            return;
        }
        let silent: Vec<u64> = self
            .cluster
            .topology()
            .nodes
            .values()
            .filter(|v| v.info.version == 0 && v.health == Health::Online)
            .map(|v| v.info.id)
            .filter(|id| !self.members.contains_key(id))
            .collect();
        for id in silent {
            self.cluster.update(|t| t.set_health(id, Health::Fail));
        }
    }

    /// Rule 1 (and CLUSTER FAILOVER).
    pub(super) fn failover(&mut self) {
        let t = self.cluster.topology();
        let Role::Replica { of } = t.me().role else {
            self.failing_since = None;
            self.catch_up_to = None;
            return;
        };
        let manual = self.cluster.take_failover();
        if manual.is_none() {
            self.catch_up_to = None;
        }
        // Membership says down, and the primary's replication link has been silent too (it
        // sends keep-alives): under CPU starvation SWIM probes can time out while the primary
        // is alive and streaming; its link is the second opinion that prevents a false failover.
        let primary_down = t.node(of).is_some_and(|p| p.health == Health::Fail)
            && !self.repl.heard_within(of, self.node_timeout);
        let primary_slots = t.owned_by(of);
        if manual.is_none() && (!primary_down || primary_slots.is_empty()) {
            self.failing_since = None;
            return;
        }
        if let Some((mode, asked_ms, asked)) = manual {
            if mode == FailoverMode::Default {
                // Catch up first, so the switch loses no write (bounded wait), to the offset of
                // a record the primary made after the request: an older one (records go out
                // every GOSSIP_EVERY) may predate writes its clients saw acknowledged, and
                // right after start it says 0 while nothing has reached this replica yet.
                // The target is fixed at the first such record: chasing the newest would
                // never end under a steady write load.
                let fresh = t.node(of).filter(|p| p.info.version >= asked_ms);
                if let Some(p) = fresh {
                    self.catch_up_to.get_or_insert(p.info.repl_offset);
                }
                let caught_up = self
                    .catch_up_to
                    .is_some_and(|target| self.repl.applied_from(of) >= target);
                if !caught_up {
                    self.cluster.defer_failover(mode, asked);
                    return;
                }
            }
        } else {
            let since = *self.failing_since.get_or_insert_with(Instant::now);
            let mut rivals: Vec<(u64, u64)> = t
                .replicas_of(of)
                .iter()
                .filter(|v| v.health == Health::Online)
                .map(|v| (u64::MAX - v.info.repl_offset, v.info.id))
                .collect();
            rivals.sort();
            let rank = rivals.iter().position(|r| r.1 == t.myself).unwrap_or(0) as u32;
            if since.elapsed() < RANK_DELAY * rank {
                return;
            }
        }
        drop(t);
        let promoted = self.cluster.update(|t| {
            let epoch = t.current_epoch + 1;
            let slots = t.owned_by(of);
            t.update_me(unix_ms(), |me| {
                me.role = Role::Primary;
                me.config_epoch = epoch;
                me.slots = slots;
            })
        });
        tracing::warn!(
            epoch = promoted.config_epoch,
            slots = promoted.slots.len(),
            primary = %node_name(of),
            "promoted to primary"
        );
        self.failing_since = None;
        self.catch_up_to = None;
    }

    /// Rules 2 and 3.
    pub(super) fn follow(&mut self) {
        let t = self.cluster.topology();
        let me = t.me().clone();
        let new_role = match me.role {
            Role::Primary => {
                let lost = t.superseded(me.id);
                if lost.is_empty() {
                    return;
                }
                let owner = t.owner_id(lost[0]);
                let keep = me.slots.len() - lost.len();
                drop(t);
                self.cluster.update(|t| {
                    t.update_me(unix_ms(), |m| {
                        for s in &lost {
                            m.slots.remove(*s);
                        }
                        if keep == 0 && owner != 0 {
                            m.role = Role::Replica { of: owner };
                        }
                    })
                });
                tracing::warn!(lost = lost.len(), new_owner = %node_name(owner), "slots taken over by a larger epoch");
                return;
            }
            Role::Replica { of } => match t.node(of).map(|p| &p.info) {
                Some(p) => match p.role {
                    Role::Replica { of: q } if q != me.id => Some(q),
                    Role::Primary if t.owned_by(of).is_empty() => p
                        .slots
                        .iter()
                        .next()
                        .map(|s| t.owner_id(s))
                        .filter(|&q| q != 0 && q != of && q != me.id),
                    _ => None,
                },
                None => None,
            },
        };
        drop(t);
        if let Some(q) = new_role {
            self.cluster
                .update(|t| t.update_me(unix_ms(), |m| m.role = Role::Replica { of: q }));
            tracing::info!(primary = %node_name(q), "following a new primary");
        }
    }
}

//! The region's hash-slot cluster: who owns which slot ([`topology`]), how a command is routed
//! (`route`: MOVED / ASK / CROSSSLOT / TRYAGAIN / CLUSTERDOWN), and the runtime that keeps the
//! slot map current (membership, failover, slot migration).
//!
//! A node without cluster config has no `Cluster` at all: routing is skipped and every slot is
//! served locally, as a single Redis server.

pub mod format;
pub mod layout;
pub mod membership;
pub mod regions;
pub mod route;
pub mod runtime;
pub mod topology;

use crate::clock::unix_ms;
use crate::repl::Replicator;
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;
pub use topology::{node_name, Health, NodeInfo, Role, SlotSet, Topology};

/// Errors of cluster administration commands, with Redis's texts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    #[error("ERR Unknown node {0}")]
    UnknownNode(String),
    #[error("ERR I'm not the owner of hash slot {0}")]
    NotOwner(u16),
    #[error("ERR I'm already the owner of hash slot {0}")]
    AlreadyOwner(u16),
    #[error("ERR Invalid or out of range slot")]
    BadSlot,
    #[error("ERR You should send CLUSTER FAILOVER to a replica")]
    FailoverOnPrimary,
    #[error("ERR Slot {0} is already busy")]
    SlotBusy(u16),
    #[error("ERR To set a master the node must be empty and without assigned slots.")]
    NotEmpty,
    #[error("ERR Can't replicate myself")]
    ReplicateSelf,
    #[error("ERR I can only replicate a master, not a replica.")]
    ReplicateReplica,
    #[error("ERR {0}")]
    Other(String),
}

/// `CLUSTER SETSLOT <slot> <action>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetSlot {
    Importing(u64),
    Migrating(u64),
    Node(u64),
    Stable,
}

/// `CLUSTER FAILOVER [FORCE|TAKEOVER]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailoverMode {
    Default,
    Force,
    Takeover,
}

/// One row of `CLUSTER LINKS`.
#[derive(Debug, Clone)]
pub struct LinkInfo {
    pub outbound: bool,
    pub node: u64,
    pub create_time_ms: u64,
    pub events: &'static str,
    pub send_buffer_allocated: u64,
    pub send_buffer_used: u64,
}

/// A node's cluster state, shared by its connections.
pub struct Cluster {
    me: u64,
    topology: ArcSwap<Topology>,
    /// The other regions' nodes and slot maps (cross-region replication targets).
    pub regions: regions::Regions,
    /// Serialises changes of the map (readers never wait).
    writer: Mutex<()>,
    /// Wakes the runtime: the map changed and this node's record should go out now.
    pub changed: tokio::sync::Notify,
    repl: OnceLock<Arc<Replicator>>,
    meets: Mutex<Vec<SocketAddr>>,
    failover: Mutex<Option<(FailoverMode, Instant)>>,
    /// One gate per slot: a command served on a slot that is migrating holds it shared from
    /// routing to reply; MIGRATE takes it exclusively while it takes keys out. Without it, a
    /// command routed here because its key existed could run after MIGRATE took the key and
    /// recreate it with this node's counter totals restarted from zero.
    gates: Box<[parking_lot::RwLock<()>]>,
    /// Gossip frames sent and received (CLUSTER INFO `cluster_stats_messages_*`).
    pub messages_sent: std::sync::atomic::AtomicU64,
    pub messages_received: std::sync::atomic::AtomicU64,
    /// Entries held in slots this node's shard does not own, as of the runtime's last scan,
    /// and entries it removed from them (`runtime::purge`; INFO `cluster_stale_keys*`).
    pub stale_keys: std::sync::atomic::AtomicU64,
    pub stale_keys_purged: std::sync::atomic::AtomicU64,
}

impl Cluster {
    pub fn new(topology: Topology) -> Self {
        Cluster {
            me: topology.myself,
            regions: regions::Regions::new(topology.me().region.clone()),
            topology: ArcSwap::from_pointee(topology),
            writer: Mutex::new(()),
            changed: tokio::sync::Notify::new(),
            repl: OnceLock::new(),
            meets: Mutex::new(Vec::new()),
            failover: Mutex::new(None),
            gates: (0..crate::store::SLOTS)
                .map(|_| parking_lot::RwLock::new(()))
                .collect(),
            messages_sent: Default::default(),
            messages_received: Default::default(),
            stale_keys: Default::default(),
            stale_keys_purged: Default::default(),
        }
    }

    /// Attaches the node's replicator (WAIT, CLUSTER LINKS and the runtime use it).
    pub fn with_repl(self, repl: Arc<Replicator>) -> Self {
        let _ = self.repl.set(repl);
        self
    }

    /// The node's replicator. A cluster without one is a test fixture with no replication.
    pub fn repl(&self) -> &Arc<Replicator> {
        self.repl.get().expect("cluster started with a replicator")
    }

    pub fn has_repl(&self) -> bool {
        self.repl.get().is_some()
    }

    pub fn my_id(&self) -> u64 {
        self.me
    }

    /// The current slot map (a cheap snapshot; never blocks writers of the map).
    pub fn topology(&self) -> arc_swap::Guard<Arc<Topology>> {
        self.topology.load()
    }

    /// Replaces the slot map through `f` (one writer at a time; readers keep their snapshot).
    pub fn update<R>(&self, f: impl FnOnce(&mut Topology) -> R) -> R {
        let _one_writer = self.writer.lock();
        let mut t = Topology::clone(&self.topology.load());
        let r = f(&mut t);
        self.topology.store(Arc::new(t));
        r
    }

    /// The migration gate of `slot` (see the field).
    pub fn gate(&self, slot: u16) -> &parking_lot::RwLock<()> {
        &self.gates[slot as usize]
    }

    /// Maps a 40-char node name (as clients send it) to a node ID.
    pub fn lookup_name(&self, name: &[u8]) -> Result<u64, ClusterError> {
        let t = self.topology();
        t.nodes
            .keys()
            .copied()
            .find(|&id| node_name(id).as_bytes().eq_ignore_ascii_case(name))
            .ok_or_else(|| ClusterError::UnknownNode(String::from_utf8_lossy(name).into_owned()))
    }

    /// `CLUSTER SETSLOT` (the flow `redis-cli --cluster reshard` drives; see docs).
    pub fn setslot(&self, slot: u16, action: SetSlot) -> Result<(), ClusterError> {
        if slot as usize >= crate::store::SLOTS {
            return Err(ClusterError::BadSlot);
        }
        let me = self.me;
        let r = self.update(|t| {
            let owner = t.owner_id(slot);
            match action {
                SetSlot::Importing(src) => {
                    if owner == me {
                        return Err(ClusterError::AlreadyOwner(slot));
                    }
                    t.importing.insert(slot, src);
                }
                SetSlot::Migrating(dst) => {
                    if owner != me {
                        return Err(ClusterError::NotOwner(slot));
                    }
                    t.migrating.insert(slot, dst);
                }
                SetSlot::Stable => {
                    t.migrating.remove(&slot);
                    t.importing.remove(&slot);
                }
                SetSlot::Node(id) if id == me => {
                    // Taking a slot: a new epoch, so every node prefers this claim.
                    t.importing.remove(&slot);
                    t.migrating.remove(&slot);
                    let epoch = t.current_epoch + 1;
                    t.update_me(unix_ms(), |m| {
                        m.slots.insert(slot);
                        m.config_epoch = epoch;
                    });
                }
                SetSlot::Node(id) => {
                    t.migrating.remove(&slot);
                    t.importing.remove(&slot);
                    if t.me().slots.contains(slot) {
                        t.update_me(unix_ms(), |m| m.slots.remove(slot));
                    }
                    // Redirect to the new owner at once, before its own record arrives.
                    t.hint_owner(slot, id);
                }
            }
            Ok(())
        });
        self.changed.notify_one();
        r
    }

    /// `CLUSTER FAILOVER`: the runtime promotes this replica (after catching up, unless
    /// FORCE or TAKEOVER) with a new epoch; the old primary steps down when it sees it.
    pub fn failover(&self, mode: FailoverMode) -> Result<(), ClusterError> {
        if self.topology().me().role == Role::Primary {
            return Err(ClusterError::FailoverOnPrimary);
        }
        self.request_failover(mode);
        Ok(())
    }

    fn request_failover(&self, mode: FailoverMode) {
        let mut f = self.failover.lock();
        let since = f.map_or_else(Instant::now, |(_, at)| at);
        *f = Some((mode, since));
        self.changed.notify_one();
    }

    /// A pending manual failover, with when it was first asked for (UNIX ms, and as taken
    /// back by [`Cluster::defer_failover`]); one asked for more than 5 s ago goes ahead as
    /// FORCE.
    pub(crate) fn take_failover(&self) -> Option<(FailoverMode, u64, Instant)> {
        self.failover.lock().take().map(|(mode, at)| {
            let asked_ms = crate::clock::unix_ms().saturating_sub(at.elapsed().as_millis() as u64);
            if at.elapsed().as_secs() >= 5 {
                (FailoverMode::Force, asked_ms, at)
            } else {
                (mode, asked_ms, at)
            }
        })
    }

    /// Puts back a taken failover that must wait (the replica is catching up), keeping when it
    /// was asked for: so the 5 s FORCE fallback and the "record newer than the request" rule
    /// count from the request, not from the last pass. It does not wake the runtime: the next
    /// tick looks again (waking it spun the loop while it waited).
    pub(crate) fn defer_failover(&self, mode: FailoverMode, asked: Instant) {
        self.failover.lock().get_or_insert((mode, asked));
    }

    /// `CLUSTER ADDSLOTS` / `ADDSLOTSRANGE`: claim unowned slots.
    pub fn add_slots(&self, slots: &[u16]) -> Result<(), ClusterError> {
        let r = self.update(|t| {
            for &s in slots {
                if s as usize >= crate::store::SLOTS {
                    return Err(ClusterError::BadSlot);
                }
                if t.owner_id(s) != 0 {
                    return Err(ClusterError::SlotBusy(s));
                }
            }
            t.update_me(unix_ms(), |m| {
                m.role = Role::Primary;
                for &s in slots {
                    m.slots.insert(s);
                }
            });
            Ok(())
        });
        self.changed.notify_one();
        r
    }

    /// `CLUSTER REPLICATE <node>`: this empty primary becomes a replica of `primary`.
    pub fn replicate(&self, primary: u64) -> Result<(), ClusterError> {
        let r = self.update(|t| {
            if primary == t.myself {
                return Err(ClusterError::ReplicateSelf);
            }
            if t.node(primary)
                .is_some_and(|p| p.info.role != Role::Primary)
            {
                return Err(ClusterError::ReplicateReplica);
            }
            if t.me().role == Role::Primary && !t.me().slots.is_empty() {
                return Err(ClusterError::NotEmpty);
            }
            t.update_me(unix_ms(), |m| m.role = Role::Replica { of: primary });
            Ok(())
        });
        self.changed.notify_one();
        r
    }

    /// `CLUSTER MEET`: join the region a node at `mesh` belongs to.
    pub fn meet(&self, mesh: SocketAddr) {
        self.meets.lock().push(mesh);
        self.changed.notify_one();
    }

    pub(crate) fn take_meets(&self) -> Vec<SocketAddr> {
        std::mem::take(&mut *self.meets.lock())
    }

    /// `CLUSTER LINKS`: this node's replication links.
    pub fn links(&self) -> Vec<LinkInfo> {
        let Some(repl) = self.repl.get() else {
            return Vec::new();
        };
        let now = unix_ms();
        repl.status()
            .into_iter()
            .map(|l| LinkInfo {
                outbound: true,
                node: l.peer,
                create_time_ms: now.saturating_sub(l.age_ms),
                events: if l.pending_keys > 0 { "rw" } else { "r" },
                send_buffer_allocated: l.pending_keys as u64,
                send_buffer_used: l.pending_keys as u64,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn replica() -> Cluster {
        let me = NodeInfo {
            id: 2,
            version: 1,
            region: "r".into(),
            resp: "127.0.0.1:1".parse().unwrap(),
            mesh: "127.0.0.1:2".parse().unwrap(),
            role: Role::Replica { of: 1 },
            config_epoch: 0,
            slots: SlotSet::default(),
            repl_offset: 0,
            wan: None,
        };
        Cluster::new(Topology::new(me, 0))
    }

    /// A failover waiting for its replica to catch up keeps the time it was asked for: the
    /// runtime's re-arming every pass used to restart it, so the 5 s FORCE fallback never came
    /// and a record "newer than the request" had to be newer than the last pass.
    #[test]
    fn a_deferred_failover_keeps_its_request_time_and_turns_force_after_5_s() {
        let c = replica();
        c.failover(FailoverMode::Default).unwrap();
        let (mode, asked_ms, asked) = c.take_failover().expect("pending");
        assert_eq!(mode, FailoverMode::Default);
        std::thread::sleep(Duration::from_millis(50));
        c.defer_failover(mode, asked);
        let (_, again_ms, again) = c.take_failover().expect("still pending");
        assert_eq!(again, asked);
        assert!(
            again_ms.abs_diff(asked_ms) <= 2,
            "{asked_ms} then {again_ms}"
        );

        let long_ago = Instant::now() - Duration::from_secs(6);
        c.defer_failover(FailoverMode::Default, long_ago);
        let (mode, ..) = c.take_failover().expect("pending");
        assert_eq!(
            mode,
            FailoverMode::Force,
            "asked 6 s ago: goes ahead as FORCE"
        );
    }
}

//! The region's hash-slot cluster: who owns which slot ([`topology`]), how a command is routed
//! (`route`: MOVED / ASK / CROSSSLOT / TRYAGAIN / CLUSTERDOWN), and the runtime that keeps the
//! slot map current (membership, failover, slot migration).
//!
//! A node without cluster config has no `Cluster` at all: routing is skipped and every slot is
//! served locally, as a single Redis server.

pub mod format;
pub mod route;
pub mod topology;

use arc_swap::ArcSwap;
use std::sync::Arc;
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
    /// Serialises changes of the map (readers never wait).
    writer: parking_lot::Mutex<()>,
}

impl Cluster {
    pub fn new(topology: Topology) -> Self {
        Cluster {
            me: topology.myself,
            topology: ArcSwap::from_pointee(topology),
            writer: parking_lot::Mutex::new(()),
        }
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

    /// Maps a 40-char node name (as clients send it) to a node ID.
    pub fn lookup_name(&self, name: &[u8]) -> Result<u64, ClusterError> {
        let t = self.topology();
        t.nodes
            .keys()
            .copied()
            .find(|&id| node_name(id).as_bytes().eq_ignore_ascii_case(name))
            .ok_or_else(|| ClusterError::UnknownNode(String::from_utf8_lossy(name).into_owned()))
    }

    /// `CLUSTER SETSLOT`. (Filled in by the cluster runtime.)
    pub fn setslot(&self, _slot: u16, _action: SetSlot) -> Result<(), ClusterError> {
        Err(ClusterError::Other("not yet supported".into()))
    }

    /// `CLUSTER FAILOVER`. (Filled in by the cluster runtime.)
    pub fn failover(&self, _mode: FailoverMode) -> Result<(), ClusterError> {
        Err(ClusterError::Other("not yet supported".into()))
    }

    /// `CLUSTER ADDSLOTS` / `ADDSLOTSRANGE`: claim unowned slots.
    pub fn add_slots(&self, _slots: &[u16]) -> Result<(), ClusterError> {
        Err(ClusterError::Other("not yet supported".into()))
    }

    /// `CLUSTER LINKS`. (Filled in by the cluster runtime.)
    pub fn links(&self) -> Vec<LinkInfo> {
        Vec::new()
    }
}

//! Meridian: an active-active multi-region cache that speaks the Redis protocol.
//!
//! The data path reads top to bottom through the modules (DESIGN.md §3):
//! `server` (connections) → `resp` (framing) → `cmd` (command table and families) →
//! `store` (per-slot shards of CRDT entries) → deltas for `persist` (log and snapshots) and
//! `repl` (replication). `crdt` is pure,
//! `clock` owns the hybrid logical clock, `config` the layered configuration.

pub mod admin;
pub mod clock;
pub mod cluster;
pub mod cmd;
pub mod config;
pub mod crdt;
pub mod hot;
pub mod mesh;
pub mod persist;
pub mod repl;
pub mod resp;
pub mod server;
pub mod store;
pub mod tracking;

/// jemalloc, as Redis uses: tight size classes and the allocation counter INFO reports.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

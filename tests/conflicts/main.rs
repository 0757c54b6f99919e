//! The cross-region conflict-resolution suite: DESIGN.md §2 tested end to end. Every test
//! starts a world of in-process regions (tests/common/regions.rs) whose nodes talk real QUIC
//! through UDP relays (tests/common/relay.rs), makes real concurrency by writing on both sides
//! of a network partition, heals, and checks that every region converged to the value the
//! conflict table promises, byte for byte (DUMP and GET).
//!
//! - `relay_unit`: the relay itself, with plain UDP sockets;
//! - `table` / `rows`: the table-driven runner and the rows of the conflict table (registers,
//!   DEL, counters, floats, whole-value string ops, TTLs, three-way writes, causality,
//!   no resurrection, duplicated and reordered deltas);
//! - `skew`: a region whose clock is 2 s fast;
//! - `collected`: a counter counted again after some regions collected its tombstone;
//! - `durability`: counters through restart and failover, failover during a partition;
//! - `random`: seeded random operations under random partitions.

#[path = "../common/mod.rs"]
mod common;
#[path = "../common/regions.rs"]
mod regions;
#[path = "../common/relay.rs"]
mod relay;

mod collected;
mod durability;
mod long_partition;
mod random;
mod relay_unit;
mod repair;
mod rows;
mod skew;
mod table;

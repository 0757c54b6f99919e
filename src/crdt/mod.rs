//! Pure conflict-free replicated data types: the per-key entry and its parts.
//!
//! Nothing here does I/O, reads a clock or knows about tokio. Every type is a join-semilattice:
//! `merge` is commutative, associative and idempotent, and every mutator returns the delta it
//! produced, such that joining that delta into the state before the op gives the state after it.
//! The property tests in `tests/crdt_laws/` prove these laws.
//!
//! Semantics (DESIGN.md §2): a key holds one [`Entry`] made of
//! 1. a last-writer-wins register (bytes or tombstone) with the counter totals it observed,
//! 2. per-actor monotonic counter contributions, each counted within an epoch the actor opens
//!    when it holds none of its own for the key (so collecting a key never rewinds them),
//! 3. a last-writer-wins expiry,
//! 4. what replaced tombstones observed ([`Settled`]), read by register writes carrying a floor
//!    (made on a key the writer collected: docs/semantics.md, "Floors").

pub mod compact;
mod counter;
pub mod digest;
mod entry;
pub mod msgpack;
pub mod number;
mod settled;
mod stamp;

pub use counter::{Contribution, Contributions, Totals};
pub use entry::{Conflicts, Entry, EntryDelta, Expiry, Register};
pub use settled::{Point, Settled};
pub use stamp::{NodeId, Stamp};

pub mod clock;
pub mod crdt;
pub mod store;

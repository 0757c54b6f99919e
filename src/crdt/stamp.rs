//! Stamps: hybrid-logical-clock timestamps in the compact form the keyspace stores.
//!
//! A stamp is the `uhlc` timestamp of the write that produced a value: an NTP64 time (32 bits of
//! seconds, 32 bits of fraction whose low 4 bits are the HLC logical counter) and the writing
//! node's ID. We keep the node ID as a `u64` rather than uhlc's 16-byte `ID` so that a stamp is
//! 16 bytes; `clock::Hlc` converts at the boundary. Stamps are totally ordered by (time, node):
//! two distinct writes never share a stamp because one node never issues the same time twice.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Identifies a node (and, for counters, an actor). Never zero.
pub type NodeId = u64;

/// An HLC timestamp: ordered by time, then node ID.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Stamp {
    /// NTP64 time: seconds since the UNIX epoch in the high 32 bits, fraction in the low 32.
    pub time: u64,
    /// The node that issued the stamp.
    pub node: NodeId,
}

impl Stamp {
    /// The bottom of the order: the stamp of "never written".
    pub const ZERO: Stamp = Stamp { time: 0, node: 0 };

    pub const fn new(time: u64, node: NodeId) -> Self {
        Stamp { time, node }
    }

    /// Milliseconds since the UNIX epoch of the stamp's physical part.
    pub fn unix_ms(&self) -> u64 {
        let secs = self.time >> 32;
        let frac = self.time & 0xFFFF_FFFF;
        secs * 1000 + ((frac * 1000) >> 32)
    }

    /// The NTP64 time for a wall-clock instant in milliseconds since the UNIX epoch.
    pub fn ntp64_from_unix_ms(ms: u64) -> u64 {
        let secs = ms / 1000;
        let rem = ms % 1000;
        (secs << 32) | (rem << 32).div_ceil(1000)
    }

    pub fn is_zero(&self) -> bool {
        *self == Stamp::ZERO
    }
}

impl fmt::Debug for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self)
    }
}

/// `<unix-ms>.<logical>@<node-hex>`: readable in the introspection command and in logs.
impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#018x}@{:x}", self.time, self.node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_time_then_node() {
        assert!(Stamp::new(1, 9) < Stamp::new(2, 1));
        assert!(Stamp::new(2, 1) < Stamp::new(2, 3));
        assert!(Stamp::ZERO < Stamp::new(0, 1));
    }

    #[test]
    fn unix_ms_round_trips() {
        for ms in [0u64, 1, 999, 1_000, 1_732_000_000_123] {
            assert_eq!(Stamp::new(Stamp::ntp64_from_unix_ms(ms), 1).unix_ms(), ms);
        }
    }
}

//! What a node publishes about itself, and the values it is made of: the [`NodeInfo`] record
//! gossiped to every node (and to the other regions), its [`Role`], the [`SlotSet`] it claims,
//! and the node's 40-character name. Pure data with its wire form (serde), no I/O.
//!
//! Compatibility: records travel between nodes of different versions, so a field added to
//! [`NodeInfo`] goes last and is `#[serde(default)]` (as `wan` is).

use crate::store::SLOTS;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// A set of hash slots (a 16384-bit bitmap), serialised as sorted inclusive ranges.
#[derive(Clone, PartialEq, Eq)]
pub struct SlotSet(Box<[u64; SLOTS / 64]>);

impl Default for SlotSet {
    fn default() -> Self {
        SlotSet(Box::new([0; SLOTS / 64]))
    }
}

impl SlotSet {
    pub fn from_ranges(ranges: &[(u16, u16)]) -> Self {
        let mut s = SlotSet::default();
        for &(a, b) in ranges {
            for slot in a..=b.min(SLOTS as u16 - 1) {
                s.insert(slot);
            }
        }
        s
    }
    pub fn contains(&self, slot: u16) -> bool {
        self.0[slot as usize / 64] & (1 << (slot % 64)) != 0
    }
    pub fn insert(&mut self, slot: u16) {
        self.0[slot as usize / 64] |= 1 << (slot % 64);
    }
    pub fn remove(&mut self, slot: u16) {
        self.0[slot as usize / 64] &= !(1 << (slot % 64));
    }
    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }
    /// The smallest slot in the set.
    pub fn first(&self) -> Option<u16> {
        let (i, w) = self.0.iter().enumerate().find(|(_, w)| **w != 0)?;
        Some((i * 64) as u16 + w.trailing_zeros() as u16)
    }

    /// The slots in ascending order (word by word: cheap on sparse and dense sets alike).
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.0.iter().enumerate().flat_map(|(i, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                (w != 0).then(|| {
                    let bit = w.trailing_zeros();
                    w &= w - 1;
                    (i * 64) as u16 + bit as u16
                })
            })
        })
    }
    /// Sorted, inclusive, maximal ranges.
    pub fn ranges(&self) -> Vec<(u16, u16)> {
        let mut out: Vec<(u16, u16)> = Vec::new();
        for s in self.iter() {
            match out.last_mut() {
                Some((_, end)) if *end + 1 == s => *end = s,
                _ => out.push((s, s)),
            }
        }
        out
    }
}

impl std::fmt::Debug for SlotSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.ranges()).finish()
    }
}

impl Serialize for SlotSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.ranges().serialize(s)
    }
}

impl<'de> Deserialize<'de> for SlotSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let ranges = Vec::<(u16, u16)>::deserialize(d)?;
        Ok(SlotSet::from_ranges(&ranges))
    }
}

/// An even split of the slots over `n` primaries, as `redis-cli --cluster create` does.
pub fn even_split(n: usize) -> Vec<(u16, u16)> {
    let n = n.max(1);
    let per = SLOTS as f64 / n as f64;
    (0..n)
        .map(|i| {
            let first = (i as f64 * per).round() as u16;
            let last = (((i + 1) as f64 * per).round() as u16).saturating_sub(1);
            (first, last)
        })
        .collect()
}

/// A node's role in its region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Primary,
    Replica { of: u64 },
}

/// What a node publishes about itself (invariant 1 in `topology`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: u64,
    /// Larger replaces smaller. Wall-clock milliseconds, bumped past the previous value, so a
    /// restarted node's records replace the ones it published before it died.
    pub version: u64,
    pub region: String,
    /// Where clients reach the node (RESP).
    pub resp: SocketAddr,
    /// The node's QUIC endpoint.
    pub mesh: SocketAddr,
    pub role: Role,
    pub config_epoch: u64,
    /// Slots this node claims (primaries only; see invariant 2 in `topology`).
    pub slots: SlotSet,
    /// Replication offset: deltas published (primary) or applied (replica).
    pub repl_offset: u64,
    /// Where the *other regions* reach the node's mesh when that differs from `mesh` (a WAN
    /// gateway or NAT in front of the region: `region-announce-addr`). Last, and defaulted, so
    /// records without it still decode.
    #[serde(default)]
    pub wan: Option<SocketAddr>,
}

impl NodeInfo {
    /// The mesh address a node of another region dials.
    pub fn wan_mesh(&self) -> SocketAddr {
        self.wan.unwrap_or(self.mesh)
    }
}

/// The 40-character hex name Redis clients expect for a node, derived from its numeric ID.
pub fn node_name(id: u64) -> String {
    // splitmix64: a fixed bijection, so the name is stable across restarts and distinct per ID.
    let mut x = id;
    let mut out = String::with_capacity(48);
    for _ in 0..3 {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.push_str(&format!("{z:016x}"));
    }
    out.truncate(40);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_split_covers_every_slot_once() {
        for n in 1..10 {
            let r = even_split(n);
            assert_eq!(r[0].0, 0);
            assert_eq!(r[n - 1].1, SLOTS as u16 - 1);
            for w in r.windows(2) {
                assert_eq!(w[0].1 + 1, w[1].0);
            }
        }
        assert_eq!(
            even_split(3),
            vec![(0, 5460), (5461, 10922), (10923, 16383)]
        );
    }

    #[test]
    fn names_are_40_hex_and_distinct() {
        let a = node_name(1);
        assert_eq!(a.len(), 40);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, node_name(2));
        assert_eq!(a, node_name(1));
    }

    #[test]
    fn slot_sets_round_trip_as_ranges() {
        let s = SlotSet::from_ranges(&[(0, 5), (7, 7), (16380, 16383)]);
        assert_eq!(s.ranges(), vec![(0, 5), (7, 7), (16380, 16383)]);
        assert_eq!(s.len(), 11);
        assert_eq!(s.first(), Some(0));
        assert_eq!(SlotSet::from_ranges(&[(200, 300)]).first(), Some(200));
        assert_eq!(SlotSet::default().first(), None);
    }
}

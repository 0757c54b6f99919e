//! The other regions as this node knows them: each one's nodes and slot map.
//!
//! Regions are separate hash-slot clusters with their own membership and failover; across
//! regions only two things travel: node records (gossip, so each primary learns who owns which
//! slot elsewhere) and replication batches. A record of region R reaches us either from the R
//! node itself or relayed by any node of R (every node sends its whole region's records to the
//! other regions), so one seed address per region is enough to learn all of it.
//!
//! Invariants:
//! 1. A remote region's slot map is resolved exactly as a region resolves its own (largest
//!    config epoch wins, ties to the lower ID): a failover over there moves our links to the
//!    promoted node as soon as its record arrives, however stale the dead primary's record is.
//! 2. Records only replace older versions of themselves; nothing here is ever decided locally.

use super::topology::{NodeInfo, Role, SlotSet, Topology};
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A node that owns slots in another region, with the part of our slots it owns.
#[derive(Debug, Clone)]
pub struct RemoteOwner {
    pub region: String,
    pub id: u64,
    pub mesh: SocketAddr,
    pub slots: SlotSet,
}

/// Per other region: how many nodes we know, and when we last heard from any of them.
#[derive(Debug, Clone)]
pub struct RegionSummary {
    pub name: String,
    pub nodes: usize,
    pub since_heard: Duration,
}

struct Remote {
    topology: Topology,
    heard: Instant,
}

pub struct Regions {
    mine: String,
    /// `region-peers`: where to send our records before we know anybody over there.
    seeds: RwLock<Vec<SocketAddr>>,
    map: RwLock<BTreeMap<String, Remote>>,
}

impl Regions {
    pub fn new(mine: String) -> Self {
        Regions {
            mine,
            seeds: RwLock::new(Vec::new()),
            map: RwLock::new(BTreeMap::new()),
        }
    }

    pub fn mine(&self) -> &str {
        &self.mine
    }

    pub fn set_seeds(&self, seeds: Vec<SocketAddr>) {
        *self.seeds.write() = seeds;
    }

    /// Takes a record of a node of another region (records of our own region are ignored:
    /// the region's own gossip is their authority). Returns whether that region's slot map or
    /// addresses changed.
    pub fn upsert(&self, info: NodeInfo) -> bool {
        if info.region == self.mine {
            return false;
        }
        let now = crate::clock::unix_ms();
        let mut map = self.map.write();
        match map.get_mut(&info.region) {
            Some(r) => {
                r.heard = Instant::now();
                r.topology.upsert(info, now)
            }
            None => {
                let name = info.region.clone();
                map.insert(
                    name,
                    Remote {
                        topology: Topology::new(info, now),
                        heard: Instant::now(),
                    },
                );
                true
            }
        }
    }

    /// Where our region's records go: the seeds and every known node of the other regions.
    pub fn targets(&self) -> Vec<SocketAddr> {
        let mut t: Vec<SocketAddr> = self.seeds.read().clone();
        for r in self.map.read().values() {
            t.extend(r.topology.nodes.values().map(|v| v.info.wan_mesh()));
        }
        t.sort();
        t.dedup();
        t
    }

    /// For each other region, the primaries owning some of `mine`, with the slots in common
    /// (what a link from us to them carries).
    pub fn owners_of(&self, mine: &SlotSet) -> Vec<RemoteOwner> {
        let mut out = Vec::new();
        if mine.is_empty() {
            return out;
        }
        for (name, r) in self.map.read().iter() {
            let t = &r.topology;
            let mut by_owner: BTreeMap<u64, SlotSet> = BTreeMap::new();
            for s in mine.iter() {
                let o = t.owner_id(s);
                if o != 0 {
                    by_owner.entry(o).or_default().insert(s);
                }
            }
            for (id, slots) in by_owner {
                let Some(v) = t.node(id) else { continue };
                if v.info.role != Role::Primary {
                    continue;
                }
                out.push(RemoteOwner {
                    region: name.clone(),
                    id,
                    mesh: v.info.wan_mesh(),
                    slots,
                });
            }
        }
        out
    }

    /// The region a remote node belongs to, if we know it.
    pub fn region_of(&self, id: u64) -> Option<String> {
        self.map
            .read()
            .iter()
            .find(|(_, r)| r.topology.node(id).is_some())
            .map(|(n, _)| n.clone())
    }

    pub fn summaries(&self) -> Vec<RegionSummary> {
        self.map
            .read()
            .iter()
            .map(|(name, r)| RegionSummary {
                name: name.clone(),
                nodes: r.topology.nodes.len(),
                since_heard: r.heard.elapsed(),
            })
            .collect()
    }

    /// Every known record of the other regions (CLUSTER-like listings, tests).
    pub fn records(&self) -> Vec<NodeInfo> {
        self.map
            .read()
            .values()
            .flat_map(|r| r.topology.nodes.values().map(|v| v.info.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u64, region: &str, epoch: u64, version: u64, slots: &[(u16, u16)]) -> NodeInfo {
        NodeInfo {
            id,
            version,
            region: region.into(),
            resp: "127.0.0.1:1".parse().unwrap(),
            mesh: format!("127.0.0.1:{}", 100 + id).parse().unwrap(),
            role: Role::Primary,
            config_epoch: epoch,
            slots: SlotSet::from_ranges(slots),
            repl_offset: 0,
            wan: None,
        }
    }

    #[test]
    fn owners_split_our_slots_by_remote_owner_and_follow_larger_epochs() {
        let r = Regions::new("eu".into());
        assert!(
            !r.upsert(rec(1, "eu", 0, 1, &[(0, 16383)])),
            "own region ignored"
        );
        r.upsert(rec(2, "us", 0, 1, &[(0, 8191)]));
        r.upsert(rec(3, "us", 0, 1, &[(8192, 16383)]));
        let mine = SlotSet::from_ranges(&[(8000, 8999)]);
        let o = r.owners_of(&mine);
        assert_eq!(o.len(), 2);
        assert_eq!(o[0].slots.ranges(), vec![(8000, 8191)]);
        assert_eq!(o[1].slots.ranges(), vec![(8192, 8999)]);
        // Node 4 took over node 3's slots with a larger epoch (a failover in "us").
        assert!(r.upsert(rec(4, "us", 1, 2, &[(8192, 16383)])));
        let o = r.owners_of(&mine);
        assert_eq!(o.iter().map(|o| o.id).collect::<Vec<_>>(), vec![2, 4]);
        assert_eq!(r.region_of(4).as_deref(), Some("us"));
        assert_eq!(r.targets().len(), 3);
        // An older version of a record changes nothing.
        assert!(!r.upsert(rec(4, "us", 0, 1, &[])));
    }
}

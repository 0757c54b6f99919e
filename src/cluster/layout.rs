//! The initial layout of a region, read from configuration: which nodes exist, which are
//! primaries with which slots, and which replica follows which primary.
//!
//! Every node reads the same `cluster-nodes` list and computes the same layout, so a fresh
//! region agrees on its slot map before any message is exchanged. The layout only seeds the
//! map: claims made from it carry config epoch 0, so anything decided later (a failover, a
//! migration: epoch ≥ 1) wins over it, even when a node restarts and reads the layout again.

use super::topology::{even_split, Role, SlotSet};
use crate::config::Settings;
use std::net::{SocketAddr, ToSocketAddrs};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("cluster-nodes entry '{0}' is not host:port[@meshport]")]
    BadNode(String),
    #[error("cluster-slots '{0}' is not 'auto' or one range list per primary (e.g. '0-8191 8192-16383')")]
    BadSlots(String),
    #[error("cluster-slots names {got} primaries but the layout has {want}")]
    SlotCount { got: usize, want: usize },
    #[error("cluster-slots leaves slot {0} unassigned or assigns it twice")]
    Coverage(u16),
    #[error("cluster-announce-ip '{0}' is not an address")]
    BadAnnounce(String),
    #[error("region-announce-addr '{0}' is not host:port")]
    BadWanAnnounce(String),
}

/// One node of the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seat {
    pub id: u64,
    pub resp: SocketAddr,
    pub mesh: SocketAddr,
    pub role: Role,
    pub slots: SlotSet,
}

/// A node's cluster identity: stable for an address within a region, so a node that restarts
/// is recognised as itself (and steps down if a replica took over meanwhile).
pub fn node_id(region: &str, resp: SocketAddr) -> u64 {
    // FNV-1a: fixed across processes and versions (unlike a seeded hasher).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in region.bytes().chain([b'|']).chain(resp.to_string().bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.max(1)
}

/// The mesh address that goes with a RESP address when none is given (Redis: port + 10000).
pub fn default_mesh(resp: SocketAddr) -> SocketAddr {
    SocketAddr::new(resp.ip(), resp.port().wrapping_add(10000))
}

pub fn resolve(host_port: &str) -> Option<SocketAddr> {
    host_port.to_socket_addrs().ok()?.next()
}

fn parse_node(s: &str) -> Result<(SocketAddr, SocketAddr), LayoutError> {
    let bad = || LayoutError::BadNode(s.to_string());
    let (resp, mesh_port) = match s.rsplit_once('@') {
        Some((r, m)) => (r, Some(m.parse::<u16>().map_err(|_| bad())?)),
        None => (s, None),
    };
    let resp = resolve(resp).ok_or_else(bad)?;
    let mesh = match mesh_port {
        Some(p) => SocketAddr::new(resp.ip(), p),
        None => default_mesh(resp),
    };
    Ok((resp, mesh))
}

fn parse_ranges(s: &str) -> Option<Vec<(u16, u16)>> {
    s.split(',')
        .map(|r| {
            let (a, b) = r.split_once('-').unwrap_or((r, r));
            let (a, b) = (a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?);
            (a <= b && (b as usize) < crate::store::SLOTS).then_some((a, b))
        })
        .collect()
}

/// Computes the seats of `cluster-nodes`: the first `n / (replicas + 1)` are primaries, the
/// others replicas assigned round-robin, as `redis-cli --cluster create` does.
pub fn seats(
    region: &str,
    nodes: &[String],
    replicas: usize,
    slots: &str,
) -> Result<Vec<Seat>, LayoutError> {
    let addrs = nodes
        .iter()
        .map(|n| parse_node(n))
        .collect::<Result<Vec<_>, _>>()?;
    if addrs.is_empty() {
        return Ok(Vec::new());
    }
    let primaries = (addrs.len() / (replicas + 1)).max(1);
    let ranges: Vec<Vec<(u16, u16)>> = if slots.trim().eq_ignore_ascii_case("auto") {
        even_split(primaries).into_iter().map(|r| vec![r]).collect()
    } else {
        let lists = slots
            .split_whitespace()
            .map(|l| parse_ranges(l).ok_or_else(|| LayoutError::BadSlots(slots.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        if lists.len() != primaries {
            return Err(LayoutError::SlotCount {
                got: lists.len(),
                want: primaries,
            });
        }
        let mut seen = SlotSet::default();
        for r in lists.iter().flatten() {
            for s in r.0..=r.1 {
                if seen.contains(s) {
                    return Err(LayoutError::Coverage(s));
                }
                seen.insert(s);
            }
        }
        lists
    };
    let ids: Vec<u64> = addrs.iter().map(|a| node_id(region, a.0)).collect();
    Ok(addrs
        .iter()
        .enumerate()
        .map(|(i, &(resp, mesh))| {
            let (role, slots) = if i < primaries {
                (Role::Primary, SlotSet::from_ranges(&ranges[i]))
            } else {
                let of = ids[(i - primaries) % primaries];
                (Role::Replica { of }, SlotSet::default())
            };
            Seat {
                id: ids[i],
                resp,
                mesh,
                role,
                slots,
            }
        })
        .collect())
}

/// This node's announced addresses: announce ip (or first bind address) with the RESP port and
/// the announced mesh port (`cluster-announce-bus-port`, else `cluster-port`, else RESP + 10000).
pub fn my_addrs(s: &Settings, resp_port: u16) -> Result<(SocketAddr, SocketAddr), LayoutError> {
    let host = if s.cluster.announce_ip.is_empty() {
        s.bind
            .first()
            .cloned()
            .unwrap_or_else(|| "127.0.0.1".into())
    } else {
        s.cluster.announce_ip.clone()
    };
    let ip = resolve(&format!("{host}:0"))
        .ok_or_else(|| LayoutError::BadAnnounce(host.clone()))?
        .ip();
    let resp = SocketAddr::new(ip, resp_port);
    let mesh = match (s.cluster.announce_bus_port, s.cluster.port) {
        (0, 0) => default_mesh(resp),
        (0, p) | (p, _) => SocketAddr::new(ip, p),
    };
    Ok((resp, mesh))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("127.0.0.1:{}", 7000 + i)).collect()
    }

    #[test]
    fn three_primaries_three_replicas_like_redis_cli_create() {
        let s = seats("r", &nodes(6), 1, "auto").unwrap();
        assert_eq!(s.iter().filter(|s| s.role == Role::Primary).count(), 3);
        assert_eq!(s[0].slots.ranges(), vec![(0, 5460)]);
        assert_eq!(s[3].role, Role::Replica { of: s[0].id });
        assert_eq!(s[5].role, Role::Replica { of: s[2].id });
        assert_eq!(s[1].mesh.port(), 17001);
    }

    #[test]
    fn explicit_slots_must_cover_each_slot_once() {
        let ok = seats("r", &nodes(2), 0, "0-8191 8192-16383").unwrap();
        assert_eq!(ok[1].slots.ranges(), vec![(8192, 16383)]);
        assert_eq!(
            seats("r", &nodes(2), 0, "0-9000 9000-16383"),
            Err(LayoutError::Coverage(9000))
        );
        assert!(matches!(
            seats("r", &nodes(2), 0, "0-16383"),
            Err(LayoutError::SlotCount { got: 1, want: 2 })
        ));
        assert!(seats("r", &["nope".into()], 0, "auto").is_err());
        assert_eq!(
            seats("r", &["127.0.0.1:1@99".into()], 0, "auto").unwrap()[0]
                .mesh
                .port(),
            99
        );
    }

    #[test]
    fn ids_are_stable_and_depend_on_region_and_address() {
        let a: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        assert_eq!(node_id("eu", a), node_id("eu", a));
        assert_ne!(node_id("eu", a), node_id("us", a));
    }
}

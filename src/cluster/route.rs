//! The routing decision for one command (or one EXEC'd transaction): serve it here, or answer
//! with the redirect or error a Redis Cluster client expects. Pure: the caller hands over the
//! slot map snapshot, the keys, what the client flagged, and a key-existence probe.
//!
//! It follows Redis's `getNodeByQuery` (cluster.c) step by step, so the precedence of errors is
//! the same: CROSSSLOT, then an unserved slot, then a cluster that is down, then an open
//! migration (ASK / TRYAGAIN), an import reached with ASKING, a READONLY replica read, and
//! finally MOVED to the owner.
//!
//! It runs on every keyed command, so the common case (a stable slot this node owns) costs the
//! CRC16 of each key and a few loads: no allocation, no lock, and key existence is looked up
//! only when the slot is being migrated or imported.

use super::topology::{Role, Topology};
use crate::store::key_slot;
use std::net::SocketAddr;

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Run it here.
    Serve,
    /// `-MOVED <slot> <host>:<port>`: the slot lives elsewhere; the client refreshes its map.
    Moved(u16, SocketAddr),
    /// `-ASK <slot> <host>:<port>`: the keys already moved to the importing node; retry there
    /// once, after ASKING.
    Ask(u16, SocketAddr),
    /// Keys of different slots.
    CrossSlot,
    /// A multi-key request on a slot being moved, with only some of the keys here.
    TryAgain,
    /// The slot has no owner.
    Unbound,
    /// The cluster is in state `fail` (not every slot has a live owner).
    Down,
}

impl Route {
    /// The error line (without `-` and CRLF) a client gets; `None` for [`Route::Serve`].
    pub fn error(&self) -> Option<String> {
        let redirect = |kind: &str, slot: u16, to: &SocketAddr| {
            // Redis prints the bare IP (no brackets for IPv6) and the port.
            format!("{kind} {slot} {}:{}", to.ip(), to.port())
        };
        Some(match self {
            Route::Serve => return None,
            Route::Moved(slot, to) => redirect("MOVED", *slot, to),
            Route::Ask(slot, to) => redirect("ASK", *slot, to),
            Route::CrossSlot => "CROSSSLOT Keys in request don't hash to the same slot".into(),
            Route::TryAgain => "TRYAGAIN Multiple keys request during rehashing of slot".into(),
            Route::Unbound => "CLUSTERDOWN Hash slot not served".into(),
            Route::Down => "CLUSTERDOWN The cluster is down".into(),
        })
    }
}

/// What the client flagged on its connection, and what kind of request this is, as far as
/// routing cares.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flags {
    /// ASKING was sent (one-shot), or the command implies it (RESTORE-ASKING): an importing
    /// slot may be served.
    pub asking: bool,
    /// READONLY was sent and the request does not write: a replica may serve its primary's slots.
    pub replica_read: bool,
    /// The request is MIGRATE: it moves keys from wherever they are, so a slot being migrated or
    /// imported is served here whatever keys are missing.
    pub migrate: bool,
}

/// Decides where a request with these `keys` is served. `cluster_ok` is [`state_ok`] of the
/// same snapshot; `exists` is asked about keys only while their slot is migrating or importing.
pub fn route<'k, K>(
    t: &Topology,
    cluster_ok: bool,
    keys: K,
    flags: Flags,
    mut exists: impl FnMut(&[u8]) -> bool,
) -> Route
where
    K: Iterator<Item = &'k [u8]> + Clone,
{
    // 1. One slot for every key; a request without keys is served here.
    let mut rest = keys.clone();
    let Some(first) = rest.next() else {
        return Route::Serve;
    };
    let slot = key_slot(first);
    // 2. An owner (checked at the first key, as Redis does), and a cluster that is up.
    let Some(owner) = t.owner(slot) else {
        return Route::Unbound;
    };
    let mut multiple = false;
    for k in rest {
        if key_slot(k) != slot {
            return Route::CrossSlot;
        }
        multiple |= k != first;
    }
    if !cluster_ok {
        return Route::Down;
    }
    let owner_id = owner.info.id;
    let me = t.myself;
    // 3. An open migration (only the owner migrates) or import.
    let migrating_to = match owner_id == me {
        true => t.migrating.get(&slot).and_then(|&dst| t.node(dst)),
        false => None,
    };
    let importing = migrating_to.is_none() && t.importing.contains_key(&slot);
    if flags.migrate && (migrating_to.is_some() || importing) {
        return Route::Serve;
    }
    let importing = importing && flags.asking;
    if migrating_to.is_some() || importing {
        let (mut missing, mut present) = (0usize, 0usize);
        for k in keys {
            match exists(k) {
                true => present += 1,
                false => missing += 1,
            }
        }
        if let Some(dst) = migrating_to {
            if missing > 0 {
                return match present {
                    0 => Route::Ask(slot, dst.info.resp),
                    _ => Route::TryAgain,
                };
            }
        } else {
            return match multiple && missing > 0 {
                true => Route::TryAgain,
                false => Route::Serve,
            };
        }
    }
    // 4. Reads of our primary's slots on a READONLY replica.
    if owner_id != me && flags.replica_read {
        if let Some(myself) = t.node(me) {
            if myself.info.role == (Role::Replica { of: owner_id }) {
                return Route::Serve;
            }
        }
    }
    if owner_id == me {
        Route::Serve
    } else {
        Route::Moved(slot, owner.info.resp)
    }
}

/// Whether the cluster is in state `ok`: every slot has an owner and every owner is online
/// (Redis's default `cluster-require-full-coverage yes`). Kept by the snapshot itself.
pub fn state_ok(t: &Topology) -> bool {
    t.state_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::topology::{even_split, Health, NodeInfo, SlotSet};
    use std::collections::HashSet;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn info(id: u64, role: Role, slots: &[(u16, u16)]) -> NodeInfo {
        NodeInfo {
            id,
            version: 1,
            region: "r".into(),
            resp: addr(7000 + id as u16),
            mesh: addr(17000 + id as u16),
            role,
            config_epoch: id,
            slots: SlotSet::from_ranges(slots),
            repl_offset: 0,
            wan: None,
        }
    }

    /// Three primaries (1, 2, 3) with an even split and a replica (4) of 1, seen from `me`.
    fn region(me: u64) -> Topology {
        let split = even_split(3);
        let mut nodes = vec![
            info(1, Role::Primary, &split[0..1]),
            info(2, Role::Primary, &split[1..2]),
            info(3, Role::Primary, &split[2..3]),
            info(4, Role::Replica { of: 1 }, &[]),
        ];
        let mine = nodes.remove(me as usize - 1);
        let mut t = Topology::new(mine, 0);
        for n in nodes {
            t.upsert(n, 0);
        }
        t
    }

    fn go(t: &Topology, keys: &[&str], flags: Flags, here: &[&str]) -> Route {
        let here: HashSet<&[u8]> = here.iter().map(|k| k.as_bytes()).collect();
        let keys = keys.iter().map(|k| k.as_bytes());
        route(t, t.state_ok(), keys, flags, |k| here.contains(k))
    }

    const NONE: Flags = Flags {
        asking: false,
        replica_read: false,
        migrate: false,
    };
    // Slots: "a" 15495 (node 3), "b" 3300 (node 1), "foo" 12182 (node 3).

    #[test]
    fn owner_serves_others_redirect() {
        let t = region(1);
        assert_eq!(go(&t, &[], NONE, &[]), Route::Serve);
        assert_eq!(go(&t, &["b"], NONE, &[]), Route::Serve);
        assert_eq!(go(&t, &["a"], NONE, &[]), Route::Moved(15495, addr(7003)));
        assert_eq!(
            go(&t, &["{a}1", "{a}2"], NONE, &[]),
            Route::Moved(15495, addr(7003))
        );
        assert_eq!(go(&t, &["a", "b"], NONE, &[]), Route::CrossSlot);
        assert_eq!(
            Route::Moved(15495, addr(7003)).error().unwrap(),
            "MOVED 15495 127.0.0.1:7003"
        );
    }

    #[test]
    fn unserved_slot_and_failed_owner() {
        let mut t = region(1);
        t.update_me(1, |i| i.slots = SlotSet::from_ranges(&[(0, 99)]));
        assert_eq!(go(&t, &["b"], NONE, &[]), Route::Unbound);
        assert_eq!(
            go(&t, &["a"], NONE, &[]),
            Route::Down,
            "slot 3300 is unowned"
        );
        assert_eq!(
            go(&t, &["b", "a"], NONE, &[]),
            Route::Unbound,
            "first key decides"
        );
        let mut t = region(1);
        t.set_health(3, Health::Fail);
        assert_eq!(go(&t, &["b"], NONE, &[]), Route::Down);
    }

    #[test]
    fn migrating_slot_asks_for_missing_keys() {
        let mut t = region(3);
        t.migrating.insert(15495, 1);
        assert_eq!(go(&t, &["{a}x"], NONE, &["{a}x"]), Route::Serve);
        assert_eq!(
            go(&t, &["{a}y"], NONE, &["{a}x"]),
            Route::Ask(15495, addr(7001))
        );
        assert_eq!(
            go(&t, &["{a}y", "{a}z"], NONE, &[]),
            Route::Ask(15495, addr(7001))
        );
        assert_eq!(go(&t, &["{a}x", "{a}y"], NONE, &["{a}x"]), Route::TryAgain);
        assert_eq!(
            go(&t, &["foo"], NONE, &[]),
            Route::Serve,
            "other slots untouched"
        );
        let migrate = Flags {
            migrate: true,
            ..NONE
        };
        assert_eq!(go(&t, &["{a}x", "{a}y"], migrate, &["{a}x"]), Route::Serve);
        assert_eq!(go(&t, &["b"], migrate, &[]), Route::Moved(3300, addr(7001)));
    }

    #[test]
    fn importing_slot_needs_asking() {
        let mut t = region(1);
        t.importing.insert(15495, 3);
        let asking = Flags {
            asking: true,
            ..NONE
        };
        assert_eq!(
            go(&t, &["{a}y"], NONE, &[]),
            Route::Moved(15495, addr(7003))
        );
        assert_eq!(go(&t, &["{a}y"], asking, &[]), Route::Serve);
        assert_eq!(
            go(&t, &["{a}y", "{a}y"], asking, &[]),
            Route::Serve,
            "same key twice"
        );
        assert_eq!(
            go(&t, &["{a}x", "{a}y"], asking, &["{a}x"]),
            Route::TryAgain
        );
        assert_eq!(
            go(&t, &["{a}x", "{a}y"], asking, &["{a}x", "{a}y"]),
            Route::Serve
        );
        let migrate = Flags {
            migrate: true,
            ..NONE
        };
        assert_eq!(go(&t, &["{a}x", "{a}y"], migrate, &[]), Route::Serve);
    }

    #[test]
    fn readonly_replica_reads_its_primarys_slots() {
        let t = region(4);
        let read = Flags {
            replica_read: true,
            ..NONE
        };
        assert_eq!(go(&t, &["b"], NONE, &[]), Route::Moved(3300, addr(7001)));
        assert_eq!(go(&t, &["b"], read, &[]), Route::Serve);
        assert_eq!(go(&t, &["a"], read, &[]), Route::Moved(15495, addr(7003)));
    }

    #[test]
    fn state_follows_liveness_and_coverage() {
        let ok = region(1);
        let mut down = region(1);
        down.set_health(2, Health::Fail);
        assert!(state_ok(&ok));
        assert!(!state_ok(&down));
        down.set_health(2, Health::Online);
        assert!(state_ok(&down));
    }
}

//! The CLUSTER subcommands that change the map: SETSLOT, FAILOVER, ADDSLOTS, ADDSLOTSRANGE,
//! MEET, REPLICATE. The changes themselves belong to the cluster runtime (`Cluster::setslot`
//! and the others); this file parses the arguments and makes the checks Redis makes before it
//! resolves a node name or touches the map, so the errors come in Redis's order.

use super::cluster_of;
use crate::cluster::{Cluster, ClusterError, FailoverMode, Role, SetSlot, SlotSet, Topology};
use crate::cmd::{arg_i64, is, CmdError, CmdResult, Ctx};
use crate::resp::Args;
use crate::store::SLOTS;
use std::net::{IpAddr, SocketAddr};

fn cluster_err(e: ClusterError) -> CmdError {
    CmdError::Msg(e.to_string())
}

/// A slot argument (`ERR Invalid or out of range slot`).
fn parse_slot(a: &[u8]) -> Result<u16, CmdError> {
    match crate::crdt::number::parse_i64(a) {
        Some(s) if (0..SLOTS as i64).contains(&s) => Ok(s as u16),
        _ => Err(cluster_err(ClusterError::BadSlot)),
    }
}

pub(super) fn setslot(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let c = cluster_of(ctx)?;
    let t = c.topology();
    if t.me().role != Role::Primary {
        return Err(CmdError::Msg(
            "ERR Please use SETSLOT only with masters.".into(),
        ));
    }
    let slot = parse_slot(args.get(2))?;
    let (action, n) = (args.get(3), args.len());
    let mine = t.owner_id(slot) == t.myself;
    // MIGRATING and IMPORTING name the peer as Redis does ("I don't know about node").
    let peer = |name: &[u8]| {
        c.lookup_name(name).map_err(|_| {
            let name = String::from_utf8_lossy(name);
            CmdError::Msg(format!("ERR I don't know about node {name}"))
        })
    };
    let change = if is(action, "migrating") && n == 5 {
        if !mine {
            return Err(cluster_err(ClusterError::NotOwner(slot)));
        }
        SetSlot::Migrating(peer(args.get(4))?)
    } else if is(action, "importing") && n == 5 {
        if mine {
            return Err(cluster_err(ClusterError::AlreadyOwner(slot)));
        }
        SetSlot::Importing(peer(args.get(4))?)
    } else if is(action, "stable") && n == 4 {
        SetSlot::Stable
    } else if is(action, "node") && n == 5 {
        SetSlot::Node(c.lookup_name(args.get(4)).map_err(cluster_err)?)
    } else {
        return Err(CmdError::Msg(
            "ERR Invalid CLUSTER SETSLOT action or number of arguments. Try CLUSTER HELP".into(),
        ));
    };
    drop(t);
    c.setslot(slot, change).map_err(cluster_err)?;
    ctx.out.ok();
    Ok(())
}

/// Redis's reply to a known subcommand with an argument count it does not take.
fn sub_syntax(args: Args<'_>) -> CmdError {
    CmdError::Msg(format!(
        "ERR unknown subcommand or wrong number of arguments for '{}'. Try CLUSTER HELP.",
        String::from_utf8_lossy(args.get(1))
    ))
}

pub(super) fn failover(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let c = cluster_of(ctx)?;
    let mode = match args.len() {
        2 => FailoverMode::Default,
        3 if is(args.get(2), "force") => FailoverMode::Force,
        3 if is(args.get(2), "takeover") => FailoverMode::Takeover,
        3 => return Err(CmdError::Syntax),
        _ => return Err(sub_syntax(args)),
    };
    c.failover(mode).map_err(cluster_err)?;
    ctx.out.ok();
    Ok(())
}

/// `CLUSTER MEET <ip> <port> [<bus-port>]`: the bus port defaults to port + 10000, as in
/// Redis, which is also Meridian's default mesh port.
pub(super) fn meet(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let c = cluster_of(ctx)?;
    if args.len() > 5 {
        return Err(sub_syntax(args));
    }
    let text = |a: &[u8]| String::from_utf8_lossy(a).into_owned();
    let port = arg_i64(args.get(3)).map_err(|_| {
        CmdError::Msg(format!(
            "ERR Invalid TCP base port specified: {}",
            text(args.get(3))
        ))
    })?;
    let bus = match args.len() {
        5 => arg_i64(args.get(4)).map_err(|_| {
            CmdError::Msg(format!(
                "ERR Invalid TCP bus port specified: {}",
                text(args.get(4))
            ))
        })?,
        _ => port.saturating_add(10000),
    };
    let ip = std::str::from_utf8(args.get(2))
        .ok()
        .and_then(|s| s.parse::<IpAddr>().ok());
    let valid = |p: i64| (1..=65535).contains(&p);
    match ip {
        Some(ip) if valid(port) && valid(bus) => c.meet(SocketAddr::new(ip, bus as u16)),
        _ => {
            return Err(CmdError::Msg(format!(
                "ERR Invalid node address specified: {}:{}",
                text(args.get(2)),
                text(args.get(3))
            )))
        }
    }
    ctx.out.ok();
    Ok(())
}

/// `CLUSTER REPLICATE <node>`: Redis's checks in Redis's order (the runtime repeats the ones
/// on the map under its lock; the keyspace one only the command can make).
pub(super) fn replicate(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let c = cluster_of(ctx)?;
    let primary = c.lookup_name(args.get(2)).map_err(cluster_err)?;
    {
        let t = c.topology();
        let refusal = if primary == t.myself {
            Some(ClusterError::ReplicateSelf)
        } else if t
            .node(primary)
            .is_some_and(|p| p.info.role != Role::Primary)
        {
            Some(ClusterError::ReplicateReplica)
        } else if t.me().role == Role::Primary
            && (!t.me().slots.is_empty() || ctx.node.keyspace.dbsize() != 0)
        {
            Some(ClusterError::NotEmpty)
        } else {
            None
        };
        if let Some(e) = refusal {
            return Err(cluster_err(e));
        }
    }
    c.replicate(primary).map_err(cluster_err)?;
    ctx.out.ok();
    Ok(())
}

/// Redis's per-slot checks before a claim: not owned yet, and named once.
fn check_free(t: &Topology, seen: &mut SlotSet, a: u16, b: u16) -> CmdResult {
    for slot in a..=b {
        if t.owner_id(slot) != 0 {
            return Err(cluster_err(ClusterError::SlotBusy(slot)));
        }
        if seen.contains(slot) {
            return Err(CmdError::Msg(format!(
                "ERR Slot {slot} specified multiple times"
            )));
        }
        seen.insert(slot);
    }
    Ok(())
}

fn claim(ctx: &mut Ctx<'_, '_>, c: &Cluster, slots: &SlotSet) -> CmdResult {
    let slots: Vec<u16> = slots.iter().collect();
    c.add_slots(&slots).map_err(cluster_err)?;
    ctx.out.ok();
    Ok(())
}

pub(super) fn addslots(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let c = cluster_of(ctx)?;
    // Every argument parses before any is checked, as in Redis.
    let wanted = args
        .skip(2)
        .iter()
        .map(parse_slot)
        .collect::<Result<Vec<u16>, _>>()?;
    let mut seen = SlotSet::default();
    {
        let t = c.topology();
        for &s in &wanted {
            check_free(&t, &mut seen, s, s)?;
        }
    }
    claim(ctx, c, &seen)
}

pub(super) fn addslotsrange(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let c = cluster_of(ctx)?;
    if args.len() % 2 == 1 {
        return Err(CmdError::Arity("cluster|addslotsrange".into()));
    }
    let mut seen = SlotSet::default();
    {
        let t = c.topology();
        for i in (2..args.len()).step_by(2) {
            let (a, b) = (parse_slot(args.get(i))?, parse_slot(args.get(i + 1))?);
            if a > b {
                return Err(CmdError::Msg(format!(
                    "ERR start slot number {a} is greater than end slot number {b}"
                )));
            }
            check_free(&t, &mut seen, a, b)?;
        }
    }
    claim(ctx, c, &seen)
}

//! Conflict introspection (DESIGN.md §7): `MERIDIAN EXPLAIN key` shows why a key has its value.
//!
//! The reply is a map: the value a reader sees and whether the key is live; the register (bytes
//! or tombstone, its stamp and origin node); the counter contributions per actor (epoch and
//! totals) with those the register write observed; and the expiry deadline with the stamp that
//! set it. With it an operator can tell, after a partition heals, which write won and why.

use super::table::dispatch_sub;
use super::{CmdResult, Ctx};
use crate::crdt::{Contributions, Stamp};
use crate::resp::{Args, Out};
use crate::spec;

// keyspace_wide: EXPLAIN reads the raw entry through the keyspace, so EXEC must not hold the
// key's slot lock around it (a non-reentrant lock: it would deadlock).
#[rustfmt::skip]
pub const COMMANDS: &[super::CommandSpec] = &[
    spec!("meridian", -2, ["keyspace_wide"], 0, 0, 0, "server", "0.1.0", "A container for Meridian's own commands (conflict introspection).", dispatch_sub, MERIDIAN),
];

#[rustfmt::skip]
const MERIDIAN: &[super::CommandSpec] = &[
    spec!("meridian|explain", 3, ["readonly"], 2, 2, 1, "server", "0.1.0", "Shows a key's register stamp and origin, counter contributions and expiry: why it has its value.", explain),
];

fn stamp(out: &mut Out, s: Stamp) {
    out.map(3);
    out.bulk(b"hlc");
    out.bulk(s.to_string().as_bytes());
    out.bulk(b"unix_ms");
    out.int(s.unix_ms() as i64);
    out.bulk(b"node");
    out.bulk(format!("{:x}", s.node).as_bytes());
}

/// Per actor: its ID, the epoch its totals count in (the stamp of the op that opened it, at the
/// bottom stamp for totals written before epochs existed), and the totals.
fn contributions(out: &mut Out, c: &Contributions) {
    out.array(c.len());
    for c in c.iter() {
        let (actor, t) = (c.actor, &c.totals);
        out.map(6);
        out.bulk(b"actor");
        out.bulk(format!("{actor:x}").as_bytes());
        out.bulk(b"epoch");
        stamp(out, Stamp::new(c.epoch, actor));
        out.bulk(b"int_inc");
        out.bulk(t.int_inc.to_string().as_bytes());
        out.bulk(b"int_dec");
        out.bulk(t.int_dec.to_string().as_bytes());
        out.bulk(b"float_inc");
        out.double(t.float_inc);
        out.bulk(b"float_dec");
        out.double(t.float_dec);
    }
}

fn explain(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let key = args.get(2);
    let Some(e) = ctx.node.keyspace.entry(key) else {
        ctx.out.null();
        return Ok(());
    };
    let now = crate::clock::unix_ms();
    let out = &mut *ctx.out;
    out.map(6);
    out.bulk(b"value");
    let live = e.is_live(now);
    out.bulk_opt(if live { e.value() } else { None }.as_deref());
    out.bulk(b"live");
    out.boolean(live);
    out.bulk(b"register");
    out.map(3);
    out.bulk(b"value");
    out.bulk_opt(e.register_value());
    out.bulk(b"tombstone");
    out.boolean(e.register_value().is_none());
    out.bulk(b"stamp");
    stamp(out, e.register_stamp());
    out.bulk(b"contributions");
    match e.contributions() {
        Some((c, _, _)) => contributions(out, c),
        None => out.array(0),
    }
    // Including what the write observed through its floor (docs/semantics.md, "Floors").
    out.bulk(b"observed");
    match e.contributions() {
        Some(_) => contributions(out, &e.observed_now()),
        None => out.array(0),
    }
    out.bulk(b"expiry");
    let x = e.expiry();
    out.map(2);
    out.bulk(b"deadline_ms");
    match x.deadline_ms {
        Some(d) => out.int(d as i64),
        None => out.null(),
    }
    out.bulk(b"stamp");
    stamp(out, x.stamp);
    Ok(())
}

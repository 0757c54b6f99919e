//! Counter commands: INCR, DECR, INCRBY, DECRBY, INCRBYFLOAT.
//!
//! An increment never rewrites the register: it grows this node's monotonic contribution
//! (DESIGN.md §2), so concurrent increments in other regions add up instead of overwriting each
//! other, and a concurrent SET or DEL keeps only what it did not observe. Type and overflow are
//! checked against the value the client sees now, with Redis's errors.

use super::{arg_i64, CmdError, CmdResult, Ctx};
use crate::crdt::number::{format_float, parse_f64};
use crate::resp::Args;
use crate::spec;
use crate::store::Ttl;

#[rustfmt::skip]
pub const COMMANDS: &[super::CommandSpec] = &[
    spec!("incr", 2, ["write", "denyoom", "fast"], 1, 1, 1, "string", "1.0.0", "Increments the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.", incr),
    spec!("decr", 2, ["write", "denyoom", "fast"], 1, 1, 1, "string", "1.0.0", "Decrements the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.", decr),
    spec!("incrby", 3, ["write", "denyoom", "fast"], 1, 1, 1, "string", "1.0.0", "Increments the integer value of a key by a number. Uses 0 as initial value if the key doesn't exist.", incrby),
    spec!("decrby", 3, ["write", "denyoom", "fast"], 1, 1, 1, "string", "1.0.0", "Decrements a number from the integer value of a key. Uses 0 as initial value if the key doesn't exist.", decrby),
    spec!("incrbyfloat", 3, ["write", "denyoom", "fast"], 1, 1, 1, "string", "2.6.0", "Increment the floating point value of a key by a number. Uses 0 as initial value if the key doesn't exist.", incrbyfloat),
];

fn incr_generic(ctx: &mut Ctx<'_, '_>, key: &[u8], by: i64) -> CmdResult {
    let new = ctx.db.key(key, |k| {
        let cur = k.integer().map_err(|_| CmdError::NotInteger)?.unwrap_or(0);
        let new = cur.checked_add(by).ok_or(CmdError::Overflow)?;
        // Adding zero to a missing key creates "0", as Redis does (KeyMut::add_int).
        k.add_int(by);
        Ok::<_, CmdError>(new)
    })?;
    ctx.out.int(new);
    Ok(())
}

fn incr(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    incr_generic(ctx, args.get(1), 1)
}

fn decr(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    incr_generic(ctx, args.get(1), -1)
}

fn incrby(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let by = arg_i64(args.get(2))?;
    incr_generic(ctx, args.get(1), by)
}

fn decrby(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let by = arg_i64(args.get(2))?;
    if by == i64::MIN {
        return Err(CmdError::Msg("ERR decrement would overflow".into()));
    }
    incr_generic(ctx, args.get(1), -by)
}

fn incrbyfloat(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let by = parse_f64(args.get(2)).ok_or(CmdError::NotFloat)?;
    let out = &mut *ctx.out;
    ctx.db.key(args.get(1), |k| {
        let cur = match k.value() {
            None => 0.0,
            Some(v) => parse_f64(&v).ok_or(CmdError::NotFloat)?,
        };
        if !by.is_finite() || !(cur + by).is_finite() {
            return Err(CmdError::NanOrInfinity);
        }
        if by != 0.0 {
            k.add_float(by);
        } else {
            // Zero adds no contribution; like Redis, rewrite the value in its canonical form
            // (a missing key becomes "0", "5.0" becomes "5"), keeping the TTL.
            k.set_bytes(format_float(cur).as_bytes(), Ttl::Keep);
        }
        out.bulk_opt(k.value().as_deref());
        Ok(())
    })
}

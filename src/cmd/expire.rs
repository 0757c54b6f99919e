//! Expiry commands: EXPIRE and friends, TTL and friends, PERSIST.
//!
//! A deadline is absolute (UNIX ms) and replicated with its own stamp, so every region expires
//! the key at the same instant without sending a DEL (DESIGN.md §2). A deadline already in the
//! past deletes the key, as Redis does.

use super::strings::Unit;
use super::{arg_i64, CmdError, CmdResult, Ctx};
use crate::resp::Args;
use crate::spec;

#[rustfmt::skip]
pub const COMMANDS: &[super::CommandSpec] = &[
    spec!("expire", -3, ["write", "fast"], 1, 1, 1, "generic", "1.0.0", "Sets the expiration time of a key in seconds.", expire),
    spec!("pexpire", -3, ["write", "fast"], 1, 1, 1, "generic", "2.6.0", "Sets the expiration time of a key in milliseconds.", pexpire),
    spec!("expireat", -3, ["write", "fast"], 1, 1, 1, "generic", "1.2.0", "Sets the expiration time of a key to a Unix timestamp.", expireat),
    spec!("pexpireat", -3, ["write", "fast"], 1, 1, 1, "generic", "2.6.0", "Sets the expiration time of a key to a Unix milliseconds timestamp.", pexpireat),
    spec!("ttl", 2, ["readonly", "fast"], 1, 1, 1, "generic", "1.0.0", "Returns the expiration time in seconds of a key.", ttl),
    spec!("pttl", 2, ["readonly", "fast"], 1, 1, 1, "generic", "2.6.0", "Returns the expiration time in milliseconds of a key.", pttl),
    spec!("expiretime", 2, ["readonly", "fast"], 1, 1, 1, "generic", "7.0.0", "Returns the expiration time of a key as a Unix timestamp.", expiretime),
    spec!("pexpiretime", 2, ["readonly", "fast"], 1, 1, 1, "generic", "7.0.0", "Returns the expiration time of a key as a Unix milliseconds timestamp.", pexpiretime),
    spec!("persist", 2, ["write", "fast"], 1, 1, 1, "generic", "2.2.0", "Removes the expiration time of a key.", persist),
];

/// Redis `expireGenericCommand`.
fn expire_generic(
    ctx: &mut Ctx<'_, '_>,
    args: Args<'_>,
    unit: Unit,
    absolute: bool,
    cmd: &'static str,
) -> CmdResult {
    // Redis checks the options before it parses the time.
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for a in args.skip(3).iter() {
        match a.to_ascii_uppercase().as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GT" => gt = true,
            b"LT" => lt = true,
            _ => {
                return Err(CmdError::Msg(format!(
                    "ERR Unsupported option {}",
                    String::from_utf8_lossy(a)
                )))
            }
        }
    }
    if nx && (xx || gt || lt) {
        return Err(CmdError::Msg(
            "ERR NX and XX, GT or LT options at the same time are not compatible".into(),
        ));
    }
    if gt && lt {
        return Err(CmdError::Msg(
            "ERR GT and LT options at the same time are not compatible".into(),
        ));
    }
    let when = arg_i64(args.get(2))?;
    let now = crate::clock::unix_ms() as i64;
    let ms = match unit {
        Unit::Seconds => when.checked_mul(1000).ok_or(CmdError::InvalidExpire(cmd))?,
        Unit::Millis => when,
    };
    let deadline = if absolute {
        ms
    } else {
        ms.checked_add(now).ok_or(CmdError::InvalidExpire(cmd))?
    };
    let done = ctx.db.key(args.get(1), |k| {
        let Some(current) = k.deadline() else {
            return false;
        };
        // No TTL counts as an infinite one for GT and LT.
        let cur = current.map_or(i64::MAX, |d| d as i64);
        let allowed = (!nx || current.is_none())
            && (!xx || current.is_some())
            && (!gt || deadline > cur)
            && (!lt || deadline < cur);
        if !allowed {
            return false;
        }
        if deadline <= k.now_ms() as i64 {
            k.delete();
        } else {
            k.set_deadline(Some(deadline as u64));
        }
        true
    });
    ctx.out.int(done as i64);
    Ok(())
}

fn expire(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    expire_generic(ctx, args, Unit::Seconds, false, "expire")
}

fn pexpire(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    expire_generic(ctx, args, Unit::Millis, false, "pexpire")
}

fn expireat(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    expire_generic(ctx, args, Unit::Seconds, true, "expireat")
}

fn pexpireat(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    expire_generic(ctx, args, Unit::Millis, true, "pexpireat")
}

/// -2 when the key does not exist, -1 when it has no deadline, else `f(deadline, now)`.
fn ttl_generic(ctx: &mut Ctx<'_, '_>, key: &[u8], f: impl FnOnce(u64, u64) -> i64) -> CmdResult {
    let reply = ctx.db.key(key, |k| match k.deadline() {
        None => -2,
        Some(None) => -1,
        Some(Some(d)) => f(d, k.now_ms()),
    });
    ctx.out.int(reply);
    Ok(())
}

fn ttl(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    // Redis rounds the remaining milliseconds to the nearest second.
    ttl_generic(ctx, args.get(1), |d, now| {
        ((d.saturating_sub(now) + 500) / 1000) as i64
    })
}

fn pttl(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    ttl_generic(ctx, args.get(1), |d, now| d.saturating_sub(now) as i64)
}

fn expiretime(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    // Rounded to the nearest second, as Redis does (and as TTL does).
    ttl_generic(ctx, args.get(1), |d, _| ((d + 500) / 1000) as i64)
}

fn pexpiretime(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    ttl_generic(ctx, args.get(1), |d, _| d as i64)
}

fn persist(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let done = ctx.db.key(args.get(1), |k| match k.deadline() {
        Some(Some(_)) => {
            k.set_deadline(None);
            true
        }
        _ => false,
    });
    ctx.out.int(done as i64);
    Ok(())
}

//! String commands: GET, SET and its variants, multi-key MGET/MSET, and byte-range edits.
//!
//! Every write here is a whole-value register write (DESIGN.md §2: APPEND and SETRANGE race as
//! last-writer-wins on the whole value), stamped once per key per command.

use super::{arg_i64, is, CmdError, CmdResult, Ctx};
use crate::resp::Args;
use crate::spec;
use crate::store::Ttl;

#[rustfmt::skip]
pub const COMMANDS: &[super::CommandSpec] = &[
    spec!("get", 2, ["readonly", "fast"], 1, 1, 1, "string", "1.0.0", "Returns the string value of a key.", get),
    spec!("set", -3, ["write", "denyoom"], 1, 1, 1, "string", "1.0.0", "Sets the string value of a key, ignoring its type. The key is created if it doesn't exist.", set),
    spec!("setnx", 3, ["write", "denyoom", "fast"], 1, 1, 1, "string", "1.0.0", "Set the string value of a key only when the key doesn't exist.", setnx),
    spec!("setex", 4, ["write", "denyoom"], 1, 1, 1, "string", "2.0.0", "Sets the string value and expiration time of a key. Creates the key if it doesn't exist.", setex),
    spec!("psetex", 4, ["write", "denyoom"], 1, 1, 1, "string", "2.6.0", "Sets both string value and expiration time in milliseconds of a key. The key is created if it doesn't exist.", psetex),
    spec!("getset", 3, ["write", "denyoom", "fast"], 1, 1, 1, "string", "1.0.0", "Returns the previous string value of a key after setting it to a new value.", getset),
    spec!("getdel", 2, ["write", "fast"], 1, 1, 1, "string", "6.2.0", "Returns the string value of a key after deleting the key.", getdel),
    spec!("getex", -2, ["write", "fast"], 1, 1, 1, "string", "6.2.0", "Returns the string value of a key after setting its expiration time.", getex),
    spec!("mget", -2, ["readonly", "fast"], 1, -1, 1, "string", "1.0.0", "Atomically returns the string values of one or more keys.", mget),
    spec!("mset", -3, ["write", "denyoom"], 1, -1, 2, "string", "1.0.1", "Atomically creates or modifies the string values of one or more keys.", mset),
    spec!("msetnx", -3, ["write", "denyoom"], 1, -1, 2, "string", "1.0.1", "Atomically modifies the string values of one or more keys only when all keys don't exist.", msetnx),
    spec!("append", 3, ["write", "denyoom", "fast"], 1, 1, 1, "string", "2.0.0", "Appends a string to the value of a key. Creates the key if it doesn't exist.", append),
    spec!("strlen", 2, ["readonly", "fast"], 1, 1, 1, "string", "2.2.0", "Returns the length of a string value.", strlen),
    spec!("getrange", 4, ["readonly"], 1, 1, 1, "string", "2.4.0", "Returns a substring of the string stored at a key.", getrange),
    spec!("substr", 4, ["readonly"], 1, 1, 1, "string", "1.0.0", "Returns a substring from a string value.", getrange),
    spec!("setrange", 4, ["write", "denyoom"], 1, 1, 1, "string", "2.2.0", "Overwrites a part of a string value with another by an offset. Creates the key if it doesn't exist.", setrange),
];

fn get(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let out = &mut *ctx.out;
    ctx.db
        .key(args.get(1), |k| out.bulk_opt(k.read().as_deref()));
    Ok(())
}

/// The units of an expire argument.
#[derive(Clone, Copy)]
pub enum Unit {
    Seconds,
    Millis,
}

/// Turns an EX/PX/EXAT/PXAT argument into an absolute deadline in ms, with Redis's checks
/// (`getExpireMillisecondsOrReply`): positive, and no overflow when scaled or added to now.
pub fn deadline_arg(
    arg: &[u8],
    unit: Unit,
    absolute: bool,
    now_ms: u64,
    cmd: &'static str,
) -> Result<u64, CmdError> {
    let v = arg_i64(arg)?;
    if v <= 0 {
        return Err(CmdError::InvalidExpire(cmd));
    }
    let ms = match unit {
        Unit::Seconds => v.checked_mul(1000).ok_or(CmdError::InvalidExpire(cmd))?,
        Unit::Millis => v,
    };
    if absolute {
        Ok(ms as u64)
    } else {
        ms.checked_add(now_ms as i64)
            .map(|d| d as u64)
            .ok_or(CmdError::InvalidExpire(cmd))
    }
}

/// Parsed SET options.
struct SetOpts {
    nx: bool,
    xx: bool,
    get: bool,
    ttl: Ttl,
}

/// An expire option's name, unit and whether it is absolute (EX, PX, EXAT, PXAT).
fn expire_option(a: &[u8]) -> Option<(&'static str, Unit, bool)> {
    [
        ("EX", Unit::Seconds, false),
        ("PX", Unit::Millis, false),
        ("EXAT", Unit::Seconds, true),
        ("PXAT", Unit::Millis, true),
    ]
    .into_iter()
    .find(|(name, _, _)| is(a, name))
}

/// A pending expire option: (value argument, option name, unit, absolute).
type ExpireArg<'a> = (&'a [u8], &'static str, Unit, bool);

/// Accepts an expire option at `i` the way Redis `parseExtendedStringArgumentsOrReply` does:
/// it needs a value, and may repeat (the last wins) but not mix with another expire option or
/// with `blocked` (KEEPTTL for SET, PERSIST for GETEX).
fn take_expire<'a>(
    args: Args<'a>,
    i: usize,
    current: Option<ExpireArg<'a>>,
    blocked: bool,
) -> Option<ExpireArg<'a>> {
    let (name, unit, abs) = expire_option(args.get(i))?;
    let compatible = current.is_none_or(|(_, cur, _, _)| cur == name);
    (i + 1 < args.len() && compatible && !blocked).then(|| (args.get(i + 1), name, unit, abs))
}

/// Like Redis: every option is checked first (a conflict or unknown word is a syntax error),
/// then the expire value is parsed.
fn parse_set_opts(args: Args<'_>, now_ms: u64) -> Result<SetOpts, CmdError> {
    let mut o = SetOpts {
        nx: false,
        xx: false,
        get: false,
        ttl: Ttl::Clear,
    };
    let mut keepttl = false;
    let mut expire = None;
    let mut i = 3;
    while i < args.len() {
        let a = args.get(i);
        if is(a, "NX") && !o.xx {
            o.nx = true;
        } else if is(a, "XX") && !o.nx {
            o.xx = true;
        } else if is(a, "GET") {
            o.get = true;
        } else if is(a, "KEEPTTL") && expire.is_none() {
            keepttl = true;
        } else if let Some(e) = take_expire(args, i, expire, keepttl) {
            expire = Some(e);
            i += 1;
        } else {
            return Err(CmdError::Syntax);
        }
        i += 1;
    }
    o.ttl = match expire {
        Some((v, _, unit, abs)) => Ttl::At(deadline_arg(v, unit, abs, now_ms, "set")?),
        None if keepttl => Ttl::Keep,
        None => Ttl::Clear,
    };
    Ok(o)
}

fn set(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let now = crate::clock::unix_ms();
    let o = parse_set_opts(args, now)?;
    let (key, value) = (args.get(1), args.get(2));
    let out = &mut *ctx.out;
    ctx.db.key(key, |k| {
        let old: Option<Vec<u8>> = if o.get {
            k.value().map(|v| v.into_owned())
        } else {
            None
        };
        let exists = if o.get {
            old.is_some()
        } else if o.nx || o.xx {
            k.exists()
        } else {
            false
        };
        let apply = !(o.nx && exists || o.xx && !exists);
        if apply {
            k.set_bytes(value, o.ttl);
        }
        match (o.get, apply) {
            (true, _) => out.bulk_opt(old.as_deref()),
            (false, true) => out.ok(),
            (false, false) => out.null(),
        }
    });
    Ok(())
}

fn setnx(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (key, value) = (args.get(1), args.get(2));
    let created = ctx.db.key(key, |k| {
        let absent = !k.exists();
        if absent {
            k.set_bytes(value, Ttl::Clear);
        }
        absent
    });
    ctx.out.int(created as i64);
    Ok(())
}

fn setex_generic(
    ctx: &mut Ctx<'_, '_>,
    args: Args<'_>,
    unit: Unit,
    cmd: &'static str,
) -> CmdResult {
    let deadline = deadline_arg(args.get(2), unit, false, crate::clock::unix_ms(), cmd)?;
    let (key, value) = (args.get(1), args.get(3));
    ctx.db.key(key, |k| k.set_bytes(value, Ttl::At(deadline)));
    ctx.out.ok();
    Ok(())
}

fn setex(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    setex_generic(ctx, args, Unit::Seconds, "setex")
}

fn psetex(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    setex_generic(ctx, args, Unit::Millis, "psetex")
}

fn getset(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (key, value) = (args.get(1), args.get(2));
    let old = ctx.db.key(key, |k| {
        let old = k.value().map(|v| v.into_owned());
        k.set_bytes(value, Ttl::Clear);
        old
    });
    ctx.out.bulk_opt(old.as_deref());
    Ok(())
}

fn getdel(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let key = args.get(1);
    let old = ctx.db.key(key, |k| {
        let old = k.read().map(|v| v.into_owned());
        if old.is_some() {
            k.delete();
        }
        old
    });
    ctx.out.bulk_opt(old.as_deref());
    Ok(())
}

/// What GETEX does to the deadline.
enum GetexOp {
    Keep,
    Persist,
    At(u64),
}

/// Redis order: options are checked first, then the key is looked up (a missing key is nil
/// whatever the expire value), then the expire value is parsed.
fn getex(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let mut persist = false;
    let mut expire = None;
    let mut i = 2;
    while i < args.len() {
        if is(args.get(i), "PERSIST") && expire.is_none() {
            persist = true;
        } else if let Some(e) = take_expire(args, i, expire, persist) {
            expire = Some(e);
            i += 1;
        } else {
            return Err(CmdError::Syntax);
        }
        i += 1;
    }
    let now = crate::clock::unix_ms();
    let key = args.get(1);
    let v = ctx.db.key(key, |k| {
        let Some(v) = k.read().map(|v| v.into_owned()) else {
            return Ok(None);
        };
        let op = match expire {
            Some((arg, _, unit, abs)) => GetexOp::At(deadline_arg(arg, unit, abs, now, "getex")?),
            None if persist => GetexOp::Persist,
            None => GetexOp::Keep,
        };
        match op {
            GetexOp::Keep => {}
            GetexOp::Persist => {
                if k.deadline() != Some(None) {
                    k.set_deadline(None);
                }
            }
            GetexOp::At(d) if d <= k.now_ms() => {
                k.delete();
            }
            GetexOp::At(d) => k.set_deadline(Some(d)),
        }
        Ok::<_, CmdError>(Some(v))
    })?;
    ctx.out.bulk_opt(v.as_deref());
    Ok(())
}

fn mget(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let keys: Vec<&[u8]> = args.skip(1).iter().collect();
    let out = &mut *ctx.out;
    out.array(keys.len());
    ctx.db.keys(&keys, |txn| {
        for key in &keys {
            out.bulk_opt(txn.key(key).read().as_deref());
        }
    });
    Ok(())
}

/// Key-value pairs of MSET and MSETNX.
type Pairs<'a> = Vec<(&'a [u8], &'a [u8])>;

fn pairs<'a>(args: Args<'a>, name: &str) -> Result<Pairs<'a>, CmdError> {
    if args.len().is_multiple_of(2) {
        return Err(CmdError::Arity(name.into()));
    }
    Ok((1..args.len())
        .step_by(2)
        .map(|i| (args.get(i), args.get(i + 1)))
        .collect())
}

fn mset(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let kv = pairs(args, "mset")?;
    let keys: Vec<&[u8]> = kv.iter().map(|(k, _)| *k).collect();
    ctx.db.keys(&keys, |txn| {
        for (k, v) in &kv {
            txn.key(k).set_bytes(v, Ttl::Clear);
        }
    });
    ctx.out.ok();
    Ok(())
}

fn msetnx(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let kv = pairs(args, "msetnx")?;
    let keys: Vec<&[u8]> = kv.iter().map(|(k, _)| *k).collect();
    let done = ctx.db.keys(&keys, |txn| {
        if keys.iter().any(|k| txn.key(k).exists()) {
            return false;
        }
        for (k, v) in &kv {
            txn.key(k).set_bytes(v, Ttl::Clear);
        }
        true
    });
    ctx.out.int(done as i64);
    Ok(())
}

fn append(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (key, tail) = (args.get(1), args.get(2));
    let max = ctx.node.config.settings().proto_max_bulk_len;
    let len = ctx.db.key(key, |k| {
        let mut v = k.value().map(|v| v.into_owned()).unwrap_or_default();
        if v.len() + tail.len() > max {
            return Err(CmdError::TooBig);
        }
        v.extend_from_slice(tail);
        let len = v.len();
        k.set(v.into(), Ttl::Keep);
        Ok(len)
    })?;
    ctx.out.int(len as i64);
    Ok(())
}

fn strlen(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let len = ctx
        .db
        .key(args.get(1), |k| k.value().map_or(0, |v| v.len()));
    ctx.out.int(len as i64);
    Ok(())
}

fn getrange(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (mut start, mut end) = (arg_i64(args.get(2))?, arg_i64(args.get(3))?);
    let out = &mut *ctx.out;
    ctx.db.key(args.get(1), |k| {
        let Some(v) = k.value() else {
            return out.bulk(b"");
        };
        let len = v.len() as i64;
        // Redis: negative start and end count from the end; ranges clamp to the string.
        if start < 0 && end < 0 && start > end {
            return out.bulk(b"");
        }
        if start < 0 {
            start += len;
        }
        if end < 0 {
            end += len;
        }
        start = start.max(0);
        end = end.max(0);
        if end >= len {
            end = len - 1;
        }
        if start > end || len == 0 {
            return out.bulk(b"");
        }
        out.bulk(&v[start as usize..=end as usize]);
    });
    Ok(())
}

fn setrange(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let offset = arg_i64(args.get(2))?;
    if offset < 0 {
        return Err(CmdError::Msg("ERR offset is out of range".into()));
    }
    let patch = args.get(3);
    let max = ctx.node.config.settings().proto_max_bulk_len;
    let len = ctx.db.key(args.get(1), |k| {
        let cur = k.value().map(|v| v.into_owned());
        if patch.is_empty() {
            return Ok(cur.map_or(0, |v| v.len()));
        }
        let offset = offset as usize;
        if offset.saturating_add(patch.len()) > max {
            return Err(CmdError::TooBig);
        }
        let mut v = cur.unwrap_or_default();
        if v.len() < offset + patch.len() {
            v.resize(offset + patch.len(), 0);
        }
        v[offset..offset + patch.len()].copy_from_slice(patch);
        let len = v.len();
        k.set(v.into(), Ttl::Keep);
        Ok(len)
    })?;
    ctx.out.int(len as i64);
    Ok(())
}

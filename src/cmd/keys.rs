//! Keyspace commands: DEL, EXISTS, TYPE, RENAME, COPY, TOUCH, KEYS, SCAN, RANDOMKEY, DBSIZE,
//! FLUSHDB/FLUSHALL.
//!
//! Deletes write tombstones (they replicate and win or lose by stamp like any write);
//! RENAME and COPY are a register write of the source's current value on the destination.

use super::glob::matches;
use super::{arg_i64, is, CmdError, CmdResult, Ctx};
use crate::resp::Args;
use crate::spec;
use crate::store::Ttl;

#[rustfmt::skip]
pub const COMMANDS: &[super::CommandSpec] = &[
    spec!("del", -2, ["write"], 1, -1, 1, "generic", "1.0.0", "Deletes one or more keys.", del),
    spec!("unlink", -2, ["write", "fast"], 1, -1, 1, "generic", "4.0.0", "Asynchronously deletes one or more keys.", del),
    spec!("exists", -2, ["readonly", "fast"], 1, -1, 1, "generic", "1.0.0", "Determines whether one or more keys exist.", exists),
    spec!("type", 2, ["readonly", "fast"], 1, 1, 1, "generic", "1.0.0", "Determines the type of value stored at a key.", type_),
    spec!("rename", 3, ["write"], 1, 2, 1, "generic", "1.0.0", "Renames a key and overwrites the destination.", rename),
    spec!("renamenx", 3, ["write", "fast"], 1, 2, 1, "generic", "1.0.0", "Renames a key only when the target key name doesn't exist.", renamenx),
    spec!("copy", -3, ["write", "denyoom"], 1, 2, 1, "generic", "6.2.0", "Copies the value of a key to a new key.", copy),
    spec!("touch", -2, ["readonly", "fast"], 1, -1, 1, "generic", "3.2.1", "Returns the number of existing keys out of those specified after updating the time they were last accessed.", exists),
    spec!("keys", 2, ["readonly", "keyspace_wide"], 0, 0, 0, "generic", "1.0.0", "Returns all key names that match a pattern.", keys),
    spec!("scan", -2, ["readonly", "keyspace_wide"], 0, 0, 0, "generic", "2.8.0", "Iterates over the key names in the database.", scan),
    spec!("randomkey", 1, ["readonly", "keyspace_wide"], 0, 0, 0, "generic", "1.0.0", "Returns a random key name from the database.", randomkey),
    spec!("dbsize", 1, ["readonly", "fast", "keyspace_wide"], 0, 0, 0, "server", "1.0.0", "Returns the number of keys in the database.", dbsize),
    spec!("flushdb", -1, ["write", "keyspace_wide"], 0, 0, 0, "server", "1.0.0", "Remove all keys from the current database.", flush),
    spec!("flushall", -1, ["write", "keyspace_wide"], 0, 0, 0, "server", "1.0.0", "Removes all keys from all databases.", flush),
];

fn del(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let keys: Vec<&[u8]> = args.skip(1).iter().collect();
    let n = ctx.db.keys(&keys, |txn| {
        keys.iter().filter(|k| txn.key(k).delete()).count()
    });
    ctx.out.int(n as i64);
    Ok(())
}

/// EXISTS and TOUCH: counts existing keys (a key named twice counts twice).
fn exists(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let keys: Vec<&[u8]> = args.skip(1).iter().collect();
    let n = ctx.db.keys(&keys, |txn| {
        keys.iter().filter(|k| txn.key(k).exists()).count()
    });
    ctx.out.int(n as i64);
    Ok(())
}

fn type_(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let exists = ctx.db.key(args.get(1), |k| k.exists());
    ctx.out.simple(if exists { "string" } else { "none" });
    Ok(())
}

/// Moves (or copies) `src` to `dst`; `Ok(false)` when refused by `nx`/no REPLACE.
fn move_value(
    ctx: &mut Ctx<'_, '_>,
    src: &[u8],
    dst: &[u8],
    nx: bool,
    keep_src: bool,
) -> Result<bool, CmdError> {
    ctx.db.keys(&[src, dst], |txn| {
        let (value, deadline) = {
            let mut k = txn.key(src);
            let Some(deadline) = k.deadline() else {
                return Err(CmdError::NoSuchKey);
            };
            (
                k.value().map(|v| v.into_owned()).unwrap_or_default(),
                deadline,
            )
        };
        if src == dst {
            return Ok(!nx);
        }
        let mut d = txn.key(dst);
        if nx && d.exists() {
            return Ok(false);
        }
        d.set(value.into(), deadline.map_or(Ttl::Clear, Ttl::At));
        drop(d);
        if !keep_src {
            txn.key(src).delete();
        }
        Ok(true)
    })
}

fn rename(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    move_value(ctx, args.get(1), args.get(2), false, false)?;
    ctx.out.ok();
    Ok(())
}

fn renamenx(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let done = move_value(ctx, args.get(1), args.get(2), true, false)?;
    ctx.out.int(done as i64);
    Ok(())
}

fn copy(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let mut replace = false;
    let mut i = 3;
    while i < args.len() {
        let a = args.get(i);
        if is(a, "REPLACE") {
            replace = true;
        } else if is(a, "DB") && i + 1 < args.len() {
            let db = arg_i64(args.get(i + 1))?;
            if db != 0 {
                return Err(CmdError::Msg(
                    "ERR Copying to another database is not allowed in cluster mode".into(),
                ));
            }
            i += 1;
        } else {
            return Err(CmdError::Syntax);
        }
        i += 1;
    }
    let (src, dst) = (args.get(1), args.get(2));
    if src == dst {
        return Err(CmdError::Msg(
            "ERR source and destination objects are the same".into(),
        ));
    }
    let done = match move_value(ctx, src, dst, !replace, true) {
        Err(CmdError::NoSuchKey) => false,
        r => r?,
    };
    ctx.out.int(done as i64);
    Ok(())
}

fn keys(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let pat = args.get(1);
    let all = pat == b"*";
    let mut found: Vec<Box<[u8]>> = Vec::new();
    let mut cursor = 0;
    loop {
        cursor = ctx.keyspace().scan(cursor, usize::MAX, |k, _| {
            if all || matches(pat, k, false) {
                found.push(k.into());
            }
        });
        if cursor == 0 {
            break;
        }
    }
    ctx.out.bulk_array(found.iter().map(|k| &**k));
    Ok(())
}

fn scan(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let cursor = parse_cursor(args.get(1))
        .ok_or_else(|| CmdError::Msg("ERR invalid cursor".into()))? as usize;
    let (mut pattern, mut count, mut type_filter) = (None, 10usize, None);
    let mut i = 2;
    while i < args.len() {
        let (a, v) = (args.get(i), (i + 1 < args.len()).then(|| args.get(i + 1)));
        match (a.to_ascii_uppercase().as_slice(), v) {
            (b"MATCH", Some(p)) => pattern = Some(p),
            (b"COUNT", Some(c)) => {
                let c = arg_i64(c)?;
                if c < 1 {
                    return Err(CmdError::Syntax);
                }
                count = c as usize;
            }
            (b"TYPE", Some(t)) => type_filter = Some(t),
            _ => return Err(CmdError::Syntax),
        }
        i += 2;
    }
    // Every key is a string; any other TYPE filter matches nothing.
    let type_ok = type_filter.is_none_or(|t| is(t, "string"));
    let mut found: Vec<Box<[u8]>> = Vec::new();
    let next = if cursor >= crate::store::SLOTS {
        0
    } else {
        ctx.keyspace().scan(cursor, count, |k, _| {
            if type_ok && pattern.is_none_or(|p| matches(p, k, false)) {
                found.push(k.into());
            }
        })
    };
    ctx.out.array(2);
    ctx.out.bulk(next.to_string().as_bytes());
    ctx.out.bulk_array(found.iter().map(|k| &**k));
    Ok(())
}

/// Reads a cursor like Redis's `strtoul`: an optional sign, then decimal digits; a negative
/// cursor wraps around (so it is past the end), an overflowing one is invalid.
fn parse_cursor(a: &[u8]) -> Option<u64> {
    let (neg, digits) = match a.first() {
        Some(b'-') => (true, &a[1..]),
        Some(b'+') => (false, &a[1..]),
        _ => (false, a),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(if neg { v.wrapping_neg() } else { v })
}

fn randomkey(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    let k = ctx.keyspace().random_key();
    ctx.out.bulk_opt(k.as_deref());
    Ok(())
}

fn dbsize(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    let n = ctx.keyspace().dbsize();
    ctx.out.int(n as i64);
    Ok(())
}

fn flush(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    match args.len() {
        1 => {}
        2 if is(args.get(1), "ASYNC") || is(args.get(1), "SYNC") => {}
        _ => return Err(CmdError::Syntax),
    }
    super::tracking::flush(ctx.node);
    ctx.out.ok();
    Ok(())
}

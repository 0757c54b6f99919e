//! Bit commands on string values: SETBIT, GETBIT, BITCOUNT.
//!
//! SETBIT is a whole-value register write like APPEND and SETRANGE (DESIGN.md §2): concurrent
//! SETBITs in two regions do not merge bit by bit; the later-stamped command's whole value wins.
//! Bit 0 is the most significant bit of byte 0, as in Redis.

use super::{arg_i64, is, CmdError, CmdResult, Ctx};
use crate::resp::Args;
use crate::spec;
use crate::store::Ttl;

#[rustfmt::skip]
pub const COMMANDS: &[super::CommandSpec] = &[
    spec!("setbit", 4, ["write", "denyoom"], 1, 1, 1, "bitmap", "2.2.0", "Sets or clears the bit at offset of the string value. Creates the key if it doesn't exist.", setbit),
    spec!("getbit", 3, ["readonly", "fast"], 1, 1, 1, "bitmap", "2.2.0", "Returns a bit value by offset.", getbit),
    spec!("bitcount", -2, ["readonly"], 1, 1, 1, "bitmap", "2.6.0", "Counts the number of set bits (population counting) in a string.", bitcount),
];

const BAD_OFFSET: &str = "ERR bit offset is not an integer or out of range";
const BAD_BIT: &str = "ERR bit is not an integer or out of range";

/// Redis accepts bit offsets below 2^32 (512 MB strings).
fn bit_offset(a: &[u8]) -> Result<u64, CmdError> {
    match arg_i64(a) {
        Ok(n) if (0..1i64 << 32).contains(&n) => Ok(n as u64),
        _ => Err(CmdError::Msg(BAD_OFFSET.into())),
    }
}

fn setbit(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let offset = bit_offset(args.get(2))?;
    let on = match args.get(3) {
        b"1" => true,
        b"0" => false,
        _ => return Err(CmdError::Msg(BAD_BIT.into())),
    };
    let byte = (offset / 8) as usize;
    if byte >= ctx.node.config.settings().proto_max_bulk_len {
        return Err(CmdError::TooBig);
    }
    let mask = 0x80u8 >> (offset % 8);
    let was = ctx.db.key(args.get(1), |k| {
        let mut v = k.value().map(|v| v.into_owned()).unwrap_or_default();
        if v.len() <= byte {
            v.resize(byte + 1, 0);
        }
        let was = v[byte] & mask != 0;
        if on {
            v[byte] |= mask;
        } else {
            v[byte] &= !mask;
        }
        k.set(v.into(), Ttl::Keep);
        was
    });
    ctx.out.int(was as i64);
    Ok(())
}

fn getbit(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let offset = bit_offset(args.get(2))?;
    let byte = (offset / 8) as usize;
    let mask = 0x80u8 >> (offset % 8);
    let bit = ctx.db.key(args.get(1), |k| {
        k.value()
            .and_then(|v| v.get(byte).map(|b| b & mask != 0))
            .unwrap_or(false)
    });
    ctx.out.int(bit as i64);
    Ok(())
}

/// `BITCOUNT key [start end [BYTE|BIT]]`: ranges count from the end when negative and clamp
/// to the string, as GETRANGE.
fn bitcount(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let range = match args.len() {
        2 => None,
        4 | 5 => {
            let bits = match args.len() {
                5 if is(args.get(4), "bit") => true,
                5 if is(args.get(4), "byte") => false,
                5 => return Err(CmdError::Syntax),
                _ => false,
            };
            Some((arg_i64(args.get(2))?, arg_i64(args.get(3))?, bits))
        }
        _ => return Err(CmdError::Syntax),
    };
    let n = ctx.db.key(args.get(1), |k| {
        let Some(v) = k.value() else { return 0 };
        let Some((start, end, bits)) = range else {
            return v.iter().map(|b| b.count_ones() as u64).sum();
        };
        let len = if bits {
            v.len() as i64 * 8
        } else {
            v.len() as i64
        };
        let (Some(start), Some(end)) = (clamp(start, len), clamp(end, len)) else {
            return 0;
        };
        if start > end {
            return 0;
        }
        if bits {
            (start..=end)
                .filter(|&i| v[(i / 8) as usize] & (0x80 >> (i % 8)) != 0)
                .count() as u64
        } else {
            v[start as usize..=end as usize]
                .iter()
                .map(|b| b.count_ones() as u64)
                .sum()
        }
    });
    ctx.out.int(n as i64);
    Ok(())
}

/// A Redis range index (negative = from the end) clamped to `0..len`; `None` for an empty
/// string.
fn clamp(i: i64, len: i64) -> Option<i64> {
    if len == 0 {
        return None;
    }
    let i = if i < 0 { i + len } else { i };
    Some(i.clamp(0, len - 1))
}

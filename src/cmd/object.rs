//! OBJECT: what Redis exposes of a key's internals — its string encoding, the access data the
//! eviction policy keeps (idle time under LRU-style policies, the LFU counter under LFU ones) and
//! a reference count.
//!
//! Reading a key here is not an access: it neither refreshes its LRU clock nor counts in its LFU
//! counter (Redis's LOOKUP_NOTOUCH), so OBJECT can observe eviction data without changing it.

use super::table::dispatch_sub;
use super::{CmdError, CmdResult, Ctx};
use crate::resp::Args;
use crate::spec;
use crate::store::Peek;

#[rustfmt::skip]
pub const COMMANDS: &[super::CommandSpec] = &[
    spec!("object", -2, [], 0, 0, 0, "generic", "2.2.3", "A container for object introspection commands.", dispatch_sub, OBJECT),
];

#[rustfmt::skip]
const OBJECT: &[super::CommandSpec] = &[
    spec!("object|encoding", 3, ["readonly"], 2, 2, 1, "generic", "2.2.3", "Returns the internal encoding of a Redis object.", encoding),
    spec!("object|freq", 3, ["readonly"], 2, 2, 1, "generic", "4.0.0", "Returns the logarithmic access frequency counter of a Redis object.", freq),
    spec!("object|idletime", 3, ["readonly"], 2, 2, 1, "generic", "2.2.3", "Returns the time since the last access to a Redis object.", idletime),
    spec!("object|refcount", 3, ["readonly"], 2, 2, 1, "generic", "2.2.3", "Returns the reference count of a value of a key.", refcount),
    spec!("object|help", 2, ["loading", "stale"], 0, 0, 0, "generic", "6.2.0", "Returns helpful text about the different subcommands.", help),
];

const SWITCHING: &str = "Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.";

/// The key's access data, or a null reply (Redis answers nil for a missing key).
fn peek(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> Option<Peek> {
    let p = ctx.node.keyspace.peek(args.get(2));
    if p.is_none() {
        ctx.out.null();
    }
    p
}

/// Redis's string encodings: `int` for what parses as a 64-bit integer (at most 20 bytes),
/// `embstr` up to 44 bytes, `raw` beyond.
fn string_encoding(v: &[u8]) -> &'static str {
    if v.len() <= 20 && crate::crdt::number::parse_i64(v).is_some() {
        "int"
    } else if v.len() <= 44 {
        "embstr"
    } else {
        "raw"
    }
}

fn encoding(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    if let Some(p) = peek(ctx, args) {
        ctx.out.bulk(string_encoding(&p.value).as_bytes());
    }
    Ok(())
}

fn freq(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let evict = &ctx.node.keyspace.evict;
    if !evict.policy().is_lfu() {
        return Err(CmdError::Msg(format!(
            "ERR An LFU maxmemory policy is not selected, access frequency not tracked. {SWITCHING}"
        )));
    }
    let decay = evict.decay_minutes();
    if let Some(p) = peek(ctx, args) {
        let now = crate::clock::unix_ms();
        ctx.out
            .int(crate::store::lfu_count(p.access, now, decay) as i64);
    }
    Ok(())
}

fn idletime(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    if ctx.node.keyspace.evict.policy().is_lfu() {
        return Err(CmdError::Msg(format!(
            "ERR An LFU maxmemory policy is selected, idle time not tracked. {SWITCHING}"
        )));
    }
    if let Some(p) = peek(ctx, args) {
        let now = crate::clock::unix_ms();
        ctx.out
            .int((crate::store::idle_ms(p.access, now) / 1000) as i64);
    }
    Ok(())
}

fn refcount(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    if peek(ctx, args).is_some() {
        ctx.out.int(1);
    }
    Ok(())
}

fn help(ctx: &mut Ctx<'_, '_>, _args: Args<'_>) -> CmdResult {
    let lines = [
        "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "ENCODING <key>",
        "    Return the kind of internal representation used in order to store the value",
        "    associated with a <key>.",
        "FREQ <key>",
        "    Return the access frequency index of the <key>. The returned integer is",
        "    proportional to the logarithm of the recent access frequency of the key.",
        "IDLETIME <key>",
        "    Return the idle time of the <key>, that is the approximated number of",
        "    seconds elapsed since the last access to the key.",
        "REFCOUNT <key>",
        "    Return the number of references of the value associated with the specified",
        "    <key>.",
        "HELP",
        "    Print this help.",
    ];
    ctx.out.help(&lines);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodings_follow_redis() {
        assert_eq!(super::string_encoding(b"12345"), "int");
        assert_eq!(super::string_encoding(b"-7"), "int");
        assert_eq!(super::string_encoding(b"hello"), "embstr");
        assert_eq!(super::string_encoding(&[b'x'; 45]), "raw");
        assert_eq!(super::string_encoding(b"123456789012345678901"), "embstr");
    }
}

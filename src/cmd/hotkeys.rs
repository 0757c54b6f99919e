//! Hot keys as clients and operators see them: the hook that feeds every keyed command's keys
//! to the node's sketch (`hot::HotKeys`), `MERIDIAN.HOTKEYS`, the `# Hotkeys` INFO section, and
//! applying `hotkeys-k`, `hotkeys-threshold` and `repl-scope`.
//!
//! What counts as an access: every key of every command that ran (reads and writes alike, as
//! Redis's LFU counts them), after dispatch, so the store and replication never call up into
//! the command layer. Introspection that Redis does not count as a touch (OBJECT, MERIDIAN
//! EXPLAIN) does not count here either. Replicated merges are not client accesses and are not
//! counted: each node's hot set is what its own clients use.
//!
//! `MERIDIAN.HOTKEYS [COUNT n]` replies with an array of `[key, rate]` pairs, hottest first:
//! `key` a bulk string, `rate` an integer (estimated operations per second on this node, reads
//! and writes, rounded). COUNT defaults to 10 and is capped at `hotkeys-k`.

use super::{arg_i64, is, CmdError, CmdResult, CommandSpec, Ctx, Node};
use crate::hot::scope::ScopeRules;
use crate::resp::Args;
use crate::spec;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

#[rustfmt::skip]
pub const COMMANDS: &[CommandSpec] = &[
    spec!("meridian.hotkeys", -1, ["readonly", "loading", "stale"], 0, 0, 0, "server", "0.1.0", "Lists this node's hottest keys with their estimated rates (operations per second).", hotkeys),
];

/// Keys listed when COUNT is not given (and in INFO).
const DEFAULT_COUNT: usize = 10;

/// Counts the keys of a command that ran (the dispatch calls it after the handler).
#[inline]
pub fn after_command(node: &Node, spec: &CommandSpec, args: Args<'_>) {
    let argc = args.len() as i32;
    if spec.first_key <= 0 || argc <= spec.first_key || !counts_as_access(spec) {
        return;
    }
    let last = if spec.last_key < 0 {
        argc + spec.last_key
    } else {
        spec.last_key.min(argc - 1)
    };
    let step = spec.step.max(1);
    let mut i = spec.first_key;
    while i <= last {
        node.hot.record(args.get(i as usize));
        i += step;
    }
}

/// OBJECT and MERIDIAN.EXPLAIN look at a key without using it (Redis's LOOKUP_NOTOUCH).
fn counts_as_access(spec: &CommandSpec) -> bool {
    !(spec.name.starts_with("object|") || spec.name == "meridian.explain")
}

fn hotkeys(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let mut count = DEFAULT_COUNT;
    let rest = args.skip(1);
    let mut rest = rest.iter();
    while let Some(opt) = rest.next() {
        if !is(opt, "count") {
            return Err(CmdError::Syntax);
        }
        let n = arg_i64(rest.next().ok_or(CmdError::Syntax)?)?;
        if n <= 0 {
            return Err(CmdError::Msg("ERR COUNT must be positive".into()));
        }
        count = n as usize;
    }
    let top = ctx.node.hot.top(count);
    ctx.out.array(top.len());
    for h in &top {
        ctx.out.array(2);
        ctx.out.bulk(&h.key);
        ctx.out.int(h.rate.round() as i64);
    }
    Ok(())
}

/// A key inside an INFO line: printable bytes as they are, others (and `,` `=` `\`) as `\xNN`.
fn info_key(key: &[u8], t: &mut String) {
    for &b in key.iter().take(128) {
        if b.is_ascii_graphic() && !matches!(b, b',' | b'=' | b'\\') {
            t.push(b as char);
        } else {
            let _ = write!(t, "\\x{b:02x}");
        }
    }
}

/// The `# Hotkeys` INFO section.
pub fn info(node: &Node, t: &mut String) {
    let hk = &node.hot;
    let top = hk.top(DEFAULT_COUNT);
    let _ = write!(
        t,
        "# Hotkeys\r\nhotkeys_k:{}\r\nhotkeys_threshold:{}\r\nhotkeys_sample:{}\r\nhotkeys_tracked:{}\r\nhotkeys_hot:{}\r\nhotkeys_memory:{}\r\nhotkeys_samples_recorded:{}\r\nhotkeys_samples_dropped:{}\r\n",
        hk.k(),
        hk.threshold(),
        hk.sample(),
        hk.tracked().min(hk.k()),
        hk.hot_count(),
        hk.memory(),
        hk.recorded.load(Relaxed),
        hk.dropped.load(Relaxed),
    );
    if let Some(c) = node.cluster.as_deref().filter(|c| c.has_repl()) {
        let r = c.repl();
        let _ = write!(
            t,
            "hotkeys_invalidations_sent:{}\r\nhotkeys_invalidations_received:{}\r\nhotkeys_invalidations_applied:{}\r\n",
            r.invalidations_sent(),
            r.invalidations_received.load(Relaxed),
            r.invalidations_applied.load(Relaxed),
        );
    }
    for (i, h) in top.iter().enumerate() {
        let _ = write!(t, "hotkey_{i}:key=");
        info_key(&h.key, t);
        let _ = write!(t, ",rate={:.0}\r\n", h.rate);
    }
}

/// `repl-scope` rules with Redis's glob rules (case-sensitive, as KEYS and SCAN MATCH).
pub fn scope_rules(text: &str) -> Result<ScopeRules, crate::hot::scope::ScopeError> {
    ScopeRules::parse(text, |p, k| super::glob::matches(p, k, false))
}

/// Applies `hotkeys-k`, `hotkeys-threshold` and `repl-scope` (at start and on CONFIG SET).
pub fn apply_settings(node: &Node) {
    let k = super::param(node, "hotkeys-k")
        .parse()
        .unwrap_or(crate::hot::DEFAULT_K);
    let threshold = super::param(node, "hotkeys-threshold")
        .parse()
        .unwrap_or(crate::hot::DEFAULT_THRESHOLD);
    node.hot.configure(k, threshold);
    let rules = scope_rules(&super::param(node, "repl-scope")).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "repl-scope: every key replicates in full");
        ScopeRules::default()
    });
    if !rules.all() {
        tracing::info!(rules = ?rules, "replication scope");
    }
    if let Some(c) = node.cluster.as_deref().filter(|c| c.has_repl()) {
        c.repl().set_scope(node.hot.clone(), rules);
    }
}
